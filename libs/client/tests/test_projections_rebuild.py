"""`cvops projections rebuild` on a real nats-server: entry point lookup, pid guard, replay."""

from __future__ import annotations

import asyncio
import os
import re
import socket
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
from cvops.core import IDENTITY_STREAM, Bus, Settings, nats_auth, services

# A service's projection module, as its entry point would name it.
PROJECTION_MODULE = '''
"""Test projection: one row per user created."""
from pathlib import Path

from sqlalchemy import Column, MetaData, String, Table

from cvops.contracts.identity import UserCreated

STREAM = "CVOPS_IDENTITY"  # identity's events: their own stream


class Users:
    name = "demo-users"

    def __init__(self):
        self.metadata = MetaData()
        self.users = Table("users", self.metadata, Column("username", String, primary_key=True))

    def apply(self, session, event, seq):
        if isinstance(event, UserCreated):
            session.execute(self.users.insert().values(username=event.username))


projection = Users()


def db_path(settings):
    return Path(settings.home) / "demo" / "projection.sqlite"


def copies(settings):  # other workers' files of the same projection
    return sorted((Path(settings.home) / "demo").glob("projection-w*.sqlite"))
'''


@pytest.fixture
def demo_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    """Install a ``demo`` projection entry point and point CVOPS_* at the test's NATS."""
    module = f"cvops_demo_projection_{uuid.uuid4().hex[:8]}"
    code_dir = tmp_path / "code"
    code_dir.mkdir()
    (code_dir / f"{module}.py").write_text(textwrap.dedent(PROJECTION_MODULE))
    monkeypatch.syspath_prepend(str(code_dir))
    point = EntryPoint(name="demo", value=module, group=rebuild.ENTRY_POINT_GROUP)
    monkeypatch.setattr(rebuild, "projection_entry_points", lambda: {"demo": point})
    monkeypatch.setenv("CVOPS_NATS_URL", settings.nats_url)
    monkeypatch.setenv("CVOPS_HOME", settings.home)
    Path(settings.home).mkdir(parents=True)  # an existing home: rebuild never makes one
    return settings


def _publish_users(settings: Settings, names: list[str]) -> None:
    async def publish() -> None:
        bus = await Bus.connect(settings, name="test-rebuild")
        try:
            for name in names:
                stamp = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id=name)
                await bus.publish(
                    UserCreated(
                        **stamp.envelope(name), username=name, role="viewer", password_hash="h"
                    )
                )
        finally:
            await bus.close()

    asyncio.run(publish())


def _rebuild(*extra: str) -> Result:
    return CliRunner().invoke(cli, ["projections", "rebuild", "demo", *extra])


def _usernames(settings: Settings) -> set[str]:
    path = Path(settings.home) / "demo" / "projection.sqlite"
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("select username from users")}


def test_rebuild_replays_the_log_into_the_services_projection(demo_service: Settings) -> None:
    names = [f"rb-{uuid.uuid4().hex[:6]}" for _ in range(3)]
    _publish_users(demo_service, names)

    result = _rebuild()

    assert result.exit_code == 0, result.output
    applied = re.search(r": (\d+) events applied", result.stdout)
    assert applied and int(applied.group(1)) >= 3
    assert set(names) <= _usernames(demo_service)

    again = _rebuild()  # a second rebuild gives the same rows
    assert again.exit_code == 0
    assert set(names) <= _usernames(demo_service)


def test_rebuild_deletes_the_other_workers_copies(demo_service: Settings) -> None:
    _publish_users(demo_service, [f"rb-{uuid.uuid4().hex[:6]}"])
    demo = Path(demo_service.home) / "demo"
    demo.mkdir()
    stale = [demo / "projection-w1.sqlite", demo / "projection-w1.sqlite-wal"]
    for path in stale:
        path.write_bytes(b"an older copy")

    result = _rebuild()

    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale)
    assert (demo / "projection.sqlite").exists()


def test_rebuild_refuses_while_the_service_runs_unless_forced(demo_service: Settings) -> None:
    pid_file = Path(demo_service.home) / "run" / "demo.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))  # a live pid: this test process

    refused = _rebuild()
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: service_running: demo is running (pid ")
    assert not (Path(demo_service.home) / "demo" / "projection.sqlite").exists()

    forced = _rebuild("--force")
    assert forced.exit_code == 0, forced.output


def test_a_stale_pid_file_does_not_block_the_rebuild(demo_service: Settings) -> None:
    pid_file = Path(demo_service.home) / "run" / "demo.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text("999999999")
    assert _rebuild().exit_code == 0


def test_an_unknown_service_is_a_usage_error(demo_service: Settings) -> None:
    result = CliRunner().invoke(cli, ["projections", "rebuild", "nosuch"])
    assert result.exit_code == 2
    assert "no projection named 'nosuch' (known: demo)" in result.output


def test_rebuild_without_nats_exits_3(demo_service: Settings, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"nats://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("CVOPS_NATS_URL", url)
    result = _rebuild()
    assert result.exit_code == 3
    assert result.stderr.strip() == f"error: cannot reach NATS at {url} — is `./justw up` running?"


def test_every_registered_service_with_a_projection_declares_its_entry_point() -> None:
    """The workspace installs every service, so each one that keeps a projection (per
    cvops.core.services) must be rebuildable by its name, and nothing else is."""
    points = rebuild.projection_entry_points()
    expected = {s.name for s in services.SERVICES if s.projection and not s.planned}
    # the services that hold identity keep it in a second file, from its own stream
    holders = {name for name, access in nats_auth.SERVICES.items() if access.reads_identity}
    assert set(points) == expected | {f"{name}-identity" for name in holders}
    for name in expected:
        assert points[name].value == f"{services.get(name).module}.projection"  # type: ignore[union-attr]
    for name in holders:
        assert points[f"{name}-identity"].load().STREAM == IDENTITY_STREAM


def test_a_registered_service_without_an_entry_point_is_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rebuild, "projection_entry_points", lambda: {})
    planned = [s.name for s in services.SERVICES if s.planned]
    for name in planned:
        result = CliRunner().invoke(cli, ["projections", "rebuild", name])
        assert result.exit_code == 2
        assert f"{name} is planned, services/{name} does not exist yet" in result.output
    missing = CliRunner().invoke(cli, ["projections", "rebuild", "inference-router"])
    assert missing.exit_code == 2
    assert (
        "cvops.inference_router is installed but declares no cvops.projections entry point"
        in " ".join(missing.output.split())
    )
