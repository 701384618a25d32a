"""cvops-client: typed SDK for the cvops gateway and the ``cvops`` command line."""

from cvops.client.sdk import (
    DEFAULT_URL,
    Client,
    CvopsError,
    GatewayUnreachable,
    Progress,
    ProgressReader,
    Unreachable,
)
from cvops.client.sse import ServerSentEvent, parse_sse

__all__ = [
    "DEFAULT_URL",
    "Client",
    "CvopsError",
    "GatewayUnreachable",
    "Progress",
    "ProgressReader",
    "ServerSentEvent",
    "Unreachable",
    "parse_sse",
]
