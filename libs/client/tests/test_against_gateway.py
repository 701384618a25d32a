"""The `cvops` CLI against the real gateway process on a throwaway NATS.

Starts ``python -m cvops.gateway`` on an empty event log so it bootstraps an admin and
writes ``<home>/admin.credentials``; then logs in, adds and lists users, asks whoami.
Skipped when the gateway is not installed.
"""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import msgspec
import pytest
from click.testing import CliRunner, Result

pytest.importorskip("cvops.gateway")

from cvops.client.cli import cli
from cvops.contracts.api import SystemView, TokenView, UserView
from cvops.core import Settings, dump_rows, load_settings, sqlite_engine
from cvops.core.natsd import start_nats, stop_process
from cvops.testing.core import start_service

pytestmark = pytest.mark.slow


@dataclass
class LiveGateway:
    url: str
    credentials: dict[str, str]
    settings: Settings
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, credentials: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gateway exited early:\n{log.read_text()[-3000:]}")
        if credentials.exists():
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
        time.sleep(0.2)
    pytest.fail(f"gateway did not come up in 90 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """A gateway process on its own empty NATS (bootstrap needs a log with no user)."""
    root = tmp_path_factory.mktemp("client-live")
    nats_proc, nats_port = start_nats(root / "nats", port=-1, log_file=root / "nats.log")
    gateway_proc = None
    try:
        port = _free_port()
        settings = load_settings(
            {},
            nats_url=f"nats://127.0.0.1:{nats_port}",
            home=str(root / "home"),
            gateway_port=port,
        )
        url = f"http://127.0.0.1:{port}"
        log = root / "gateway.log"
        gateway_proc = start_service("cvops.gateway", settings, log)
        credentials = root / "home" / "admin.credentials"
        _wait_until_up(url, credentials, gateway_proc, log)
        pairs = (line.split("=", 1) for line in credentials.read_text().splitlines() if line)
        yield LiveGateway(url=url, credentials=dict(pairs), settings=settings, process=gateway_proc)
    finally:
        if gateway_proc is not None:
            stop_process(gateway_proc)
        stop_process(nats_proc)
        shutil.rmtree(root, ignore_errors=True)


Invoke = Callable[..., Result]


@pytest.fixture
def cvops(live_gateway: LiveGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """The CLI in-process, over real HTTP, with its own config file."""
    monkeypatch.setenv("CVOPS_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.setenv("CVOPS_URL", live_gateway.url)
    monkeypatch.delenv("CVOPS_TOKEN", raising=False)

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), input=input)

    return invoke


def test_credentials_file_names_this_gateway(live_gateway: LiveGateway) -> None:
    creds = live_gateway.credentials
    assert creds["username"] == "admin" and creds["url"] == live_gateway.url
    assert creds["password"] and creds["token"]


def test_admin_logs_in_with_the_bootstrapped_password(
    cvops: Invoke, live_gateway: LiveGateway, tmp_path: Path
) -> None:
    password = live_gateway.credentials["password"]
    login = cvops("login", "--username", "admin", input=f"{password}\n")
    assert login.exit_code == 0, login.output
    assert f"logged in to {live_gateway.url} as admin (admin)" in login.stdout
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600

    me = cvops("whoami", "--json")
    assert me.exit_code == 0, me.output
    assert msgspec.json.decode(me.stdout, type=UserView).role == "admin"


def test_admin_adds_a_user_who_logs_in_with_their_role(
    cvops: Invoke, live_gateway: LiveGateway
) -> None:
    assert cvops("login", "--token", live_gateway.credentials["token"]).exit_code == 0
    added = cvops("users", "add", "alice", "--role", "engineer", "--password", "alice-pw-12345")
    assert added.exit_code == 0, added.output
    assert "created user alice (engineer)" in added.stdout

    again = cvops("users", "add", "alice", "--role", "viewer", "--password", "alice-pw-12345")
    assert again.exit_code == 1 and again.stderr.startswith("error: conflict: ")

    table = cvops("users", "list")
    assert table.exit_code == 0 and "alice" in table.stdout and "engineer" in table.stdout
    listed = msgspec.json.decode(cvops("users", "list", "--json").stdout, type=list[UserView])
    assert {(u.username, u.role) for u in listed} >= {("admin", "admin"), ("alice", "engineer")}

    assert cvops("login", "-u", "alice", "-p", "alice-pw-12345").exit_code == 0
    me = msgspec.json.decode(cvops("whoami", "--json").stdout, type=UserView)
    assert (me.username, me.role) == ("alice", "engineer")

    forbidden = cvops("users", "list")
    assert forbidden.exit_code == 1 and forbidden.stderr.startswith("error: forbidden")


def test_wrong_password_and_no_token_are_exit_1_without_traceback(cvops: Invoke) -> None:
    wrong = cvops("login", "-u", "admin", "-p", "not-the-password")
    assert wrong.exit_code == 1
    assert wrong.stderr.startswith("error: not_authenticated")
    anonymous = cvops("whoami")
    assert anonymous.exit_code == 1 and "cvops login" in anonymous.stderr
    assert "Traceback" not in wrong.output + anonymous.output


def test_api_tokens_round_trip_and_logout_revokes_the_session(
    cvops: Invoke, live_gateway: LiveGateway, tmp_path: Path
) -> None:
    assert cvops("login", "-u", "admin", "-p", live_gateway.credentials["password"]).exit_code == 0
    created = cvops("tokens", "create", "--label", "ci", "--json")
    assert created.exit_code == 0, created.output
    token = msgspec.json.decode(created.stdout)
    listed = msgspec.json.decode(cvops("tokens", "list", "--json").stdout, type=list[TokenView])
    assert token["token_id"] in {t.token_id for t in listed}
    assert cvops("tokens", "revoke", token["token_id"]).exit_code == 0
    assert cvops("login", "--token", token["token"]).exit_code == 1  # revoked: not stored

    session = msgspec.json.decode((tmp_path / "config.json").read_bytes())["token"]
    assert cvops("logout").exit_code == 0
    with httpx.Client(base_url=live_gateway.url) as http:
        after = http.get("/auth/me", headers={"Authorization": f"Bearer {session}"})
    assert after.status_code == 401


def test_health_live(cvops: Invoke) -> None:
    result = cvops("health", "--live", "--json")
    assert result.exit_code == 0 and msgspec.json.decode(result.stdout)["status"] == "ok"


def test_status_shows_the_gateway_instance_streams_and_hosts(
    cvops: Invoke, live_gateway: LiveGateway
) -> None:
    """``cvops status``: what the gateway process wrote into the presence bucket, as JSON
    for scripts and as tables for people."""
    assert cvops("login", "--token", live_gateway.credentials["token"]).exit_code == 0
    for _ in range(50):  # ready once it has caught up (it says so within a second)
        result = cvops("status", "--json")
        assert result.exit_code == 0, result.output
        system = msgspec.json.decode(result.stdout, type=SystemView)
        (gateway,) = [s for s in system.services if s.name == "gateway"]
        if gateway.status == "up":
            break
        time.sleep(0.2)
    (instance,) = gateway.instances
    assert instance.pid == live_gateway.process.pid and instance.health == "ready"
    assert {s.name for s in system.streams} == {"CVOPS_EVENTS", "CVOPS_IDENTITY"}
    assert [h.host for h in system.hosts] == [instance.host]
    registry = next(s for s in system.services if s.name == "registry")
    assert registry.status == "down" and registry.instances == []

    table = cvops("status")
    assert table.exit_code == 0, table.output
    assert "gateway" in table.stdout and instance.instance in table.stdout
    assert "no instance reports" in table.stdout and "CVOPS_EVENTS" in table.stdout


def test_projections_rebuild_of_the_stopped_gateway_gives_the_same_rows(
    cvops: Invoke, live_gateway: LiveGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs last in this file: it stops the gateway, then replays its projections (the
    log's, and identity's from its own stream)."""
    from cvops.gateway import projection
    from cvops.gateway.identity import projection as identity

    settings = live_gateway.settings
    monkeypatch.setenv("CVOPS_NATS_URL", settings.nats_url)
    monkeypatch.setenv("CVOPS_HOME", settings.home)
    stop_process(live_gateway.process)
    tables: tuple[tuple[str, ModuleType, str | None], ...] = (
        ("gateway", projection, None),  # these tests write identity only
        ("gateway-identity", identity, "users"),
    )
    for service, module, table in tables:
        db = module.db_path(settings)
        engine = sqlite_engine(db)
        before = dump_rows(engine, module.metadata)
        engine.dispose()

        result = cvops("projections", "rebuild", service)

        assert result.exit_code == 0, result.output
        assert f"rebuilt {service} projection {db}: " in result.stdout
        engine = sqlite_engine(db)
        assert dump_rows(engine, module.metadata) == before
        assert table is None or before[table]  # the rows compared are not all empty
        engine.dispose()
