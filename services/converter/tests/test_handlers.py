"""The converter's pure decisions: folding, planning a (resumed) job, image layout, one result
per target, one end per job."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from cvops.contracts import ArtifactRef, Lineage, Stamp
from cvops.contracts.conversion import (
    ArtifactProduced,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    GateResult,
    ParityNumbers,
)
from cvops.converter import handlers
from cvops.converter.handlers import DatasetView, JobFacts, ModelVersionView, fit_input
from cvops.domain import conversion

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="alice", correlation_id="req-1")
WORK = Stamp(
    now=datetime(2026, 1, 1, tzinfo=UTC),
    actor="converter",
    correlation_id="req-1",
    causation_id=STAMP.envelope("request")["event_id"],  # type: ignore[arg-type]
)
REF = ArtifactRef(sha256="a" * 64, size=10, filename="model.onnx")
PARITY = ParityNumbers(
    n_images=10, max_abs_error=0.0, mean_abs_error=0.0, max_rel_error=0.0, top1_agreement=1.0
)
PASSED = GateResult(
    passed=True, reason="ok", basis="accuracy", drop_points=0.0, max_accuracy_drop=1
)


def _request(**fields) -> ConversionRequested:  # type: ignore[no-untyped-def]
    return ConversionRequested(
        **STAMP.envelope("request"), job_id="job-1", model_name="cnn", version=1, **fields
    )


def _model(**fields) -> ModelVersionView:  # type: ignore[no-untyped-def]
    base = dict(
        model_name="cnn",
        version=1,
        artifact=ArtifactRef(sha256="b" * 64, size=5),
        format="safetensors",
        architecture="simple-cnn",
        lineage=Lineage(dataset="digits", hyperparameters={"dataset_version": 1}),
    )
    return ModelVersionView(**{**base, **fields})


def _dataset(version: int) -> DatasetView:
    return DatasetView(
        name="digits",
        version=version,
        canonical=ArtifactRef(sha256=f"{version}" * 64, size=1),
        classes=["a", "b"],
        channels=1,
        image_size=[16, 16],
    )


DATASETS = {"digits": [_dataset(1), _dataset(2)]}


def _facts(req: ConversionRequested) -> JobFacts:
    return JobFacts(
        request=req, source=REF, dataset="digits", dataset_version=1,
        input_shape=[-1, 1, 16, 16], normalization={"mean": [0.5], "std": [0.2]}, opset=18,
    )  # fmt: skip


def _fold(*events):  # type: ignore[no-untyped-def]
    state = None
    for e in events:
        state = conversion.evolve(state, e)
    return state


def test_a_redelivered_job_plans_only_the_targets_without_a_result() -> None:
    req = _request(targets=["onnx", "fp16", "int8", "onnx"])
    facts = _facts(req)
    onnx = handlers.produced(facts, "onnx", REF, [], "onnx", "fp32", PARITY, PASSED, WORK)
    int8 = handlers.rejected(req, "int8", "drop 5 pts", WORK)
    view = _fold(req, onnx, int8)
    plan = handlers.plan_conversion(view, _model(), DATASETS, WORK)
    assert isinstance(plan, handlers.Plan)
    assert plan.targets == ["fp16"]
    assert view.results["onnx"].artifact == REF


def test_one_result_per_target_and_one_end_per_job_share_event_ids() -> None:
    req = _request(targets=["int8"])
    facts = _facts(req)
    ok = handlers.produced(facts, "int8", REF, [], "onnx", "int8", PARITY, PASSED, WORK)
    no = handlers.rejected(req, "int8", "drop", WORK)
    away = handlers.unavailable(req, "int8", "why", WORK)
    assert ok.event_id == no.event_id == away.event_id  # JetStream keeps only the first
    done = conversion.complete(req, {"int8": "produced"}, WORK)
    assert done.event_id == conversion.fail(req, "x", WORK).event_id
    assert ok.subject == "cvops.evt.conversion.job-1.artifact_produced"


def test_completion_lists_each_target_under_its_outcome_in_request_order() -> None:
    req = _request(targets=["int8", "onnx", "tensorrt-fp16"])
    done = conversion.complete(
        req, {"onnx": "produced", "int8": "rejected", "tensorrt-fp16": "unavailable"}, WORK
    )
    assert isinstance(done, ConversionCompleted)
    assert (done.produced, done.rejected, done.unavailable) == (
        ["onnx"],
        ["int8"],
        ["tensorrt-fp16"],
    )
    with pytest.raises(ValueError, match="without a result"):
        conversion.complete(req, {"onnx": "produced"}, WORK)


def test_an_unknown_model_or_data_set_fails_the_job_with_the_reason() -> None:
    view = _fold(_request())
    (failed,) = handlers.plan_conversion(view, None, DATASETS, WORK)
    assert isinstance(failed, ConversionFailed) and "has no version" in failed.reason
    view = _fold(_request(dataset="nope"))
    (failed,) = handlers.plan_conversion(view, _model(), DATASETS, WORK)
    assert "'nope' is not a validated data set" in failed.reason
    view = _fold(_request())
    (failed,) = handlers.plan_conversion(view, _model(lineage=Lineage()), DATASETS, WORK)
    assert "no data set in its lineage" in failed.reason


def test_the_lineage_data_set_version_is_preferred_to_the_newest() -> None:
    assert handlers.choose_dataset(_request(), _model(), DATASETS).version == 1
    assert handlers.choose_dataset(_request(dataset_version=2), _model(), DATASETS).version == 2
    no_version = _model(lineage=Lineage(dataset="digits"))
    assert handlers.choose_dataset(_request(), no_version, DATASETS).version == 2
    assert "no version 7" in handlers.choose_dataset(
        _request(dataset_version=7), _model(), DATASETS
    )


def test_a_finished_job_needs_nothing() -> None:
    req = _request()
    view = _fold(req, conversion.fail(req, "boom", WORK))
    assert view.finished and view.reason == "boom"
    assert handlers.plan_conversion(view, _model(), DATASETS, WORK) == []


def test_images_fit_a_size_free_model_as_they_are() -> None:
    fit = fit_input((1, None, None), None, (1, 16, 16))
    assert not isinstance(fit, str) and fit.shape == [-1, 1, 16, 16] and not fit.resize


def test_images_are_resized_only_to_the_size_the_model_was_trained_at() -> None:
    fit = fit_input((1, None, None), [32, 32], (1, 16, 16))
    assert not isinstance(fit, str) and fit.resize and fit.shape == [-1, 1, 32, 32]
    fixed = fit_input((1, 32, 32), [32, 32], (1, 16, 16))  # an ONNX file trained at 32
    assert not isinstance(fixed, str) and fixed.resize
    undeclared = fit_input((1, 32, 32), None, (1, 16, 16))
    assert undeclared == ("the data set's images are 1x16x16 (CxHxW) but the model expects 1x32x32")


def test_a_channel_mismatch_names_both_shapes() -> None:
    reason = fit_input((1, None, None), [16, 16], (3, 16, 16))
    assert reason == "the data set's images are 3x16x16 (CxHxW) but the model expects 1x16x16"


def test_normalisation_and_image_size_come_from_the_lineage() -> None:
    model = _model(
        lineage=Lineage(hyperparameters={"normalization": {"mean": [1], "std": [2]},
                                         "image_size": [24, 24], "channels": 1})
    )  # fmt: skip
    assert handlers.lineage_normalization(model) == {"mean": [1.0], "std": [2.0]}
    assert handlers.lineage_image_size(model) == [24, 24]
    assert handlers.declared_input(model) == (1, None, None)
    assert handlers.lineage_normalization(_model()) is None


def test_library_reports_become_event_numbers() -> None:
    from cvops.engines import compare, gate

    reference = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], dtype=np.float32)
    candidate = np.array([[2.0, 0.1], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    report = compare(reference, candidate, np.array([0, 1, 0]), "int8", "onnxruntime-cpu", "int8")
    numbers = handlers.parity_numbers(report, "torch")
    verdict = handlers.gate_result(gate(report, 1.0))
    assert numbers.top1_agreement == pytest.approx(2 / 3)
    assert numbers.accuracy_drop == pytest.approx(100 / 3)
    assert numbers.engine == "onnxruntime-cpu/int8" and numbers.reference == "torch"
    assert not verdict.passed and "drop 33.33 pts" in verdict.reason


def test_produced_events_carry_the_lineage_of_the_artifact() -> None:
    req = _request(calibration="entropy")
    facts = _facts(req)
    e = handlers.produced(
        facts, "int8", REF, [], "onnx", "int8", PARITY, PASSED, WORK, excluded_layers=["conv1"]
    )
    assert isinstance(e, ArtifactProduced)
    assert (e.source, e.dataset, e.dataset_version, e.calibration) == (REF, "digits", 1, "entropy")
    assert e.excluded_layers == ["conv1"] and e.normalization == {"mean": [0.5], "std": [0.2]}
    fp16 = handlers.produced(facts, "fp16", REF, [], "onnx", "fp16", PARITY, PASSED, WORK)
    assert fp16.calibration is None
