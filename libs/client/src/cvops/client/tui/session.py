"""Who the TUI is and where it talks to: the stored login, one SDK client, the live feeds.

``cvops tui`` builds a :class:`Connection` from exactly what ``cvops login`` stored (or
``CVOPS_URL`` / ``CVOPS_TOKEN``), as every other command does. The :class:`Session` holds the
one SDK client of ordinary calls, the signed-in user, and the cuttable clients of live views.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from cvops.client.sdk import Client, CvopsError, Unreachable
from cvops.client.tui.feeds import CuttableTransport
from cvops.client.views import when
from cvops.contracts.api import UserView
from cvops.contracts.identity import ROLE_PERMISSIONS, Permission

ROUTER_METRICS_PORT = 8002


def router_metrics_beside(gateway_url: str) -> str:
    """The inference router's metrics on the gateway's host, at its default port."""
    host = urlsplit(gateway_url).hostname or "127.0.0.1"
    return f"http://{host}:{ROUTER_METRICS_PORT}"


@dataclass(frozen=True)
class Connection:
    """The gateway, the token, and where the router's metrics are (for live latency).

    Attributes:
        url: the gateway.
        token: the bearer token; None when nobody logged in.
        username: who ``cvops login`` stored (shown before the gateway answers).
        expires_at: when a session token expires (None: an API token, or unknown).
        router_metrics_url: the inference router's Prometheus endpoint.
        transport: an httpx transport instead of the network (tests).
    """

    url: str
    token: str | None
    username: str | None = None
    expires_at: datetime | None = None
    router_metrics_url: str | None = None
    transport: httpx.BaseTransport | None = None

    def client(self, transport: httpx.BaseTransport | None = None) -> Client:
        return Client(self.url, self.token, transport=transport or self.transport)


@dataclass
class Session:
    """State every screen shares; its methods are safe to call from worker threads."""

    connection: Connection
    user: UserView | None = None
    opened_benchmarks: list[str] = field(default_factory=list)
    _feeds: set[CuttableTransport] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client = self.connection.client()

    @property
    def manages_users(self) -> bool:
        return self.user is not None and Permission.MANAGE_USERS in ROLE_PERMISSIONS[self.user.role]

    def feed_client(self) -> tuple[Client, CuttableTransport]:
        """A client of its own for one live feed, and the transport that cuts it."""
        transport = CuttableTransport(self.connection.transport)
        with self._lock:
            self._feeds.add(transport)
        return self.connection.client(transport), transport

    def release(self, transport: CuttableTransport) -> None:
        transport.cut()
        with self._lock:
            self._feeds.discard(transport)

    def cut_feeds(self) -> None:
        """End every live feed (the TUI is closing)."""
        with self._lock:
            feeds, self._feeds = set(self._feeds), set()
        for transport in feeds:
            transport.cut()

    def close(self) -> None:
        self.cut_feeds()
        self.client.close()

    def problem(self, err: CvopsError) -> str:
        """What went wrong, for people, with what to do about it."""
        if isinstance(err, Unreachable):
            return f"cannot reach {err.what} at {err.url}: is `./justw up` running? (r retries)"
        if err.status == 401:
            expired = self.connection.expires_at
            if expired is not None and expired <= datetime.now(UTC):
                why = f"your session expired at {when(expired)}"
            else:
                why = "the gateway does not accept the stored token (expired or revoked)"
            return f"{why}: run `cvops login`, then press r"
        if err.status == 403:
            return f"not allowed for your role: {err.message}"
        return err.message


class SessionHost(Protocol):
    """What screens need of the app: the session, and a way to say nobody is signed in."""

    session: Session

    def signed_out(self, message: str) -> None: ...
