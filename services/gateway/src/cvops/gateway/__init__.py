"""cvops-gateway: the HTTP front of cvops (REST, SSE, metrics) over the event log."""

from cvops.gateway.app import bootstrap_admin, create_app

__all__ = ["bootstrap_admin", "create_app"]
