"""Presence: every service instance says every few seconds, in the KV bucket
``cvops-services``, who it is and how it is doing; the gateway's ``GET /system`` reads them.

One key per instance, ``<service>.<instance>`` (NATS lets a service write only keys under its
own name); the bucket's TTL drops an instance that stopped saying so. The same tick refreshes
the gauges of this process's work consumers (pending messages) and projections (lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import os
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import nats.errors
import nats.js.errors

from cvops.core import metrics
from cvops.core.accel import GpuReading, gpu_readings
from cvops.core.bus import PRESENCE_BUCKET, STREAMS, Bus, stream_of
from cvops.core.logging import get_logger

log = get_logger(__name__)

PRESENCE_INTERVAL_S = 5.0
# a projection further behind than this is not ready (the gateway's readiness uses the same)
READY_MAX_LAG = 1000
READY = "ready"
_KEY_UNSAFE = re.compile(r"[^-_a-zA-Z0-9]")


class ConsumerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A durable work consumer: messages not yet delivered, and delivered but not acked."""

    durable: str
    pending: int
    in_flight: int = 0


class ProjectionStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A projection: where it is, how far behind, and the event it is stuck at (0: none)."""

    name: str
    position: int
    lag: int | None
    stuck_at: int = 0


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What one service instance writes under its key."""

    service: str
    instance: str  # host and pid
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime
    health: str  # "ready", or why not
    consumers: list[ConsumerStatus] = []
    projections: list[ProjectionStatus] = []
    gpu_metrics_available: bool = False
    gpus: list[GpuReading] = []


def instance_key(service: str, instance: str) -> str:
    """``<service>.<instance>`` with anything a KV key may not hold replaced."""
    return f"{service}.{_KEY_UNSAFE.sub('_', instance)}"


def package_version(service: str) -> str:
    """The installed version of ``cvops-<service>`` (``unknown`` when not installed)."""
    try:
        return importlib.metadata.version(f"cvops-{service}")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def health_of(connected: bool, projections: list[ProjectionStatus]) -> str:
    """``ready``, or the first reason it is not."""
    if not connected:
        return "NATS disconnected"
    for p in projections:
        if p.stuck_at:
            return f"projection {p.name} stuck at seq {p.stuck_at}"
    for p in projections:
        if p.lag is not None and p.lag > READY_MAX_LAG:
            return f"projection {p.name} is {p.lag} events behind"
    return READY


class Presence:
    """Writes this instance's status every ``interval`` seconds until stopped."""

    def __init__(
        self,
        bus: Bus,
        service: str,
        *,
        interval: float = PRESENCE_INTERVAL_S,
        health: Callable[[], str | None] | None = None,
    ) -> None:
        self.bus = bus
        self.service = service
        self.interval = interval
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.instance = f"{self.host}-{self.pid}"
        self.key = instance_key(service, self.instance)
        self.version = package_version(service)
        self.started_at = datetime.now(UTC)
        # the service's own reason not to be ready (None: no objection), e.g. "catching up"
        self.health = health
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Refresh now and every ``interval`` until ``stop()``; then withdraw the key."""
        ticks = 0
        while not self._stopping.is_set():
            try:
                await self.refresh()
            except Exception as err:  # NATS away: the next tick tries again
                log.warning("presence_failed", error=f"{type(err).__name__}: {err}")
            ticks += 1
            # the second tick soon: the service's consumers start just after this task
            pause = min(self.interval, 1.0) if ticks == 1 else self.interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), pause)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bus.presence.delete(self.key), 2.0)

    async def status(self) -> InstanceStatus:
        """This instance now: consumers' pending counts and projections' lag measured (and
        their gauges set), GPUs read."""
        consumers = [await self._consumer(d, c) for d, c in list(metrics.consumers.items())]
        projections = [await self._projection(n, p) for n, p in list(metrics.projections.items())]
        readings = await asyncio.to_thread(gpu_readings)
        health = health_of(self.bus.nc.is_connected, projections)
        if health == READY and self.health is not None:
            health = self.health() or READY
        return InstanceStatus(
            service=self.service,
            instance=self.instance,
            host=self.host,
            pid=self.pid,
            version=self.version,
            started_at=self.started_at,
            seen_at=datetime.now(UTC),
            health=health,
            consumers=[c for c in consumers if c is not None],
            projections=projections,
            gpu_metrics_available=readings is not None,
            gpus=readings or [],
        )

    async def refresh(self) -> InstanceStatus:
        """Measure and write this instance's status."""
        status = await self.status()
        await self.bus.presence.put(self.key, msgspec.json.encode(status))
        return status

    async def _consumer(self, durable: str, c: metrics.WatchedConsumer) -> ConsumerStatus | None:
        try:
            info = await self.bus.js.consumer_info(stream_of(c.subjects[0]), durable, timeout=2)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as err:
            log.debug("consumer_info_failed", durable=durable, error=str(err))
            return None
        pending = int(info.num_pending or 0)
        metrics.CONSUMER_PENDING.labels(durable).set(pending)
        return ConsumerStatus(
            durable=durable, pending=pending, in_flight=int(info.num_ack_pending or 0)
        )

    async def _projection(self, name: str, p: metrics.WatchedProjection) -> ProjectionStatus:
        position = p.position
        stuck = getattr(p, "stuck", None)
        lag: int | None
        try:
            last = await last_on(self.bus, p.stream, p.subjects)
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as err:
            log.debug("projection_lag_unknown", projection=name, error=str(err))
            lag = None
        else:
            lag = max(0, last - position)
            metrics.PROJECTION_LAG.labels(name).set(lag)
        return ProjectionStatus(
            name=name, position=position, lag=lag, stuck_at=stuck.seq if stuck else 0
        )


async def last_on(bus: Bus, stream: str, subjects: list[str]) -> int:
    """The stream sequence of the newest event on any of ``subjects`` (0: none)."""
    if STREAMS.get(stream) in subjects:
        return await bus.last_seq(stream)
    last = 0
    for subject in subjects:
        last = max(last, await bus.last_subject_seq(subject))
    return last


async def instances(bus: Bus) -> list[InstanceStatus]:
    """Every instance whose status is in the bucket (an instance that stopped writing drops
    out after the bucket's TTL), by service and instance."""
    prefix = f"$KV.{PRESENCE_BUCKET}."
    info = await bus.js.stream_info(f"KV_{PRESENCE_BUCKET}", subjects_filter=f"{prefix}>")
    found: list[InstanceStatus] = []
    for subject in sorted(info.state.subjects or {}):
        try:
            entry = await bus.presence.get(subject[len(prefix) :])
        except nats.js.errors.KeyNotFoundError:  # deleted or expired since
            continue
        if not entry.value:
            continue
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            found.append(msgspec.json.decode(entry.value, type=InstanceStatus))
    return sorted(found, key=lambda s: (s.service, s.instance))
