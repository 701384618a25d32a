"""The converter's decisions, pure: check a job against what the registry knows, decide how
images must be shaped for the model, and build result events (the job's state, its fold, the
request's validation and the job's end are the domain's: ``cvops.domain.conversion``).

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
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    GateResult,
    Int8Attempt,
    ParityNumbers,
    TargetUnavailable,
)
from cvops.core.catalog import DatasetView, ModelVersionView
from cvops.domain.conversion import (
    INT8_TARGETS,
    ConversionState,
    admit,
    fail,
)
from cvops.domain.errors import Refused

SERVICE = "converter"
MAX_ATTEMPTS = 5  # deliveries of one job before it fails (the converter died every time)


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


def plan_conversion(
    state: ConversionState,
    model: ModelVersionView | None,
    datasets: dict[str, list[DatasetView]],
    stamp: Stamp,
) -> Plan | list[Event]:
    """Check a job against the registry's facts: a ``Plan``, or the events that end it."""
    req = state.request
    if state.finished:
        return []
    try:
        admit(
            req,
            fmt=model.format if model else None,
            architecture=model.architecture if model else None,
            hyperparameters=model.hyperparameters if model else None,
            lineage_dataset=model.lineage.dataset if model else None,
        )
    except Refused as err:
        return [fail(req, str(err), stamp)]
    assert model is not None  # admit refused an unregistered one
    dataset = choose_dataset(req, model, datasets)
    if isinstance(dataset, str):
        return [fail(req, dataset, stamp)]
    return Plan(
        job_id=state.job_id, model=model, dataset=dataset, targets=state.pending, request=req
    )


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
    probe: ArtifactRef | None = None  # validation inputs + the source's outputs on them


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
        probe=facts.probe,
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


def too_many_attempts(req: ConversionRequested, attempt: int, stamp: Stamp) -> ConversionFailed:
    return fail(
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
