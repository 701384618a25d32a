"""Benchmark rules on plain structs: given events, when one more comes, then the state."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateBenchmark
from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
)
from cvops.domain import benchmark
from cvops.domain.benchmark import BenchmarkState, evolve
from cvops.domain.errors import Invalid, NotFound

NOW = datetime(2026, 1, 1, tzinfo=UTC)
USER = Stamp(now=NOW, actor="alice", correlation_id="req-1")
WORK = Stamp(
    now=NOW,
    actor="benchmarker",
    correlation_id="req-1",
    causation_id=USER.envelope("request")["event_id"],
)  # type: ignore[arg-type]
KEYS = {"job_id": "bench-1", "model_name": "net", "version": 1}


def _request(converted: tuple[str, int] | None = None, **fields: object) -> BenchmarkRequested:
    body = msgspec.convert({"model_name": "net", "version": 1, **fields}, CreateBenchmark)
    return benchmark.request(body, job_id="bench-1", converted=converted, stamp=USER)


def _row(batch: int, error: str | None = None) -> BenchmarkRow:
    return BenchmarkRow(
        engine="onnxruntime-cpu", precision="fp32", artifact="onnx", device="cpu",
        batch_size=batch, concurrency=1, p95_ms=None if error else 1.0, error=error,
    )  # fmt: skip


def _measured(row: BenchmarkRow, key: str = "") -> BenchmarkRowMeasured:
    return BenchmarkRowMeasured(**WORK.envelope(f"row/{row.batch_size}{key}"), **KEYS, row=row)


def _started(done: int, attempt: int = 1) -> BenchmarkStarted:
    return BenchmarkStarted(
        **WORK.envelope(f"started/{attempt}"), **KEYS, attempt=attempt, host="h", rows_done=done,
        targets=["onnxruntime-cpu/fp32 [onnx]"], unavailable={"tensorrt": "unavailable: no"},
    )  # fmt: skip


def _completed() -> BenchmarkCompleted:
    return BenchmarkCompleted(**benchmark.end_keys(_request(), WORK), met_sla=True, reason="ok")


def _fold(*events: Event) -> BenchmarkState | None:
    state = None
    for event in events:
        state = evolve(state, event)
    return state


def test_given_a_request_then_sizes_are_sorted_once_and_engines_stripped() -> None:
    req = _request(batch_sizes=[8, 1, 8], engines=[" onnxruntime-cpu", "onnxruntime-cpu"])
    assert req.batch_sizes == [1, 8] and req.engines == ["onnxruntime-cpu"]
    state = _fold(req)
    assert state is not None and state.status == "requested" and state.rows == []


def test_given_a_running_job_when_rows_arrive_then_each_cell_keeps_its_first_row() -> None:
    first, twin = _row(1), msgspec.structs.replace(_row(1), p95_ms=9.0)
    state = _fold(_request(), _started(0), _measured(first), _measured(twin, "again"))
    assert state is not None and state.rows == [first] and state.status == "running"
    state = _fold(
        _request(), _started(0), _measured(first), _measured(_row(8, "x")), _started(2, 2)
    )
    assert state is not None and state.failed_rows == 1 and state.started_rows == [0, 2]
    assert state.planned == ["onnxruntime-cpu/fp32 [onnx]"]


def test_applying_any_event_twice_changes_nothing() -> None:
    events: list[Event] = [_request(), _started(0), _measured(_row(1)), _completed()]
    for at in range(len(events)):
        once = _fold(*events[: at + 1], *events[at + 1 :])
        twice = _fold(*events[: at + 1], events[at], *events[at + 1 :])
        assert once == twice


def test_given_an_ended_job_when_another_end_comes_then_the_first_end_stands() -> None:
    req = _request()
    state = _fold(req, benchmark.fail(req, "boom", WORK), _completed())
    assert state is not None and state.status == "failed" and state.reason == "boom"
    assert state.result is None and state.finished_at == NOW
    done = _fold(req, _completed())
    assert done is not None and done.status == "completed" and done.result is not None


def test_events_of_an_unknown_job_fold_to_nothing() -> None:
    assert evolve(None, _measured(_row(1))) is None


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"batch_sizes": []}, "at least one batch size"),
        ({"batch_sizes": [5000]}, "batch size must be within 1..4096"),
        ({"concurrency": [0]}, "concurrency must be within 1..1024"),
        ({"engines": [" "]}, "engine names must not be empty"),
        ({"p95_ms": -1}, "p95_ms must be positive"),
        ({"p95_ms": 0}, "p95_ms must be positive"),
        ({"max_accuracy_drop": -0.5}, "max_accuracy_drop must be at least 0"),
        ({"time_cap_s": 0}, "time_cap_s must be positive"),
        ({"ci_target": 0}, "ci_target must be a fraction"),
        ({"ci_target": 1.5}, "ci_target must be a fraction"),
        ({"min_requests": 0}, "min_requests must be at least 1"),
        ({"validation_images": 0}, "validation_images must be at least 1"),
        ({"conversion_job": "conv-x"}, "unknown conversion job"),
    ],
)
def test_a_malformed_request_is_invalid(fields: dict[str, object], why: str) -> None:
    with pytest.raises(Invalid, match=why):
        _request(**fields)


def test_the_same_validation_refuses_a_request_event_that_bypassed_the_gateway() -> None:
    with pytest.raises(Invalid, match="warmup"):
        benchmark.validate_request(msgspec.structs.replace(_request(), warmup=-1))
    with pytest.raises(Invalid, match="batch size"):
        benchmark.validate_request(msgspec.structs.replace(_request(), batch_sizes=[0]))


def test_the_conversion_job_must_have_converted_this_model_version() -> None:
    assert _request(("net", 1), conversion_job="conv-1").conversion_job == "conv-1"
    with pytest.raises(Invalid, match="converted net:2"):
        _request(("net", 2), conversion_job="conv-1")
    with pytest.raises(NotFound, match="'net' has no version 1"):
        benchmark.check_model("net", 1, registered=False)
