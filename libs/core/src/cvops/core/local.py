"""Local launcher: ``python -m cvops.core.local up|down|status`` (what ``./justw up`` runs).

``up`` starts the embedded NATS (unless ``CVOPS_NATS_URL`` names a server) and every
installed service as detached processes with pid files under ``.cvops/run`` and logs
under ``.cvops/logs``, waits for the gateway, prints the admin credentials once, and leaves
a supervisor running that restarts whichever of them dies. ``down`` stops the supervisor,
then the services, then NATS; ``status`` shows each one's health and restarts.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cvops.core import services
from cvops.core.nats_auth import authorization_block, load_or_create_passwords
from cvops.core.nats_auth import credentials as nats_credentials
from cvops.core.natsd import nats_server_binary, start_nats, write_config
from cvops.core.services import module_of
from cvops.core.settings import Settings, load_settings

# the names of the services, in the order they start (and stop in reverse); the list
# itself, with each one's ports and health probe, is cvops.core.services
SERVICES = services.names()
NATS = "nats"
# not started by the launcher: the inference router supervises it and writes its pid file
TRITON = "tritonserver"
# The gateway serves only once it has caught up with the log (its own limit: 600 s).
GATEWAY_START_TIMEOUT_S = 900.0
GATEWAY_PATIENCE_NOTE_S = 15.0
# what `down` gives a stopped leader's leftover children (e.g. tritonserver), all at once
LEFTOVER_GRACE_S = 3.0
# the supervisor: pid file run/supervisor.pid, restart counts in run/supervisor.json
SUPERVISOR = "supervisor"
SUPERVISOR_STATE = "supervisor.json"
RESTART_DELAY_S = 1.0  # the first restart of a process waits this long, doubling ...
RESTART_DELAY_MAX_S = 30.0  # ... up to this ...
STABLE_AFTER_S = 60.0  # ... and back to RESTART_DELAY_S once it has stayed up this long
SUPERVISE_POLL_S = 0.25
CREDENTIALS = "admin.credentials"
CREDENTIALS_PRINTED = "credentials.printed"


def installed(service: str) -> bool:
    """Whether ``python -m cvops.<service>`` can run here (a ``__main__`` exists).

    Looks at files only: a service's package is not imported (it may import torch).
    """
    try:
        spec = importlib.util.find_spec(module_of(service))
    except (ModuleNotFoundError, ValueError):
        return False
    if spec is None:
        return False
    return any(
        (Path(loc) / "__main__.py").exists() for loc in spec.submodule_search_locations or []
    )


@dataclass(frozen=True)
class Layout:
    """Where the launcher keeps its state under ``CVOPS_HOME``."""

    home: Path

    @classmethod
    def of(cls, settings: Settings) -> Layout:
        return cls(Path(settings.home).expanduser().resolve())

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def nats_store(self) -> Path:
        return self.home / "nats"

    def pid_file(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def hold_file(self, name: str) -> Path:
        """While it exists the supervisor does not start ``name`` (`stop`, a rebuild)."""
        return self.run / f"{name}.hold"

    @property
    def supervisor_state(self) -> Path:
        return self.run / SUPERVISOR_STATE


# -- processes ------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None


def _marker(name: str) -> str:
    """A string the process's command line contains (guards against reused pids)."""
    markers = {
        NATS: "nats-server",
        TRITON: "tritonserver",
        SUPERVISOR: "cvops.core.local supervise",
    }
    return markers.get(name, module_of(name))


def running_pid(layout: Layout, name: str) -> int | None:
    """The pid from ``name``'s pid file if that process still runs and is ours."""
    try:
        pid = int(layout.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    if not process_alive(pid):
        return None
    cmd = _cmdline(pid)
    if cmd is not None and _marker(name) not in cmd:
        return None  # the pid was reused by something else
    return pid


def recorded_pid(layout: Layout, name: str) -> int | None:
    try:
        return int(layout.pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None


def _write_pid(layout: Layout, name: str, pid: int) -> None:
    layout.run.mkdir(parents=True, exist_ok=True)
    tmp = layout.pid_file(name).with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    tmp.replace(layout.pid_file(name))


def _service_env(settings: Settings, layout: Layout, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CVOPS_HOME"] = str(layout.home)
    env["CVOPS_NATS_URL"] = settings.effective_nats_url
    if not settings.nats_url:  # the embedded server: the service's own NATS user
        found = nats_credentials(layout.home, name)
        if found is not None:
            env["CVOPS_NATS_USER"], env["CVOPS_NATS_PASSWORD"] = found
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def spawn(
    argv: list[str], log_path: Path, env: dict[str, str], *, nice: int = 0
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (it outlives whoever started it), output to
    ``log_path``, ``nice`` steps below the normal CPU priority."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            ["nice", "-n", str(nice), *argv] if nice else argv,  # nice execs: same pid
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def start_detached(argv: list[str], log_path: Path, env: dict[str, str]) -> int:
    """Start ``argv`` in its own session (it outlives the launcher); return its pid."""
    proc = spawn(argv, log_path, env)
    proc.returncode = 0  # never waited on here; silences Popen's "still running" warning
    return proc.pid


@contextlib.contextmanager
def launcher_lock(layout: Layout) -> Iterator[None]:
    """Held by `up`, `down`, `stop` and the supervisor while they start or stop processes,
    so that no process is started twice or behind a `down`."""
    layout.run.mkdir(parents=True, exist_ok=True)
    with open(layout.run / "launcher.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def held(layout: Layout, name: str) -> Iterator[None]:
    """Keep the supervisor from starting ``name`` inside the block (an earlier hold, e.g.
    from `stop`, stays after it). On entry, waits for a start in progress to finish."""
    marker = layout.hold_file(name)
    layout.run.mkdir(parents=True, exist_ok=True)
    created = not marker.exists()
    marker.touch()
    try:
        with launcher_lock(layout):
            pass  # a restart that began before the hold has written its pid file now
        yield
    finally:
        if created:
            marker.unlink(missing_ok=True)


def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies waiting to be reaped, which
    ``killpg(0)`` still finds, do not count: init may take a second to reap them)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        entries = [e for e in Path("/proc").iterdir() if e.name.isdigit()]
    except OSError:
        return True  # no /proc: trust killpg(0)
    for entry in entries:
        try:
            state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def stop_pids(pids: dict[str, int], grace: float) -> dict[str, str]:
    """SIGTERM each pid, SIGKILL the groups of those left after ``grace``; how each ended.

    Each was started as a session leader, so once the leaders are gone any children they
    left (e.g. a supervised tritonserver) are stopped through their process groups, all
    within one more ``LEFTOVER_GRACE_S``: the whole call takes at most about
    ``grace + LEFTOVER_GRACE_S`` however many pids it is given.
    """
    outcome: dict[str, str] = {}
    for name, pid in pids.items():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            outcome[name] = "gone"
    waiting = {n: p for n, p in pids.items() if n not in outcome}
    _wait_until(lambda: not any(process_alive(p) for p in waiting.values()), grace)
    for name, pid in waiting.items():
        if process_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            outcome[name] = "killed"
        else:
            outcome[name] = "stopped"
    leftovers = [p for p in pids.values() if _group_alive(p)]  # children of the leaders
    for pgid in leftovers:
        _signal_group(pgid, signal.SIGTERM)
    _wait_until(lambda: not any(_group_alive(g) for g in leftovers), LEFTOVER_GRACE_S)
    for pgid in leftovers:
        _signal_group(pgid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: return once the leaders are really gone
    _wait_until(lambda: not any(process_alive(p) for p in pids.values()), 2.0)
    return {n: outcome[n] for n in pids}


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# -- health ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """How to tell that one process works: a port and an optional HTTP URL."""

    port: int
    url: str | None
    ports: tuple[int, ...] = ()  # every port it listens on, when more than ``port``


def _local_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def probe_of(name: str, settings: Settings) -> Probe:
    """The port and health URL of ``name`` under ``settings``."""
    if name == NATS:
        if settings.nats_url:
            parts = urlsplit(settings.nats_url.split(",")[0])
            return Probe(parts.port or 4222, None)
        port = settings.nats_monitor_port
        return Probe(settings.nats_port, f"http://127.0.0.1:{port}/healthz")
    if name == TRITON:
        port = settings.triton_http_port
        ports = (port, settings.triton_grpc_port, settings.triton_metrics_port)
        # live, not ready: strict readiness also fails while any loaded model is not ready,
        # which the router reports per deployment
        return Probe(port, f"http://127.0.0.1:{port}/v2/health/live", ports)
    service = services.get(name)
    if service is None:
        port = settings.metrics_port(name)
        return Probe(port, f"http://127.0.0.1:{port}/metrics" if port else None)
    port, *more = service.port_numbers(settings)
    host = _local_host(service.bind_host(settings))
    url = f"http://{host}:{port}{service.health}" if port else None  # 0: no endpoint
    return Probe(port, url, (port, *more) if more else ())


def http_health(url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """GET ``url``: (healthy, short text)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300, "ok" if resp.status < 300 else str(resp.status)
    except urllib.error.HTTPError as err:
        return False, f"not ready ({err.code})"
    except (urllib.error.URLError, OSError, TimeoutError):
        return False, "no answer"


def tcp_reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether the first server of a NATS URL list accepts a connection."""
    parts = urlsplit(url.split(",")[0])
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Row:
    process: str
    pid: int | None
    alive: bool
    port: int
    health: str
    healthy: bool
    ports: tuple[int, ...] = ()
    restarts: int = 0  # by the supervisor, since the last `down`


def _supervised(name: str, settings: Settings) -> bool:
    """Processes a service starts itself: the router's tritonserver unless Triton is remote."""
    return name == TRITON and not settings.triton_url and installed("inference-router")


def restart_counts(layout: Layout) -> dict[str, int]:
    """How often the supervisor restarted each process since the last `down`."""
    try:
        counts = json.loads(layout.supervisor_state.read_text())["restarts"]
        return {str(n): int(c) for n, c in counts.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def status_rows(settings: Settings, layout: Layout) -> list[Row]:
    """One row per process: the supervisor (once `up` started one), NATS, every service
    that is installed or has a pid file, and the tritonserver the router supervises (from
    the pid file the router writes)."""
    rows = []
    if (pid := running_pid(layout, SUPERVISOR)) is not None:
        rows.append(Row(SUPERVISOR, pid, True, 0, "watching", True))
    elif (pid := recorded_pid(layout, SUPERVISOR)) is not None:
        rows.append(
            Row(
                SUPERVISOR,
                pid,
                False,
                0,
                "stopped: nothing is restarted (./justw up starts it)",
                False,
            )
        )
    restarts = restart_counts(layout)
    for name in (NATS, *SERVICES, TRITON):
        probe = probe_of(name, settings)
        if name == NATS and settings.nats_url:
            ok = tcp_reachable(settings.nats_url)
            health = f"external {'reachable' if ok else 'unreachable'}"
            rows.append(Row(NATS, None, ok, probe.port, health, ok))
            continue
        if name == TRITON and not _supervised(name, settings):
            continue
        pid = running_pid(layout, name)
        if pid is None and not installed(name) and recorded_pid(layout, name) is None:
            continue
        alive = pid is not None
        if not alive:
            recorded = recorded_pid(layout, name)
            rows.append(
                Row(
                    name,
                    recorded,
                    False,
                    probe.port,
                    "held (stopped)" if layout.hold_file(name).exists() else "stopped",
                    False,
                    probe.ports,
                    restarts.get(name, 0),
                )
            )
            continue
        ok, text = http_health(probe.url) if probe.url else (True, "running")
        stuck = projection_stuck_at(name, settings)
        if stuck is not None:  # a metrics port answers even then: the file says it
            ok, text = False, f"projection stuck at seq {stuck} (cvops projections status)"
        rows.append(Row(name, pid, True, probe.port, text, ok, probe.ports, restarts.get(name, 0)))
    return rows


def projection_stuck_at(name: str, settings: Settings) -> int | None:
    """The sequence ``name``'s projection file says it is stopped at (None: not stuck, or
    no projection); read through its ``cvops.projections`` entry point."""
    from importlib.metadata import entry_points

    from cvops.core.projection import read_state

    try:
        (point,) = [p for p in entry_points(group="cvops.projections") if p.name == name]
        module = point.load()
        projection = module.projection
        projection = projection() if isinstance(projection, type) else projection
        state = read_state(module.db_path(settings), projection.name)
    except Exception:  # no entry point, an unreadable file: the probe alone decides
        return None
    return state.stuck.seq if state is not None and state.stuck is not None else None


def _ports(row: Row) -> str:
    return "/".join(map(str, row.ports)) if row.ports else str(row.port or "-")


def format_table(rows: Sequence[Row]) -> str:
    head = ("process", "pid", "alive", "port", "restarts", "health")
    body = [
        (
            r.process,
            str(r.pid or "-"),
            "yes" if r.alive else "no",
            _ports(r),
            str(r.restarts),
            r.health,
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (head, *body)
    ]
    return "\n".join(lines)


# -- credentials ----------------------------------------------------------------------


def print_credentials_once(layout: Layout, out: Callable[[str], None] = print) -> bool:
    """Show ``admin.credentials`` the first time it exists; True when it was shown now."""
    creds = layout.home / CREDENTIALS
    marker = layout.run / CREDENTIALS_PRINTED
    if marker.exists() or not creds.exists():
        return False
    out(f"\nadmin credentials (shown once; kept in {creds}, mode 0600):")
    out(creds.read_text().rstrip())
    out("")
    layout.run.mkdir(parents=True, exist_ok=True)
    marker.touch(mode=0o600)
    return True


# -- commands -------------------------------------------------------------------------


class LaunchError(Exception):
    """A process did not start or did not become healthy."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def embedded_authorization(layout: Layout) -> str:
    """The embedded server's users: each service its own (``cvops.core.nats_auth``), with
    passwords made once per home; a service finds its own in the home when it connects."""
    return authorization_block(load_or_create_passwords(layout.home))


def ensure_nats(
    settings: Settings, layout: Layout, say: Callable[[str], None]
) -> subprocess.Popen[bytes] | None:
    """Start the embedded NATS unless it runs already or an external one is configured;
    the process when it was started now."""
    if settings.nats_url:
        say(f"nats: external {settings.nats_url}")
        return None
    pid = running_pid(layout, NATS)
    if pid is not None:
        say(f"nats: already running (pid {pid})")
        return None
    layout.logs.mkdir(parents=True, exist_ok=True)
    try:
        proc, _port = start_nats(
            layout.nats_store,
            port=settings.nats_port,
            monitor_port=settings.nats_monitor_port,
            sync_always=settings.nats_sync_always,
            log_file=layout.log_file(NATS),
            detach=True,
            authorization=embedded_authorization(layout),
            prof_port=settings.nats_prof_port,
        )
    except RuntimeError as err:
        raise LaunchError(
            f"nats-server did not start on port {settings.nats_port} ({err}):\n"
            f"{_tail(layout.log_file(NATS))}"
        ) from err
    _write_pid(layout, NATS, proc.pid)
    url = probe_of(NATS, settings).url
    assert url is not None
    deadline = time.monotonic() + 10
    while not http_health(url)[0]:
        if time.monotonic() > deadline:
            raise LaunchError(f"nats-server not healthy at {url}")
        time.sleep(0.1)
    say(f"nats: started (pid {proc.pid}, port {settings.nats_port})")
    return proc


def start_service(settings: Settings, layout: Layout, name: str) -> subprocess.Popen[bytes]:
    """Start ``python -m cvops.<service>`` detached and record its pid file."""
    spec = services.get(name)
    proc = spawn(
        [sys.executable, "-m", module_of(name)],
        layout.log_file(name),
        _service_env(settings, layout, name),
        nice=spec.nice if spec else 0,
    )
    _write_pid(layout, name, proc.pid)
    return proc


def start_services(
    settings: Settings, layout: Layout, names: Sequence[str], say: Callable[[str], None]
) -> list[str]:
    """Start each installed service not already running; return those started now."""
    started = []
    for name in names:
        if not installed(name):
            say(f"{name}: not installed (no {module_of(name)}.__main__), skipped")
            continue
        layout.hold_file(name).unlink(missing_ok=True)  # `up` names it: supervise it again
        pid = running_pid(layout, name)
        if pid is not None:
            say(f"{name}: already running (pid {pid})")
            continue
        proc = start_service(settings, layout, name)
        proc.returncode = 0  # it outlives us; never waited on here
        started.append(name)
        say(f"{name}: started (pid {proc.pid})")
    return started


def wait_gateway(settings: Settings, layout: Layout, say: Callable[[str], None]) -> None:
    """Wait for the gateway's /health/ready for as long as its process lives.

    A first start on a slow machine (or a long log to catch up with) may take minutes; it
    is waited for, with a line every ``GATEWAY_PATIENCE_NOTE_S``. Raises LaunchError when
    the process exits, or after ``GATEWAY_START_TIMEOUT_S`` (a hung start).
    """
    url = probe_of("gateway", settings).url
    assert url is not None
    started = time.monotonic()
    next_note = started + GATEWAY_PATIENCE_NOTE_S
    while True:
        ok, text = http_health(url)
        if ok:
            return
        pid = recorded_pid(layout, "gateway")
        if pid is None or not process_alive(pid):
            raise LaunchError(
                f"gateway exited; last lines of {layout.log_file('gateway')}:\n"
                f"{_tail(layout.log_file('gateway'))}"
            )
        waited = time.monotonic() - started
        if waited > GATEWAY_START_TIMEOUT_S:
            raise LaunchError(f"gateway not ready after {waited:.0f} s ({text}); see its log")
        if time.monotonic() >= next_note:
            say(f"gateway: still starting ({waited:.0f} s, {text})")
            next_note += GATEWAY_PATIENCE_NOTE_S
        time.sleep(0.25)


def check_started(layout: Layout, started: Sequence[str], grace_s: float = 1.5) -> None:
    """Raise LaunchError naming each service that exited right after it was started."""

    # Liveness by pid only: right after fork, /proc/<pid>/cmdline still shows the launcher
    # until exec, so the cmdline check of running_pid would call a starting service dead.
    def gone(n: str) -> bool:
        pid = recorded_pid(layout, n)
        return pid is None or not process_alive(pid)

    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if any(gone(n) for n in started):
            break
        time.sleep(0.1)
    dead = [n for n in started if gone(n)]
    if dead:
        details = "\n".join(
            f"--- {n} ({layout.log_file(n)}):\n{_tail(layout.log_file(n))}" for n in dead
        )
        raise LaunchError(f"exited right after start: {', '.join(dead)}\n{details}")


def ensure_supervisor(settings: Settings, layout: Layout, say: Callable[[str], None]) -> None:
    """Start the supervisor (``python -m cvops.core.local supervise``) unless it runs."""
    pid = running_pid(layout, SUPERVISOR)
    if pid is not None:
        say(f"supervisor: already running (pid {pid})")
        return
    env = dict(os.environ)  # not _service_env: it must see whether NATS is embedded
    env["CVOPS_HOME"] = str(layout.home)
    argv = [sys.executable, "-m", "cvops.core.local", "supervise"]
    proc = spawn(argv, layout.log_file(SUPERVISOR), env)
    proc.returncode = 0  # it outlives us; never waited on here
    _write_pid(layout, SUPERVISOR, proc.pid)
    say(f"supervisor: started (pid {proc.pid})")


def _hold_the_dead(layout: Layout, names: Sequence[str]) -> None:
    """Hold each of ``names`` whose process `up` saw die: a start that fails at once is
    reported, not retried forever; the next `up` tries it again."""
    for name in names:
        pid = recorded_pid(layout, name)
        if pid is not None and not process_alive(pid):
            layout.hold_file(name).touch()


def up(settings: Settings, names: Sequence[str] = SERVICES, *, wait: bool = True) -> int:
    layout = Layout.of(settings)
    layout.run.mkdir(parents=True, exist_ok=True)
    layout.logs.mkdir(parents=True, exist_ok=True)
    say = print
    try:
        with launcher_lock(layout):  # the supervisor restarts nothing meanwhile
            layout.hold_file(NATS).unlink(missing_ok=True)
            if (nats_proc := ensure_nats(settings, layout, say)) is not None:
                nats_proc.returncode = 0  # it outlives us; never waited on here
            started = start_services(settings, layout, names, say)
        if wait and "gateway" in names and recorded_pid(layout, "gateway") is not None:
            wait_gateway(settings, layout, say)
        check_started(layout, started)
        # The gateway writes the file before it answers at all (its first-start bootstrap
        # runs before it serves), so once it is ready the file is there if this home ever
        # had one; a start with --no-wait shows it at the next `up`.
        print_credentials_once(layout)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        _hold_the_dead(layout, names)
        ensure_supervisor(settings, layout, say)  # what did start is supervised all the same
        print(format_table(status_rows(settings, layout)))
        return 1
    ensure_supervisor(settings, layout, say)
    print()
    print(format_table(status_rows(settings, layout)))
    return 0


def down(settings: Settings) -> int:
    """Stop the supervisor (so nothing is restarted), the services, then NATS; each gets
    ``stop_grace_s`` after SIGTERM before SIGKILL."""
    layout = Layout.of(settings)
    began = time.monotonic()
    if (pid := running_pid(layout, SUPERVISOR)) is not None:
        # it stops at once, or after the start it is in the middle of
        for name, how in stop_pids({SUPERVISOR: pid}, settings.stop_grace_s).items():
            print(f"{name}: {how}")
    with launcher_lock(layout):
        services = {n: p for n in reversed(SERVICES) if (p := running_pid(layout, n)) is not None}
        for name, how in stop_pids(services, settings.stop_grace_s).items():
            print(f"{name}: {how}")
        if not settings.nats_url and (pid := running_pid(layout, NATS)) is not None:
            for name, how in stop_pids({NATS: pid}, settings.stop_grace_s).items():
                print(f"{name}: {how}")
        for name in (SUPERVISOR, *SERVICES, NATS, TRITON):
            layout.pid_file(name).unlink(missing_ok=True)
            layout.hold_file(name).unlink(missing_ok=True)
        layout.supervisor_state.unlink(missing_ok=True)
    print(f"down in {time.monotonic() - began:.1f} s")
    return 0


def stop(settings: Settings, names: Sequence[str]) -> int:
    """Stop ``names`` and hold them: the supervisor leaves them down until `up` (e.g. for
    ``cvops projections rebuild``)."""
    layout = Layout.of(settings)
    for name in names:
        layout.run.mkdir(parents=True, exist_ok=True)
        layout.hold_file(name).touch()
    with launcher_lock(layout):
        pids = {n: p for n in names if (p := running_pid(layout, n)) is not None}
        outcome = stop_pids(pids, settings.stop_grace_s)
    for name in names:
        how = outcome.get(name, "not running")
        print(f"{name}: {how}, held (the supervisor leaves it down until `up`)")
    return 0


# -- supervision ----------------------------------------------------------------------


def restart_delay(delay: float, ran_for_s: float | None) -> float:
    """The wait before restarting a process that died after ``ran_for_s`` seconds (None:
    not started by the supervisor), when its previous restart waited ``delay``: doubling
    from ``RESTART_DELAY_S`` up to ``RESTART_DELAY_MAX_S``, back to the start once it has
    stayed up ``STABLE_AFTER_S``."""
    if ran_for_s is None or ran_for_s >= STABLE_AFTER_S or delay <= 0:
        return RESTART_DELAY_S
    return min(delay * 2, RESTART_DELAY_MAX_S)


@dataclass
class _Watched:
    """What the supervisor knows of one process."""

    restarts: int = 0
    delay: float = 0.0  # the last restart's wait (0: none yet)
    started_at: float | None = None  # monotonic time of its last start by the supervisor
    due: float | None = None  # when it is to be restarted (None: it runs)
    child: subprocess.Popen[bytes] | None = None


class Supervisor:
    """Restarts NATS and every service that has a pid file and is not held, when it dies.

    The processes `up` started are not its children: their liveness is the pid file's
    (``running_pid``). The ones it restarts are, and it reaps them.
    """

    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout
        self.watched: dict[str, _Watched] = {
            name: _Watched(restarts=count) for name, count in restart_counts(layout).items()
        }
        self.stopping = False

    def names(self) -> list[str]:
        embedded = [] if self.settings.nats_url else [NATS]
        return [n for n in (*embedded, *SERVICES) if recorded_pid(self.layout, n) is not None]

    def alive(self, name: str, w: _Watched) -> bool:
        pid = recorded_pid(self.layout, name)
        if w.child is not None and w.child.pid == pid:
            return w.child.poll() is None  # its own child: no cmdline race right after fork
        return running_pid(self.layout, name) is not None

    def reap(self) -> None:
        for name, w in self.watched.items():
            # poll() reaps a child that exited (also one stopped by `stop`, which stays held)
            child = w.child
            exited = child is not None and child.poll() is not None
            if exited and child is not None and child.pid != recorded_pid(self.layout, name):
                w.child = None

    def tick(self, now: float) -> None:
        """One look at every process (NATS first): schedule or do the restarts due."""
        self.reap()
        for name in self.names():
            if self.stopping:
                return
            w = self.watched.setdefault(name, _Watched())
            if self.layout.hold_file(name).exists() or self.alive(name, w):
                w.due = None
                continue
            if w.due is None:
                ran = None if w.started_at is None else now - w.started_at
                w.delay = restart_delay(w.delay, ran)
                w.due = now + w.delay
                print(f"{name}: died; restarting in {w.delay:g} s", flush=True)
            if now >= w.due:
                self.restart(name, w)

    def restart(self, name: str, w: _Watched) -> None:
        with launcher_lock(self.layout):
            # `up`, `stop` or `down` may have acted meanwhile
            if self.layout.hold_file(name).exists() or recorded_pid(self.layout, name) is None:
                return
            if running_pid(self.layout, name) is not None:
                w.due = None
                return
            w.restarts += 1
            w.started_at = time.monotonic()
            w.due = None
            self.save()
            try:
                if name == NATS:
                    w.child = ensure_nats(self.settings, self.layout, lambda _line: None)
                else:
                    w.child = start_service(self.settings, self.layout, name)
                pid = w.child.pid if w.child is not None else recorded_pid(self.layout, name)
                print(f"{name}: restarted (pid {pid}, restart {w.restarts})", flush=True)
            except (LaunchError, OSError) as err:  # dead again at the next tick: backs off
                print(f"{name}: restart {w.restarts} failed: {err}", flush=True)

    def save(self) -> None:
        counts = {n: w.restarts for n, w in self.watched.items()}
        tmp = self.layout.supervisor_state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"restarts": counts}) + "\n")
        tmp.replace(self.layout.supervisor_state)

    def run(self) -> int:
        def on_signal(_sig: int, _frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        print(f"supervisor: watching {self.layout.home} (pid {os.getpid()})", flush=True)
        while not self.stopping:
            mine = recorded_pid(self.layout, SUPERVISOR)
            if mine is not None and mine != os.getpid():
                print(f"supervisor: the pid file names {mine}; exiting", flush=True)
                break
            try:
                self.tick(time.monotonic())
            except Exception as err:  # a bad moment (a file half-written) must not end it
                print(f"supervisor: {type(err).__name__}: {err}", flush=True)
            time.sleep(SUPERVISE_POLL_S)
        print("supervisor: stopped", flush=True)
        return 0


def supervise(settings: Settings) -> int:
    """Run the supervisor in the foreground (`up` starts it detached)."""
    return Supervisor(settings, Layout.of(settings)).run()


def status(settings: Settings, *, as_json: bool = False) -> int:
    rows = status_rows(settings, Layout.of(settings))
    if as_json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print(format_table(rows) if rows else "nothing installed or running")
    return 0 if rows and all(r.alive and r.healthy for r in rows) else 1


def run_nats_foreground(settings: Settings) -> None:
    """Replace this process with nats-server on the embedded config (for Procfile runners)."""
    layout = Layout.of(settings)
    conf = write_config(
        layout.nats_store,
        port=settings.nats_port,
        monitor_port=settings.nats_monitor_port,
        sync_always=settings.nats_sync_always,
        authorization=embedded_authorization(layout),
        prof_port=settings.nats_prof_port,
    )
    binary = nats_server_binary()
    os.execv(binary, [binary, "-c", str(conf)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cvops.core.local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start NATS and every installed service")
    p_up.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="comma-separated subset to start (default: all); 'none' for NATS only",
    )
    p_up.add_argument("--no-wait", action="store_true", help="do not wait for the gateway")
    sub.add_parser("down", help="stop everything `up` started, the supervisor first")
    p_stop = sub.add_parser(
        "stop", help="stop some processes and keep the supervisor from restarting them"
    )
    p_stop.add_argument("names", nargs="+", metavar="PROCESS", help=f"{NATS} or a service")
    p_status = sub.add_parser("status", help="each process, its pid, port and health")
    p_status.add_argument("--json", action="store_true")
    sub.add_parser("nats", help="run the embedded nats-server in the foreground")
    sub.add_parser("supervise", help="restart what `up` started when it dies (`up` runs it)")
    args = parser.parse_args(argv)
    settings = load_settings()
    if args.command == "up":
        names = [] if args.services == "none" else [s.strip() for s in args.services.split(",")]
        unknown = [n for n in names if n not in SERVICES]
        if unknown:
            parser.error(f"unknown service(s) {', '.join(unknown)}; known: {', '.join(SERVICES)}")
        return up(settings, names, wait=not args.no_wait)
    if args.command == "down":
        return down(settings)
    if args.command == "status":
        return status(settings, as_json=args.json)
    if args.command == "stop":
        unknown = [n for n in args.names if n not in (NATS, *SERVICES)]
        if unknown:
            parser.error(
                f"unknown process(es) {', '.join(unknown)}; known: {NATS}, {', '.join(SERVICES)}"
            )
        return stop(settings, args.names)
    if args.command == "supervise":
        return supervise(settings)
    run_nats_foreground(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
