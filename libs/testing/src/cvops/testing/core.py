"""Pytest plugin: a throwaway ``nats-server -js`` on a free port per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cvops.core.bus import Bus
from cvops.core.natsd import start_nats, stop_process
from cvops.core.settings import Settings, load_settings


class NatsServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, store: Path) -> None:
        self.proc = proc
        self.port = port
        self.store = store

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """One JetStream server for the whole session, store in a temp dir, port picked by it."""
    store = Path(tempfile.mkdtemp(prefix="cvops-nats-"))
    proc, port = start_nats(store, port=-1, sync_always=True, log_file=store / "nats.log")
    try:
        yield NatsServer(proc, port, store)
    finally:
        stop_process(proc)
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def settings(nats_server: NatsServer, tmp_path: Path) -> Settings:
    """Settings pointing at the session's NATS with a per-test home directory."""
    return load_settings({}, nats_url=nats_server.url, home=str(tmp_path / "home"), log_json=True)


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    b = await Bus.connect(settings, name="test")
    try:
        yield b
    finally:
        await b.close()


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a service subprocess that uses ``settings``."""
    env = dict(os.environ)
    for name in Settings.__struct_fields__:
        env[f"CVOPS_{name.upper()}"] = str(getattr(settings, name))
    env.update(extra)
    if _traced():  # a traced test's services are traced too; a benchmark's are not
        env.setdefault("COVERAGE_PROCESS_START", str(Path.cwd() / "pyproject.toml"))
    return env


def _traced() -> bool:
    """Whether coverage is measuring this process."""
    try:
        import coverage
    except ImportError:
        return False
    return coverage.Coverage.current() is not None


def start_service(
    module: str, settings: Settings, log_path: Path, **extra: str
) -> subprocess.Popen[bytes]:
    """Start ``python -m <module>`` as a child process with ``settings``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", module],
        env=service_env(settings, **extra),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
