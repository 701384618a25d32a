"""Prometheus metrics of the gateway: requests and latency per route, projection lag."""

from __future__ import annotations

import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    """One registry per app, so several apps in one process do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cvops_gateway_requests",
            "HTTP requests handled, by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cvops_gateway_request_duration_seconds",
            "Time to the response's first byte, by route template and method",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.projection_lag = Gauge(
            "cvops_gateway_projection_lag",
            "Stream last sequence minus the gateway projection's position",
            registry=self.registry,
        )
        self.projection_position = Gauge(
            "cvops_gateway_projection_position",
            "Stream sequence the gateway projection has applied",
            registry=self.registry,
        )

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware counting every HTTP request by its route template."""

        async def measured(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            method = str(scope.get("method", ""))
            start = time.perf_counter()
            status = 500
            timed = False

            async def send_measured(message: Message) -> None:
                nonlocal status, timed
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    route = scope.get("path_template") or "unmatched"
                    self.latency.labels(method, route).observe(time.perf_counter() - start)
                    timed = True
                await send(message)

            try:
                await app(scope, receive, send_measured)
            finally:
                route = scope.get("path_template") or "unmatched"
                self.requests.labels(method, route, str(status)).inc()
                if not timed:
                    self.latency.labels(method, route).observe(time.perf_counter() - start)

        return measured
