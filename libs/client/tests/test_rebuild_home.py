"""`cvops projections rebuild` finds the home as the launcher does, never makes a new one,
and checks for the running service in that home whatever the working directory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _unused_nats_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"nats://127.0.0.1:{s.getsockname()[1]}"


def _rebuild(cwd: Path, home: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    env["CVOPS_NATS_URL"] = _unused_nats_url()
    if home is not None:
        env["CVOPS_HOME"] = home
    return subprocess.run(
        [sys.executable, "-m", "cvops.client", "projections", "rebuild", "registry"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_outside_a_home_it_refuses_naming_where_it_looked_and_creates_nothing(
    tmp_path: Path,
) -> None:
    result = _rebuild(tmp_path, None)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(f"error: no_cvops_home: no cvops home at {tmp_path}/.cvops")
    assert "CVOPS_HOME is not set" in result.stderr
    assert not (tmp_path / ".cvops").exists()

    missing = tmp_path / "nowhere"
    named = _rebuild(tmp_path, str(missing))
    assert named.returncode == 1
    assert f"no cvops home at {missing} (CVOPS_HOME)" in named.stderr
    assert not missing.exists()


@pytest.mark.parametrize("relative", [False, True])
def test_the_running_check_reads_the_named_home_from_anywhere(
    tmp_path: Path, relative: bool
) -> None:
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    (home / "nats").mkdir()
    (home / "nats" / "nats.conf").write_text("")  # what the launcher's home has
    (home / "run" / "registry.pid").write_text(f"{os.getpid()}\n")  # a live process
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd, named = (tmp_path, "home") if relative else (elsewhere, str(home))

    result = _rebuild(cwd, named)

    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("error: service_running: registry is running (pid ")
    assert not (cwd / ".cvops").exists() and not (home / "registry.sqlite").exists()
    assert not (home / "run" / "registry.hold").exists()  # the hold ends with the command
