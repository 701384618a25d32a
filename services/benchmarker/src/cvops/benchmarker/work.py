"""The benchmarker's long-running work: one benchmark from request to its end.

A job fetches the model version's weights, the artifacts its conversions produced and the data
set's validation split, then runs the ``cvops.engines`` sweep in a worker thread. Each finished
cell is published as ``benchmark.row_measured`` before the sweep goes on, so the log is the
checkpoint: a redelivered job (its benchmarker was killed) measures only the cells that have no
row yet and ends with exactly one ``benchmark.completed``. On a GPU host the job holds the
lease of the GPU it measures for as long as it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
import numpy as np
from nats.aio.msg import Msg

from cvops.benchmarker import handlers, projection
from cvops.benchmarker.handlers import SOURCE, BenchPlan, EngineInfo, RowKey
from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.conversion import BenchmarkRequested, BenchmarkRow
from cvops.core import (
    ArtifactStore,
    Bus,
    ConcurrencyConflict,
    ProjectionRunner,
    Settings,
    ShuttingDown,
    append_guarded,
    leases,
)
from cvops.core.logging import get_logger
from cvops.domain import benchmark

log = get_logger(__name__)

PUBLISH_TIMEOUT_S = 60.0


class JobMovedOn(Exception):
    """Another worker appended to the job since we read it: re-read before deciding again."""


class _Unusable(Exception):
    """The model or data set cannot be measured; ``str(err)`` is the user-facing reason."""


def _now() -> datetime:
    return datetime.now(UTC)


class Benchmarker:
    """Handles ``benchmark.requested`` from the shared work consumer."""

    def __init__(self, bus: Bus, settings: Settings, runner: ProjectionRunner) -> None:
        self.bus = bus
        self.settings = settings
        self.runner = runner
        self.store = ArtifactStore(bus)
        self.host = socket.gethostname()
        self.cache_dir = settings.home_path / "cache"
        self.jobs_dir = settings.home_path / "benchmarks"
        self.stopping = asyncio.Event()
        self._engines: tuple[list[EngineInfo], bool] | None = None

    def stop(self) -> None:
        self.stopping.set()

    async def handle(self, event: Event, msg: Msg) -> None:
        """Run one benchmark (or its unmeasured cells) to its end."""
        if not isinstance(event, BenchmarkRequested):
            return
        attempt = int(msg.metadata.num_delivered or 1)
        while True:
            try:
                await self._run(event, attempt)
                return
            except JobMovedOn:
                log.info("job_moved_on", job_id=event.job_id)
                await asyncio.sleep(0.2)

    async def _host_engines(self) -> tuple[list[EngineInfo], bool]:
        if self._engines is None:
            self._engines = await asyncio.to_thread(_engine_statuses)
        return self._engines

    async def _run(self, event: BenchmarkRequested, attempt: int) -> None:
        await self.runner.reached(await self.bus.last_seq(), self.stopping)
        with self.runner.session() as s:
            state = projection.load_job(s, event.job_id)
            model = projection.model_version(s, event.model_name, event.version)
            artifacts = projection.model_artifacts(s, event.model_name, event.version)
            datasets = projection.dataset_versions(s)
            measured = projection.job_rows(s, event.job_id)
        if state is None or state.finished:
            return
        stamp = Stamp(
            now=_now(),
            actor=handlers.SERVICE,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        job = _JobLog(self.bus, state.last_seq)
        if attempt > handlers.MAX_ATTEMPTS:
            await job.publish(handlers.too_many_attempts(event, attempt, stamp))
            return
        engines, cuda = await self._host_engines()
        plan = handlers.plan_benchmark(state, model, artifacts, datasets, engines, cuda, stamp)
        if isinstance(plan, list):
            for e in plan:
                await job.publish(e)
            return
        bound = log.bind(job_id=plan.job_id, model=f"{event.model_name}:{event.version}")
        rows: dict[RowKey, BenchmarkRow] = {r.key: r for r in measured}
        pending = [t for t in plan.targets if _missing(t, event, rows)]
        crashed = handlers.crashing_target(state.started_rows, len(rows), pending)
        if crashed is not None:
            bound.warning("engine_keeps_crashing", target=crashed.label)
            for row in handlers.crash_rows(crashed, event, set(rows)):
                await job.publish(handlers.row_measured(event, row, stamp))
                rows[row.key] = row
        workdir = self.jobs_dir / plan.job_id
        try:
            async with self._gpu(plan, rows) as gpu:
                await job.publish(handlers.started(plan, attempt, self.host, len(rows), gpu, stamp))
                try:
                    paths = await self._fetch(plan, workdir)
                    prepared = await asyncio.to_thread(_prepare, plan, paths)
                except _Unusable as err:
                    await job.publish(benchmark.fail(event, str(err), stamp))
                    return
                on_row = self._row_publisher(job, plan, stamp, rows)
                try:
                    await asyncio.to_thread(_sweep, prepared, plan, set(rows), on_row)
                except (ShuttingDown, JobMovedOn, nats.errors.Error, TimeoutError, OSError):
                    raise  # back to the stream: the job resumes after its last row
                except Exception as err:  # a bug must end the job visibly, not loop
                    bound.exception("sweep_failed")
                    await job.publish(benchmark.fail(event, f"internal error: {err}", stamp))
                    return
                host = await asyncio.to_thread(_fingerprint)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        ordered = [rows[k] for k in plan.expected_keys if k in rows]
        done = handlers.completed(
            event, ordered, plan.unavailable, prepared.reference_accuracy, host, stamp
        )
        await job.publish(done)
        bound.info(
            "benchmark_completed", rows=len(ordered), met_sla=done.met_sla, reason=done.reason
        )

    def _row_publisher(
        self,
        job: _JobLog,
        plan: BenchPlan,
        stamp: Stamp,
        rows: dict[RowKey, BenchmarkRow],
    ) -> Callable[[BenchmarkRow], None]:
        """``on_row`` for the sweep thread: publish the row and wait for its ack (the
        checkpoint), then stop the sweep if this instance is shutting down."""
        loop = asyncio.get_running_loop()
        # the harness labels torch engines "cpu" even when they run on the GPU
        devices = {(t.engine, t.precision, t.artifact): t.device for t in plan.targets}

        def on_row(row: BenchmarkRow) -> None:
            device = devices.get((row.engine, row.precision, row.artifact), row.device)
            if device != row.device:
                row = msgspec.structs.replace(row, device=device)
            event = handlers.row_measured(plan.request, row, stamp)
            asyncio.run_coroutine_threadsafe(job.publish(event), loop).result(PUBLISH_TIMEOUT_S)
            rows[row.key] = row
            if self.stopping.is_set():
                raise ShuttingDown()

        return on_row

    async def _fetch(self, plan: BenchPlan, workdir: Path) -> _Paths:
        """The model version's file, the npz and each artifact (with companions) on disk."""
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        paths = _Paths(
            model=await self._cached(plan.model.artifact),
            npz=await self._cached(plan.dataset.canonical),
        )
        used = {t.artifact for t in plan.targets} - {SOURCE}
        for target in sorted(used):
            a = plan.artifacts[target]
            directory = workdir / target
            primary = directory / (a.artifact.filename or f"model-{target}")
            await self._blob(a.artifact.sha256, primary)
            for companion in a.companions:
                await self._blob(companion.sha256, directory / companion.filename)
            paths.artifacts[target] = primary
        return paths

    async def _cached(self, ref: ArtifactRef) -> Path:
        path = self.cache_dir / ref.sha256
        if not path.exists():
            await self._blob(ref.sha256, path)
        return path

    async def _blob(self, sha256: str, path: Path) -> Path:
        """Download a blob; _Unusable when it is gone from the store or corrupt."""
        try:
            return await self.store.get_file(sha256, path)
        except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError) as err:
            raise _Unusable(f"artifact {sha256[:12]} is missing from the object store") from err
        except ValueError as err:  # the store's digest check
            raise _Unusable(str(err)) from err

    @contextlib.asynccontextmanager
    async def _gpu(
        self, plan: BenchPlan, rows: dict[RowKey, BenchmarkRow]
    ) -> AsyncIterator[str | None]:
        """Hold the lease of the GPU the GPU engines run on while they are measured, so two
        benchmarks never share a GPU; CPU-only sweeps hold nothing."""
        gpu_pending = [
            t for t in plan.targets if t.device == "cuda" and _missing(t, plan.request, rows)
        ]
        if not gpu_pending:
            yield None
            return
        resource = leases.gpu_resource(self.host, _cuda_device_index())
        holder = f"benchmarker@{self.host}:{os.getpid()}/{plan.job_id}"
        while True:
            try:
                async with leases.held(self.bus, resource, holder, self.settings.gpu_lease_ttl_s):
                    yield resource
                    return
            except leases.LeaseUnavailable:
                if self.stopping.is_set():
                    raise ShuttingDown() from None
                log.info("gpu_busy", resource=resource, job_id=plan.job_id)
                await asyncio.sleep(2.0)


def _missing(target: handlers.TargetSpec, req: BenchmarkRequested, rows: dict[RowKey, Any]) -> bool:
    return any(target.key(b, c) not in rows for b in req.batch_sizes for c in req.concurrency)


class _JobLog:
    """Appends a job's events in order, each expecting the job's previous one."""

    def __init__(self, bus: Bus, last_seq: int) -> None:
        self.bus = bus
        self.expected = last_seq

    async def publish(self, event: Event) -> None:
        try:
            appended = await append_guarded(
                self.bus, event.aggregate_subjects, [event], self.expected
            )
        except ConcurrencyConflict as err:
            raise JobMovedOn(str(err)) from err
        self.expected = appended.aggregate_seq


# -- in a worker thread ---------------------------------------------------------------------


@dataclass
class _Paths:
    model: Path
    npz: Path
    artifacts: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Prepared:
    module: Any  # the torch source (None for an ONNX model version)
    images: np.ndarray  # float32 NCHW, normalised
    labels: np.ndarray
    reference_accuracy: float | None
    paths: _Paths


def _engine_statuses() -> tuple[list[EngineInfo], bool]:
    """Every engine of ``cvops.engines`` with its availability here, and whether CUDA is."""
    import torch

    from cvops.engines import available_engines

    engines = [
        EngineInfo(name=s.name, device=s.device, available=s.available, detail=s.detail)
        for s in available_engines()
    ]
    return engines, bool(torch.cuda.is_available())


def _configure_threads() -> None:
    """Torch uses CVOPS_TORCH_THREADS, else every core this process may run on."""
    import torch

    from cvops.core.accel import usable_cores

    n = int(os.environ.get("CVOPS_TORCH_THREADS", "0")) or usable_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _prepare(plan: BenchPlan, paths: _Paths) -> _Prepared:
    """Load the torch source (if any engine or the reference needs it) and the images."""
    from cvops.vision.data import (
        DatasetError,
        Normalization,
        compute_normalization,
        load_npz,
        preprocess,
    )

    _configure_threads()
    module = _load_torch_source(plan, paths.model)
    try:
        ds = load_npz(paths.npz)
    except DatasetError as err:
        raise _Unusable(f"unusable data set: {err}") from err
    layout = plan.layout
    if layout.resize:
        ds = ds.resized((layout.height, layout.width))
    norm = layout.normalization or compute_normalization(ds.split("train")[0]).to_dict()
    x, y = ds.split("val")
    if plan.request.validation_images is not None:
        x, y = x[: plan.request.validation_images], y[: plan.request.validation_images]
    images = preprocess(x, Normalization.from_dict(norm))
    labels = np.asarray(y, dtype=np.int64)
    return _Prepared(
        module=module,
        images=images,
        labels=labels,
        reference_accuracy=_source_accuracy(plan, module, paths.model, images, labels),
        paths=paths,
    )


def _load_torch_source(plan: BenchPlan, path: Path) -> Any:
    model = plan.model
    try:
        match model.format:
            case "safetensors":
                from cvops.vision.zoo import load_weights

                hyper = model.lineage.hyperparameters
                knobs = {k: hyper[k] for k in ("width", "depth", "dropout") if k in hyper}
                arch = str(model.architecture or hyper.get("arch"))
                return load_weights(arch, path, **knobs).eval()
            case "torchscript":
                import torch

                return torch.jit.load(str(path), map_location="cpu").eval()
            case "torch_export":
                import torch

                return _frozen(torch.export.load(str(path)).module())
    except Exception as err:
        raise _Unusable(f"cannot load the model's torch source: {err}") from err
    return None


def _frozen(inner: Any) -> Any:
    """Wrap a ``torch.export``-loaded module, whose ``eval()`` is unsupported."""
    import torch

    class FrozenModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            object.__setattr__(self, "_inner", inner)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            call: Any = inner
            return call(x)

    return FrozenModule()


def _source_accuracy(
    plan: BenchPlan, module: Any, model_path: Path, images: np.ndarray, labels: np.ndarray
) -> float | None:
    """Accuracy of the model version itself on the split: the yardstick for accuracy drops."""
    from cvops.engines.parity import engine_outputs, reference_outputs

    if len(labels) == 0:
        return None
    if module is not None:
        logits = reference_outputs(module, images)
    elif plan.model.format == "onnx":
        from cvops.engines import OrtCpuEngine

        engine = OrtCpuEngine()
        try:
            engine.load(model_path)
            logits = engine_outputs(engine, images)
        except Exception:
            return None
        finally:
            engine.close()
    else:
        return None
    return float((logits.argmax(axis=1) == labels).mean())


def _sweep(
    prep: _Prepared, plan: BenchPlan, done: set[RowKey], on_row: Callable[[Any], None]
) -> None:
    """The harness sweep over the plan's targets, skipping cells that have a row."""
    from cvops.engines import BenchTarget, SweepConfig, create_engine, run_sweep

    req = plan.request
    targets = []
    for t in plan.targets:
        if t.engine in handlers.TORCH_ENGINES:
            engine = create_engine(t.engine, precision=t.precision, device=t.device)
            source: Any = copy.deepcopy(prep.module)  # engines cast their module in place
        else:
            engine = create_engine(t.engine, precision=t.precision)
            source = str(
                prep.paths.model if t.artifact == SOURCE else prep.paths.artifacts[t.artifact]
            )
        targets.append(BenchTarget(engine=engine, source=source, artifact=t.artifact))
    config = SweepConfig(
        batch_sizes=tuple(req.batch_sizes),
        concurrency=tuple(req.concurrency),
        warmup=req.warmup,
        min_requests=req.min_requests,
        time_cap_s=req.time_cap_s,
        ci_target=req.ci_target,
    )
    run_sweep(targets, prep.images, prep.labels, config=config, on_row=on_row, done=done)


def _fingerprint() -> dict[str, Any]:
    from cvops.core.accel import host_fingerprint

    return host_fingerprint()


def _cuda_device_index() -> int:
    """NVML index of the GPU that CUDA calls device 0 (the first of CUDA_VISIBLE_DEVICES)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0
