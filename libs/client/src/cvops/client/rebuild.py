"""``cvops projections rebuild``: replay the event log into one service's SQLite file;
``cvops projections status`` and ``skip``: see and resolve a projection stuck at an event it
cannot apply (the skip is recorded beside the file, so restarts and rebuilds honour it).

A service names its projection with an entry point in the group ``cvops.projections``;
the entry point's value is a module exposing ``projection`` and ``db_path(settings)``, and
optionally ``copies(settings)``: other files of the same projection (the gateway's workers
other than 0), which a rebuild deletes so that each is replayed anew when its process starts.
Which services should have one is ``cvops.core.services`` (``projection=True``); a name
registered there without an installed entry point is explained, not just called unknown.
This module needs cvops-core (NATS), so the CLI imports it only for that command.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType

import msgspec
import nats
import nats.errors

from cvops.client.sdk import CvopsError, Unreachable
from cvops.core import STREAM, Bus, Projection, Settings, load_settings, rebuild_projection
from cvops.core import services as registered
from cvops.core.bus import connect_credentials
from cvops.core.local import Layout, held, installed, recorded_pid
from cvops.core.natsd import pid_alive
from cvops.core.projection import (
    ProjectionState,
    ProjectionStuck,
    Quarantined,
    quarantine_event,
    quarantine_path,
    read_state,
)

ENTRY_POINT_GROUP = "cvops.projections"


class UnknownService(LookupError):
    """No installed distribution declares a projection under that name."""

    def __init__(self, service: str, known: list[str]) -> None:
        self.service = service
        self.known = known
        listed = ", ".join(known) or "none installed"
        why = _why_missing(service)
        super().__init__(f"no projection named {service!r}{why} (known: {listed})")


def _why_missing(service: str) -> str:
    """Why a registered service has no installed projection ('' for unregistered names)."""
    spec = registered.get(service)
    if spec is None:
        return ""
    if spec.planned:
        return f": {service} is planned, {spec.source} does not exist yet"
    if not spec.projection:
        return f": {service} keeps no projection"
    if installed(service):
        return f": {spec.module} is installed but declares no {ENTRY_POINT_GROUP} entry point"
    return f": {service} is not installed here"


def projection_entry_points() -> dict[str, EntryPoint]:
    """Installed projections by service name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


class NoHome(CvopsError):
    """The home the settings name is not an existing cvops home (nothing is created)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "no_cvops_home", detail)


def home_settings(settings: Settings) -> Settings:
    """``settings`` with ``home`` resolved as the launcher resolves it (``Layout.of``), so
    the projection, the pid files and the services agree on one absolute directory."""
    return msgspec.structs.replace(settings, home=str(Layout.of(settings).home))


def require_home(settings: Settings, service: str, db_path: Path) -> None:
    """Raise NoHome unless ``settings.home`` (absolute) is an existing cvops home: a
    directory holding ``service``'s projection, the embedded NATS's config, or the
    launcher's ``run/``, or any directory when ``CVOPS_NATS_URL`` names the NATS."""
    home = Path(settings.home)
    signs = (db_path, home / "nats" / "nats.conf", home / "run")
    if home.is_dir() and (settings.nats_url or any(p.exists() for p in signs)):
        return
    why = "does not exist" if not home.is_dir() else "holds no projection, NATS config or run/"
    source = (
        "CVOPS_HOME"
        if "CVOPS_HOME" in os.environ
        else "CVOPS_HOME is not set: the default .cvops, relative to the working directory"
    )
    raise NoHome(
        f"no cvops home at {home} ({source}): it {why}. Run from the directory `./justw up` "
        f"ran in, or set CVOPS_HOME to its home; {service} was not rebuilt"
    )


def running_pid(settings: Settings, service: str) -> int | None:
    """The pid in ``<home>/run/<service>.pid`` (the home as the launcher resolves it) if
    that process is alive."""
    pid = recorded_pid(Layout.of(settings), service)
    return pid if pid is not None and pid > 0 and pid_alive(pid) else None


def load_projection(service: str) -> ModuleType:
    """Import the module that the service's entry point names."""
    points = projection_entry_points()
    if service not in points:
        raise UnknownService(service, sorted(points))
    module = points[service].load()
    if not hasattr(module, "projection") or not hasattr(module, "db_path"):
        raise CvopsError(
            0,
            "bad_projection",
            f"{points[service].value} must expose `projection` and `db_path(settings)`",
        )
    return module


def _projection_of(module: ModuleType) -> Projection:
    projection = module.projection
    return projection() if isinstance(projection, type) else projection  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ServiceState:
    """One file of a service's projection and its state (None: no file yet)."""

    service: str  # whose quarantine ``cvops projections skip`` writes
    path: Path
    state: ProjectionState | None
    worker: int = 0  # i > 0: gateway worker i's copy

    @property
    def label(self) -> str:
        return f"{self.service} (worker {self.worker})" if self.worker else self.service


def service_states(settings: Settings | None = None) -> list[ServiceState]:
    """Each installed projection's file; then each other copy the module names (``copies``:
    gateway worker i's file), which shares the first file's quarantine."""
    settings = settings or load_settings()
    out = []
    for service in sorted(projection_entry_points()):
        module = load_projection(service)
        name = _projection_of(module).name
        db_path = Path(module.db_path(settings))
        out.append(ServiceState(service, db_path, read_state(db_path, name)))
        copies = getattr(module, "copies", None)
        for path in copies(settings) if copies is not None else []:
            worker = int(Path(path).stem.rsplit("-w", 1)[-1])
            state = read_state(path, name, quarantine=quarantine_path(db_path))
            out.append(ServiceState(service, Path(path), state, worker))
    return out


def skip_event(
    service: str, seq: int, reason: str, settings: Settings | None = None
) -> tuple[Quarantined, ProjectionState | None]:
    """Quarantine stream sequence ``seq`` for ``service``'s projection.

    Args:
        service: the entry-point name, e.g. ``registry``.
        seq: the stream sequence of the event to pass over (``cvops projections status``).
        reason: why, kept in the quarantine file beside the projection.
        settings: where the state directory is (default: ``CVOPS_*``).

    Returns:
        (what was recorded, the projection's state before it).
    """
    settings = settings or load_settings()
    module = load_projection(service)
    db_path = Path(module.db_path(settings))
    state = read_state(db_path, _projection_of(module).name)
    stuck = state.stuck if state is not None else None
    try:
        recorded = quarantine_event(
            db_path, seq, reason, type=stuck.type if stuck and stuck.seq == seq else ""
        )
    except ValueError as err:
        raise CvopsError(0, "invalid", str(err)) from err
    return recorded, state


def rebuild_service(
    service: str,
    settings: Settings | None = None,
    *,
    force: bool = False,
    connect_timeout: float = 10.0,
) -> tuple[int, Path]:
    """Throw away a service's projection and replay the log into it.

    The home is resolved as the launcher resolves it and must exist already (NoHome
    otherwise: no new ``.cvops`` is made where the command happens to run). While the
    replay runs, the launcher's supervisor is kept from starting the service.

    Args:
        service: the entry-point name, e.g. ``registry``.
        settings: where NATS and the state directory are (default: ``CVOPS_*``).
        force: rebuild even though the service's pid file names a live process.
        connect_timeout: seconds to wait for NATS.

    Returns:
        (events applied, the rebuilt SQLite file). The projection's ``copies`` (other
        workers' files) are deleted.
    """
    settings = home_settings(settings or load_settings())
    module = load_projection(service)
    projection = _projection_of(module)
    db_path = Path(module.db_path(settings))
    require_home(settings, service, db_path)
    with held(Layout.of(settings), service):
        pid = running_pid(settings, service)
        if pid is not None and not force:
            raise CvopsError(
                0,
                "service_running",
                f"{service} is running (pid {pid}); stop it first "
                f"(python -m cvops.core.local stop {service}), or pass --force",
            )
        rebuilt = _rebuild(service, settings, projection, db_path, module, connect_timeout)
        _remove_copies(module, settings)
        return rebuilt


def _remove_copies(module: ModuleType, settings: Settings) -> None:
    """Delete the other copies of a rebuilt projection that the module names (``copies``:
    the gateway's other workers' files); their processes replay the log anew at start."""
    copies = getattr(module, "copies", None)
    if copies is None:
        return
    for path in copies(settings):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _rebuild(
    service: str,
    settings: Settings,
    projection: Projection,
    db_path: Path,
    module: ModuleType,
    connect_timeout: float,
) -> tuple[int, Path]:
    # the service's own subject filter, so the checkpoint lands where the live one does
    subjects = getattr(module, "SUBJECTS", None)
    stream = getattr(module, "STREAM", STREAM)
    # connect as the service whose file this is (an identity projection: its service's user)
    user = service.removesuffix("-identity")
    try:
        applied = asyncio.run(
            _replay(settings, projection, db_path, subjects, stream, user, connect_timeout)
        )
    except ProjectionStuck as err:  # the old file is left as it was
        stuck = err.stuck
        raise CvopsError(
            0,
            "projection_stuck",
            f"{service}: the replay stopped at seq {stuck.seq} ({stuck.type}): {stuck.reason}; "
            f"{service}'s file is unchanged. Fix the cause, or skip the event: "
            f"cvops projections skip {service} {stuck.seq} --reason TEXT",
        ) from err
    return applied, db_path


async def _replay(
    settings: Settings,
    projection: Projection,
    db_path: Path,
    subjects: list[str] | None,
    stream: str,
    user: str,
    connect_timeout: float,
) -> int:
    await _probe_nats(settings, user, connect_timeout)
    bus = await asyncio.wait_for(
        Bus.connect(settings, name="cvops-projections-rebuild", user=user), connect_timeout
    )
    try:
        return await rebuild_projection(bus, projection, db_path, subjects, stream)
    finally:
        await bus.close()


async def _probe_nats(settings: Settings, user: str, timeout: float) -> None:
    """Fail fast and quietly when NATS is down (the Bus reconnects forever by design)."""
    url = settings.effective_nats_url

    async def _quiet(_err: Exception) -> None:
        return None

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                url,
                **connect_credentials(settings, user),
                allow_reconnect=False,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                connect_timeout=timeout,
                error_cb=_quiet,
            ),
            timeout,
        )
    except (TimeoutError, OSError, nats.errors.Error) as err:
        raise Unreachable("NATS", url, str(err) or type(err).__name__) from err
    await nc.close()
