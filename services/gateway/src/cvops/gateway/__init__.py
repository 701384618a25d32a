"""cvops-gateway: the HTTP front of cvops (REST, SSE, metrics) over the event log."""

from cvops.gateway.app import create_app
from cvops.gateway.identity.service import bootstrap_admin

__all__ = ["bootstrap_admin", "create_app"]
