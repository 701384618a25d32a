"""The converter's long-running work: one conversion job from request to its end.

A job fetches the model version's artifact and the data set's canonical npz, exports (or takes)
the FP32 ONNX model, computes the source model's logits on the validation split once, then
produces each target in turn: convert, measure parity, hold to the gate, store the artifact,
publish its result. A redelivered job (its converter died) skips targets that already have a
result and never publishes a second one: result events have ids derived from the request and
the target, and every publish expects the job's last sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.js.errors
import numpy as np
from nats.aio.msg import Msg

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.conversion import ConversionRequested, Int8Attempt
from cvops.converter import handlers, projection
from cvops.converter.handlers import JobFacts, Plan
from cvops.converter.sources import (
    Images,
    Source,
    SourceError,
    ensure_dynamic_batch,
    exportable_module,
    load_images,
    load_source,
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
from cvops.domain import conversion
from cvops.domain.conversion import Outcome

log = get_logger(__name__)

PROBE_IMAGES = 16  # validation images kept with the artifacts for the served-output check
CALIBRATED = ("int8", "openvino-int8", "tensorrt-int8")
MEDIA_TYPES = {
    ".onnx": "application/onnx",
    ".xml": "application/xml",
    ".plan": "application/vnd.nvidia.tensorrt-plan",
}


class JobMovedOn(Exception):
    """Another worker appended to the job since we read it: re-read before deciding again."""


def _now() -> datetime:
    return datetime.now(UTC)


class Converter:
    """Handles ``conversion.requested`` from the shared work consumer."""

    def __init__(self, bus: Bus, settings: Settings, runner: ProjectionRunner) -> None:
        self.bus = bus
        self.settings = settings
        self.runner = runner
        self.store = ArtifactStore(bus)
        self.host = socket.gethostname()
        self.cache_dir = settings.home_path / "cache"
        self.jobs_dir = settings.home_path / "conversions"
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    async def handle(self, event: Event, msg: Msg) -> None:
        """Run one conversion job (or its remaining targets) to its end."""
        if not isinstance(event, ConversionRequested):
            return
        attempt = int(msg.metadata.num_delivered or 1)
        while True:
            try:
                await self._run(event, attempt)
                return
            except JobMovedOn:
                log.info("job_moved_on", job_id=event.job_id)
                await asyncio.sleep(0.2)

    async def _run(self, event: ConversionRequested, attempt: int) -> None:
        await self.runner.reached(await self.bus.last_seq(), self.stopping)
        with self.runner.session() as s:
            state = projection.load_job(s, event.job_id)
            model = projection.model_version(s, event.model_name, event.version)
            datasets = projection.dataset_versions(s)
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
        plan = handlers.plan_conversion(state, model, datasets, stamp)
        if isinstance(plan, list):
            for e in plan:
                await job.publish(e)
            return
        results: dict[str, Outcome] = {t: r.outcome for t, r in state.results.items()}
        if plan.targets:
            workdir = self.jobs_dir / plan.job_id
            try:
                await self._convert(plan, state.results, attempt, workdir, job, stamp, results)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            if job.ended:
                return
        await job.publish(conversion.complete(event, results, stamp))
        log.info("conversion_completed", job_id=plan.job_id, results=results)

    async def _convert(
        self,
        plan: Plan,
        done: dict[str, conversion.TargetState],
        attempt: int,
        workdir: Path,
        job: _JobLog,
        stamp: Stamp,
        results: dict[str, Outcome],
    ) -> None:
        req = plan.request
        bound = log.bind(job_id=plan.job_id, model=f"{req.model_name}:{req.version}")
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            model_path = await self._cached(plan.model.artifact)
            npz_path = await self._cached(plan.dataset.canonical)
            base_onnx = None
            if "onnx" in done and done["onnx"].artifact is not None:
                base_onnx = await self._download(done["onnx"], workdir / "produced-onnx")
        except MissingArtifact as err:
            await job.publish(conversion.fail(req, str(err), stamp))
            return
        try:
            prepared = await asyncio.to_thread(
                _prepare, model_path, npz_path, plan, workdir, base_onnx
            )
        except _ExportFailed as err:
            await job.publish(conversion.fail(req, str(err), stamp, op=err.op))
            bound.info("conversion_failed", reason=str(err), op=err.op)
            return
        except SourceError as err:
            await job.publish(conversion.fail(req, str(err), stamp))
            bound.info("conversion_failed", reason=str(err))
            return
        except Exception as err:  # a bug must end the job visibly, not loop on redelivery
            bound.exception("prepare_failed")
            await job.publish(conversion.fail(req, f"internal error: {_describe(err)}", stamp))
            return
        facts = JobFacts(
            request=req,
            source=plan.model.artifact,
            dataset=plan.dataset.name,
            dataset_version=plan.dataset.version,
            input_shape=prepared.images.fit.shape,
            normalization=prepared.images.normalization,
            opset=prepared.opset,
            probe=await self._store_probe(prepared, workdir),
        )
        await job.publish(
            handlers.started(
                req, attempt, self.host, plan.model.format, facts, plan.targets,
                prepared.images.normalization_source, stamp,
            )
        )  # fmt: skip
        for target in plan.targets:
            if self.stopping.is_set():
                raise ShuttingDown()
            async with self._gpu_for(target, plan.job_id):
                try:
                    outcome = await asyncio.to_thread(_produce, prepared, target, req)
                except Exception as err:  # a library bug rejects this target, not the job
                    bound.exception("target_failed", target=target)
                    outcome = _Outcome(
                        kind="rejected",
                        stage="conversion",
                        reason=f"internal error: {_describe(err)}",
                    )
            event = await self._result_event(facts, target, outcome, stamp)
            await job.publish(event)
            results[target] = outcome.kind
            bound.info("target_done", target=target, outcome=outcome.kind, reason=outcome.reason)

    async def _store_probe(self, prepared: _Prepared, workdir: Path) -> ArtifactRef:
        """A few validation inputs with the source's outputs on them: a deployment of any
        of the job's artifacts checks what Triton serves against them."""
        path = workdir / "probe.npz"
        n = min(PROBE_IMAGES, len(prepared.images.val))
        inputs = np.ascontiguousarray(prepared.images.val[:n], dtype=np.float32)
        reference = np.ascontiguousarray(prepared.reference[:n], dtype=np.float32)
        await asyncio.to_thread(np.savez, path, inputs=inputs, reference=reference)
        return await self.store.put_file(path, filename="probe.npz")

    async def _cached(self, ref: ArtifactRef) -> Path:
        path = self.cache_dir / ref.sha256
        if not path.exists():
            await fetch_blob(self.store, ref.sha256, path)
        return path

    async def _download(self, result: conversion.TargetState, directory: Path) -> Path:
        assert result.artifact is not None
        primary = directory / (result.artifact.filename or "model.onnx")
        await fetch_blob(self.store, result.artifact.sha256, primary)
        for companion in result.companions:
            await fetch_blob(self.store, companion.sha256, directory / companion.filename)
        return primary

    @contextlib.asynccontextmanager
    async def _gpu_for(self, target: str, job_id: str) -> AsyncIterator[None]:
        """Hold the GPU's lease while a TensorRT engine is built and checked on it."""
        if not target.startswith("tensorrt") or not await asyncio.to_thread(_has_cuda):
            yield
            return
        resource = leases.gpu_resource(self.host, _cuda_device_index())
        holder = f"converter@{self.host}:{os.getpid()}/{job_id}"
        while True:
            try:
                async with leases.held(self.bus, resource, holder, self.settings.gpu_lease_ttl_s):
                    yield
                    return
            except leases.LeaseUnavailable:
                if self.stopping.is_set():
                    raise ShuttingDown() from None
                await asyncio.sleep(2.0)

    async def _result_event(
        self, facts: JobFacts, target: str, outcome: _Outcome, stamp: Stamp
    ) -> Event:
        req = facts.request
        if outcome.kind == "unavailable":
            return handlers.unavailable(req, target, outcome.reason, stamp)
        if outcome.kind == "rejected":
            return handlers.rejected(
                req,
                target,
                outcome.reason,
                stamp,
                stage=outcome.stage,
                parity=outcome.parity,
                verdict=outcome.gate,
                excluded_layers=outcome.excluded,
                attempts=outcome.attempts,
            )
        artifact = outcome.artifact
        assert artifact is not None and outcome.parity is not None and outcome.gate is not None
        primary = Path(artifact.path)
        stored = await self.store.put_file(
            primary,
            media_type=MEDIA_TYPES.get(primary.suffix, "application/octet-stream"),
            filename=primary.name,
            sha256=artifact.sha256,
        )
        companions = [
            await self.store.put_file(Path(f), filename=Path(f).name)
            for f in artifact.files
            if Path(f) != primary
        ]
        return handlers.produced(
            facts,
            target,
            stored,
            companions,
            artifact.format,
            artifact.precision,
            outcome.parity,
            outcome.gate,
            stamp,
            excluded_layers=outcome.excluded,
            details=dict(artifact.details),
        )


class MissingArtifact(Exception):
    """A blob the job needs is not in the object store (or is corrupt)."""


async def fetch_blob(store: ArtifactStore, sha256: str, path: Path) -> Path:
    """Download a blob; MissingArtifact when it is gone or its digest is wrong."""
    try:
        return await store.get_file(sha256, path)
    except (nats.js.errors.ObjectNotFoundError, nats.js.errors.NotFoundError) as err:
        raise MissingArtifact(f"artifact {sha256[:12]} is missing from the object store") from err
    except ValueError as err:  # the store's digest check
        raise MissingArtifact(str(err)) from err


class _JobLog:
    """Appends a job's events in order, each expecting the job's previous one."""

    def __init__(self, bus: Bus, last_seq: int) -> None:
        self.bus = bus
        self.expected = last_seq
        self.ended = False

    async def publish(self, event: Event) -> None:
        try:
            appended = await append_guarded(
                self.bus, event.aggregate_subjects, [event], self.expected
            )
        except ConcurrencyConflict as err:
            raise JobMovedOn(str(err)) from err
        self.expected = appended.aggregate_seq
        if event.name in ("completed", "failed"):
            self.ended = True


# -- in a worker thread ---------------------------------------------------------------------


class _ExportFailed(Exception):
    def __init__(self, message: str, op: str | None) -> None:
        super().__init__(message)
        self.op = op


@dataclass
class _Prepared:
    workdir: Path
    base: Path  # the FP32 ONNX model every target derives from
    opset: int | None
    reference: np.ndarray  # source logits on images.val
    reference_name: str
    images: Images


@dataclass
class _Outcome:
    kind: Outcome
    reason: str = ""
    stage: Any = "gate"
    artifact: Any = None  # cvops.engines.Artifact
    parity: Any = None
    gate: Any = None
    excluded: list[str] | None = None
    attempts: list[Int8Attempt] | None = None


def _prepare(
    model_path: Path, npz_path: Path, plan: Plan, workdir: Path, base_onnx: Path | None
) -> _Prepared:
    """Load source and data, get the FP32 ONNX model, and the source's validation logits."""
    import torch

    from cvops.engines import ExportError, OrtCpuEngine, describe_onnx, export_onnx
    from cvops.engines.errors import EnginesError
    from cvops.engines.parity import engine_outputs, reference_outputs
    from cvops.vision.train import configure_threads

    configure_threads()
    source: Source = load_source(model_path, plan.model, workdir)
    images = load_images(npz_path, source, plan.model, plan.request.validation_images)
    base = workdir / "model.onnx"
    fit = images.fit
    if base_onnx is not None:  # resumed: derive from the FP32 model already produced
        base = base_onnx
    elif source.onnx_path is not None:
        shutil.copyfile(source.onnx_path, base)
        ensure_dynamic_batch(base)
    else:
        module = exportable_module(source, fit)
        example = torch.zeros(1, fit.channels, fit.height, fit.width)
        try:
            export_onnx(module, example, base, opset=plan.request.opset)
        except ExportError as err:
            raise _ExportFailed(str(err), err.op) from err
    opset = describe_onnx(base).opset
    if source.module is not None:
        reference = reference_outputs(source.module, images.val)
        reference_name = "torch"
    else:
        engine = OrtCpuEngine()
        try:
            engine.load(base)
            reference = engine_outputs(engine, images.val)
        except EnginesError as err:
            raise SourceError(f"the ONNX model does not run in ONNX Runtime: {err}") from err
        finally:
            engine.close()
        reference_name = "onnxruntime-cpu"
    return _Prepared(
        workdir=workdir,
        base=base,
        opset=opset,
        reference=reference,
        reference_name=reference_name,
        images=images,
    )


def _produce(prep: _Prepared, target: str, req: ConversionRequested) -> _Outcome:
    """Convert one target, measure parity, apply the gate (INT8: with the float fallback)."""
    from cvops.engines import (
        CalibrationError,
        EnginesError,
        EngineUnavailable,
        Unavailable,
        artifact_parity,
        convert,
        gate,
        quantize_int8_gated,
    )

    images = prep.images
    out = prep.workdir / target
    calibration = images.calibration if target in CALIBRATED else None
    if calibration is not None and len(calibration) == 0:
        return _Outcome(
            kind="rejected",
            stage="conversion",
            reason=f"{target} needs calibration images; the data set's calibration split is empty",
        )
    try:
        if target == "int8":
            assert calibration is not None
            outcome = quantize_int8_gated(
                prep.base,
                out / "model.int8.onnx",
                calibration,
                prep.reference,
                images.val,
                images.val_labels,
                method=req.calibration,
                max_accuracy_drop=req.max_accuracy_drop,
                max_excluded=req.int8_max_float_layers,
            )
            parity = handlers.parity_numbers(outcome.report, prep.reference_name)
            verdict = handlers.gate_result(outcome.verdict)
            if outcome.passed:
                return _Outcome(
                    kind="produced",
                    artifact=outcome.artifact,
                    parity=parity,
                    gate=verdict,
                    excluded=list(outcome.excluded_nodes),
                )
            return _Outcome(
                kind="rejected",
                reason=outcome.reason,
                parity=parity,
                gate=verdict,
                excluded=list(outcome.excluded_nodes),
                attempts=[
                    Int8Attempt(
                        excluded_layers=list(a.excluded_nodes),
                        accuracy_drop=a.accuracy_drop,
                        top1_agreement=a.top1_agreement,
                        passed=a.passed,
                    )
                    for a in outcome.attempts
                ],
            )
        artifact = convert(prep.base, target, out, calibration=calibration, method=req.calibration)
        if isinstance(artifact, Unavailable):
            return _Outcome(kind="unavailable", reason=artifact.reason)
        report = artifact_parity(artifact, prep.reference, images.val, images.val_labels)
        parity = handlers.parity_numbers(report, prep.reference_name)
        gated = gate(report, req.max_accuracy_drop)
        if not gated.passed:
            for f in artifact.files:
                Path(f).unlink(missing_ok=True)
            return _Outcome(
                kind="rejected",
                reason=gated.reason,
                parity=parity,
                gate=handlers.gate_result(gated),
            )
        return _Outcome(
            kind="produced", artifact=artifact, parity=parity, gate=handlers.gate_result(gated)
        )
    except EngineUnavailable as err:
        return _Outcome(kind="unavailable", reason=str(err))
    except CalibrationError as err:
        return _Outcome(
            kind="rejected",
            stage="conversion",
            reason=f"the calibration set does not fit the model: {err}",
        )
    except EnginesError as err:
        return _Outcome(kind="rejected", stage="conversion", reason=str(err))


def _describe(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:500]


def _has_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _cuda_device_index() -> int:
    """NVML index of the GPU that CUDA calls device 0 (the first of CUDA_VISIBLE_DEVICES)."""
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(first) if first.isdigit() else 0
