"""The local launcher: up/status/down as real processes on free ports, nothing left behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cvops.core import local, services
from cvops.core.settings import Settings, load_settings

# A stand-in service on the real runtime (metrics port, bus, graceful SIGTERM), found as
# ``cvops.reporter`` through PYTHONPATH: it exercises the launcher's service path even
# before the real services exist.
FAKE_SERVICE = '''
"""Test stand-in for a cvops service."""
from cvops.core import run_service


async def main(bus, settings, stop):
    await stop.wait()


run_service("reporter", main)
'''

GATEWAY_RUNNABLE = local.installed("gateway")  # with the gateway, `up` waits for it


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


CRASHING_SERVICE = 'raise SystemExit("converter: cannot start (test)")\n'


def _env(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "fake"
    for name, code in (("reporter", FAKE_SERVICE), ("converter", CRASHING_SERVICE)):
        (fake / "cvops" / name).mkdir(parents=True)
        (fake / "cvops" / name / "__main__.py").write_text(code)
        (fake / "cvops" / name / "__init__.py").write_text("")
    keys = [
        "NATS_PORT",
        "NATS_MONITOR_PORT",
        "GATEWAY_PORT",
        "ROUTER_HTTP_PORT",
        "ROUTER_GRPC_PORT",
        "ROUTER_METRICS_PORT",
        "TRITON_HTTP_PORT",
        "TRITON_GRPC_PORT",
        "TRITON_METRICS_PORT",
        "REGISTRY_METRICS_PORT",
        "TRAINER_METRICS_PORT",
        "CONVERTER_METRICS_PORT",
        "BENCHMARKER_METRICS_PORT",
        "REPORTER_METRICS_PORT",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    env.update({f"CVOPS_{k}": str(p) for k, p in zip(keys, _free_ports(len(keys)), strict=True)})
    env["CVOPS_HOME"] = str(tmp_path / "home")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake), env.get("PYTHONPATH")]))
    return env


def _cli(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvops.core.local", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _status(env: dict[str, str]) -> dict[str, dict[str, object]]:
    out = _cli(env, "status", "--json")
    return {row["process"]: row for row in json.loads(out.stdout)}


def _settings(env: dict[str, str]) -> Settings:
    return load_settings(env)


def _cleanup(env: dict[str, str], layout: local.Layout, pids: list[int]) -> None:
    """Stop whatever a failed test left running: `down`, then any pid it knew of."""
    known = [p for n in (local.NATS, *local.SERVICES) if (p := local.recorded_pid(layout, n))]
    _cli(env, "down")
    for pid in {*pids, *known}:
        if local.process_alive(pid):
            os.kill(pid, 9)


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    env = _env(tmp_path)
    layout = local.Layout.of(_settings(env))
    services = ["reporter", "gateway"] if GATEWAY_RUNNABLE else ["reporter"]
    pids: list[int] = []
    try:
        first = _cli(env, "up", "--services", ",".join(services))
        assert first.returncode == 0, first.stdout + first.stderr
        assert "nats: started" in first.stdout
        rows = _status(env)
        pids = [int(rows[n]["pid"]) for n in ("nats", *services)]  # type: ignore[arg-type]
        assert all(local.process_alive(p) for p in pids)
        assert rows["nats"]["healthy"] and rows["nats"]["port"] == int(env["CVOPS_NATS_PORT"])
        assert (layout.home / "nats" / "jetstream").is_dir()
        assert "sync_interval: always" in (layout.home / "nats" / "nats.conf").read_text()
        deadline = time.monotonic() + 30  # the service's metrics endpoint comes up
        while not _status(env)["reporter"]["healthy"] and time.monotonic() < deadline:
            time.sleep(0.3)
        assert _status(env)["reporter"]["healthy"], (layout.logs / "reporter.log").read_text()
        if GATEWAY_RUNNABLE:
            assert rows["gateway"]["healthy"]
            assert "admin credentials" in first.stdout

        again = _cli(env, "up", "--services", ",".join(services))
        assert again.returncode == 0, again.stderr
        assert "nats: already running" in again.stdout
        assert "reporter: already running" in again.stdout
        assert [int(_status(env)[n]["pid"]) for n in ("nats", *services)] == pids  # type: ignore[arg-type]
        assert "admin credentials" not in again.stdout

        stopped = _cli(env, "down")
        assert stopped.returncode == 0, stopped.stderr
        assert "reporter: stopped" in stopped.stdout  # SIGTERM was enough: graceful
        assert not any(local.process_alive(p) for p in pids)
        assert not list(layout.run.glob("*.pid"))
        assert _cli(env, "status").returncode == 1
    finally:
        _cleanup(env, layout, pids)


def test_a_stale_pid_file_is_replaced_and_a_crashing_service_is_reported(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    layout = local.Layout.of(_settings(env))
    layout.run.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    layout.pid_file("nats").write_text(f"{dead.pid}\n")
    try:
        res = _cli(env, "up", "--services", "converter")
        assert "nats: started" in res.stdout
        assert local.running_pid(layout, "nats") not in (None, dead.pid)
        assert res.returncode == 1
        assert "exited right after start: converter" in res.stderr
        assert "cannot start (test)" in res.stderr  # the tail of its log
    finally:
        _cleanup(env, layout, [])
    assert local.running_pid(layout, "nats") is None


def test_only_a_package_with_a_main_module_counts_as_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cvops" / "no_main_svc").mkdir(parents=True)  # a namespace dir, no __main__
    (tmp_path / "cvops" / "runnable_svc").mkdir(parents=True)
    (tmp_path / "cvops" / "runnable_svc" / "__main__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert local.installed("runnable-svc")
    assert not local.installed("no-main-svc")
    assert not local.installed("no-such-service")


def test_unknown_service_names_are_refused(tmp_path: Path) -> None:
    res = _cli(_env(tmp_path), "up", "--services", "registry,bogus")
    assert res.returncode == 2 and "unknown service(s) bogus" in res.stderr


def test_credentials_are_printed_once(tmp_path: Path) -> None:
    layout = local.Layout(tmp_path)
    shown: list[str] = []
    assert not local.print_credentials_once(layout, shown.append)
    creds = tmp_path / local.CREDENTIALS
    creds.write_text("username: admin\npassword: s3cret\n")
    creds.chmod(0o600)
    assert local.print_credentials_once(layout, shown.append)
    assert any("s3cret" in line for line in shown)
    assert not local.print_credentials_once(layout, shown.append)


def test_probes_follow_the_settings() -> None:
    s = load_settings({}, gateway_port=9999, gateway_host="0.0.0.0", nats_monitor_port=1234)
    assert local.probe_of("gateway", s).url == "http://127.0.0.1:9999/health/ready"
    assert local.probe_of("nats", s).url == "http://127.0.0.1:1234/healthz"
    assert local.probe_of("trainer", s).port == s.trainer_metrics_port
    assert local.probe_of("trainer", s).url == f"http://127.0.0.1:{s.trainer_metrics_port}/metrics"
    router = local.probe_of("inference-router", s)
    assert router.url == f"http://127.0.0.1:{s.router_http_port}/v2/health/ready"
    assert router.ports == (s.router_http_port, s.router_grpc_port, s.router_metrics_port)
    assert local.probe_of("trainer", load_settings({}, trainer_metrics_port=0)).url is None
    assert tuple(spec.name for spec in services.SERVICES) == local.SERVICES
    ext = load_settings({}, nats_url="nats://n1:4333,nats://n2:4333")
    assert local.probe_of("nats", ext) == local.Probe(4333, None)


def test_up_waits_for_a_slow_first_start_and_then_shows_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However long the gateway takes (here: 6 polls answered 503), `up` waits for it while
    its process lives, says it is still waiting, and shows the credentials once after."""
    layout = local.Layout.of(load_settings({"CVOPS_HOME": str(tmp_path)}))
    layout.run.mkdir(parents=True)
    layout.pid_file("gateway").write_text(f"{os.getpid()}\n")  # a live process
    polls: list[int] = []

    class SlowGateway(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            polls.append(1)
            if len(polls) == 6:  # the first start ends: credentials, then ready
                (layout.home / local.CREDENTIALS).write_text("username=admin\npassword=pw\n")
            self.send_response(200 if len(polls) >= 6 else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowGateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = load_settings(
        {"CVOPS_HOME": str(tmp_path), "CVOPS_GATEWAY_PORT": str(server.server_address[1])}
    )
    monkeypatch.setattr(local, "GATEWAY_PATIENCE_NOTE_S", 0.0)
    said: list[str] = []
    try:
        local.wait_gateway(settings, layout, said.append)
    finally:
        server.shutdown()
        server.server_close()
    assert len(polls) == 6
    assert len([s for s in said if s.startswith("gateway: still starting")]) == 5
    shown: list[str] = []
    assert local.print_credentials_once(layout, shown.append)
    assert "password=pw" in "\n".join(shown)
    assert not local.print_credentials_once(layout, shown.append)  # once only


def test_waiting_for_the_gateway_ends_when_its_process_exits(tmp_path: Path) -> None:
    settings = load_settings(
        {"CVOPS_HOME": str(tmp_path), "CVOPS_GATEWAY_PORT": str(_free_ports(1)[0])}
    )
    layout = local.Layout.of(settings)
    layout.logs.mkdir(parents=True)
    layout.log_file("gateway").write_text("gateway: cannot bind\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    layout.run.mkdir(parents=True)
    layout.pid_file("gateway").write_text(f"{dead.pid}\n")
    with pytest.raises(local.LaunchError, match="cannot bind"):
        local.wait_gateway(settings, layout, print)


def test_background_services_start_below_the_normal_cpu_priority(tmp_path: Path) -> None:
    """The reporter renders charts nobody waits on: ``up`` starts it niced, so the services
    that answer requests keep the cores under load (the same pid: ``nice`` execs)."""
    assert services.get("reporter").nice > 0  # type: ignore[union-attr]
    assert all(s.nice == 0 for s in services.SERVICES if s.name in ("gateway", "inference-router"))
    niced = local.spawn(["sleep", "30"], tmp_path / "sleep.log", dict(os.environ), nice=7)
    plain = local.spawn(["sleep", "30"], tmp_path / "plain.log", dict(os.environ))
    try:
        comm = Path(f"/proc/{niced.pid}/comm")
        deadline = time.monotonic() + 5
        while comm.read_text().strip() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert comm.read_text().strip() == "sleep"
        priority = os.getpriority(os.PRIO_PROCESS, niced.pid)
        assert priority == os.getpriority(os.PRIO_PROCESS, plain.pid) + 7
    finally:
        for proc in (niced, plain):
            proc.kill()
            proc.wait()
