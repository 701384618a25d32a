"""Cached reads: a GET's encoded response is kept until the projection commits its next batch.

Every read of the API comes from the gateway's projection, which changes only when a batch
of events commits. A read's cache key therefore carries the projection's commit count
(``Generations.commits``): the same path and query at the same count is the same response, so
it is answered from memory (Litestar's response cache) without a session, a query or an
encode. The next commit changes every key; a writer's read-your-write wait ends after that
commit, so a client never reads a response older than its own write. Authentication and the
route's guards run before the cache is consulted, as for any request.

The entries live in :class:`ReadCache`, a small LRU bounded in entries and bytes (keys of an
older commit are never asked for again, so the bound is what frees them).

A read that finds nothing (404) is not final while the log holds events this process has not
applied: ``with_fresh_not_found`` then waits for them and reads once more. A write waits for
the projection of the worker that took it; without this, the next request on another
connection, landing on another gateway worker a few milliseconds behind, could be told that
what it just created does not exist.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import Any

from litestar import Request
from litestar.stores.base import Store
from litestar.types import ASGIApp, Message, Receive, Scope, Send

STORE = "gateway-reads"
# responses of distinct paths and queries at one commit count, and a few behind it
MAX_ENTRIES = 512
MAX_BYTES = 8 * 1024 * 1024  # a job list of 200 jobs is ~60 KB
_KEY = "cvops.read_key"  # the request's key, in its scope's state


def read_key(request: Request[Any, Any, Any]) -> str:
    """The cache key of a GET: the projection's commit count when the request came in, the
    path and the raw query.

    Litestar asks for the key twice: before the handler (to look the response up) and again
    once the response is sent (to store it). The second time must give the first key: a
    batch committed while the handler ran would otherwise file a response read before that
    commit under the newer count, and later readers would get it as current.
    """
    state = request.scope["state"]
    key = state.get(_KEY)
    if key is None:
        commits = request.app.state.gateway.runner.projection.commits
        query = request.scope.get("query_string", b"").decode()
        key = state[_KEY] = f"{commits} {request.url.path}?{query}"
    return str(key)


# the arguments of a ``@get`` whose response depends on the projection and the URL only
CACHED: dict[str, Any] = {"cache": True, "cache_key_builder": read_key}


class ReadCache(Store):
    """A bounded, in-process store for the response cache (one event loop, no lock needed)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    async def set(
        self, key: str, value: str | bytes, expires_in: int | timedelta | None = None
    ) -> None:
        await self.delete(key)
        data = value.encode() if isinstance(value, str) else value
        self._entries[key] = data
        self.bytes += len(data)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self.bytes -= len(self._entries.popitem(last=False)[1])

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    async def delete(self, key: str) -> None:
        self.bytes -= len(self._entries.pop(key, b""))

    async def delete_all(self) -> None:
        self._entries.clear()
        self.bytes = 0

    async def exists(self, key: str) -> bool:
        return key in self._entries

    async def expires_in(self, key: str) -> int | None:
        return None  # entries leave by the bound: a key of an older commit is never asked again

    @property
    def size(self) -> int:
        """How many responses it holds (no ``__len__``: an empty store must stay truthy)."""
        return len(self._entries)


def with_fresh_not_found(app: ASGIApp, state: Any) -> ASGIApp:
    """Read a GET again that answered 404 while this process's projections were behind the
    log (``Gateway.refreshed``), once they have caught up; other answers pass at once."""

    async def fresh(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("GET", "HEAD"):
            await app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_not_found(message: Message) -> None:
            if held or (message["type"] == "http.response.start" and message["status"] == 404):
                held.append(message)
            else:
                await send(message)

        await app(scope, receive, hold_not_found)
        gateway = getattr(state, "gateway", None)
        if not held or gateway is None or not await gateway.refreshed():
            for message in held:
                await send(message)
            return
        scope.get("state", {}).pop(_KEY, None)  # a key of the commit count it reads at now
        body_sent = False

        async def once_empty() -> Any:
            nonlocal body_sent
            if not body_sent:  # a GET's (empty) body, again; then whatever the client does
                body_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return await receive()

        await app(scope, once_empty, send)

    return fresh
