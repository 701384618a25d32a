"""GPU leases: the pure decisions, then compare-and-set on a real nats-server KV bucket."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cvops.core import leases
from cvops.core.bus import LEASE_BUCKET, Bus
from cvops.core.leases import LeaseRecord, decide_acquire, is_expired, may_release, quota_allows


def _rec(holder: str, expires_at: float) -> LeaseRecord:
    return LeaseRecord(holder=holder, acquired_at=0.0, expires_at=expires_at)


# -- pure ---------------------------------------------------------------------------


def test_a_free_resource_is_created() -> None:
    assert decide_acquire(None, "a", now=10.0) == "create"


def test_a_live_lease_of_someone_else_is_refused() -> None:
    assert decide_acquire(_rec("b", 20.0), "a", now=10.0) == "refuse"


def test_an_expired_lease_may_be_taken() -> None:
    assert is_expired(_rec("b", 10.0), now=10.0)
    assert decide_acquire(_rec("b", 10.0), "a", now=10.0) == "take"


def test_the_holder_acquiring_again_extends() -> None:
    assert decide_acquire(_rec("a", 20.0), "a", now=10.0) == "extend"


def test_only_the_holder_may_release() -> None:
    assert may_release(_rec("a", 20.0), "a")
    assert not may_release(_rec("a", 20.0), "b")
    assert not may_release(None, "a")


def test_quota_counts_the_lease_being_asked_for() -> None:
    assert quota_allows(0, 1)
    assert not quota_allows(1, 1)
    assert quota_allows(99, None)


def test_gpu_resource_is_a_valid_key() -> None:
    assert leases.gpu_resource("node.a b", 3) == "gpu.node-a-b.3"
    with pytest.raises(ValueError):
        leases._check_key("gpu.*")


# -- on NATS ------------------------------------------------------------------------


def _resource() -> str:
    return leases.gpu_resource(f"h{uuid.uuid4().hex[:8]}", 0)


async def test_two_contenders_only_one_wins(bus: Bus) -> None:
    res = _resource()
    results = await asyncio.gather(
        *(leases.acquire(bus, res, f"worker-{i}", 30, user=f"u{i}") for i in range(6))
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    (live,) = await leases.holders(bus, res)
    assert live.holder == winners[0].holder
    assert await leases.acquire(bus, res, "late", 30) is None


async def test_an_expired_lease_can_be_taken_after_its_ttl(bus: Bus) -> None:
    res = _resource()
    crashed = await leases.acquire(bus, res, "crashed", 0.5)
    assert crashed is not None
    assert await leases.acquire(bus, res, "next", 30) is None
    await asyncio.sleep(0.6)  # the crashed holder never renews
    taken = await leases.acquire(bus, res, "next", 30)
    assert taken is not None and taken.holder == "next"
    with pytest.raises(leases.LeaseLost):
        await leases.renew(bus, res, "crashed", 30)
    with pytest.raises(leases.NotLeaseHolder):
        await leases.release(bus, res, "crashed")


async def test_release_by_a_non_holder_is_refused(bus: Bus) -> None:
    res = _resource()
    assert await leases.acquire(bus, res, "owner", 30)
    with pytest.raises(leases.NotLeaseHolder):
        await leases.release(bus, res, "intruder")
    assert [le.holder for le in await leases.holders(bus, res)] == ["owner"]
    assert await leases.release(bus, res, "owner")
    assert await leases.holders(bus, res) == []
    assert not await leases.release(bus, res, "owner")
    # a released key is free again (create over the delete marker)
    again = await leases.acquire(bus, res, "intruder", 30)
    assert again is not None and again.holder == "intruder"


async def test_renew_extends_and_quota_counts_live_leases(bus: Bus) -> None:
    host = f"h{uuid.uuid4().hex[:8]}"
    user = f"user-{host}"
    r0, r1 = leases.gpu_resource(host, 0), leases.gpu_resource(host, 1)
    first = await leases.acquire(bus, r0, "job-1", 5, user=user, role="engineer")
    assert first is not None
    renewed = await leases.renew(bus, r0, "job-1", 60)
    assert renewed.expires_at > first.expires_at and renewed.revision > first.revision
    assert await leases.count_held_by(bus, user) == 1
    with pytest.raises(leases.QuotaExceeded):
        await leases.check_quota(bus, user=user, role="engineer", user_limit=1, role_limit=None)
    await leases.check_quota(bus, user=user, role="engineer", user_limit=2, role_limit=None)
    assert await leases.acquire(bus, r1, "job-2", 60, user=user, role="engineer")
    assert {le.resource for le in await leases.holders(bus, f"gpu.{host}")} == {r0, r1}


async def test_held_renews_in_the_background_and_releases_on_exit(bus: Bus) -> None:
    res = _resource()
    async with leases.held(bus, res, "worker", 0.6) as lease:
        await asyncio.sleep(1.0)  # longer than the TTL: only renewal keeps it
        (live,) = await leases.holders(bus, res)
        assert live.holder == "worker" and live.revision > lease.revision
        with pytest.raises(leases.LeaseUnavailable):
            async with leases.held(bus, res, "other", 5):
                pass
    assert await leases.holders(bus, res) == []


async def test_reading_the_leases_creates_no_consumers(bus: Bus) -> None:
    # a trainer waiting for a GPU reads the leases every second: that must not leave a
    # consumer behind per read (the server has a consumer limit)
    gpu = f"gpu.host-{uuid.uuid4().hex[:6]}.0"
    await leases.acquire(bus, gpu, "trainer-a", ttl_s=30.0, user="alice")
    released = f"gpu.host-{uuid.uuid4().hex[:6]}.1"
    await leases.acquire(bus, released, "trainer-b", ttl_s=30.0, user="bob")
    await leases.release(bus, released, "trainer-b")
    for _ in range(50):
        mine = [le for le in await leases.holders(bus) if le.resource in (gpu, released)]
        assert [(le.resource, le.user) for le in mine] == [(gpu, "alice")]
    info = await bus.js.stream_info(f"KV_{LEASE_BUCKET}")
    assert info.state.consumer_count == 0
