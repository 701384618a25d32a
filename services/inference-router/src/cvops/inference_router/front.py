"""The router's HTTP listener: infer on a lean fast path, everything else to the aiohttp app.

``POST /v2/models/<name>[/versions/<v>]/infer`` is parsed with httptools (llhttp) and
answered here: the body bytes go to Triton untouched and Triton's bytes come back with
a prebuilt head. That halves the router's CPU per request against a full framework, and
a proxy pays it on every call. Every other route (health, metadata, config, statistics,
repository, ``/v1/predict``, ``/v1/status``) is forwarded over loopback to the aiohttp
app in ``api.py``, where being a few hundred microseconds slower does not matter.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import deque
from http import HTTPStatus
from urllib.parse import unquote

import httptools

from cvops.core import get_logger
from cvops.inference_router.metrics import RouterMetrics
from cvops.inference_router.proxy import Proxy, RouteError
from cvops.inference_router.upstream import UpstreamError, UpstreamPool, UpstreamTimeout

log = get_logger(__name__)

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "host",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-connection",
}
INFER_HEADERS = {
    b"content-type": "Content-Type",
    b"inference-header-content-length": "Inference-Header-Content-Length",
    b"content-encoding": "Content-Encoding",
    b"accept-encoding": "Accept-Encoding",
}
MAX_PIPELINE = 16
FORWARD_TIMEOUT_S = 300.0


class _Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url")

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.keep_alive = True

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None


class FrontDoor:
    """Listens on the router's HTTP port."""

    def __init__(self, proxy: Proxy, metrics: RouterMetrics, internal: str, max_body: int) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self.internal = UpstreamPool(internal)
        self.max_body = max_body
        self.server: asyncio.Server | None = None
        self.connections: set[_Connection] = set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024, reuse_address=True
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
        self.internal.close()

    async def answer(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        """The response to one complete request."""
        path, _, query = req.url.decode("latin-1").partition("?")
        body = b"".join(req.body)
        match = INFER_PATH.match(path) if req.method == b"POST" else None
        if match is not None:
            return await self._infer(req, unquote(match[1]), match[2], body)
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in req.headers
            if k.decode("latin-1") not in HOP_BY_HOP
        }
        target = path + (f"?{query}" if query else "")
        try:
            r = await self.internal.request(
                req.method.decode(), target, body, headers, FORWARD_TIMEOUT_S
            )
        except (UpstreamError, UpstreamTimeout) as err:
            log.warning("internal_forward_failed", path=path, error=str(err))
            return RouteError(503, "the router is restarting; retry", retryable=True).kserve()
        out = {k.title(): v for k, v in r.headers.items() if k not in HOP_BY_HOP}
        return r.status, out, r.body

    async def _infer(
        self, req: _Request, name: str, pinned: str | None, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        start = time.perf_counter()
        headers: dict[str, str] = {}
        key = authorization = None
        for k, v in req.headers:
            canonical = INFER_HEADERS.get(k)
            if canonical is not None:
                headers[canonical] = v.decode("latin-1")
            elif k == b"authorization":
                authorization = v.decode("latin-1")
            elif k == b"x-request-key":
                key = v.decode("latin-1")
        try:
            version, status, out, data = await self.proxy.infer(
                name, pinned, key, authorization, body, headers
            )
        except RouteError as err:
            self.metrics.observe(
                name, err.version or "-", "http", str(err.status), time.perf_counter() - start
            )
            return err.kserve()
        self.metrics.observe(name, version, "http", str(status), time.perf_counter() - start)
        return status, out, data


class _Connection(asyncio.Protocol):
    """One client connection: requests answered in order (pipelining-safe)."""

    def __init__(self, front: FrontDoor) -> None:
        self.front = front
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.current = _Request()
        self.size = 0
        self.pending: deque[_Request] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.paused = False
        self.closing = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.front.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.connections.discard(self)
        self.closing = True
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as err:
            self._fail(400, f"malformed HTTP request: {err}")

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.current = _Request()
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.current.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        req = self.current
        req.method = self.parser.get_method()
        req.keep_alive = self.parser.should_keep_alive()
        length = req.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.front.max_body:
            self._fail(413, f"request body larger than {self.front.max_body} bytes")
            return
        expect = req.header(b"expect")
        if expect is not None and expect.lower() == "100-continue" and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return
        self.size += len(body)
        if self.size > self.front.max_body:
            self._fail(413, f"request body larger than {self.front.max_body} bytes")
            return
        self.current.body.append(body)

    def on_message_complete(self) -> None:
        self.pending.append(self.current)
        if len(self.pending) >= MAX_PIPELINE and self.transport and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._work())

    # -- answering ------------------------------------------------------------------------
    async def _work(self) -> None:
        while self.pending and not self.closing:
            req = self.pending.popleft()
            try:
                status, headers, body = await self.front.answer(req)
            except Exception as err:  # a bug must not take the connection's peers down
                log.exception("front_door_error", error=str(err))
                status, headers, body = RouteError(500, "internal router error").kserve()
            self._write(status, headers, body, req.keep_alive)
            if not req.keep_alive:
                self.close()
                return
            if self.paused and len(self.pending) < MAX_PIPELINE // 2 and self.transport:
                self.transport.resume_reading()
                self.paused = False

    def _write(self, status: int, headers: dict[str, str], body: bytes, keep_alive: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}\r\n"]
        lines.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        if not keep_alive:
            lines.append("Connection: close\r\n")
        lines.append(f"Content-Length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        self.transport.writelines((head, body) if body else (head,))

    def _fail(self, status: int, message: str) -> None:
        _, headers, body = RouteError(status, message).kserve()
        self._write(status, headers, body, keep_alive=False)
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
