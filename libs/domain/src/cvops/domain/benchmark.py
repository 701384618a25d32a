"""Benchmarks: every engine of a model version measured, and one picked under the SLA.

The job's state and its one fold (``evolve``), the one validation of a request (the gateway
refuses with it, the benchmarker fails the job with it) and the decisions that start and end
a job. The recommendation itself is measured work (``cvops.engines``), not a rule here. No
I/O, no clock: the time and the cause come in a ``Stamp``, the job id is passed in.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateBenchmark
from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
)
from cvops.domain.checks import at_least_one, positive
from cvops.domain.errors import Invalid, NotFound

MAX_BATCH_SIZE = 4096
MAX_CONCURRENCY = 1024
# Engine -> conversion target -> the precisions it runs that artifact at: what the benchmarker
# measures, and so what a deployment of an engine at a precision serves.
ARTIFACT_ENGINES: dict[str, dict[str, tuple[str, ...]]] = {
    "onnxruntime-cpu": {"onnx": ("fp32",), "fp16": ("fp16",), "int8": ("int8",)},
    "onnxruntime-cuda": {"onnx": ("fp32",), "fp16": ("fp16",), "int8": ("int8",)},
    "onnxruntime-tensorrt": {"onnx": ("fp32", "fp16"), "int8": ("int8",)},
    "openvino-cpu": {"openvino": ("fp32",), "openvino-int8": ("int8",)},
    "tensorrt": {"tensorrt-fp16": ("fp16",), "tensorrt-int8": ("int8",)},
}

Status = Literal["requested", "running", "completed", "failed"]
OPEN: tuple[Status, ...] = ("requested", "running")
RowKey = tuple[str, str, str, int, int]


# -- state ------------------------------------------------------------------------------------


class BenchmarkState(msgspec.Struct, kw_only=True):
    """A benchmark folded from its events: its rows (the first per cell) and its end."""

    job_id: str
    request: BenchmarkRequested
    status: Status = "requested"
    host: str | None = None
    planned: list[str] = []
    unavailable: dict[str, str] = {}  # engine -> "unavailable: <why>"
    rows: list[BenchmarkRow] = []  # in the order they were measured
    attempts: int = 0  # the newest attempt that started
    started_rows: list[int] = []  # rows already measured when each attempt started
    result: BenchmarkCompleted | None = None
    reason: str = ""
    finished_at: datetime | None = None
    # stream sequence of the job's newest event: set by whoever stores the state (the
    # benchmarker appends guarded by it); ``evolve`` leaves it alone
    last_seq: int = 0

    @property
    def finished(self) -> bool:
        return self.status not in OPEN

    @property
    def failed_rows(self) -> int:
        return sum(1 for r in self.rows if r.error is not None)

    @property
    def done(self) -> set[RowKey]:
        return {r.key for r in self.rows}


def evolve(state: BenchmarkState | None, event: Event) -> BenchmarkState | None:
    """Fold one benchmark event into the job's state (None: not a job this state knows).

    The first request, each attempt's first start and each cell's first row stand; an ended
    job stays ended.
    """
    if isinstance(event, BenchmarkRequested):
        if state is not None:  # a second request under one job id changes nothing
            return state
        return BenchmarkState(job_id=event.job_id, request=event)
    if state is None:
        return None
    state = msgspec.structs.replace(state)
    match event:
        case BenchmarkStarted() if event.attempt > state.attempts:
            state.attempts = event.attempt
            state.started_rows = [*state.started_rows, event.rows_done]
            if not state.finished:
                state.status = "running"
                state.host = event.host
                state.planned = list(event.targets)
                state.unavailable = dict(event.unavailable)
        case BenchmarkRowMeasured(row=row) if row.key not in state.done:
            state.rows = [*state.rows, row]
        case BenchmarkCompleted() if not state.finished:
            state.status = "completed"
            state.result = event
            state.unavailable = dict(event.unavailable)
            state.finished_at = event.occurred_at
        case BenchmarkFailed() if not state.finished:
            state.status = "failed"
            state.reason = event.reason
            state.finished_at = event.occurred_at
    return state


# -- validation -------------------------------------------------------------------------------


def _sizes(values: list[int], what: str, limit: int) -> list[int]:
    if not values:
        raise Invalid(f"at least one {what} is needed")
    bad = [v for v in values if not 1 <= v <= limit]
    if bad:
        raise Invalid(f"{what} must be within 1..{limit}, got {bad}")
    return sorted(set(values))


def engine_names(engines: list[str]) -> list[str]:
    """The requested engine names stripped, each once (none: every engine)."""
    names = list(dict.fromkeys(e.strip() for e in engines))
    if any(not e for e in names):
        raise Invalid("engine names must not be empty")
    return names


def validate_request(request: BenchmarkRequested) -> None:
    """The one check of a benchmark request's own fields; raises ``Invalid``."""
    engine_names(request.engines)
    _sizes(request.batch_sizes, "batch size", MAX_BATCH_SIZE)
    _sizes(request.concurrency, "concurrency", MAX_CONCURRENCY)
    positive(request.p95_ms, "p95_ms")
    positive(request.max_accuracy_drop, "max_accuracy_drop", allow_zero=True)
    positive(request.time_cap_s, "time_cap_s")
    if not 0 < request.ci_target < 1:
        raise Invalid(f"ci_target must be a fraction in (0, 1), got {request.ci_target}")
    at_least_one(request.min_requests, "min_requests")
    if request.warmup < 0:
        raise Invalid(f"warmup must be at least 0, got {request.warmup}")
    at_least_one(request.validation_images, "validation_images")


def check_conversion(
    model_name: str, version: int, conversion_job: str | None, converted: tuple[str, int] | None
) -> None:
    """A named conversion job must exist and have converted this model version.

    ``converted`` is the (model, version) the job converted, None when there is no such job.
    """
    if conversion_job is None:
        return
    if converted is None:
        raise Invalid(f"unknown conversion job {conversion_job!r}")
    if converted != (model_name, version):
        model, v = converted
        raise Invalid(f"conversion job {conversion_job} converted {model}:{v}")


def check_model(model_name: str, version: int, registered: bool) -> None:
    """The model version to measure must be registered."""
    if not registered:
        raise NotFound(f"model {model_name!r} has no version {version}")


# -- decisions --------------------------------------------------------------------------------


def _keys(req: BenchmarkRequested) -> dict[str, Any]:
    return {"job_id": req.job_id, "model_name": req.model_name, "version": req.version}


def request(
    body: CreateBenchmark, *, job_id: str, converted: tuple[str, int] | None, stamp: Stamp
) -> BenchmarkRequested:
    """The request event of a valid body (sizes sorted, engines once); raises ``Invalid``."""
    event = BenchmarkRequested(
        **stamp.envelope(f"benchmark/{job_id}"),
        job_id=job_id,
        model_name=body.model_name,
        version=body.version,
        engines=engine_names(body.engines),
        batch_sizes=_sizes(body.batch_sizes, "batch size", MAX_BATCH_SIZE),
        concurrency=_sizes(body.concurrency, "concurrency", MAX_CONCURRENCY),
        p95_ms=body.p95_ms,
        max_accuracy_drop=body.max_accuracy_drop,
        time_cap_s=body.time_cap_s,
        min_requests=body.min_requests,
        ci_target=body.ci_target,
        dataset=body.dataset,
        dataset_version=body.dataset_version,
        validation_images=body.validation_images,
        conversion_job=body.conversion_job,
    )
    validate_request(event)
    check_conversion(body.model_name, body.version, body.conversion_job, converted)
    return event


def fail(req: BenchmarkRequested, reason: str, stamp: Stamp) -> BenchmarkFailed:
    """The job ends without a result (one end per job: same id as the completed event)."""
    return BenchmarkFailed(**stamp.envelope("end"), **_keys(req), reason=reason)


def end_keys(req: BenchmarkRequested, stamp: Stamp) -> dict[str, Any]:
    """The envelope and keys of the job's end (the completed event the benchmarker builds)."""
    return {**stamp.envelope("end"), **_keys(req)}
