"""The converter's projection: idempotent, first result of a target wins, rebuilds identically."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cvops.contracts import ArtifactRef, Lineage, Stamp, TensorSpec
from cvops.contracts.conversion import ConversionRequested, GateResult, ParityNumbers
from cvops.contracts.registry import DatasetValidated, ImageStats, ModelVersionAdded, SplitCounts
from cvops.converter import handlers, projection
from cvops.core import ProjectionRunner, dump_rows
from cvops.domain import conversion

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="alice", correlation_id="req-1")
REF = ArtifactRef(sha256="a" * 64, size=10)


def _events() -> list:  # type: ignore[type-arg]
    version = ModelVersionAdded(
        **STAMP.envelope("v"), model_name="cnn", version=1, upload_id="u", artifact=REF,
        format="safetensors", inputs=[TensorSpec(name="input", shape=[-1, 1, 8, 8], dtype="f")],
        outputs=[], parameter_count=1, architecture="simple-cnn", lineage=Lineage(dataset="d"),
    )  # fmt: skip
    dataset = DatasetValidated(
        **STAMP.envelope("d"), dataset_name="d", version=1, upload_id="u2", source=REF,
        canonical=REF, classes=["a", "b"], class_counts=[1, 1], num_images=2,
        images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=1),
        splits=SplitCounts(train=1, val=1, test=0, calibration=1),
    )  # fmt: skip
    req = ConversionRequested(
        **STAMP.envelope("r"), job_id="j", model_name="cnn", version=1, targets=["onnx", "int8"]
    )
    facts = handlers.JobFacts(
        request=req, source=REF, dataset="d", dataset_version=1, input_shape=[-1, 1, 8, 8],
        normalization={}, opset=18,
    )  # fmt: skip
    parity = ParityNumbers(
        n_images=1, max_abs_error=0, mean_abs_error=0, max_rel_error=0, top1_agreement=1
    )
    ok = GateResult(
        passed=True, reason="passes", basis="accuracy", drop_points=0, max_accuracy_drop=1
    )
    onnx = handlers.produced(facts, "onnx", REF, [], "onnx", "fp32", parity, ok, STAMP)
    int8 = handlers.rejected(req, "int8", "drop 9 pts", STAMP)
    late = handlers.unavailable(req, "int8", "late duplicate", STAMP)
    done = conversion.complete(req, {"onnx": "produced", "int8": "rejected"}, STAMP)
    return [version, dataset, req, onnx, int8, late, done]


def test_applying_the_log_twice_gives_the_same_rows_and_the_first_result_wins(
    tmp_path: Path,
) -> None:
    runner = ProjectionRunner(None, projection.projection, tmp_path / "c.sqlite")
    batch = list(enumerate(_events(), start=1))
    runner.apply_batch(batch)
    once = dump_rows(runner.engine, projection.metadata)
    # a second projection fed the same events one by one (a replay) ends identical
    again = ProjectionRunner(None, projection.projection, tmp_path / "d.sqlite")
    for item in batch:
        again.apply_batch([item])
    again.apply_batch(batch)
    assert dump_rows(again.engine, projection.metadata) == once
    with runner.session() as s:
        view = projection.load_job(s, "j")
        results = {r["target"]: r["outcome"] for r in projection.job_results(s, "j")}
        assert projection.model_version(s, "cnn", 1).architecture == "simple-cnn"
        assert projection.dataset_versions(s)["d"][0].calibration == 1
    assert view is not None and view.status == "completed"
    assert view.results["int8"].outcome == "rejected"
    assert results == {"onnx": "produced", "int8": "rejected"}
    runner.engine.dispose()
    again.engine.dispose()
