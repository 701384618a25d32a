"""The benchmarker's projection: idempotent, one row per cell, newest artifacts per model."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cvops.benchmarker import handlers, projection
from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.conversion import (
    ArtifactProduced,
    BenchmarkRequested,
    BenchmarkRow,
    GateResult,
    ParityNumbers,
)
from cvops.core import ProjectionRunner, dump_rows

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="alice", correlation_id="req-1")
REF = ArtifactRef(sha256="a" * 64, size=1)


def _produced(job: str, key: str) -> ArtifactProduced:
    return ArtifactProduced(
        **STAMP.envelope(key), job_id=job, model_name="cnn", version=1, target="int8",
        artifact=REF, format="onnx", precision="int8",
        parity=ParityNumbers(n_images=1, max_abs_error=0, mean_abs_error=0, max_rel_error=0,
                             top1_agreement=1),
        gate=GateResult(passed=True, reason="", basis="accuracy", drop_points=0,
                        max_accuracy_drop=1),
        source=REF, dataset="d", dataset_version=1, input_shape=[-1, 1, 8, 8],
    )  # fmt: skip


def test_replaying_gives_the_same_rows_and_a_cell_keeps_its_first_row(tmp_path: Path) -> None:
    req = BenchmarkRequested(**STAMP.envelope("r"), job_id="b", model_name="cnn", version=1)
    row = BenchmarkRow(
        engine="onnxruntime-cpu", precision="fp32", artifact="onnx", device="cpu", batch_size=1,
        concurrency=1, p95_ms=1.0, throughput_ips=10.0,
    )  # fmt: skip
    twin = BenchmarkRow(**{**{f: getattr(row, f) for f in row.__struct_fields__}, "p95_ms": 9.0})
    other_stamp = Stamp(now=STAMP.now, actor="benchmarker", correlation_id="req-2")
    events = [
        _produced("c-1", "a"),
        _produced("c-2", "b"),
        req,
        handlers.row_measured(req, row, STAMP),
        handlers.row_measured(req, twin, other_stamp),  # another id, same cell: ignored
    ]
    batch = list(enumerate(events, start=1))
    runner = ProjectionRunner(None, projection.projection, tmp_path / "b.sqlite")
    runner.apply_batch(batch)
    once = dump_rows(runner.engine, projection.metadata)
    again = ProjectionRunner(None, projection.projection, tmp_path / "c.sqlite")
    for item in batch:
        again.apply_batch([item])
    assert dump_rows(again.engine, projection.metadata) == once
    with runner.session() as s:
        (kept,) = projection.job_rows(s, "b")
        view = projection.load_job(s, "b")
        artifacts = projection.model_artifacts(s, "cnn", 1)
    assert kept.p95_ms == 1.0 and view is not None and view.rows == [kept]
    assert handlers.newest_artifacts(artifacts)["int8"].job_id == "c-2"
    runner.engine.dispose()
    again.engine.dispose()
