"""Event feeds that a closing view can cut: a live view's worker thread must end at once.

A worker following a job's feed sits in a blocking socket read for as long as the job is
quiet; neither Textual nor the SDK can interrupt that read, and the thread would hold up
leaving the TUI. :class:`CuttableTransport` wraps the HTTP transport of the SDK client that a
live view follows with: :meth:`CuttableTransport.cut` shuts the sockets of its open responses
down, which wakes the read, and the feed ends with :class:`FeedCut` instead of reconnecting.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx


class FeedCut(Exception):  # not an httpx error: the SDK passes it through, it never retries it
    """The view that followed this feed has closed."""


class _CuttableStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, transport: CuttableTransport) -> None:
        self._inner = inner
        self._transport = transport

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except Exception:
            if self._transport.is_cut:
                raise FeedCut("the view closed") from None
            raise
        if self._transport.is_cut:
            raise FeedCut("the view closed")

    def close(self) -> None:
        self._inner.close()


class CuttableTransport(httpx.BaseTransport):
    """An httpx transport whose open responses :meth:`cut` ends from any thread."""

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self._owns_inner = inner is None
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self.is_cut = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.is_cut:
            raise FeedCut("the view closed")
        response = self._inner.handle_request(request)
        network = response.extensions.get("network_stream")
        if network is not None:
            with self._lock:
                self._streams.append(network)
        if isinstance(response.stream, httpx.SyncByteStream):
            response.stream = _CuttableStream(response.stream, self)
        return response

    def cut(self) -> None:
        """End every open response now and refuse new requests."""
        self.is_cut = True
        with self._lock:
            streams, self._streams = self._streams, []
        for network in streams:
            sock = network.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._owns_inner:
            self._inner.close()
