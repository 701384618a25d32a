"""``GET /system``: every service and its instances (from the presence bucket), the event
streams' state, each host's GPUs and who holds them (the leases bucket)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import nats.errors
from litestar import Controller, get

from cvops.contracts.api import (
    ConsumerView,
    GpuView,
    HostView,
    InstanceView,
    LeaseView,
    ProjectionLagView,
    ServiceView,
    StreamView,
    SystemView,
)
from cvops.contracts.identity import Permission
from cvops.core import leases, presence, services
from cvops.core.bus import STREAMS
from cvops.core.presence import READY, InstanceStatus
from cvops.gateway.auth import allow
from cvops.gateway.core import Gateway, provide
from cvops.gateway.openapi import refusals

NATS_TIMEOUT_S = 5.0
ServiceStatus = Literal["up", "degraded", "down"]


@dataclass
class SystemService:
    """Reads the platform's state from NATS: presence, streams, leases."""

    gateway: Gateway

    async def system(self) -> SystemView:
        """The platform now (a NATS that does not answer in time is a 503, as on any read)."""
        bus = self.gateway.bus
        names = list(STREAMS)
        try:
            found, streams, held = await asyncio.wait_for(
                asyncio.gather(
                    presence.instances(bus),
                    asyncio.gather(*(bus.js.stream_info(name) for name in names)),
                    leases.holders(bus),
                ),
                NATS_TIMEOUT_S,
            )
        except TimeoutError as err:
            raise nats.errors.TimeoutError() from err
        return system_view(
            found,
            [
                StreamView(
                    name=name,
                    messages=int(info.state.messages),
                    bytes=int(info.state.bytes),
                    first_seq=int(info.state.first_seq),
                    last_seq=int(info.state.last_seq),
                    consumers=int(info.state.consumer_count),
                )
                for name, info in zip(names, streams, strict=True)
            ],
            held,
        )


def _lease(le: leases.Lease) -> LeaseView:
    return LeaseView(
        resource=le.resource,
        holder=le.holder,
        user=le.user,
        role=le.role,
        acquired_at=datetime.fromtimestamp(le.acquired_at, UTC),
        expires_at=datetime.fromtimestamp(le.expires_at, UTC),
    )


def _instance(s: InstanceStatus) -> InstanceView:
    return InstanceView(
        instance=s.instance,
        host=s.host,
        pid=s.pid,
        version=s.version,
        started_at=s.started_at,
        last_seen=s.seen_at,
        health=s.health,
        consumers=[
            ConsumerView(durable=c.durable, pending=c.pending, in_flight=c.in_flight)
            for c in s.consumers
        ],
        projections=[
            ProjectionLagView(name=p.name, position=p.position, lag=p.lag, stuck_at=p.stuck_at)
            for p in s.projections
        ],
    )


def system_view(
    found: list[InstanceStatus], streams: list[StreamView], held: list[leases.Lease]
) -> SystemView:
    """Group instances by service (every registered one, running or not) and by host; put
    each GPU's lease beside it."""
    by_service: dict[str, list[InstanceStatus]] = {name: [] for name in services.names()}
    for s in found:
        by_service.setdefault(s.service, []).append(s)
    service_views = []
    for name, group in by_service.items():
        ready = [s.health == READY for s in group]
        status: ServiceStatus = "down" if not group else "up" if all(ready) else "degraded"
        service_views.append(
            ServiceView(name=name, status=status, instances=[_instance(s) for s in group])
        )
    by_resource = {le.resource: le for le in held}
    hosts: dict[str, HostView] = {}
    for s in sorted(found, key=lambda s: s.seen_at, reverse=True):  # newest numbers first
        host = hosts.get(s.host)
        if host is None:
            gpus = []
            for g in s.gpus:
                lease = by_resource.get(leases.gpu_resource(s.host, g.index))
                gpus.append(
                    GpuView(
                        index=g.index,
                        name=g.name,
                        uuid=g.uuid,
                        memory_total_bytes=g.memory_total_bytes,
                        memory_used_bytes=g.memory_used_bytes,
                        utilization_ratio=g.utilization_ratio,
                        temperature_celsius=g.temperature_celsius,
                        power_watts=g.power_watts,
                        lease=_lease(lease) if lease is not None else None,
                    )
                )
            host = hosts[s.host] = HostView(
                host=s.host, gpu_metrics_available=s.gpu_metrics_available, gpus=gpus
            )
        if s.service not in host.services:
            host.services.append(s.service)
    for host in hosts.values():
        host.services.sort()
    return SystemView(
        services=service_views,
        streams=streams,
        hosts=sorted(hosts.values(), key=lambda h: h.host),
        leases=[_lease(le) for le in held],
    )


class SystemController(Controller):
    path = "/system"
    tags = ["system"]
    guards = [allow(Permission.READ)]
    dependencies = provide("system")

    @get("/", responses=refusals(503))
    async def system(self, service: SystemService) -> SystemView:
        """The platform now, for any signed-in user: each service and its instances (version,
        health, last seen, projection lag, work consumers' pending messages), the event
        streams (messages, last sequence), and each host's GPUs with who leases them.

        Returns:
            200 with the system; an instance that stopped reporting drops out within 30 s.
            503 while NATS does not answer.
        """
        return await service.system()
