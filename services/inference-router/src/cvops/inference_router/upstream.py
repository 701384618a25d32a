"""A lean keep-alive HTTP/1.1 client for the router → Triton hop.

The hot path sends a prebuilt header and the client's body untouched (``writelines``: no
copy, one ``writev``) and reads the answer by ``Content-Length``. aiohttp's client costs
about three times the CPU per request here, which a proxy pays on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

MAX_HEAD = 64 * 1024


class UpstreamError(ConnectionError):
    """The connection failed or closed before a whole response arrived (retryable)."""


class UpstreamTimeout(TimeoutError):
    """No whole response within the request timeout."""


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self._head: tuple[int, dict[str, str], int] | None = None
        self._chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(UpstreamError(f"connection lost: {exc or 'closed'}"))

    def send(self, head: bytes, body: bytes | None) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.buffer.clear()
        self._head = None
        self.transport.writelines((head, body) if body else (head,))
        return self.waiter

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self._parse()
        except (ValueError, IndexError) as err:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(UpstreamError(f"bad response: {err}"))
            self.close()

    def _parse(self) -> None:
        buf = self.buffer
        if self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    raise ValueError("response head too large")
                return
            lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            length = -1 if self._chunked else int(headers.get("content-length", "0"))
            del buf[: end + 4]
            self._head = (status, headers, length)
        status, headers, length = self._head
        if self._chunked:
            body = _dechunk(buf)
            if body is None:
                return
        else:
            if len(buf) < length:
                return
            body = bytes(buf[:length])
            del buf[:length]
        self._head = None
        waiter, self.waiter = self.waiter, None
        if "close" in headers.get("connection", "").lower():
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(status, headers, body))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _dechunk(buf: bytearray) -> bytes | None:
    """The whole body of a chunked response, or None until it has all arrived."""
    out = bytearray()
    pos = 0
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        start = line_end + 2
        if size == 0:
            trailer = buf.find(b"\r\n", start)
            if trailer < 0:
                return None
            del buf[: trailer + 2]
            return bytes(out)
        if len(buf) < start + size + 2:
            return None
        out += buf[start : start + size]
        pos = start + size + 2


class UpstreamPool:
    """Keep-alive connections to one ``host:port``."""

    def __init__(self, address: str, *, connect_timeout: float = 2.0, max_idle: int = 256) -> None:
        host, _, port = address.rpartition(":")
        self.host = host or "127.0.0.1"
        self.port = int(port)
        self.address = address
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self._idle: deque[_Connection] = deque()

    def forget(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)

    async def _connection(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError as err:
            raise UpstreamError(f"connect to {self.address} timed out") from err
        except OSError as err:
            raise UpstreamError(f"connect to {self.address}: {err}") from err
        return conn

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
    ) -> Response:
        """One request over a pooled connection; ``UpstreamError`` when it broke."""
        conn = await self._connection()
        lines = [f"{method} {path} HTTP/1.1\r\nHost: {self.address}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        lines.append(f"Content-Length: {len(body) if body else 0}\r\n\r\n")
        waiter = conn.send("".join(lines).encode("latin-1"), body)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, _expire, waiter, timeout)
        try:
            response = await waiter
        except BaseException:
            conn.close()  # a half-read connection is never reused
            raise
        finally:
            timer.cancel()
        if not conn.closed and len(self._idle) < self.max_idle:
            self._idle.append(conn)
        return response

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()


def _expire(waiter: asyncio.Future[Response], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"no response within {timeout:g}s"))
