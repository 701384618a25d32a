"""`cvops projections status/skip/rebuild` with an event the projection cannot apply, on a real
nats-server: the rebuild stops naming it, status shows it, skip quarantines it, and then both
the service and the rebuild pass over it."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import textwrap
import uuid
from datetime import UTC, datetime
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cvops.client import rebuild
from cvops.client.cli import cli
from cvops.contracts import Stamp
from cvops.contracts.identity import UserCreated
from cvops.core import Bus, ProjectionRunner, Settings
from cvops.core.projection import quarantine_path

PROJECTION_MODULE = '''
"""Test projection: one row per user created; a user named poison-TAG cannot be applied."""
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table

from cvops.contracts.identity import UserCreated

STREAM = "CVOPS_IDENTITY"  # identity's events: their own stream


class Users:
    name = "poisoned-users"

    def __init__(self):
        self.metadata = MetaData()
        self.users = Table("users", self.metadata, Column("username", String, primary_key=True))

    def apply(self, session, event, seq):
        if isinstance(event, UserCreated):
            if event.username == "poison-TAG":
                raise OverflowError("Python int too large to convert to SQLite INTEGER")
            session.execute(self.users.insert().values(username=event.username))


projection = Users()


def db_path(settings):
    return Path(settings.home) / "poisoned.sqlite"


def copies(settings):  # as the gateway's workers' files
    return sorted(Path(settings.home).glob("poisoned-w*.sqlite"))
'''


@pytest.fixture
def poisoned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> str:
    """A ``poisoned`` projection entry point on the test's NATS; returns the poison's tag."""
    tag = uuid.uuid4().hex[:8]
    module = f"cvops_poisoned_projection_{tag}"
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    code = textwrap.dedent(PROJECTION_MODULE).replace("TAG", tag)
    (code_dir / f"{module}.py").write_text(code)
    monkeypatch.syspath_prepend(str(code_dir))
    point = EntryPoint(name="poisoned", value=module, group=rebuild.ENTRY_POINT_GROUP)
    monkeypatch.setattr(rebuild, "projection_entry_points", lambda: {"poisoned": point})
    monkeypatch.setenv("CVOPS_NATS_URL", settings.nats_url)
    monkeypatch.setenv("CVOPS_HOME", settings.home)
    Path(settings.home).mkdir(parents=True)  # an existing home: rebuild never makes one
    return tag


def _publish(settings: Settings, names: list[str]) -> list[int]:
    async def publish() -> list[int]:
        bus = await Bus.connect(settings, name="test-stuck")
        try:
            seqs = []
            for name in names:
                stamp = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id=name)
                event = UserCreated(
                    **stamp.envelope(name), username=name, role="viewer", password_hash="h"
                )
                seqs.append((await bus.publish(event)).seq)
            return seqs
        finally:
            await bus.close()

    return asyncio.run(publish())


def _run_service_until_stuck(settings: Settings, worker: int = 0) -> int:
    """What the service does: follow the log; returns the seq it got stuck at. ``worker`` > 0:
    as a gateway worker does, into a file of its own with worker 0's quarantine."""
    module = rebuild.load_projection("poisoned")
    main = Path(module.db_path(settings))
    path = main.with_name(f"{main.stem}-w{worker}{main.suffix}") if worker else main

    async def follow() -> int:
        bus = await Bus.connect(settings, name="test-stuck-service")
        runner = ProjectionRunner(
            bus, module.projection, path, stream=module.STREAM, quarantine=quarantine_path(main)
        )
        task = asyncio.create_task(runner.run())
        try:
            assert not await runner.catch_up(20)
            assert runner.stuck is not None
            return runner.stuck.seq
        finally:
            runner.stop()
            await task
            runner.engine.dispose()
            await bus.close()

    return asyncio.run(follow())


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, ["projections", *args])


def test_a_stuck_projection_is_shown_skipped_and_then_rebuilt_past(
    poisoned: str, settings: Settings
) -> None:
    tag = poisoned
    names = [f"a-{tag}", f"poison-{tag}", f"b-{tag}"]
    seqs = _publish(settings, names)

    stopped = _cli("rebuild", "poisoned")  # no hang: it stops at the event and names it
    assert stopped.exit_code == 1, stopped.output
    assert f"stopped at seq {seqs[1]} (identity.user_created.v1)" in stopped.stderr
    assert f"cvops projections skip poisoned {seqs[1]} --reason TEXT" in stopped.stderr

    assert _run_service_until_stuck(settings) == seqs[1]
    status = _cli("status")
    assert status.exit_code == 1, status.output
    assert f"STUCK at seq {seqs[1]} (identity.user_created.v1): OverflowError" in status.output
    as_json = json.loads(_cli("status", "--json").output)
    assert as_json[0]["service"] == "poisoned" and as_json[0]["stuck"]["seq"] == seqs[1]

    assert _cli("skip", "poisoned", str(seqs[1])).exit_code == 2  # --reason is required
    skipped = _cli("skip", "poisoned", str(seqs[1]), "--reason", "seed beyond 64 bits")
    assert skipped.exit_code == 0, skipped.output
    assert f"poisoned: seq {seqs[1]} quarantined (seed beyond 64 bits)" in skipped.output

    rebuilt = _cli("rebuild", "poisoned")
    assert rebuilt.exit_code == 0, rebuilt.output
    with sqlite3.connect(Path(settings.home) / "poisoned.sqlite") as db:
        users = {row[0] for row in db.execute("select username from users")}
    assert {f"a-{tag}", f"b-{tag}"} <= users and f"poison-{tag}" not in users
    status = _cli("status")
    assert status.exit_code == 0, status.output
    assert f"skipped seqs: {seqs[1]}" in status.output and "STUCK" not in status.output


def test_a_workers_copy_stuck_is_shown_under_its_worker_and_skipped_for_all(
    poisoned: str, settings: Settings
) -> None:
    tag = poisoned
    seqs = _publish(settings, [f"a-{tag}", f"poison-{tag}"])
    assert _run_service_until_stuck(settings, worker=1) == seqs[1]

    status = _cli("status")
    assert status.exit_code == 1, status.output
    assert "poisoned: no projection yet" in status.output  # worker 0 never ran here
    assert f"poisoned (worker 1): checkpoint {seqs[0]}" in status.output
    assert f"STUCK at seq {seqs[1]} (identity.user_created.v1)" in status.output
    assert f"cvops projections skip poisoned {seqs[1]} --reason TEXT" in status.output
    rows = {row["service"]: row for row in json.loads(_cli("status", "--json").output)}
    assert rows["poisoned (worker 1)"]["stuck"]["seq"] == seqs[1]
    assert rows["poisoned (worker 1)"]["file"].endswith("poisoned-w1.sqlite")

    skipped = _cli("skip", "poisoned", str(seqs[1]), "--reason", "seed beyond 64 bits")
    assert skipped.exit_code == 0, skipped.output
    status = _cli("status")
    assert f"poisoned (worker 1): checkpoint {seqs[0]}, skipped seqs: {seqs[1]}" in status.output
