"""Core on a real nats-server: publish, dedupe, optimistic concurrency, projections, blobs."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.identity import RoleChanged, UserCreated
from cvops.core import (
    IDENTITY_STREAM,
    ArtifactStore,
    Bus,
    ConcurrencyConflict,
    ProjectionRunner,
    ShuttingDown,
    SpooledUpload,
    TooLarge,
    WorkConsumer,
    dump_rows,
    rebuild_projection,
)


class UsersProjection:
    name = "test-users"

    def __init__(self) -> None:
        self.metadata = MetaData()
        self.users = Table(
            "users",
            self.metadata,
            Column("username", String, primary_key=True),
            Column("role", String),
            Column("changes", Integer),
        )

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case UserCreated(username=u, role=r):
                session.execute(self.users.insert().values(username=u, role=r, changes=0))
            case RoleChanged(username=u, role=r):
                row = session.execute(select(self.users).where(self.users.c.username == u)).one()
                session.execute(
                    self.users.update()
                    .where(self.users.c.username == u)
                    .values(role=r, changes=row.changes + 1)
                )


def _stamp(i: int) -> Stamp:
    return Stamp(
        now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id=f"c-{i}-{uuid.uuid4()}"
    )


def _user(name: str) -> UserCreated:
    return UserCreated(**_stamp(0).envelope(name), username=name, role="viewer", password_hash="x")


async def test_republishing_the_same_event_is_dropped_as_duplicate(bus: Bus) -> None:
    e = _user(f"dup-{uuid.uuid4().hex[:6]}")
    first = await bus.publish(e)
    again = await bus.publish(e)
    assert not first.duplicate
    assert again.duplicate and again.seq == first.seq


async def test_expected_last_subject_sequence_refuses_a_fork(bus: Bus) -> None:
    name = f"occ-{uuid.uuid4().hex[:6]}"
    created = await bus.publish(_user(name), expected_last_subject_seq=0)
    change = RoleChanged(**_stamp(1).envelope("r"), username=name, role="admin")
    await bus.publish(change, expected_last_subject_seq=created.seq)
    stale = RoleChanged(**_stamp(2).envelope("r"), username=name, role="engineer")
    with pytest.raises(ConcurrencyConflict):
        await bus.publish(stale, expected_last_subject_seq=created.seq)


async def test_projection_applies_once_and_rebuilds_identically(bus: Bus, tmp_path: Path) -> None:
    proj = UsersProjection()
    runner = ProjectionRunner(bus, proj, tmp_path / "p.sqlite", stream=IDENTITY_STREAM)
    task = asyncio.create_task(runner.run())
    names = [f"p-{uuid.uuid4().hex[:6]}" for _ in range(5)]
    last = None
    for n in names:
        last = await bus.publish(_user(n))
        await bus.publish(RoleChanged(**_stamp(3).envelope(n), username=n, role="engineer"))
    assert last is not None
    assert await runner.catch_up(10)
    runner.stop()
    await task
    with runner.session() as s:
        rows = {r.username: (r.role, r.changes) for r in s.execute(select(proj.users))}
    for n in names:
        assert rows[n] == ("engineer", 1)
    before = dump_rows(runner.engine, proj.metadata)
    # restart: nothing is applied twice
    again = ProjectionRunner(bus, proj, tmp_path / "p.sqlite", stream=IDENTITY_STREAM)
    t2 = asyncio.create_task(again.run())
    assert await again.catch_up(10)
    again.stop()
    await t2
    assert again.applied == 0
    assert dump_rows(again.engine, proj.metadata) == before
    runner.engine.dispose()
    again.engine.dispose()
    applied = await rebuild_projection(
        bus, UsersProjection(), tmp_path / "p.sqlite", stream=IDENTITY_STREAM
    )
    assert applied >= 10
    rebuilt = ProjectionRunner(None, UsersProjection(), tmp_path / "p.sqlite")
    assert dump_rows(rebuilt.engine, proj.metadata) == before


def test_applying_the_same_batch_twice_leaves_identical_rows(tmp_path: Path) -> None:
    proj = UsersProjection()
    runner = ProjectionRunner(None, proj, tmp_path / "u.sqlite")
    batch = [(1, _user("a")), (2, _user("b"))]
    runner.apply_batch(batch)
    once = dump_rows(runner.engine, proj.metadata)
    runner.apply_batch(batch)
    assert dump_rows(runner.engine, proj.metadata) == once
    assert runner.checkpoint() == 2


async def test_wait_for_returns_false_on_timeout(bus: Bus, tmp_path: Path) -> None:
    runner = ProjectionRunner(bus, UsersProjection(), tmp_path / "w.sqlite")
    assert not await runner.wait_for(10**9, timeout=0.2)


async def test_artifacts_are_content_addressed_and_streamed(bus: Bus, tmp_path: Path) -> None:
    store = ArtifactStore(bus)
    data = uuid.uuid4().bytes * 300_000  # ~4.8 MB, several chunks
    ref = await store.put_bytes(data, filename="blob.bin")
    assert ref.size == len(data)
    again = await store.put_bytes(data)
    assert again.sha256 == ref.sha256
    assert await store.get_bytes(ref.sha256) == data
    await store.delete(ref.sha256)
    assert not await store.exists(ref.sha256)


def test_spooled_upload_stops_at_the_limit(tmp_path: Path) -> None:
    up = SpooledUpload(tmp_path, limit=10)
    up.write(b"12345")
    with pytest.raises(TooLarge):
        up.write(b"678901")
    up.discard()
    assert not up.path.exists()


async def test_work_consumer_redelivers_after_a_failure(bus: Bus) -> None:
    tag = uuid.uuid4().hex[:6]
    seen: list[str] = []
    done = asyncio.Event()

    async def handle(event: Event, _msg: object) -> None:
        assert isinstance(event, UserCreated)
        seen.append(event.username)
        if len(seen) == 1:
            raise RuntimeError("first try fails")
        done.set()

    consumer = WorkConsumer(
        bus, f"work-{tag}", [f"cvops.sec.identity.w{tag}.>"], handle, nak_delay=0.1
    )
    task = asyncio.create_task(consumer.run())
    await bus.publish(_user(f"w{tag}"))
    await asyncio.wait_for(done.wait(), 10)
    consumer.stop()
    await task
    assert seen == [f"w{tag}", f"w{tag}"]


async def test_work_stopped_by_a_shutdown_goes_back_at_once_and_is_no_failure(
    bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    seen: list[float] = []
    done = asyncio.Event()

    async def handle(event: Event, _msg: object) -> None:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise ShuttingDown()
        done.set()

    # a failure would wait out the 30 s nak delay; an interrupted job is offered again now
    consumer = WorkConsumer(
        bus, f"stop-{tag}", [f"cvops.sec.identity.s{tag}.>"], handle, nak_delay=30
    )
    task = asyncio.create_task(consumer.run())
    await bus.publish(_user(f"s{tag}"))
    await asyncio.wait_for(done.wait(), 10)
    consumer.stop()
    await task
    assert len(seen) == 2 and seen[1] - seen[0] < 5
    logged = capsys.readouterr()
    assert "work_interrupted" in logged.out + logged.err
    assert "work_failed" not in logged.out + logged.err
