"""The launcher's supervisor: a killed process comes back, counted; `stop` holds one down;
`down` stops the supervisor first and does not wait past its grace for a stuck service."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cvops.core import local
from cvops.core.settings import load_settings

# Stand-ins found as ``cvops.<name>`` through PYTHONPATH (the launcher's cmdline check sees
# ``cvops.<name>``): one that sleeps, one that ignores SIGTERM like a stuck service.
SLEEPER = "import time\nwhile True:\n    time.sleep(1)\n"
STUCK = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + SLEEPER


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(tmp_path: Path, grace_s: float = 10.0) -> dict[str, str]:
    fake = tmp_path / "fake"
    for name, code in (("reporter", SLEEPER), ("benchmarker", STUCK)):
        (fake / "cvops" / name).mkdir(parents=True)
        (fake / "cvops" / name / "__main__.py").write_text(code)
        (fake / "cvops" / name / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    keys = ["NATS_PORT", "NATS_MONITOR_PORT", "REPORTER_METRICS_PORT", "BENCHMARKER_METRICS_PORT"]
    env.update({f"CVOPS_{k}": str(p) for k, p in zip(keys, _free_ports(len(keys)), strict=True)})
    env["CVOPS_HOME"] = str(tmp_path / "home")
    env["CVOPS_STOP_GRACE_S"] = str(grace_s)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(fake), env.get("PYTHONPATH")]))
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cvops.core.local", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status(env: dict[str, str]) -> dict[str, dict[str, object]]:
    return {row["process"]: row for row in json.loads(_cli(env, "status", "--json").stdout)}


def _pids(layout: local.Layout) -> dict[str, int]:
    names = (local.SUPERVISOR, local.NATS, *local.SERVICES)
    return {n: p for n in names if (p := local.recorded_pid(layout, n)) is not None}


def _wait_for(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def _cleanup(env: dict[str, str], layout: local.Layout, seen: set[int]) -> None:
    """`down`, then SIGKILL any pid the test saw that still runs."""
    seen |= set(_pids(layout).values())
    _cli(env, "down")
    for pid in seen:
        if local.process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_restart_delay_doubles_up_to_30_s_and_resets_after_a_minute_up() -> None:
    delays, delay = [], 0.0
    for _ in range(7):  # each restart dies again within a second
        delay = local.restart_delay(delay, 0.5)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert local.restart_delay(30.0, local.STABLE_AFTER_S) == 1.0  # it stayed up a minute
    assert local.restart_delay(8.0, None) == 1.0  # started by `up`, not by the supervisor


@pytest.mark.faults  # a kill -9 scenario: ./justw faults (tests/faults/README.md)
def test_a_killed_service_and_nats_come_back_counted_and_stop_holds_one_down(
    tmp_path: Path,
) -> None:
    env = _env(tmp_path)
    layout = local.Layout.of(load_settings(env))
    seen: set[int] = set()
    try:
        started = _cli(env, "up", "--services", "reporter", "--no-wait")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "nats: started" in started.stdout and "supervisor: started" in started.stdout
        before = _pids(layout)
        seen |= set(before.values())
        rows = _status(env)
        assert rows["supervisor"]["alive"] and rows["reporter"]["restarts"] == 0

        os.kill(before["reporter"], signal.SIGKILL)
        os.kill(before["nats"], signal.SIGKILL)

        def back() -> bool:
            rows = _status(env)
            return all(
                rows[n]["alive"] and rows[n]["restarts"] == 1 and rows[n]["pid"] != before[n]
                for n in ("nats", "reporter")
            )

        t0 = time.monotonic()
        assert _wait_for(back, 10), (_status(env), layout.log_file("supervisor").read_text())
        took = time.monotonic() - t0
        assert took < 6, took
        assert _status(env)["nats"]["healthy"]
        assert "restarts" in _cli(env, "status").stdout  # the table's column
        seen |= set(_pids(layout).values())

        held = _cli(env, "stop", "reporter")
        assert "reporter: stopped, held" in held.stdout, held.stdout + held.stderr
        time.sleep(2.5)  # past the first restart delay: still down
        assert not _status(env)["reporter"]["alive"]
        assert _cli(env, "up", "--services", "reporter", "--no-wait").returncode == 0
        assert _status(env)["reporter"]["alive"]
        seen |= set(_pids(layout).values())

        stopped = _cli(env, "down")
        assert stopped.stdout.splitlines()[0] == "supervisor: stopped", stopped.stdout
        time.sleep(1.5)  # nothing comes back after `down`
        assert not [p for p in seen if local.process_alive(p)]
        assert not list(layout.run.glob("*.pid")) and not layout.supervisor_state.exists()
    finally:
        _cleanup(env, layout, seen)


def test_down_kills_a_service_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    grace = 2.0
    env = _env(tmp_path, grace_s=grace)
    layout = local.Layout.of(load_settings(env))
    seen: set[int] = set()
    try:
        started = _cli(env, "up", "--services", "reporter,benchmarker", "--no-wait")
        assert started.returncode == 0, started.stdout + started.stderr
        seen |= set(_pids(layout).values())
        assert len(seen) == 4  # supervisor, nats, reporter, benchmarker

        t0 = time.monotonic()
        stopped = _cli(env, "down")
        took = time.monotonic() - t0

        assert "benchmarker: killed" in stopped.stdout, stopped.stdout
        assert "reporter: stopped" in stopped.stdout and "nats: stopped" in stopped.stdout
        assert took < grace + 3, (took, stopped.stdout)
        assert not [p for p in seen if local.process_alive(p)]
    finally:
        _cleanup(env, layout, seen)
