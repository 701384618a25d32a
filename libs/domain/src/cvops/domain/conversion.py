"""Conversions: a model version converted to engines, each target held to the accuracy gate.

The job's state and its one fold (``evolve``), the one validation of a request (the gateway
refuses with it, the converter fails the job with it), what a source model must be to be
converted, and the decisions that start and end a job. No I/O, no clock: the time and the
cause come in a ``Stamp``, the job id is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import msgspec

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.api import CreateConversion
from cvops.contracts.conversion import (
    CALIBRATION_METHODS,
    CONVERSION_TARGETS,
    ArtifactProduced,
    ArtifactRejected,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    GateResult,
    Int8Attempt,
    ParityNumbers,
    TargetUnavailable,
)
from cvops.domain.checks import at_least_one, positive
from cvops.domain.errors import Invalid, NotFound

INT8_TARGETS = frozenset({"int8", "openvino-int8", "tensorrt-int8"})
SUPPORTED_FORMATS = ("onnx", "safetensors", "torchscript", "torch_export")
MIN_OPSET = 7

Status = Literal["requested", "running", "completed", "failed"]
Outcome = Literal["produced", "rejected", "unavailable"]
OPEN: tuple[Status, ...] = ("requested", "running")


# -- state ------------------------------------------------------------------------------------


class TargetState(msgspec.Struct, frozen=True, kw_only=True):
    """One target's outcome: the artifact produced, or why it was rejected or unavailable."""

    target: str
    outcome: Outcome
    artifact: ArtifactRef | None = None
    companions: list[ArtifactRef] = []
    reason: str = ""
    format: str | None = None
    precision: str | None = None
    parity: ParityNumbers | None = None
    gate: GateResult | None = None
    excluded_layers: list[str] = []
    attempts: list[Int8Attempt] = []


class ConversionState(msgspec.Struct, kw_only=True):
    """A conversion job folded from its events."""

    job_id: str
    request: ConversionRequested
    status: Status = "requested"
    results: dict[str, TargetState] = {}
    attempts: int = 0
    reason: str = ""
    op: str | None = None
    host: str | None = None
    dataset: str | None = None
    dataset_version: int | None = None
    finished_at: datetime | None = None
    # stream sequence of the job's newest event: set by whoever stores the state (the
    # converter appends guarded by it); ``evolve`` leaves it alone
    last_seq: int = 0

    @property
    def targets(self) -> list[str]:
        return requested_targets(self.request)

    @property
    def pending(self) -> list[str]:
        return [t for t in self.targets if t not in self.results]

    @property
    def finished(self) -> bool:
        return self.status not in OPEN


def requested_targets(request: ConversionRequested) -> list[str]:
    """The request's targets in its order, each once."""
    return list(dict.fromkeys(request.targets))


def _target_state(event: Event) -> TargetState | None:
    match event:
        case ArtifactProduced():
            return TargetState(
                target=event.target,
                outcome="produced",
                artifact=event.artifact,
                companions=list(event.companions),
                format=event.format,
                precision=event.precision,
                parity=event.parity,
                gate=event.gate,
                excluded_layers=list(event.excluded_layers),
            )
        case ArtifactRejected():
            return TargetState(
                target=event.target,
                outcome="rejected",
                reason=event.reason,
                parity=event.parity,
                gate=event.gate,
                excluded_layers=list(event.excluded_layers),
                attempts=list(event.attempts),
            )
        case TargetUnavailable():
            return TargetState(target=event.target, outcome="unavailable", reason=event.reason)
    return None


def evolve(state: ConversionState | None, event: Event) -> ConversionState | None:
    """Fold one conversion event into the job's state (None: not a job this state knows).

    The first request and the first result of each target stand; an ended job stays ended.
    """
    if isinstance(event, ConversionRequested):
        if state is not None:  # a second request under one job id changes nothing
            return state
        return ConversionState(
            job_id=event.job_id,
            request=event,
            dataset=event.dataset,
            dataset_version=event.dataset_version,
        )
    if state is None:
        return None
    state = msgspec.structs.replace(state)
    result = _target_state(event)
    match event:
        case ConversionStarted():
            state.attempts = max(state.attempts, event.attempt)
            if not state.finished:
                state.status = "running"
                state.host = event.host
                state.dataset = event.dataset
                state.dataset_version = event.dataset_version
        case ConversionCompleted() if not state.finished:
            state.status = "completed"
            state.finished_at = event.occurred_at
        case ConversionFailed() if not state.finished:
            state.status = "failed"
            state.reason = event.reason
            state.op = event.op
            state.finished_at = event.occurred_at
    if result is not None and result.target not in state.results:  # the first result stands
        state.results = {**state.results, result.target: result}
    return state


# -- validation -------------------------------------------------------------------------------


def conversion_targets(targets: list[str]) -> list[str]:
    """Known targets without repeats; ``tensorrt`` stands for both TensorRT targets."""
    expanded: list[str] = []
    for raw in targets:
        target = raw.strip().lower()
        expanded.extend(["tensorrt-fp16", "tensorrt-int8"] if target == "tensorrt" else [target])
    unknown = [t for t in expanded if t not in CONVERSION_TARGETS]
    if unknown:
        raise Invalid(
            f"unknown target {unknown[0]!r}; targets: {', '.join(CONVERSION_TARGETS)}, tensorrt"
        )
    if not expanded:
        raise Invalid("at least one target is needed")
    return list(dict.fromkeys(expanded))


def validate_request(request: ConversionRequested) -> None:
    """The one check of a conversion request's own fields; raises ``Invalid``."""
    conversion_targets(list(request.targets))
    if request.calibration not in CALIBRATION_METHODS:
        raise Invalid(
            f"unknown calibration method {request.calibration!r}; "
            f"methods: {', '.join(CALIBRATION_METHODS)}"
        )
    positive(request.max_accuracy_drop, "max_accuracy_drop", allow_zero=True)
    at_least_one(request.validation_images, "validation_images")
    if request.opset < MIN_OPSET:
        raise Invalid(f"opset must be at least {MIN_OPSET}, got {request.opset}")
    if request.int8_max_float_layers is not None and request.int8_max_float_layers < 0:
        raise Invalid("int8_max_float_layers must not be negative")


def check_registered(model_name: str, version: int, registered: bool) -> None:
    """The model version to convert must be registered."""
    if not registered:
        raise NotFound(f"model {model_name!r} has no version {version}")


def check_source(
    model_name: str,
    version: int,
    *,
    fmt: str,
    architecture: str | None,
    hyperparameters: Mapping[str, Any],
    lineage_dataset: str | None,
    dataset: str | None,
) -> None:
    """What a registered model version must be to be converted with ``dataset``."""
    if fmt not in SUPPORTED_FORMATS:
        raise Invalid(f"cannot convert a {fmt} model")
    if fmt == "safetensors" and not (architecture or hyperparameters.get("arch")):
        raise Invalid("safetensors weights without an architecture cannot be rebuilt")
    if not (dataset or lineage_dataset):
        raise Invalid(
            f"model {model_name}:{version} has no data set in its lineage (it was uploaded, not "
            "trained here): name one to validate and calibrate the engines with "
            "(dataset; cvops convert --dataset NAME)"
        )


def admit(
    request: ConversionRequested,
    *,
    fmt: str | None,
    architecture: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    lineage_dataset: str | None = None,
) -> None:
    """Every rule a conversion request must pass, in the order the gateway checks them.

    ``fmt`` None: the model version is not registered.
    """
    check_registered(request.model_name, request.version, fmt is not None)
    validate_request(request)
    assert fmt is not None
    check_source(
        request.model_name,
        request.version,
        fmt=fmt,
        architecture=architecture,
        hyperparameters=hyperparameters or {},
        lineage_dataset=lineage_dataset,
        dataset=request.dataset,
    )


# -- decisions --------------------------------------------------------------------------------


def _keys(req: ConversionRequested) -> dict[str, Any]:
    return {"job_id": req.job_id, "model_name": req.model_name, "version": req.version}


def request(body: CreateConversion, *, job_id: str, stamp: Stamp) -> ConversionRequested:
    """The request event of a valid body (targets expanded); raises ``Invalid``."""
    event = ConversionRequested(
        **stamp.envelope(f"conversion/{job_id}"),
        job_id=job_id,
        model_name=body.model_name,
        version=body.version,
        targets=conversion_targets(body.targets),  # type: ignore[arg-type]
        opset=body.opset,
        calibration=body.calibration,  # type: ignore[arg-type]
        max_accuracy_drop=body.max_accuracy_drop,
        dataset=body.dataset,
        dataset_version=body.dataset_version,
        validation_images=body.validation_images,
        int8_max_float_layers=body.int8_max_float_layers,
    )
    validate_request(event)
    return event


def complete(req: ConversionRequested, results: Mapping[str, Outcome], stamp: Stamp) -> Event:
    """The job's end once every target has a result (it shares its id with ``fail``)."""
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


def fail(
    req: ConversionRequested, reason: str, stamp: Stamp, op: str | None = None
) -> ConversionFailed:
    """The job ends without going on (one end per job: same id as ``complete``)."""
    return ConversionFailed(**stamp.envelope("end"), **_keys(req), reason=reason, op=op)
