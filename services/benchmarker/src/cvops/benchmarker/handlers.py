"""The benchmarker's decisions, pure: plan which engine runs which artifact at which precision,
notice an engine that kills the process, and turn the measured rows into the completed event
(Pareto front, pick under the SLA, batcher advice). The job's state, its fold, the request's
validation and the job's failure are the domain's: ``cvops.domain.benchmark``.

No clock, no network, no files: the time and the cause come in a ``Stamp``; what the host
offers (engine statuses, CUDA) comes in as plain values.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.conversion import (
    ArtifactProduced,
    BatcherAdvice,
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
)
from cvops.core.catalog import DatasetView, ModelVersionView
from cvops.domain.benchmark import (
    ARTIFACT_ENGINES,
    BenchmarkState,
    RowKey,
    check_model,
    end_keys,
    fail,
    validate_request,
)
from cvops.domain.errors import Refused

SERVICE = "benchmarker"
SOURCE = "source"  # the artifact label of rows measured on the model version's own file
MAX_ATTEMPTS = 10  # deliveries of one job before it fails (the benchmarker died every time)
TORCH_ENGINES = ("torch-eager", "torch-compiled")
TORCH_FORMATS = ("safetensors", "torchscript", "torch_export")


# -- views ------------------------------------------------------------------------------------


class ArtifactView(msgspec.Struct, frozen=True, kw_only=True):
    """A produced conversion artifact of a model version (the newest per target wins)."""

    target: str
    job_id: str
    artifact: ArtifactRef
    companions: list[ArtifactRef] = []
    format: str
    precision: str
    input_shape: list[int]
    normalization: dict[str, list[float]] = {}
    dataset: str = ""
    dataset_version: int = 0
    seq: int = 0

    @classmethod
    def of(cls, e: ArtifactProduced, seq: int) -> ArtifactView:
        return cls(
            target=e.target,
            job_id=e.job_id,
            artifact=e.artifact,
            companions=list(e.companions),
            format=e.format,
            precision=e.precision,
            input_shape=list(e.input_shape),
            normalization=dict(e.normalization),
            dataset=e.dataset,
            dataset_version=e.dataset_version,
            seq=seq,
        )


class EngineInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One engine of ``cvops.engines`` and whether this host can run it."""

    name: str
    device: str
    available: bool
    detail: str  # "available" or "unavailable: <why>"


# -- planning ---------------------------------------------------------------------------------


class TargetSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One engine at one precision on one artifact (``source``: the model version's file)."""

    engine: str
    precision: str
    artifact: str
    device: str

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.precision} [{self.artifact}]"

    def key(self, batch_size: int, concurrency: int) -> RowKey:
        return (self.engine, self.precision, self.artifact, batch_size, concurrency)


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """How validation images become engine input: C, H, W, a resize, and the normalisation."""

    channels: int
    height: int
    width: int
    resize: bool
    normalization: dict[str, list[float]] | None  # None: compute from the train split


class BenchPlan(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    model: ModelVersionView
    dataset: DatasetView
    artifacts: dict[str, ArtifactView]  # conversion target -> artifact
    targets: list[TargetSpec]
    unavailable: dict[str, str]  # engine -> "unavailable: <why>"
    layout: Layout
    request: BenchmarkRequested

    @property
    def expected_keys(self) -> list[RowKey]:
        req = self.request
        return [t.key(b, c) for t in self.targets for b in req.batch_sizes for c in req.concurrency]


def newest_artifacts(
    artifacts: list[ArtifactView], conversion_job: str | None = None
) -> dict[str, ArtifactView]:
    """The newest produced artifact per conversion target (of one job when given)."""
    out: dict[str, ArtifactView] = {}
    for a in sorted(artifacts, key=lambda a: a.seq):
        if conversion_job is None or a.job_id == conversion_job:
            out[a.target] = a
    return out


def plan_targets(
    engines: list[EngineInfo],
    wanted: list[str],
    model: ModelVersionView,
    artifacts: dict[str, ArtifactView],
    cuda: bool,
) -> tuple[list[TargetSpec], dict[str, str]]:
    """Which engine runs which artifact at which precision; why the others cannot run."""
    known = {e.name: e for e in engines}
    names = list(dict.fromkeys(wanted)) if wanted else list(known)
    runnable: dict[str, str] = {t: t for t in artifacts}
    if model.format == "onnx" and "onnx" not in runnable:
        runnable["onnx"] = SOURCE  # ONNX engines can run the registered file itself
    targets: list[TargetSpec] = []
    unavailable: dict[str, str] = {}
    for name in names:
        info = known.get(name)
        if info is None:
            unavailable[name] = f"unavailable: unknown engine (known: {', '.join(sorted(known))})"
            continue
        if not info.available:
            unavailable[name] = info.detail
            continue
        if name in TORCH_ENGINES:
            if model.format not in TORCH_FORMATS:
                unavailable[name] = (
                    f"unavailable: {name}: the model version is {model.format}; torch engines "
                    "need torch weights"
                )
                continue
            # the torch engines run on the GPU when there is one, in fp32 and fp16
            device = "cuda" if cuda else "cpu"
            for precision in ("fp32", "fp16") if cuda else ("fp32",):
                targets.append(
                    TargetSpec(engine=name, precision=precision, artifact=SOURCE, device=device)
                )
            continue
        mapping = ARTIFACT_ENGINES.get(name, {})
        found = False
        for target, precisions in mapping.items():
            if target not in runnable:
                continue
            found = True
            for precision in precisions:
                targets.append(
                    TargetSpec(
                        engine=name, precision=precision, artifact=runnable[target],
                        device=info.device,
                    )
                )  # fmt: skip
        if not found:
            need = ", ".join(mapping) or "?"
            unavailable[name] = (
                f"unavailable: {name}: no artifact it runs ({need}) for "
                f"{model.model_name}:{model.version}; convert the model to one first"
            )
    return targets, unavailable


def choose_dataset(
    request: BenchmarkRequested,
    model: ModelVersionView,
    artifacts: dict[str, ArtifactView],
    datasets: dict[str, list[DatasetView]],
) -> DatasetView | str:
    """The validation data set: the request's, else the one the artifacts were checked on,
    else the model's lineage data set (newest version unless one is named)."""
    named = request.dataset
    version = request.dataset_version
    if named is None and artifacts:
        newest = max(artifacts.values(), key=lambda a: a.seq)
        named, version = newest.dataset or None, version or newest.dataset_version or None
    named = named or model.lineage.dataset
    if not named:
        return (
            f"no data set to measure accuracy on: {model.model_name}:{model.version} names none "
            "in its lineage or conversions, so the request must name one"
        )
    versions = sorted(datasets.get(named, []), key=lambda d: d.version)
    if not versions:
        return f"data set {named!r} is not a validated data set"
    if version is None:
        return versions[-1]
    for d in versions:
        if d.version == version:
            return d
    return f"data set {named!r} has no version {version}"


def choose_layout(
    model: ModelVersionView, artifacts: dict[str, ArtifactView], dataset: DatasetView
) -> Layout | str:
    """The engines' input layout: what the converter recorded, else the model's lineage."""
    hyper = model.lineage.hyperparameters
    norm = hyper.get("normalization") if isinstance(hyper.get("normalization"), dict) else None
    dh, dw = dataset.image_size
    if artifacts:
        newest = max(artifacts.values(), key=lambda a: a.seq)
        _, c, h, w = newest.input_shape
        norm = newest.normalization or norm
    else:
        c = dataset.channels
        if model.inputs and len(model.inputs[0].shape) == 4 and model.inputs[0].shape[1] > 0:
            c = model.inputs[0].shape[1]
        size = hyper.get("image_size")
        h, w = (size[0], size[1]) if isinstance(size, list) and len(size) == 2 else (dh, dw)
    if c != dataset.channels:
        return (
            f"the data set's images have {dataset.channels} channel(s); the model takes {c} "
            f"({c}x{h}x{w})"
        )
    return Layout(
        channels=c,
        height=int(h),
        width=int(w),
        resize=[int(h), int(w)] != [dh, dw],
        normalization=norm,
    )


def plan_benchmark(
    state: BenchmarkState,
    model: ModelVersionView | None,
    artifacts: list[ArtifactView],
    datasets: dict[str, list[DatasetView]],
    engines: list[EngineInfo],
    cuda: bool,
    stamp: Stamp,
) -> BenchPlan | list[Event]:
    """Check a benchmark against what the host and the log offer: a plan, or its end."""
    req = state.request
    if state.finished:
        return []
    try:
        check_model(req.model_name, req.version, model is not None)
        validate_request(req)
    except Refused as err:
        return [fail(req, str(err), stamp)]
    assert model is not None  # check_model refused an unregistered one
    chosen = newest_artifacts(artifacts, req.conversion_job)
    if req.conversion_job is not None and not chosen:
        return [fail(req, f"conversion {req.conversion_job} produced no artifact", stamp)]
    dataset = choose_dataset(req, model, chosen, datasets)
    if isinstance(dataset, str):
        return [fail(req, dataset, stamp)]
    layout = choose_layout(model, chosen, dataset)
    if isinstance(layout, str):
        return [fail(req, layout, stamp)]
    targets, unavailable = plan_targets(engines, req.engines, model, chosen, cuda)
    if not targets:
        why = "; ".join(f"{k}: {v}" for k, v in unavailable.items()) or "no engine requested"
        return [fail(req, f"no engine can run {req.model_name}:{req.version} here ({why})", stamp)]
    return BenchPlan(
        job_id=state.job_id,
        model=model,
        dataset=dataset,
        artifacts=chosen,
        targets=targets,
        unavailable=unavailable,
        layout=layout,
        request=req,
    )


def crashing_target(
    started_rows: list[int], rows_done: int, pending: list[TargetSpec]
) -> TargetSpec | None:
    """The target that killed the process twice, if any.

    Rows are published as they finish, so two attempts in a row that started at the current
    row count and published nothing died on the first target still pending (a native crash,
    out of memory): that one is given up, the others still run.
    """
    if not pending or len(started_rows) < 2:
        return None
    if started_rows[-1] == rows_done and started_rows[-2] == rows_done:
        return pending[0]
    return None


def crash_rows(
    target: TargetSpec, req: BenchmarkRequested, done: set[RowKey]
) -> list[BenchmarkRow]:
    """Error rows for every unmeasured cell of a target that keeps killing the process."""
    return [
        BenchmarkRow(
            engine=target.engine,
            precision=target.precision,
            artifact=target.artifact,
            device=target.device,
            batch_size=b,
            concurrency=c,
            error=(
                "crashed: the benchmarker process died twice while measuring this engine "
                "(a crash in its native runtime or out of memory)"
            ),
        )
        for b in req.batch_sizes
        for c in req.concurrency
        if target.key(b, c) not in done
    ]


# -- events -----------------------------------------------------------------------------------


def _keys(req: BenchmarkRequested) -> dict[str, Any]:
    return {"job_id": req.job_id, "model_name": req.model_name, "version": req.version}


def row_key_text(key: RowKey) -> str:
    engine, precision, artifact, batch, concurrency = key
    return f"{engine}/{precision}/{artifact}/b{batch}/c{concurrency}"


def started(
    plan: BenchPlan, attempt: int, host: str, rows_done: int, gpu: str | None, stamp: Stamp
) -> BenchmarkStarted:
    return BenchmarkStarted(
        **stamp.envelope(f"started/{attempt}"),
        **_keys(plan.request),
        attempt=attempt,
        host=host,
        targets=[t.label for t in plan.targets],
        unavailable=plan.unavailable,
        rows_done=rows_done,
        gpu=gpu,
    )


def row_measured(req: BenchmarkRequested, row: BenchmarkRow, stamp: Stamp) -> BenchmarkRowMeasured:
    """One cell's result; its id is fixed by the cell, so a cell is published once."""
    return BenchmarkRowMeasured(
        **stamp.envelope(f"row/{row_key_text(row.key)}"), **_keys(req), row=row
    )


def completed(
    req: BenchmarkRequested,
    rows: list[BenchmarkRow],
    unavailable: dict[str, str],
    reference_accuracy: float | None,
    host: dict[str, Any],
    stamp: Stamp,
) -> BenchmarkCompleted:
    """The Pareto front, the pick under the SLA with its reason, and batcher advice."""
    from cvops.engines.recommend import recommend

    rec = recommend(
        rows,
        p95_ms=req.p95_ms,
        max_accuracy_drop=req.max_accuracy_drop,
        reference_accuracy=reference_accuracy,
    )
    reason = rec.reason
    if unavailable:
        reason += "; not measured: " + ", ".join(sorted(unavailable))
    batcher = None
    if rec.batcher is not None:
        batcher = BatcherAdvice(
            preferred_batch_sizes=list(rec.batcher.preferred_batch_sizes),
            max_batch_size=rec.batcher.max_batch_size,
            max_queue_delay_us=rec.batcher.max_queue_delay_us,
            reason=rec.batcher.reason,
        )
    return BenchmarkCompleted(
        **end_keys(req, stamp),
        met_sla=rec.met_sla,
        reason=reason,
        pick=rec.pick,
        closest=rec.closest,
        pareto=list(rec.pareto),
        batcher=batcher,
        unavailable=dict(unavailable),
        rows=len(rows),
        failed_rows=sum(1 for r in rows if r.error is not None),
        reference_accuracy=rec.reference_accuracy,
        p95_ms=req.p95_ms,
        max_accuracy_drop=req.max_accuracy_drop,
        host=host,
    )


def too_many_attempts(req: BenchmarkRequested, attempt: int, stamp: Stamp) -> BenchmarkFailed:
    return fail(
        req,
        f"gave up after {attempt - 1} attempts: the benchmarker stopped every time before the "
        "job ended",
        stamp,
    )
