"""A projection that cannot apply an event stops there loudly, and resumes once the operator
quarantines it; rebuilds skip the quarantined event the same way and never hang."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, select
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.identity import UserCreated
from cvops.contracts.registry import DatasetUploadReceived
from cvops.core import IDENTITY_STREAM, Bus, ProjectionRunner, dump_rows, rebuild_projection
from cvops.core.projection import (
    PROJECTION_METRICS,
    ProjectionStuck,
    quarantine_event,
    quarantine_path,
    read_state,
)
from cvops.domain.errors import Invalid


class PoisonedProjection:
    """Keeps user names; a user called ``poison-*`` makes ``apply`` raise, like a value
    SQLite cannot hold did."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.metadata = MetaData()
        self.users = Table("users", self.metadata, Column("username", String, primary_key=True))

    def apply(self, session: Session, event: Event, seq: int) -> None:
        if isinstance(event, UserCreated):
            if event.username.startswith("poison-"):
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
            session.execute(self.users.insert().values(username=event.username))


def _user(name: str) -> UserCreated:
    stamp = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id=name)
    return UserCreated(**stamp.envelope(name), username=name, role="viewer", password_hash="x")


def _names(runner: ProjectionRunner, proj: PoisonedProjection) -> set[str]:
    with runner.session() as s:
        return set(s.execute(select(proj.users.c.username)).scalars())


def _stuck_gauge(name: str) -> float | None:
    return PROJECTION_METRICS.get_sample_value("cvops_projection_stuck", {"projection": name})


async def _run(runner: ProjectionRunner) -> asyncio.Task[None]:
    return asyncio.create_task(runner.run())


async def test_a_poison_event_stops_the_projection_until_it_is_quarantined(
    bus: Bus, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    events = [_user(f"a-{tag}"), _user(f"poison-{tag}"), _user(f"b-{tag}")]
    seqs = [(await bus.publish(e)).seq for e in events]
    subjects = [e.subject for e in events]
    proj = PoisonedProjection(f"stuck-{tag}")
    db = tmp_path / "p.sqlite"

    runner = ProjectionRunner(bus, proj, db, subjects=subjects, stream=IDENTITY_STREAM)
    task = await _run(runner)
    assert not await runner.catch_up(10)  # gives up at once instead of waiting 10 s
    assert runner.stuck is not None and runner.stuck.seq == seqs[1]
    assert runner.stuck.type == "identity.user_created.v1"
    assert "OverflowError" in runner.stuck.reason
    assert not await runner.wait_for(seqs[2], 0.5)
    assert _names(runner, proj) == {f"a-{tag}"}  # stopped before it; nothing after it
    assert runner.checkpoint() == seqs[0]
    assert _stuck_gauge(proj.name) == 1
    state = read_state(db, proj.name)
    assert state is not None and state.stuck == runner.stuck and state.checkpoint == seqs[0]
    assert not task.done()  # stopped, not dead
    runner.stop()
    await task
    runner.engine.dispose()

    # a restart hits the same event and stops again
    again = ProjectionRunner(bus, proj, db, subjects=subjects, stream=IDENTITY_STREAM)
    task = await _run(again)
    assert not await again.catch_up(10)
    assert again.stuck is not None and again.stuck.seq == seqs[1]

    # the operator quarantines it: the running projection resumes and applies the rest
    quarantine_event(db, seqs[1], "poison test event", type=again.stuck.type)
    assert await again.wait_for(seqs[2], 10)
    assert again.stuck is None and _stuck_gauge(proj.name) == 0
    assert _names(again, proj) == {f"a-{tag}", f"b-{tag}"}
    again.stop()
    await task
    state = read_state(db, proj.name)
    assert state is not None and state.stuck is None and state.checkpoint == seqs[2]
    assert [q.seq for q in state.quarantined] == [seqs[1]]
    before = dump_rows(again.engine, proj.metadata)
    again.engine.dispose()

    # a rebuild skips the quarantined event the same way
    await asyncio.wait_for(rebuild_projection(bus, proj, db, subjects, IDENTITY_STREAM), 30)
    rebuilt = ProjectionRunner(None, proj, db)
    assert dump_rows(rebuilt.engine, proj.metadata) == before
    rebuilt.engine.dispose()


async def test_a_rebuild_stops_at_a_poison_event_naming_it_instead_of_hanging(
    bus: Bus, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    events = [_user(f"a-{tag}"), _user(f"poison-{tag}")]
    seqs = [(await bus.publish(e)).seq for e in events]
    proj = PoisonedProjection(f"rebuild-{tag}")
    db = tmp_path / "r.sqlite"
    with pytest.raises(ProjectionStuck, match=rf"seq {seqs[1]} .*projections skip") as stopped:
        await asyncio.wait_for(
            rebuild_projection(bus, proj, db, [e.subject for e in events], IDENTITY_STREAM), 30
        )
    assert stopped.value.stuck.seq == seqs[1]
    assert not db.exists() and list(tmp_path.glob("r.sqlite.rebuild*")) == []
    assert quarantine_path(db) == tmp_path / "r.quarantine.json"


async def test_an_event_with_an_int_beyond_64_bits_is_never_appended(bus: Bus) -> None:
    before = await bus.last_seq()
    stamp = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id="big")
    event = DatasetUploadReceived(
        **stamp.envelope(uuid.uuid4().hex),
        upload_id=uuid.uuid4().hex,
        dataset_name="p",
        artifact=ArtifactRef(sha256="0" * 64, size=1),
        seed=2**63,
    )
    with pytest.raises(Invalid, match="seed"):
        await bus.publish(event)
    assert await bus.last_seq() == before


def test_a_batch_that_fails_applies_the_events_before_the_poison_one(tmp_path: Path) -> None:
    proj = PoisonedProjection("batch")
    runner = ProjectionRunner(None, proj, tmp_path / "b.sqlite")
    last = runner._apply_or_stop([(1, _user("a")), (2, _user("poison-x")), (3, _user("b"))])
    assert last == 1 and runner.checkpoint() == 1
    assert runner.stuck is not None and runner.stuck.seq == 2
    assert _names(runner, proj) == {"a"}


def test_the_launchers_status_reads_the_stuck_seq_from_the_projection_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata
    from types import SimpleNamespace

    from cvops.core import load_settings
    from cvops.core.local import projection_stuck_at

    proj = PoisonedProjection("demo")
    settings = load_settings({}, home=str(tmp_path))
    module = SimpleNamespace(projection=proj, db_path=lambda s: Path(s.home) / "demo.sqlite")
    point = SimpleNamespace(name="demo", load=lambda: module)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [point])
    runner = ProjectionRunner(None, proj, tmp_path / "demo.sqlite")
    assert projection_stuck_at("demo", settings) is None
    runner._apply_or_stop([(1, _user("a")), (2, _user("poison-x"))])
    assert projection_stuck_at("demo", settings) == 2
    assert projection_stuck_at("other", settings) is None
    quarantine_event(tmp_path / "demo.sqlite", 2, "test")
    runner._skip = runner._read_quarantine()
    runner._apply_or_stop([(2, _user("poison-x")), (3, _user("b"))])
    assert runner.stuck is None and projection_stuck_at("demo", settings) is None
