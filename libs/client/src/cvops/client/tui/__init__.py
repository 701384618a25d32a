"""``cvops tui``: a full-screen terminal UI over the gateway, driven by the keyboard.

Models and versions, data sets, training jobs with live GA progress, benchmarks, deployments
with their health and live latency, and users (admins only). Everything it shows comes from
the SDK (:class:`cvops.client.Client`); live views follow the gateway's event feeds.
"""

from cvops.client.tui.app import CvopsApp
from cvops.client.tui.session import Connection, Session

__all__ = ["Connection", "CvopsApp", "Session"]
