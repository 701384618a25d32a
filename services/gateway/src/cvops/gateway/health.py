"""Probes and metrics: ``/health/live``, ``/health/ready`` (NATS connected, the projection
caught up, close behind the stream and not stuck at an event it cannot apply) and
``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from litestar import Controller, Response, get
from litestar.openapi import ResponseSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cvops.contracts.api import Health
from cvops.core.metrics import CORE_METRICS
from cvops.core.projection import PROJECTION_METRICS
from cvops.gateway.core import Gateway, provide

READY_MAX_LAG = 1000


@dataclass
class HealthService:
    """Whether the gateway can answer, and its metrics."""

    gateway: Gateway

    async def readiness(self) -> Health:
        """Ready (``status`` ``ok``) when NATS is connected and the projection has caught up."""
        gateway = self.gateway
        connected = gateway.bus.nc.is_connected
        lag = await self.projection_lag() if connected else None
        stuck = gateway.runner.stuck
        identity = gateway.identity_runner
        identity_stuck = identity.stuck if identity is not None else None
        ok = (
            connected
            and gateway.caught_up
            and stuck is None
            and identity_stuck is None
            and lag is not None
            and lag <= READY_MAX_LAG
        )
        return Health(
            status="ok" if ok else "down",
            checks={
                "nats_connected": connected,
                "caught_up": gateway.caught_up,
                "projection_position": gateway.runner.position,
                "projection_lag": lag,
                # the event the projection cannot apply (see docs/operations.md)
                "projection_stuck": None
                if stuck is None
                else {
                    "seq": stuck.seq,
                    "type": stuck.type,
                    "reason": stuck.reason,
                    "resolve": stuck.hint("gateway"),
                },
                "identity_projection_stuck": None
                if identity_stuck is None
                else {
                    "seq": identity_stuck.seq,
                    "type": identity_stuck.type,
                    "reason": identity_stuck.reason,
                    "resolve": identity_stuck.hint("gateway-identity"),
                },
            },
        )

    async def metrics_text(self) -> bytes:
        """The Prometheus text format, with the projection's lag measured now: the gateway's
        own numbers, its projections' and those every service shares (``cvops.core.metrics``)."""
        if self.gateway.bus.nc.is_connected:
            await self.projection_lag()
        return (
            generate_latest(self.gateway.metrics.registry)
            + generate_latest(PROJECTION_METRICS)
            + await asyncio.to_thread(generate_latest, CORE_METRICS)  # NVML: off the loop
        )

    async def projection_lag(self) -> int | None:
        gateway = self.gateway
        try:
            last = await asyncio.wait_for(gateway.bus.last_seq(), 2.0)
        except Exception:
            return None
        lag = max(0, last - gateway.runner.position)
        gateway.metrics.projection_lag.set(lag)
        gateway.metrics.projection_position.set(gateway.runner.position)
        return lag


NOT_READY = ResponseSpec(
    Health,
    generate_examples=False,
    description="Not ready: the same body, with the failing checks",
)


class HealthController(Controller):
    path = "/"
    tags = ["health"]
    dependencies = provide("health")

    @get("/health/live")
    async def live(self) -> Health:
        """The process answers."""
        return Health(status="ok")

    @get("/health/ready", responses={503: NOT_READY})
    async def ready(self, service: HealthService) -> Response[Health]:
        """Ready when NATS is connected and the projection has caught up with the log (and
        is not stuck at an event it cannot apply).

        Returns:
            200 with the checks, or 503 with the same body when not ready.
        """
        body = await service.readiness()
        return Response(body, status_code=200 if body.status == "ok" else 503)

    @get("/metrics", media_type=CONTENT_TYPE_LATEST)
    async def metrics(self, service: HealthService) -> Response[bytes]:
        """Prometheus text format."""
        return Response(await service.metrics_text(), media_type=CONTENT_TYPE_LATEST)
