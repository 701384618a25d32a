"""``GET /system`` on a real NATS: the services read from the presence bucket, the event
streams' state and the GPU leases, for any signed-in user."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import msgspec

from cvops.contracts.api import SystemView
from cvops.core import STREAM, Bus, leases
from cvops.core.presence import Presence
from cvops.testing.gateway import Platform


async def _system(platform: Platform, role: str) -> SystemView:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        response = await client.get("/system", headers=platform.headers(role))
    assert response.status_code == 200, response.text
    return msgspec.json.decode(response.content, type=SystemView)


async def test_system_lists_running_services_streams_and_leases(platform: Platform) -> None:
    bus = await Bus.connect(platform.settings, name="test")
    trainer = Presence(bus, "trainer")
    resource = f"gpu.test-{uuid.uuid4().hex[:6]}.0"
    try:
        await trainer.refresh()  # a trainer instance, as run_service writes it
        held = await leases.acquire(bus, resource, "trainer@test/trial-1", 30, user="alice")
        assert held is not None
        for _ in range(50):  # the gateway says it is ready once it has caught up
            system = await _system(platform, "viewer")
            by_name = {s.name: s for s in system.services}
            mine = [i for i in by_name["gateway"].instances if i.pid == trainer.pid]
            if mine and mine[0].health == "ready":
                break
            await asyncio.sleep(0.2)
        (gateway,) = mine  # the gateway runs in this process (a thread of the test)
        assert gateway.version == "0.1.0" and gateway.host == trainer.host
        assert {p.name for p in gateway.projections} >= {"gateway"}
        assert all(p.lag is not None and p.lag >= 0 for p in gateway.projections)

        (instance,) = [i for i in by_name["trainer"].instances if i.instance == trainer.instance]
        assert instance.health == "ready" and by_name["trainer"].status in ("up", "degraded")
        assert set(by_name) >= {"registry", "gateway", "trainer", "converter", "benchmarker"}

        (events,) = [s for s in system.streams if s.name == STREAM]
        assert events.last_seq >= events.messages > 0
        (lease,) = [le for le in system.leases if le.resource == resource]
        assert (lease.holder, lease.user) == ("trainer@test/trial-1", "alice")
        (host,) = [h for h in system.hosts if h.host == trainer.host]
        assert {"gateway", "trainer"} <= set(host.services)
    finally:
        await leases.release(bus, resource, "trainer@test/trial-1")
        trainer.stop()
        await trainer.run()  # withdraws its key
        await bus.close()
    after = await _system(platform, "viewer")
    (gone,) = [s for s in after.services if s.name == "trainer"]
    assert trainer.instance not in {i.instance for i in gone.instances}
    assert resource not in {le.resource for le in after.leases}
