"""First start on an empty log: one admin, one credentials file (0600), printed once."""

from __future__ import annotations

import shutil
import stat
import threading
from pathlib import Path

import httpx
import pytest

from cvops.core import load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.gateway.identity.service import CREDENTIALS_FILE
from cvops.testing.gateway import RunningGateway


@pytest.fixture
def empty_nats(tmp_path: Path):
    """A JetStream server of its own: bootstrap needs a log with no user in it."""
    store = tmp_path / "nats"
    proc, port = start_nats(store, port=-1, sync_always=True, log_file=tmp_path / "nats.log")
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        shutil.rmtree(store, ignore_errors=True)


def _credentials(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_two_gateways_starting_at_once_bootstrap_one_admin_exactly_once(
    empty_nats: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateways = [
        RunningGateway(load_settings({}, nats_url=empty_nats, home=str(tmp_path / name)))
        for name in ("a", "b")
    ]
    starting = [threading.Thread(target=g.start) for g in gateways]
    for t in starting:
        t.start()
    for t in starting:
        t.join(60)
    try:
        written = [g for g in gateways if (Path(g.settings.home) / CREDENTIALS_FILE).exists()]
        assert len(written) == 1
        winner = written[0]
        path = Path(winner.settings.home) / CREDENTIALS_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        creds = _credentials(path)
        assert list(creds) == ["username", "password", "token", "url"]
        assert creds["username"] == "admin" and creds["url"] == winner.url
        out = capsys.readouterr().out  # the service's log: where the file is, no secret
        assert out.count("cvops admin created") == 1 and str(path) in out
        assert creds["password"] not in out and creds["token"] not in out

        with httpx.Client(base_url=gateways[0].url) as client:  # either gateway will do
            login = client.post(
                "/auth/login", json={"username": "admin", "password": creds["password"]}
            )
            assert login.status_code == 200 and login.json()["role"] == "admin"
            users = client.get("/users", headers={"Authorization": f"Bearer {creds['token']}"})
            assert [u["username"] for u in users.json()] == ["admin"]
    finally:
        for g in gateways:
            g.stop()

    before = path.read_text(), path.stat().st_mtime_ns
    again = RunningGateway(load_settings({}, nats_url=empty_nats, home=winner.settings.home))
    again.start()
    try:
        with httpx.Client(base_url=again.url) as client:
            users = client.get("/users", headers={"Authorization": f"Bearer {creds['token']}"})
        assert [u["username"] for u in users.json()] == ["admin"]
    finally:
        again.stop()
    assert (path.read_text(), path.stat().st_mtime_ns) == before
    assert "cvops admin created" not in capsys.readouterr().out
