"""The converter's decisions, pure: fold a job's events, check a request against what the
registry knows, decide how images must be shaped for the model, and build result events.

No clock, no network, no files: the time and the cause come in a ``Stamp``; what was loaded
from disk comes in as plain values.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.conversion import (
    ArtifactProduced,
    ArtifactRejected,
    CalibrationMethod,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    GateResult,
    Int8Attempt,
    ParityNumbers,
    TargetUnavailable,
)
from cvops.core.catalog import DatasetView, ModelVersionView

SERVICE = "converter"
INT8_TARGETS = frozenset({"int8", "openvino-int8", "tensorrt-int8"})
MAX_ATTEMPTS = 5  # deliveries of one job before it fails (the converter died every time)

Status = Literal["requested", "running", "completed", "failed"]
Outcome = Literal["produced", "rejected", "unavailable"]


# -- views ------------------------------------------------------------------------------------


class TargetResult(msgspec.Struct, frozen=True, kw_only=True):
    target: str
    outcome: Outcome
    artifact: ArtifactRef | None = None
    companions: list[ArtifactRef] = []
    reason: str = ""


class ConversionView(msgspec.Struct, kw_only=True):
    """A job folded from its events."""

    job_id: str
    request: ConversionRequested
    status: Status = "requested"
    results: dict[str, TargetResult] = {}
    attempts: int = 0
    reason: str = ""
    last_seq: int = 0  # stream sequence of the job's newest event (optimistic concurrency)

    @property
    def targets(self) -> list[str]:
        return requested_targets(self.request)

    @property
    def pending(self) -> list[str]:
        return [t for t in self.targets if t not in self.results]

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


def requested_targets(request: ConversionRequested) -> list[str]:
    """The request's targets in its order, each once."""
    return list(dict.fromkeys(request.targets))


def evolve(view: ConversionView | None, event: Event, seq: int) -> ConversionView | None:
    """Fold one conversion event into the job's view (None: not a job this view knows)."""
    if isinstance(event, ConversionRequested):
        if view is not None:  # a second request under one job id changes nothing
            return view
        return ConversionView(job_id=event.job_id, request=event, last_seq=seq)
    if view is None:
        return None
    view = msgspec.structs.replace(view, last_seq=max(view.last_seq, seq))
    result: TargetResult | None = None
    match event:
        case ConversionStarted(attempt=attempt):
            view.status = "running" if not view.finished else view.status
            view.attempts = max(view.attempts, attempt)
        case ArtifactProduced(target=t, artifact=a, companions=c):
            result = TargetResult(target=t, outcome="produced", artifact=a, companions=list(c))
        case ArtifactRejected(target=t, reason=r):
            result = TargetResult(target=t, outcome="rejected", reason=r)
        case TargetUnavailable(target=t, reason=r):
            result = TargetResult(target=t, outcome="unavailable", reason=r)
        case ConversionCompleted():
            view.status = "completed"
        case ConversionFailed(reason=r):
            view.status = "failed"
            view.reason = r
    if result is not None and result.target not in view.results:  # the first result stands
        view.results = {**view.results, result.target: result}
    return view


# -- checking a request -----------------------------------------------------------------------


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """A request the converter can work on: the model, the data set, the targets left."""

    job_id: str
    model: ModelVersionView
    dataset: DatasetView
    targets: list[str]
    request: ConversionRequested


def choose_dataset(
    request: ConversionRequested,
    model: ModelVersionView,
    datasets: dict[str, list[DatasetView]],
) -> DatasetView | str:
    """The data set version to validate and calibrate with, or why there is none.

    The request's data set wins; else the one the model was trained on (its lineage). The
    version is the request's, else the lineage's (when it is the lineage's data set), else
    the newest validated one.
    """
    name = request.dataset or model.lineage.dataset
    if not name:
        return (
            f"no data set to validate {model.model_name}:{model.version} with: its lineage names "
            "none, so the request must name one"
        )
    versions = sorted(datasets.get(name, []), key=lambda d: d.version)
    if not versions:
        return f"data set {name!r} is not a validated data set"
    wanted = request.dataset_version
    if wanted is None and name == model.lineage.dataset:
        lineage_version = model.hyperparameters.get("dataset_version")
        if isinstance(lineage_version, int) and any(d.version == lineage_version for d in versions):
            wanted = lineage_version
    if wanted is None:
        return versions[-1]
    for d in versions:
        if d.version == wanted:
            return d
    have = ", ".join(str(d.version) for d in versions)
    return f"data set {name!r} has no version {wanted} (validated versions: {have})"


SUPPORTED_FORMATS = ("onnx", "safetensors", "torchscript", "torch_export")


def plan_conversion(
    view: ConversionView,
    model: ModelVersionView | None,
    datasets: dict[str, list[DatasetView]],
    stamp: Stamp,
) -> Plan | list[Event]:
    """Check a job against the registry's facts: a ``Plan``, or the events that end it."""
    req = view.request
    if view.finished:
        return []
    if model is None:
        return [failed(req, f"model {req.model_name}:{req.version} is not registered", stamp)]
    if model.format not in SUPPORTED_FORMATS:
        return [failed(req, f"cannot convert a {model.format} model", stamp)]
    if model.format == "safetensors" and not (
        model.architecture or model.hyperparameters.get("arch")
    ):
        return [failed(req, "safetensors weights without an architecture cannot be rebuilt", stamp)]
    if req.max_accuracy_drop < 0:
        return [failed(req, "max_accuracy_drop must be >= 0 points", stamp)]
    if req.validation_images is not None and req.validation_images < 1:
        return [failed(req, "validation_images must be >= 1", stamp)]
    if not view.targets:
        return [failed(req, "no targets requested", stamp)]
    dataset = choose_dataset(req, model, datasets)
    if isinstance(dataset, str):
        return [failed(req, dataset, stamp)]
    return Plan(job_id=view.job_id, model=model, dataset=dataset, targets=view.pending, request=req)


# -- image layout ----------------------------------------------------------------------------

Dim = int | None


class InputFit(msgspec.Struct, frozen=True, kw_only=True):
    """How the data set's images become the model's input: ``C, H, W`` and a resize or not."""

    channels: int
    height: int
    width: int
    resize: bool

    @property
    def shape(self) -> list[int]:
        return [-1, self.channels, self.height, self.width]


def _chw(c: Dim, h: Dim, w: Dim) -> str:
    return "x".join("?" if v is None else str(v) for v in (c, h, w))


def fit_input(
    model_chw: tuple[Dim, Dim, Dim],
    declared_hw: list[int] | None,
    data_chw: tuple[int, int, int],
) -> InputFit | str:
    """Decide the input layout, or say why the data set's images do not fit the model.

    Args:
        model_chw: what the model file fixes (None: free, e.g. a zoo model's H and W).
        declared_hw: the image size the model was trained at, when its lineage or weights say
            (the trainer resizes a data set to it, so resizing here is the same preprocessing).
        data_chw: the data set's channels, height and width.

    Returns:
        The ``InputFit``, or the reason as text (C x H x W on both sides).
    """
    mc, mh, mw = model_chw
    dc, dh, dw = data_chw
    dh_, dw_ = declared_hw or (None, None)
    mismatch = (
        f"the data set's images are {_chw(dc, dh, dw)} (CxHxW) but the model expects "
        f"{_chw(mc, mh if mh is not None else dh_, mw if mw is not None else dw_)}"
    )
    if mc is not None and mc != dc:
        return mismatch
    if mh is not None and mw is not None:
        hw = [mh, mw]
    elif declared_hw:
        hw = [int(declared_hw[0]), int(declared_hw[1])]
    else:
        hw = [dh, dw]
    if hw == [dh, dw]:
        return InputFit(channels=dc, height=dh, width=dw, resize=False)
    if declared_hw and [int(v) for v in declared_hw] == hw:
        return InputFit(channels=dc, height=hw[0], width=hw[1], resize=True)
    return mismatch


def lineage_image_size(model: ModelVersionView) -> list[int] | None:
    """The H, W the lineage says the model was trained at."""
    size = model.hyperparameters.get("image_size")
    if isinstance(size, int):
        return [size, size]
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return [int(size[0]), int(size[1])]
    return None


def declared_input(model: ModelVersionView) -> tuple[Dim, Dim, Dim]:
    """C, H, W from the registry's input spec (the uploader's hint), None where unknown."""
    if model.inputs and len(model.inputs[0].shape) == 4:
        dims = [d if d > 0 else None for d in model.inputs[0].shape[1:]]
        return dims[0], dims[1], dims[2]
    channels = model.hyperparameters.get("channels")
    return (channels if isinstance(channels, int) else None), None, None


def lineage_normalization(model: ModelVersionView) -> dict[str, list[float]] | None:
    """Mean/std the model's input is standardised with, as its lineage records them."""
    norm = model.hyperparameters.get("normalization")
    if isinstance(norm, dict) and "mean" in norm and "std" in norm:
        try:
            return {
                "mean": [float(v) for v in norm["mean"]],
                "std": [float(v) for v in norm["std"]],
            }
        except (TypeError, ValueError):
            return None
    return None


# -- result events --------------------------------------------------------------------------


class JobFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What every result event of one job repeats (lineage of the artifacts)."""

    request: ConversionRequested
    source: ArtifactRef
    dataset: str
    dataset_version: int
    input_shape: list[int]
    normalization: dict[str, list[float]]
    opset: int | None


def _keys(req: ConversionRequested) -> dict[str, Any]:
    return {"job_id": req.job_id, "model_name": req.model_name, "version": req.version}


def started(
    req: ConversionRequested,
    attempt: int,
    host: str,
    source_format: str,
    facts: JobFacts,
    targets: list[str],
    normalization_source: str,
    stamp: Stamp,
) -> ConversionStarted:
    return ConversionStarted(
        **stamp.envelope(f"started/{attempt}"),
        **_keys(req),
        attempt=attempt,
        host=host,
        source_format=source_format,
        dataset=facts.dataset,
        dataset_version=facts.dataset_version,
        targets=targets,
        input_shape=facts.input_shape,
        normalization=facts.normalization,
        normalization_source=normalization_source,
    )


def produced(
    facts: JobFacts,
    target: str,
    artifact: ArtifactRef,
    companions: list[ArtifactRef],
    fmt: str,
    precision: str,
    parity: ParityNumbers,
    verdict: GateResult,
    stamp: Stamp,
    *,
    excluded_layers: list[str] | None = None,
    details: dict[str, str] | None = None,
) -> ArtifactProduced:
    """The artifact passed the gate and is stored."""
    req = facts.request
    calibration: CalibrationMethod | None = req.calibration if target in INT8_TARGETS else None
    return ArtifactProduced(
        **stamp.envelope(f"result/{target}"),
        **_keys(req),
        target=target,  # type: ignore[arg-type]
        artifact=artifact,
        companions=companions,
        format=fmt,
        precision=precision,
        parity=parity,
        gate=verdict,
        source=facts.source,
        dataset=facts.dataset,
        dataset_version=facts.dataset_version,
        input_shape=facts.input_shape,
        normalization=facts.normalization,
        excluded_layers=list(excluded_layers or []),
        calibration=calibration,
        opset=facts.opset,
        details=dict(details or {}),
    )


def rejected(
    req: ConversionRequested,
    target: str,
    reason: str,
    stamp: Stamp,
    *,
    stage: Literal["gate", "conversion"] = "gate",
    parity: ParityNumbers | None = None,
    verdict: GateResult | None = None,
    excluded_layers: list[str] | None = None,
    attempts: list[Int8Attempt] | None = None,
) -> ArtifactRejected:
    """The target was not produced; ``reason`` carries the numbers."""
    return ArtifactRejected(
        **stamp.envelope(f"result/{target}"),
        **_keys(req),
        target=target,  # type: ignore[arg-type]
        reason=reason,
        stage=stage,
        parity=parity,
        gate=verdict,
        excluded_layers=list(excluded_layers or []),
        attempts=list(attempts or []),
    )


def unavailable(
    req: ConversionRequested, target: str, reason: str, stamp: Stamp
) -> TargetUnavailable:
    """This host cannot produce the target."""
    why = reason if reason.startswith("unavailable") else f"unavailable: {reason}"
    return TargetUnavailable(
        **stamp.envelope(f"result/{target}"),
        **_keys(req),
        target=target,  # type: ignore[arg-type]
        reason=why,
    )


def completed(req: ConversionRequested, results: dict[str, Outcome], stamp: Stamp) -> Event:
    """The job's end once every target has a result (it shares its id with ``failed``)."""
    targets = requested_targets(req)
    missing = [t for t in targets if t not in results]
    if missing:
        raise ValueError(f"targets without a result: {missing}")
    return ConversionCompleted(
        **stamp.envelope("end"),
        **_keys(req),
        produced=[t for t in targets if results[t] == "produced"],
        rejected=[t for t in targets if results[t] == "rejected"],
        unavailable=[t for t in targets if results[t] == "unavailable"],
    )


def failed(
    req: ConversionRequested, reason: str, stamp: Stamp, op: str | None = None
) -> ConversionFailed:
    """The job ends without going on (one end per job: same id as ``completed``)."""
    return ConversionFailed(**stamp.envelope("end"), **_keys(req), reason=reason, op=op)


def too_many_attempts(req: ConversionRequested, attempt: int, stamp: Stamp) -> ConversionFailed:
    return failed(
        req,
        f"gave up after {attempt - 1} attempts: the converter stopped every time before the "
        "job ended (killed, out of memory, or a crash in a native runtime)",
        stamp,
    )


def parity_numbers(report: Any, reference: str) -> ParityNumbers:
    """A ``cvops.engines`` parity report as event numbers."""
    return ParityNumbers(
        n_images=int(report.n_images),
        max_abs_error=float(report.max_abs_error),
        mean_abs_error=float(report.mean_abs_error),
        max_rel_error=float(report.max_rel_error),
        top1_agreement=float(report.top1_agreement),
        reference_accuracy=report.reference_accuracy,
        candidate_accuracy=report.candidate_accuracy,
        accuracy_drop=report.accuracy_drop,
        engine=f"{report.engine}/{report.precision}" if report.engine else "",
        reference=reference,
    )


def gate_result(verdict: Any) -> GateResult:
    """A ``cvops.engines`` gate verdict as event numbers."""
    return GateResult(
        passed=bool(verdict.passed),
        reason=str(verdict.reason),
        basis=str(verdict.basis),
        drop_points=float(verdict.drop_points),
        max_accuracy_drop=float(verdict.max_accuracy_drop),
    )
