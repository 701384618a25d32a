"""Conversion rules on plain structs: given events, when one more comes, then the state."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.api import CreateConversion
from cvops.contracts.conversion import (
    ArtifactProduced,
    ArtifactRejected,
    ConversionCompleted,
    ConversionRequested,
    ConversionStarted,
    GateResult,
    ParityNumbers,
    TargetUnavailable,
)
from cvops.domain import conversion
from cvops.domain.conversion import ConversionState, evolve
from cvops.domain.errors import Invalid, NotFound

NOW = datetime(2026, 1, 1, tzinfo=UTC)
USER = Stamp(now=NOW, actor="alice", correlation_id="req-1")
WORK = Stamp(
    now=NOW,
    actor="converter",
    correlation_id="req-1",
    causation_id=USER.envelope("request")["event_id"],
)  # type: ignore[arg-type]
REF = ArtifactRef(sha256="a" * 64, size=10, filename="model.onnx")
PARITY = ParityNumbers(
    n_images=10, max_abs_error=0.0, mean_abs_error=0.0, max_rel_error=0.0, top1_agreement=1.0
)
PASSED = GateResult(passed=True, reason="ok", basis="accuracy", drop_points=0, max_accuracy_drop=1)
KEYS = {"job_id": "conv-1", "model_name": "net", "version": 1}


def _request(**fields: object) -> ConversionRequested:
    body = msgspec.convert({"model_name": "net", "version": 1, **fields}, CreateConversion)
    return conversion.request(body, job_id="conv-1", stamp=USER)


def _started(attempt: int = 1) -> ConversionStarted:
    return ConversionStarted(
        **WORK.envelope(f"started/{attempt}"), **KEYS, attempt=attempt, host="h",
        source_format="onnx", dataset="digits", dataset_version=2, targets=["onnx"],
        input_shape=[-1, 1, 8, 8], normalization={}, normalization_source="lineage",
    )  # fmt: skip


def _produced(target: str = "onnx") -> ArtifactProduced:
    return ArtifactProduced(
        **WORK.envelope(f"result/{target}"), **KEYS, target=target, artifact=REF,  # type: ignore[arg-type]
        format="onnx", precision="fp32", parity=PARITY, gate=PASSED, source=REF,
        dataset="digits", dataset_version=2, input_shape=[-1, 1, 8, 8], normalization={},
    )  # fmt: skip


def _fold(*events: Event) -> ConversionState | None:
    state = None
    for event in events:
        state = evolve(state, event)
    return state


def test_given_a_request_when_it_is_folded_then_the_job_waits_for_every_target() -> None:
    req = _request(targets=["onnx", "tensorrt"])
    state = _fold(req)
    assert state is not None and state.status == "requested"
    assert state.targets == ["onnx", "tensorrt-fp16", "tensorrt-int8"] == state.pending


def test_given_a_running_job_when_results_arrive_then_the_first_result_of_a_target_stands() -> None:
    req = _request(targets=["onnx", "int8"])
    late = TargetUnavailable(**WORK.envelope("late"), **KEYS, target="onnx", reason="no")
    rejected = ArtifactRejected(
        **WORK.envelope("result/int8"), **KEYS, target="int8", reason="drop"
    )
    state = _fold(req, _started(), _produced(), late, rejected)
    assert state is not None and state.status == "running" and state.host == "h"
    assert state.results["onnx"].outcome == "produced" and state.results["onnx"].parity == PARITY
    assert state.results["int8"].reason == "drop" and state.pending == []
    assert state.dataset_version == 2


def test_applying_any_event_twice_changes_nothing() -> None:
    req = _request(targets=["onnx"])
    done = conversion.complete(req, {"onnx": "produced"}, WORK)
    events: list[Event] = [req, _started(), _produced(), done]
    for at in range(len(events)):
        once = _fold(*events[: at + 1], *events[at + 1 :])
        twice = _fold(*events[: at + 1], events[at], *events[at + 1 :])
        assert once == twice


def test_given_an_ended_job_when_another_end_or_start_comes_then_it_stays_ended() -> None:
    req = _request(targets=["onnx"])
    failed = conversion.fail(req, "boom", WORK, op="aten::x")
    state = _fold(req, failed, _started(2), conversion.complete(req, {"onnx": "produced"}, WORK))
    assert state is not None and state.status == "failed" and state.finished
    assert (state.reason, state.op, state.attempts) == ("boom", "aten::x", 2)
    assert state.finished_at == NOW


def test_events_of_an_unknown_job_fold_to_nothing() -> None:
    assert evolve(None, _produced()) is None


def test_the_job_ends_once_with_each_target_under_its_outcome() -> None:
    req = _request(targets=["int8", "onnx"])
    done = conversion.complete(req, {"onnx": "produced", "int8": "rejected"}, WORK)
    assert isinstance(done, ConversionCompleted)
    assert (done.produced, done.rejected) == (["onnx"], ["int8"])
    assert done.event_id == conversion.fail(req, "x", WORK).event_id
    with pytest.raises(ValueError, match="without a result"):
        conversion.complete(req, {"onnx": "produced"}, WORK)


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"targets": ["tflite"]}, "unknown target 'tflite'"),
        ({"targets": []}, "at least one target"),
        ({"calibration": "magic"}, "unknown calibration method"),
        ({"max_accuracy_drop": -1}, "max_accuracy_drop must be at least 0"),
        ({"max_accuracy_drop": float("nan")}, "max_accuracy_drop must be at least 0"),
        ({"validation_images": 0}, "validation_images must be at least 1"),
        ({"opset": 6}, "opset must be at least 7"),
        ({"int8_max_float_layers": -1}, "must not be negative"),
    ],
)
def test_a_malformed_request_is_invalid(fields: dict[str, object], why: str) -> None:
    with pytest.raises(Invalid, match=why):
        _request(**fields)


def test_the_same_validation_refuses_a_request_event_that_bypassed_the_gateway() -> None:
    req = msgspec.structs.replace(_request(), opset=3)
    with pytest.raises(Invalid, match="opset"):
        conversion.validate_request(req)


def test_a_source_must_be_registered_convertible_and_have_a_data_set() -> None:
    req = _request()
    with pytest.raises(NotFound, match="'net' has no version 1"):
        conversion.admit(req, fmt=None)
    with pytest.raises(Invalid, match="cannot convert a keras model"):
        conversion.admit(req, fmt="keras", lineage_dataset="digits")
    with pytest.raises(Invalid, match="without an architecture"):
        conversion.admit(req, fmt="safetensors", lineage_dataset="digits")
    with pytest.raises(Invalid, match="no data set in its lineage"):
        conversion.admit(req, fmt="onnx")
    conversion.admit(req, fmt="safetensors", hyperparameters={"arch": "cnn"}, lineage_dataset="d")
    conversion.admit(_request(dataset="digits"), fmt="onnx")
