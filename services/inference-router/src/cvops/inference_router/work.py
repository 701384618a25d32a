"""The deployment worker and the reconciler: artifacts → model repository → Triton.

The worker takes ``deployment.requested``/``retire_requested`` from a durable work
consumer shared by every router, fetches each arm's artifact (named by its sha256) from the
object store, writes the repository entry, checks what Triton serves against the
conversion's parity record (``serving``), loads it through Triton's API and answers
``deployment.ready`` or ``deployment.failed`` (with Triton's message, or the numbers that
differ). A rolling update loads the new version beside the old one, switches traffic,
drains the old version and only then unloads it.

The reconciler makes each Triton instance serve what the projection says is deployed: on
start, after a Triton restart, and when another router deployed something.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import nats.js.errors
import tritonclient.http.aio as triton_http
from nats.aio.msg import Msg
from tritonclient.utils import InferenceServerException

from cvops.contracts import Event, Stamp, TensorSpec
from cvops.contracts.deployment import (
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentRequested,
    DeploymentRetireRequested,
    ServingCheck,
)
from cvops.core import ArtifactStore, Bus, ProjectionRunner, get_logger
from cvops.core.model_repository import PROVIDERS, deployment_entry
from cvops.domain.deployment import Arm, arms, spec_fields
from cvops.domain.identity import UserState
from cvops.inference_router import handlers, identity, projection, serving
from cvops.inference_router.projection import DeploymentRow, ModelVersionRow
from cvops.inference_router.repository import (
    Backend,
    ModelEntry,
    RepositoryError,
    artifact_io,
    install_version,
    model_file_name,
    prune_versions,
    write_config,
)
from cvops.inference_router.routing import Instance, Pool

log = get_logger(__name__)

DEPLOY_SUBJECTS = ["cvops.evt.deployment.*.requested", "cvops.evt.deployment.*.retire_requested"]
DRAIN_TIMEOUT_S = 30.0
GIVE_UP_AFTER = 15  # deliveries of a request while no Triton answers (nak delay 2 s)
DRAIN_GRACE_S = 0.3
ARTIFACT_MARK = ".artifact"
CHECK_PREFIX = "_check."  # the served-output check's own Triton model (no deployment name
# starts with "_")


class TritonRefused(Exception):
    """Triton answered a load with an error: the deployment cannot be served as asked."""


class TritonUnreachable(Exception):
    """No Triton instance answered: try again later (the job is redelivered)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Deployer:
    """Writes the model repository and drives Triton's load/unload for every instance."""

    def __init__(
        self,
        *,
        bus: Bus,
        runner: ProjectionRunner,
        identity: ProjectionRunner,
        pool: Pool,
        repository: Path,
        cache: Path,
        backend: Backend,
        on_routes_changed: Callable[[], None],
        engine_threads: int = 0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.runner = runner
        self.identity = identity  # who asked: users, in identity's own stream and file
        self.pool = pool
        self.repository = repository
        self.cache = cache
        self.backend = backend
        self.engine_threads = engine_threads
        self.store = ArtifactStore(bus)
        self.on_routes_changed = on_routes_changed
        self.clock = clock
        self.locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def actor(self, username: str) -> UserState | None:
        """The user who asked; identity's projection is caught up once when it does not know
        them yet (their events are in another stream, which it may trail)."""
        with self.identity.session() as s:
            found = identity.user(s, username)
        if found is None and await self.identity.catch_up(timeout=10):
            with self.identity.session() as s:
                found = identity.user(s, username)
        return found

    # -- the work consumer's handler ---------------------------------------------------
    async def handle(self, event: Event, msg: Msg) -> None:
        """Handle one deployment request (an exception naks it for redelivery)."""
        seq = msg.metadata.sequence.stream
        if not await self.runner.wait_for(seq, timeout=30):
            raise TimeoutError("projection did not reach the request")
        stamp = Stamp(
            now=self.clock(),
            actor=handlers.ACTOR,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        try:
            match event:
                case DeploymentRequested():
                    async with self.locks[event.deployment]:
                        await self._deploy(event, stamp)
                case DeploymentRetireRequested():
                    async with self.locks[event.deployment]:
                        await self._retire(event, stamp)
                case _:
                    return
        except TritonUnreachable as err:
            if msg.metadata.num_delivered < GIVE_UP_AFTER or not isinstance(
                event, DeploymentRequested
            ):
                raise  # redelivered: Triton is probably restarting
            reason = f"no Triton instance answered after {GIVE_UP_AFTER} tries: {err}"
            await self._publish(handlers.deployment_failed(event, reason, stamp))

    async def _deploy(self, request: DeploymentRequested, stamp: Stamp) -> None:
        wanted = arms(request)
        with self.runner.session() as s:
            current = projection.deployment(s, request.deployment)
            versions = {
                a.version: projection.model_version(s, request.model_name, a.version)
                for a in wanted
            }
        actor = await self.actor(request.actor)
        plan = handlers.plan_deployment(request, current, versions, actor, stamp)
        if isinstance(plan, DeploymentFailed):
            await self._publish(plan)
            return
        if current is not None and current.model_name != request.model_name:
            # version numbers of two registry models would collide: replace outright
            plan = handlers.DeployPlan(request, plan.versions, plan.versions)
        up = [i for i in self.pool.instances if i.up]
        if not up:
            raise TritonUnreachable("no Triton instance is up")
        model_dir = self.repository / request.deployment
        previous = current.versions if current is not None and current.routable else ()
        try:
            ios = []
            for arm in wanted:
                await self._install(model_dir, arm, versions[arm.version])
                ios.append(self._io(model_dir, arm, versions[arm.version]))
            io = ios[0]
            if any(_signature(other) != _signature(io) for other in ios[1:]):
                raise RepositoryError("the canary's inputs/outputs differ from the deployed arm's")
            checks = await self._verify(request, wanted, versions, io, up[0])
            transition = self._entry(request, plan.transition, io)
            write_config(model_dir, transition)
            for inst in up:
                await self._load(inst, request.deployment, plan.transition)
        except (TritonRefused, RepositoryError, serving.Mismatch) as err:
            await self._restore(request.deployment, current, previous, set(plan.versions))
            reason = str(err)
            log.warning("deployment_failed", deployment=request.deployment, reason=reason)
            await self._publish(handlers.deployment_failed(request, reason, stamp))
            return
        ready = handlers.deployment_ready(request, [i.name for i in up], stamp, checks)
        published = await self._publish(ready)
        await self.runner.wait_for(published, timeout=30)
        self.on_routes_changed()
        if plan.retiring:
            await self._drain(request.deployment, plan.retiring)
            write_config(model_dir, self._entry(request, plan.versions, io))
            for inst in up:
                with contextlib.suppress(TritonRefused, TritonUnreachable):
                    await self._load(inst, request.deployment, plan.versions)
        prune_versions(model_dir, set(plan.versions))
        self._prune_cache()
        log.info("deployment_ready", deployment=request.deployment, versions=plan.versions)

    async def _verify(
        self,
        request: DeploymentRequested,
        wanted: list[Arm],
        versions: dict[int, ModelVersionRow | None],
        io: tuple[list[TensorSpec], list[TensorSpec]],
        inst: Instance,
    ) -> dict[str, ServingCheck]:
        """Send each arm's probe images through Triton (a model of its own, so what serves
        now keeps serving) and compare with the conversion's record; Mismatch if they
        differ. Arms without a probe (the version's own file) are not checked."""
        probed = [a for a in wanted if a.served is not None and a.served.probe is not None]
        if not probed:
            return {}
        name = CHECK_PREFIX + request.deployment
        check_dir = self.repository / name
        checks: dict[str, ServingCheck] = {}
        try:
            for arm in probed:
                await self._install(check_dir, arm, versions[arm.version])
            entry = self._entry(request, tuple(a.slot for a in probed), io)
            write_config(check_dir, dataclasses.replace(entry, name=name, instance_count=1))
            await self._load(inst, name, tuple(entry.versions), routed=False)
            for arm in probed:
                assert arm.served is not None and arm.served.probe is not None
                probe = await self._blob(arm.served.probe.sha256, "probe")
                checks[arm.name] = await serving.check(inst, name, arm, probe, io)
        finally:
            with contextlib.suppress(TritonRefused, TritonUnreachable):
                await self._unload(inst, name)
            shutil.rmtree(check_dir, ignore_errors=True)
        failed = [c.reason for c in checks.values() if not c.passed]
        if failed:
            raise serving.Mismatch("; ".join(failed))
        return checks

    async def _restore(
        self,
        name: str,
        current: DeploymentRow | None,
        previous: tuple[int, ...],
        attempted: set[int],
    ) -> None:
        """Put back what served before a refused deployment (or remove the model)."""
        model_dir = self.repository / name
        if current is not None and previous:
            with contextlib.suppress(RepositoryError):
                await self._reinstall(model_dir, current)
            io = self._io(model_dir, current.arms[0], None, fallback_row=current)
            write_config(model_dir, self._entry(current, previous, io))
            for inst in self.pool.instances:
                if inst.up:
                    with contextlib.suppress(TritonRefused, TritonUnreachable):
                        await self._load(inst, name, previous)
            prune_versions(model_dir, set(previous))
            return
        for inst in self.pool.instances:
            if inst.up:
                with contextlib.suppress(TritonRefused, TritonUnreachable):
                    await self._unload(inst, name)
        shutil.rmtree(model_dir, ignore_errors=True)

    async def _drain(self, name: str, versions: tuple[int, ...]) -> None:
        """Wait until this router has no request in flight on ``versions``."""
        await asyncio.sleep(DRAIN_GRACE_S)  # requests routed just before the switch
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while self.pool.outstanding(name, versions) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _retire(self, request: DeploymentRetireRequested, stamp: Stamp) -> None:
        with self.runner.session() as s:
            current = projection.deployment(s, request.deployment)
        actor = await self.actor(request.actor)
        verdict = handlers.plan_retirement(request, current, actor, stamp)
        if isinstance(verdict, DeploymentFailed):
            await self._publish(verdict)
            return
        for inst in self.pool.instances:
            inst.loaded.pop(request.deployment, None)
        self.on_routes_changed()
        for inst in self.pool.instances:
            if inst.up:
                with contextlib.suppress(TritonRefused):
                    await self._unload(inst, request.deployment)
        shutil.rmtree(self.repository / request.deployment, ignore_errors=True)
        await self._publish(verdict)
        self._prune_cache(exclude=request.deployment)

    def _prune_cache(self, exclude: str = "") -> None:
        """Drop cached blobs no deployment serves or was asked to serve any more."""
        with self.runner.session() as s:
            keep = projection.artifact_shas(s, exclude=exclude)
        if not self.cache.is_dir():
            return
        for blob in self.cache.iterdir():
            if blob.is_file() and blob.name not in keep and not blob.name.endswith(".part"):
                blob.unlink(missing_ok=True)

    # -- reconciling instances with the projection ---------------------------------------
    async def reconcile(self, inst: Instance) -> list[str]:
        """Load every routable deployment on ``inst`` and unload retired ones.

        Returns the deployments (re)loaded.
        """
        with self.runner.session() as s:
            rows = {r.name: r for r in projection.all_deployments(s)}
        loaded: list[str] = []
        for name in list(inst.loaded):
            row = rows.get(name)
            if row is None or not row.routable:
                async with self.locks[name]:
                    row = self._row(name)
                    if (row is None or not row.routable) and inst.up:
                        with contextlib.suppress(TritonRefused, TritonUnreachable):
                            await self._unload(inst, name)
                        inst.loaded.pop(name, None)
        for name, row in rows.items():
            if not row.routable or inst.loaded.get(name) == row.versions:
                continue
            async with self.locks[name]:
                row = self._row(name)
                if row is None or not row.routable or inst.loaded.get(name) == row.versions:
                    continue
                if not inst.up:
                    break
                await self._reload(inst, row)
                loaded.append(name)
        return loaded

    async def _reload(self, inst: Instance, row: DeploymentRow) -> None:
        model_dir = self.repository / row.name
        await self._reinstall(model_dir, row)
        io = self._io(model_dir, row.arms[0], None, fallback_row=row)
        write_config(model_dir, self._entry(row, row.versions, io))
        await self._load(inst, row.name, row.versions)
        prune_versions(model_dir, set(row.versions))

    async def _reinstall(self, model_dir: Path, row: DeploymentRow) -> None:
        """Lay out every arm a deployment serves (each only if its artifact changed)."""
        with self.runner.session() as s:
            vrows = {
                a.version: projection.model_version(s, row.model_name, a.version) for a in row.arms
            }
        for arm in row.arms:
            await self._install(model_dir, arm, vrows[arm.version])

    def _row(self, name: str) -> DeploymentRow | None:
        with self.runner.session() as s:
            return projection.deployment(s, name)

    # -- building blocks --------------------------------------------------------------
    async def _blob(self, sha256: str, what: str) -> Path:
        """A blob from the object store, fetched once into the cache (digest checked)."""
        blob = self.cache / sha256
        if not blob.exists():
            try:
                await self.store.get_file(sha256, blob)
            except ValueError as err:  # digest mismatch
                raise RepositoryError(str(err)) from err
            except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError) as err:
                raise RepositoryError(f"{what} {sha256[:12]} is not in the object store") from err
        return blob

    async def _install(self, model_dir: Path, arm: Arm, row: ModelVersionRow | None) -> None:
        """Fetch an arm's artifact and companions (once, into the cache) and lay them out
        for Triton as version ``arm.slot``."""
        served = arm.served
        if served is None and row is None:
            raise RepositoryError(f"model version {arm.version} is not registered")
        sha = served.artifact.sha256 if served else row.artifact_sha256  # type: ignore[union-attr]
        fmt = served.format if served else "onnx"
        version_dir = model_dir / str(arm.slot)
        mark = version_dir / ARTIFACT_MARK
        stamp = f"{sha} {arm.engine} {arm.precision}"
        if mark.exists() and mark.read_text() == stamp:
            return
        what = f"artifact of {arm.engine} {arm.precision} (version {arm.version})"
        blob = await self._blob(sha, what)
        companions = [
            (await self._blob(c.sha256, f"companion {c.filename}"), c.filename)
            for c in (served.companions if served else [])
        ]
        settings = {
            "engine": arm.engine,
            "precision": arm.precision,
            "format": fmt,
            "providers": PROVIDERS.get(arm.engine, ["CPUExecutionProvider"]),
            "artifact": sha,
        }
        install_version(blob, version_dir, self.backend, fmt, companions, settings)
        mark.write_text(stamp)

    def _io(
        self,
        model_dir: Path,
        arm: Arm,
        row: ModelVersionRow | None,
        fallback_row: DeploymentRow | None = None,
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        """Inputs/outputs from the arm's file; the registry's record when it cannot be read
        (so that Triton itself reports what is wrong with the file)."""
        fmt = arm.served.format if arm.served else "onnx"
        path = model_dir / str(arm.slot) / model_file_name(fmt)
        with contextlib.suppress(RepositoryError):
            return artifact_io(path, fmt)
        if row is None:
            name = fallback_row.model_name if fallback_row else ""
            with self.runner.session() as s:
                row = projection.model_version(s, name, arm.version)
        if row is None or not row.inputs or not row.outputs:
            raise RepositoryError(f"cannot read the inputs and outputs of {path.name}")
        return row.inputs, row.outputs

    def _entry(
        self,
        spec: DeploymentRequested | DeploymentRow,
        versions: tuple[int, ...],
        io: tuple[list[TensorSpec], list[TensorSpec]],
    ) -> ModelEntry:
        name = spec.deployment if isinstance(spec, DeploymentRequested) else spec.name
        all_arms = arms(spec) if isinstance(spec, DeploymentRequested) else list(spec.arms)
        engines = [a.engine for a in all_arms]
        native = self.backend != "python"
        threads = self.engine_threads
        return deployment_entry(
            name, spec, engines, versions, io, native=native, engine_threads=threads
        )

    async def _load(
        self, inst: Instance, name: str, versions: tuple[int, ...], *, routed: bool = True
    ) -> None:
        """Load ``name`` on ``inst``; ``routed`` False (the serving check's own model) keeps it
        out of what the instance serves, so neither routing nor the reconciler sees it."""
        client = triton_http.InferenceServerClient(inst.http, conn_timeout=120)
        try:
            await client.load_model(name)
        except InferenceServerException as err:
            raise TritonRefused(handlers.triton_message(err.message() or str(err))) from err
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise TritonUnreachable(f"{inst.name}: {err}") from err
        finally:
            await client.close()
        if routed:
            inst.loaded[name] = tuple(versions)
            self.on_routes_changed()

    async def _unload(self, inst: Instance, name: str) -> None:
        client = triton_http.InferenceServerClient(inst.http, conn_timeout=60)
        try:
            await client.unload_model(name)
        except InferenceServerException as err:
            raise TritonRefused(handlers.triton_message(err.message() or str(err))) from err
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise TritonUnreachable(f"{inst.name}: {err}") from err
        finally:
            await client.close()
            inst.loaded.pop(name, None)

    async def _publish(self, event: Event) -> int:
        published = await self.bus.publish(event)
        return published.seq

    # -- health transitions -----------------------------------------------------------
    async def instance_down(self, inst: Instance, reason: str, incident: str) -> None:
        """Tell the log which deployments lost an instance."""
        stamp = Stamp(now=self.clock(), actor=handlers.ACTOR, correlation_id=incident)
        with self.runner.session() as s:
            rows = [r for r in projection.all_deployments(s) if r.routable]
        for row in rows:
            event = DeploymentDegraded(
                **stamp.envelope(f"degraded/{row.name}"),
                deployment=row.name,
                reason=reason,
                instances_down=[inst.name],
            )
            with contextlib.suppress(Exception):
                await self._publish(event)

    async def instance_recovered(self, inst: Instance, incident: str) -> None:
        """Reload everything on an instance that came back; ready again where it worked."""
        stamp = Stamp(now=self.clock(), actor=handlers.ACTOR, correlation_id=incident)
        try:
            await self.reconcile(inst)
        except Exception as err:  # reported, and retried by the next health round
            log.warning("reconcile_failed", instance=inst.name, error=str(err))
        with self.runner.session() as s:
            rows = [r for r in projection.all_deployments(s) if r.status == "degraded"]
        for row in rows:
            if not self.pool.serving(row.name):
                continue
            request = _as_request(row, stamp)
            ready = handlers.deployment_ready(
                request, [i.name for i in self.pool.instances if i.up], stamp
            )
            with contextlib.suppress(Exception):
                await self._publish(ready)


def _as_request(row: DeploymentRow, stamp: Stamp) -> DeploymentRequested:
    return DeploymentRequested(
        **stamp.envelope(f"as-request/{row.name}"), deployment=row.name, **spec_fields(row.spec)
    )


def _signature(io: tuple[list[TensorSpec], list[TensorSpec]]) -> list[tuple[str, str, tuple]]:
    return [(t.name, t.dtype, tuple(t.shape[1:])) for t in (*io[0], *io[1])]
