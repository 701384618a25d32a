"""The trainer's long-running work: coordinating jobs (the generation loop) and running
trials (train, export to ONNX, measure the exported model, store it).

Both are handlers of durable work consumers shared by every trainer instance: any instance
coordinates any job, and trials spread over every host that runs a trainer. All state is in
the event log; a redelivered job or trial carries on from what its events say happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.training import (
    TrainingFailed,
    TrainingRequested,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialProgressed,
    TrialPruned,
    TrialRequested,
    TrialStarted,
)
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
from cvops.domain.training import JobState
from cvops.trainer import handlers, metrics, projection, search, space
from cvops.trainer.handlers import ArchInfo, Catalog, Step

log = get_logger(__name__)

LATENCY_WARMUP = 5
LATENCY_RUNS = 30
GPU_WAIT_POLL_S = 2.0
CUDA_RETRIES = 5  # deliveries a cuda-only trial waits for a GPU host before it fails


class DatasetMissing(Exception):
    """The trial's data set cannot be had from the store: the trial fails with this reason."""


class NoGpuHere(Exception):
    """The trial wants a GPU and this host has none: let another instance take it."""


def _now() -> datetime:
    return datetime.now(UTC)


def onnx_engines() -> list[str]:
    """Names of the engines that run an ONNX file (the valid target engines)."""
    from cvops.engines.engines import ENGINE_REGISTRY

    return sorted(name for name, cls in ENGINE_REGISTRY.items() if "onnx" in cls.formats)


def architectures() -> dict[str, ArchInfo]:
    """The zoo's architectures with their default search spaces."""
    from cvops.vision.zoo import ARCHITECTURES

    return {
        name: ArchInfo(
            name=name,
            min_image_size=spec.min_image_size,
            default_space=space.default_space(spec.default_space),
        )
        for name, spec in ARCHITECTURES.items()
    }


class Trainer:
    """Holds what the two kinds of work share: bus, artifacts, the projection, this host."""

    def __init__(self, bus: Bus, settings: Settings, runner: ProjectionRunner) -> None:
        self.bus = bus
        self.settings = settings
        self.runner = runner
        self.store = ArtifactStore(bus)
        self.host = socket.gethostname()
        self.worker = f"{self.host}:{os.getpid()}"  # this instance, in its trial events
        self.cache_dir = settings.home_path / "cache"
        self.work_dir = settings.home_path / "trials"
        self.stopping = asyncio.Event()
        self._archs: dict[str, ArchInfo] | None = None
        self._engines: list[str] | None = None
        self._dataset_lock = asyncio.Lock()
        self._loaded: dict[tuple[str, tuple[int, ...]], Any] = {}

    def stop(self) -> None:
        self.stopping.set()

    # -- shared ------------------------------------------------------------------------------

    def job_view(self, job_id: str) -> JobState | None:
        with self.runner.session() as s:
            return projection.load_job(s, job_id)

    def catalog(self) -> Catalog:
        if self._archs is None:
            self._archs = architectures()
            self._engines = onnx_engines()
        with self.runner.session() as s:
            return Catalog(
                datasets=projection.dataset_versions(s),
                rejections=projection.dataset_rejection_reasons(s),
                architectures=self._archs,
                engines=self._engines or ["onnxruntime-cpu"],
            )

    # -- coordinator ---------------------------------------------------------------------------

    async def coordinate(self, event: Event, msg: Msg) -> None:
        """Drive one job from its request to its end (or until this instance stops)."""
        if not isinstance(event, TrainingRequested):
            return
        await self.runner.reached(await self.bus.last_seq(), self.stopping)
        job = log.bind(job_id=event.job_id, correlation_id=event.correlation_id)
        while True:
            if self.stopping.is_set():
                raise ShuttingDown()
            view = self.job_view(event.job_id)
            if view is None:  # cannot happen once caught up; be patient rather than wrong
                await asyncio.sleep(0.5)
                continue
            step = handlers.next_step(view)
            if step.kind == "done":
                job.info("job_done", status=view.status, reason=view.reason)
                return
            if step.kind == "wait":
                # the projection moves on every event; a trial ending is one of them
                await self.runner.wait_for(self.runner.position + 1, timeout=1.0)
                continue
            stamp = handlers.job_stamp(view, _now())
            try:
                events = await self._events_for(step, view, stamp)
            except (ShuttingDown, nats.errors.Error, OSError, TimeoutError):
                raise
            except Exception as err:  # a planning bug must end the job visibly, not loop
                job.exception("coordinator_step_failed", step=step.kind)
                events = [
                    TrainingFailed(
                        **stamp.envelope(f"internal/{step.kind}/{step.generation}"),
                        job_id=view.job_id,
                        reason=f"the coordinator failed at step {step.kind}: {err}",
                    )
                ]
            job.info("job_step", step=step.kind, generation=step.generation, events=len(events))
            metrics.JOB_STEPS.labels(step.kind).inc()
            await self._publish_for_job(view, events)

    async def _events_for(self, step: Step, view: JobState, stamp: Stamp) -> list[Event]:
        match step.kind:
            case "validate":
                return handlers.validate_request(view, self.catalog(), stamp)
            case "cancel":
                return handlers.cancel_job(view, stamp)
            case "start":
                return await asyncio.to_thread(
                    handlers.start_generation, view, step.generation, stamp
                )
            case "request":
                return handlers.request_planned(view, step.generation, stamp)
            case "complete":
                doc = handlers.population_document(view, step.generation)
                ref = await self.store.put_bytes(
                    msgspec.json.encode(doc),
                    media_type="application/json",
                    filename=f"{view.job_id}-generation-{step.generation}.json",
                )
                return handlers.complete_generation(view, step.generation, ref, stamp)
            case "finish":
                return handlers.finish_job(view, stamp)
        return []

    async def _publish_for_job(self, view: JobState, events: list[Event]) -> None:
        """Append a step's events: the job's own with optimistic concurrency (a cancel that
        slipped in makes us re-decide), each trial and upload at most once ever."""
        expected = view.last_seq
        last = 0
        for e in events:
            own = e.context == "training"
            try:
                # the job's own after its previous one; trial.requested / model upload: the
                # first of its aggregate, or already out
                appended = await append_guarded(
                    self.bus, e.aggregate_subjects, [e], expected if own else 0
                )
            except ConcurrencyConflict:
                if own:
                    log.info("job_moved_on", job_id=view.job_id, event_type=e.tag())
                    break
                continue
            if own:
                expected = appended.aggregate_seq
            last = max(last, appended.seq)
        await self.runner.reached(max(last, await self.bus.last_seq()), self.stopping)

    # -- trials --------------------------------------------------------------------------------

    async def run_trial(self, event: Event, msg: Msg) -> None:
        """Run one trial unless it ended already or its job did."""
        if not isinstance(event, TrialRequested):
            return
        # everything up to now, not just up to the request: a redelivered trial may have
        # ended after it was requested (its trainer died between publishing and acking)
        await self.runner.reached(await self.bus.last_seq(), self.stopping)
        stamp = Stamp(
            now=_now(),
            actor=handlers.SERVICE,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )
        settled = handlers.trial_gate(self.job_view(event.job_id), event, stamp)
        if settled is not None:
            for e in settled:
                await self.bus.publish(e)
            return
        attempt = int(msg.metadata.num_delivered or 1)
        try:
            async with self._device(event, attempt) as device:
                metrics.TRIALS_RUNNING.inc()
                try:
                    with metrics.TRIAL_SECONDS.time():
                        outcome = await self._run_trial(event, attempt, device, stamp)
                finally:
                    metrics.TRIALS_RUNNING.dec()
            metrics.TRIALS.labels(outcome).inc()
        except NoGpuHere:
            if attempt >= CUDA_RETRIES:
                await self.bus.publish(
                    _trial_failed(
                        event, stamp, f"no trainer with a GPU took this trial in {attempt} tries"
                    )
                )
                return
            raise

    @contextlib.asynccontextmanager
    async def _device(self, event: TrialRequested, attempt: int) -> AsyncIterator[str]:
        """'cpu', or 'cuda:<i>' with a lease on GPU i held (quota checked) for the block."""
        import torch

        want = event.device
        if want == "cpu" or not torch.cuda.is_available():
            if want == "cuda":
                raise NoGpuHere()
            yield "cpu"
            return
        holder = f"trainer@{self.host}:{os.getpid()}/{event.trial_id}"
        ttl = self.settings.gpu_lease_ttl_s
        while True:
            if self.stopping.is_set():
                raise ShuttingDown()
            try:
                await leases.check_quota(
                    self.bus,
                    user=event.user,
                    role=event.role,
                    user_limit=self.settings.gpu_trials_per_user or None,
                    role_limit=self.settings.gpu_trials_per_role or None,
                )
            except leases.QuotaExceeded as err:
                log.info("gpu_quota_wait", trial_id=event.trial_id, reason=str(err))
                await asyncio.sleep(GPU_WAIT_POLL_S)
                continue
            for index in range(torch.cuda.device_count()):
                resource = leases.gpu_resource(self.host, index)
                try:
                    async with leases.held(
                        self.bus, resource, holder, ttl, user=event.user, role=event.role
                    ):
                        yield f"cuda:{index}"
                        return
                except leases.LeaseUnavailable:
                    continue
            await asyncio.sleep(GPU_WAIT_POLL_S)

    async def _dataset(self, ref: ArtifactRef, image_size: list[int]) -> Any:
        """The canonical data set (file cached by sha256 under home/cache), at ``image_size``."""
        key = (ref.sha256, tuple(image_size))
        async with self._dataset_lock:
            if key in self._loaded:
                return self._loaded[key]
            path = self.cache_dir / f"{ref.sha256}.npz"
            if not path.exists():
                try:
                    await self.store.get_file(ref.sha256, path)
                except (nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError) as err:
                    raise DatasetMissing(
                        f"the data set's canonical file {ref.sha256[:12]} is not in the store"
                    ) from err
                except ValueError as err:  # digest mismatch: a corrupt blob
                    raise DatasetMissing(str(err)) from err
            ds = await asyncio.to_thread(load_canonical, path, image_size)
            self._loaded = {key: ds}  # one data set in memory at a time
            return ds

    async def _run_trial(
        self, event: TrialRequested, attempt: int, device: str, stamp: Stamp
    ) -> str:
        """Run the trial and publish how it ended; returns the outcome (for metrics)."""
        from cvops.vision.data import DatasetError
        from cvops.vision.train import TrainConfig
        from cvops.vision.zoo import build_model, parameter_count

        trial = log.bind(trial_id=event.trial_id, job_id=event.job_id, attempt=attempt)
        try:
            ds = await self._dataset(event.canonical, event.image_size)
        except (DatasetError, DatasetMissing) as err:
            await self.bus.publish(_trial_failed(event, stamp, f"unusable data set: {err}"))
            return "failed"
        hyper = dict(event.hyperparameters)
        try:
            config = TrainConfig(
                arch=event.arch,
                seed=event.seed,
                device=device,
                max_batches_per_epoch=event.max_batches_per_epoch,
                **hyper,
            )
            model = build_model(
                event.arch,
                num_classes=ds.num_classes,
                in_channels=ds.channels,
                image_size=ds.image_size,
                width=config.width,
                depth=config.depth,
                dropout=config.dropout,
            )
        except (ValueError, TypeError, msgspec.ValidationError) as err:
            await self.bus.publish(_trial_failed(event, stamp, f"invalid configuration: {err}"))
            return "failed"
        parameters = parameter_count(model)
        limit = event.constraints.max_parameters
        if limit is not None and parameters > limit:
            reason = f"the model has {parameters:,} parameters, over the limit of {limit:,}"
            await self.bus.publish(_trial_failed(event, stamp, reason))
            return "failed"
        await self.bus.publish(
            TrialStarted(
                **stamp.envelope(f"started/{attempt}"),
                **_trial_keys(event),
                attempt=attempt,
                host=self.host,
                device=device,
                parameters=parameters,
                hyperparameters=hyper,
                worker=self.worker,
            )
        )
        trial.info("trial_started", device=device, parameters=parameters)

        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        pruned: dict[str, Any] = {}
        watcher = asyncio.create_task(self._watch_job(event.job_id, cancelled))

        def on_epoch(epoch: int, train_loss: float, val_acc: float) -> str | None:
            progress = TrialProgressed(
                **stamp.envelope(f"progress/{attempt}/{epoch}"),
                **_trial_keys(event),
                attempt=attempt,
                epoch=epoch,
                epochs=config.epochs,
                train_loss=float(train_loss),
                val_accuracy=float(val_acc),
            )
            fut: Future[Any] = asyncio.run_coroutine_threadsafe(self.bus.publish(progress), loop)
            with contextlib.suppress(Exception):  # progress is news, not state: never fatal
                fut.result(timeout=10)
            with self.runner.session() as s:
                peers = projection.peer_progress(s, event.job_id, epoch, event.trial_id)
            reason = search.prune_reason(
                val_acc, epoch, config.epochs, parameters, peers, event.objectives
            )
            if reason:
                pruned.update(epoch=epoch, val_accuracy=float(val_acc), reason=reason)
                return "stop"
            return None

        def should_stop() -> bool:
            return cancelled.is_set() or self.stopping.is_set()

        workdir = self.work_dir / event.trial_id
        started = time.perf_counter()
        try:
            outcome = await asyncio.to_thread(
                train_export_measure,
                config,
                ds,
                on_epoch,
                should_stop,
                workdir,
                event.target_engine,
            )
        except TrialError as err:
            await self.bus.publish(_trial_failed(event, stamp, str(err)))
            trial.info("trial_failed", reason=str(err))
            shutil.rmtree(workdir, ignore_errors=True)
            return "failed"
        finally:
            watcher.cancel()
        if outcome is None:  # stopped between batches
            if self.stopping.is_set() and not cancelled.is_set():
                raise ShuttingDown()  # back to the stream; resumes from the epoch checkpoint
            await self.bus.publish(
                _trial_failed(event, stamp, "stopped: the job was cancelled", cancelled=True)
            )
            shutil.rmtree(workdir, ignore_errors=True)
            return "cancelled"
        if pruned:
            await self.bus.publish(
                TrialPruned(
                    **stamp.envelope(f"trial/{event.trial_id}/pruned"),
                    **_trial_keys(event),
                    hyperparameters=hyper,
                    **pruned,
                )
            )
            trial.info("trial_pruned", **pruned)
            shutil.rmtree(workdir, ignore_errors=True)
            return "pruned"
        onnx = await self.store.put_file(
            outcome.onnx_path, media_type="application/onnx", filename=f"{event.trial_id}.onnx"
        )
        weights = await self.store.put_file(
            outcome.weights_path,
            media_type="application/vnd.safetensors",
            filename=f"{event.trial_id}.safetensors",
        )
        measured = msgspec.structs.replace(
            outcome.metrics, train_seconds=round(time.perf_counter() - started, 3)
        )
        await self.bus.publish(
            TrialCompleted(
                **stamp.envelope(f"trial/{event.trial_id}/completed"),
                **_trial_keys(event),
                hyperparameters=hyper,
                metrics=measured,
                onnx=onnx,
                weights=weights,
                normalization=outcome.normalization,
                host=self.host,
                device=device,
                worker=self.worker,
            )
        )
        trial.info("trial_completed", accuracy=measured.accuracy, latency_ms=measured.latency_ms)
        shutil.rmtree(workdir, ignore_errors=True)
        return "completed"

    async def _watch_job(self, job_id: str, cancelled: threading.Event) -> None:
        """Set ``cancelled`` as soon as the projection says the job is cancelled or over."""
        while True:
            with self.runner.session() as s:
                status = projection.job_status(s, job_id)
            if status is not None and (status[1] or status[0] in ("cancelled", "failed")):
                cancelled.set()
                return
            await asyncio.sleep(0.25)


# -- helpers that run in a worker thread ------------------------------------------------------


class TrialError(Exception):
    """A trial's own failure (diverged, export refused, engine missing): recorded, not retried."""


class TrialOutcome(msgspec.Struct, kw_only=True):
    onnx_path: Path
    weights_path: Path
    metrics: TrialMetrics
    normalization: dict[str, list[float]]


def _trial_keys(e: TrialRequested) -> dict[str, Any]:
    return {
        "trial_id": e.trial_id,
        "job_id": e.job_id,
        "generation": e.generation,
        "index": e.index,
    }


def _trial_failed(
    e: TrialRequested, stamp: Stamp, reason: str, *, cancelled: bool = False
) -> TrialFailed:
    return TrialFailed(
        **stamp.envelope(f"trial/{e.trial_id}/failed"),
        **_trial_keys(e),
        reason=reason,
        hyperparameters=e.hyperparameters,
        cancelled=cancelled,
    )


def load_canonical(path: Path, image_size: list[int]) -> Any:
    """Load a canonical npz; resize its images when the job trains at another size."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from cvops.vision.data import CanonicalDataset, load_npz

    ds = load_npz(path)
    h, w = image_size
    if ds.image_size == (h, w):
        return ds
    x = torch.from_numpy(ds.x).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    resized = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    arrays = {**ds.arrays(), "x": np.ascontiguousarray(resized)}
    return CanonicalDataset.from_arrays(arrays, source=str(path))


def train_export_measure(
    config: Any,
    ds: Any,
    on_epoch: Callable[[int, float, float], str | None],
    should_stop: Callable[[], bool],
    workdir: Path,
    target_engine: str,
) -> TrialOutcome | None:
    """Train (resuming from this host's epoch checkpoint), export the best model to ONNX,
    measure accuracy of the ONNX model with ONNX Runtime and its batch-1 latency on the
    target engine. None when stopped between batches.

    Raises:
        TrialError: the trial's own failure (diverged, bad combination, export refused).
    """
    import torch

    from cvops.engines.engines import create_engine
    from cvops.engines.errors import EnginesError
    from cvops.engines.export import export_onnx
    from cvops.vision.metrics import evaluate
    from cvops.vision.train import TrainingDiverged, train
    from cvops.vision.zoo import parameter_count, save_weights

    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = train(
            config, ds, on_epoch=on_epoch, checkpoint_dir=workdir / "checkpoints",
            should_stop=should_stop,
        )  # fmt: skip
    except TrainingDiverged as err:
        raise TrialError(str(err)) from err
    except (ValueError, RuntimeError) as err:  # bad combination, out of memory, ...
        raise TrialError(f"training failed: {err}") from err
    if result.stop_reason == "cancelled":
        return None
    model = result.model.cpu().eval()
    norm = result.normalization
    onnx_path = workdir / "model.onnx"
    weights_path = workdir / "model.safetensors"
    example = torch.zeros(1, ds.channels, *ds.image_size)
    x_val, y_val = ds.split("val")
    try:
        exported = export_onnx(model, example, onnx_path)
        with create_engine("onnxruntime-cpu") as ort_cpu:
            ort_cpu.load(onnx_path)
            accuracy = evaluate(ort_cpu.infer, x_val, y_val, ds.num_classes, norm).accuracy
        latency_ms = _latency_ms(target_engine, onnx_path, x_val[:1], norm)
    except EnginesError as err:
        raise TrialError(str(err)) from err
    save_weights(model, weights_path, normalization=norm)
    return TrialOutcome(
        onnx_path=onnx_path,
        weights_path=weights_path,
        metrics=TrialMetrics(
            accuracy=round(float(accuracy), 6),
            latency_ms=round(latency_ms, 4),
            size_bytes=int(exported.size_bytes),
            parameters=parameter_count(model),
            torch_accuracy=round(float(result.best_val_acc), 6),
            epochs=result.epochs_run,
            engine=target_engine,
        ),
        normalization=norm.to_dict(),
    )


def _latency_ms(engine_name: str, onnx_path: Path, image: Any, norm: Any) -> float:
    """Median batch-1 latency over LATENCY_RUNS runs after LATENCY_WARMUP (one thread for
    ONNX Runtime on CPU, so trials measured on a busy host stay comparable)."""
    from cvops.engines.engines import create_engine
    from cvops.vision.data import preprocess

    options: dict[str, Any] = {"threads": 1} if engine_name == "onnxruntime-cpu" else {}
    batch = preprocess(image, norm)
    with create_engine(engine_name, **options) as engine:
        engine.load(onnx_path)
        for _ in range(LATENCY_WARMUP):
            engine.infer(batch)
        samples = []
        for _ in range(LATENCY_RUNS):
            t0 = time.perf_counter()
            engine.infer(batch)
            samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)
