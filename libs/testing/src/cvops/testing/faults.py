"""Helpers for the fault suite (tests/faults): a nats-server that can be killed -9 and started
again on the same port and store, service processes killed by PID, the whole log read back,
and the two checks every fault ends with — no event id twice, each projection rebuilt equal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nats.js.api import DeliverPolicy

from cvops.contracts import Event, decode
from cvops.core import STREAM, Bus, ProjectionRunner, Settings, dump_rows, load_settings
from cvops.core.bus import STREAMS
from cvops.core.natsd import start_nats, stop_process
from cvops.core.projection import Projection, quarantine_path, read_state, rebuild_projection
from cvops.testing.core import start_service
from cvops.testing.gateway_process import free_port


class KillableNats:
    """A throwaway ``nats-server -js`` (fsync always) on a fixed port, so it can be killed -9
    and started again where its clients reconnect, on the same store."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.log = store / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> KillableNats:
        self.proc, port = start_nats(self.store, port=self.port, log_file=self.log)
        assert port == self.port
        return self

    def kill9(self) -> None:
        """SIGKILL by PID: no flush, no goodbye to clients."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def settings(self, home: Path, **overrides: Any) -> Settings:
        """Settings of a service (or a test client) on this server, home ``home``."""
        return load_settings({}, nats_url=self.url, home=str(home), log_json=True, **overrides)


@dataclass
class Service:
    """``python -m <module>`` as a child process; each start appends to the same log."""

    module: str
    settings: Settings
    log: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    kills: int = 0

    def start(self) -> Service:
        self.proc = start_service(self.module, self.settings, self.log, **self.env)
        return self

    def kill9(self) -> None:
        """SIGKILL by PID, then reap it."""
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after 30 s; the exit code (None: it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@contextlib.contextmanager
def services(*procs: Service) -> Iterator[tuple[Service, ...]]:
    """Stop (SIGTERM, then SIGKILL) every process started under it, even on failure."""
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


async def read_log(bus: Bus, stream: str = STREAM) -> list[tuple[int, Event]]:
    """Every event of ``stream`` from sequence 1 with its sequence (an ordered consumer)."""
    last = await bus.last_seq(stream)
    out: list[tuple[int, Event]] = []
    if last == 0:
        return out
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        seq = int(msg.metadata.sequence.stream)
        try:
            event = decode(msg.data)
        except Exception:  # a poison event: not an event, so no id to count
            event = None
        if isinstance(event, Event):
            out.append((seq, event))
        if seq >= last:
            done.set()

    sub = await bus.js.subscribe(
        STREAMS[stream],
        stream=stream,
        cb=on_msg,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await sub.unsubscribe()
    return out


def repeated_ids(log: list[tuple[int, Event]]) -> dict[str, int]:
    """Event ids that appear more than once in the log, with their counts (empty: none)."""
    counts = Counter(str(e.event_id) for _, e in log)
    return {i: n for i, n in counts.items() if n > 1}


async def wait_checkpoint(
    db: Path, name: str, subjects: list[str], bus: Bus, timeout: float = 30
) -> int:
    """Wait until the projection file ``db`` has applied the newest event on ``subjects``."""
    want = max([await bus.last_subject_seq(s) for s in subjects] + [0])
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(db, name)
        if state is not None and state.checkpoint >= want:
            return want
        if time.monotonic() > deadline:
            at = state.checkpoint if state else None
            raise AssertionError(f"{name} at {at}, not at {want} after {timeout} s")
        await asyncio.sleep(0.1)


async def rebuilt_equals_live(
    bus: Bus, projection: Projection, live: Path, subjects: list[str], scratch: Path
) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, list[tuple[Any, ...]]]]:
    """The live projection's rows (its service stopped) and the rows of a rebuild from the log
    into a new file, as ``(live, rebuilt)``."""
    engine = ProjectionRunner(None, projection, live).engine
    before = dump_rows(engine, projection.metadata)
    engine.dispose()
    fresh = scratch / f"{live.stem}.rebuilt.sqlite"
    if quarantine_path(live).exists():  # the operator's skips hold for the rebuild too
        shutil.copyfile(quarantine_path(live), quarantine_path(fresh))
    await rebuild_projection(bus, projection, fresh, subjects)
    engine = ProjectionRunner(None, projection, fresh).engine
    after = dump_rows(engine, projection.metadata)
    engine.dispose()
    return before, after


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A size-limited tmpfs at ``mountpoint`` (needs root), unmounted on exit."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
        check=True,
        capture_output=True,
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True)


def resize_tmpfs(mountpoint: Path, size: str) -> None:
    """Give a tmpfs more (or less) room in place: its files stay."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size}", str(mountpoint)], check=True, capture_output=True
    )


def can_mount_tmpfs(scratch: Path) -> str | None:
    """None when a tmpfs can be mounted here; else why not (for a skip reason)."""
    probe = scratch / "tmpfs-probe"
    probe.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        return "no mount binary"
    if done.returncode != 0:
        return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
    subprocess.run(["umount", str(probe)], check=False, capture_output=True)
    return None
