"""The shared job tables: one declaration each, the event's sequence recorded, rows per cell."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import Stamp
from cvops.contracts.conversion import (
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    ConversionRequested,
    ConversionStarted,
)
from cvops.core import dump_rows, sqlite_engine
from cvops.core.jobs import benchmark_jobs_table, conversion_jobs_table, job_key, job_summaries

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="alice", correlation_id="req-1")
KEYS = {"job_id": "j", "model_name": "cnn", "version": 1}


def test_a_job_key_belongs_to_its_context_only() -> None:
    req = ConversionRequested(**STAMP.envelope("r"), **KEYS, targets=["onnx"])
    assert job_key("conversion")(req) == ("j",)
    assert job_key("benchmark")(req) is None


def test_a_redelivered_event_is_skipped_and_a_later_one_records_its_sequence(
    tmp_path: Path,
) -> None:
    metadata = MetaData()
    conversions = conversion_jobs_table(metadata)
    engine = sqlite_engine(tmp_path / "j.sqlite")
    metadata.create_all(engine)
    req = ConversionRequested(**STAMP.envelope("r"), **KEYS, targets=["onnx"])
    again = ConversionRequested(**STAMP.envelope("r2"), **KEYS, targets=["int8"])
    started = ConversionStarted(
        **STAMP.envelope("s"), **KEYS, attempt=1, host="h", source_format="onnx", dataset="d",
        dataset_version=1, targets=["onnx"], input_shape=[-1, 1, 8, 8],
    )  # fmt: skip
    with Session(engine) as s, s.begin():
        conversions.apply(s, req, 3)
        conversions.apply(s, again, 5)  # changes nothing but the job's last sequence
    with Session(engine) as s:
        state = conversions.get(s, "j")
        assert state is not None and state.last_seq == 5 and state.targets == ["onnx"]
    once = dump_rows(engine, metadata)
    with Session(engine) as s, s.begin():
        conversions.apply(s, started, 4)  # at or below the last sequence: a redelivery
    assert dump_rows(engine, metadata) == once
    with Session(engine) as s, s.begin():
        conversions.apply(s, started, 6)
    with Session(engine) as s:
        state = conversions.get(s, "j")
        assert state is not None and state.status == "running" and state.last_seq == 6
        (summary,) = job_summaries(conversions, s)
    assert summary["status"] == "running" and summary["actor"] == "alice"
    engine.dispose()


def test_a_benchmark_keeps_one_row_per_measured_cell(tmp_path: Path) -> None:
    metadata = MetaData()
    benchmarks = benchmark_jobs_table(metadata)
    engine = sqlite_engine(tmp_path / "b.sqlite")
    metadata.create_all(engine)
    row = BenchmarkRow(
        engine="onnxruntime-cpu", precision="fp32", artifact="onnx", device="cpu", batch_size=1,
        concurrency=1, p95_ms=1.0, throughput_ips=10.0,
    )  # fmt: skip
    twin = BenchmarkRow(**{**{f: getattr(row, f) for f in row.__struct_fields__}, "p95_ms": 9.0})
    events = [
        BenchmarkRequested(**STAMP.envelope("r"), **KEYS),
        BenchmarkRowMeasured(**STAMP.envelope("a"), **KEYS, row=row),
        BenchmarkRowMeasured(**STAMP.envelope("b"), **KEYS, row=twin),  # same cell: ignored
    ]
    with Session(engine) as s, s.begin():
        for seq, event in enumerate(events, start=1):
            benchmarks.apply(s, event, seq)
    rows = dump_rows(engine, metadata)["benchmark_rows"]
    with Session(engine) as s:
        state = benchmarks.get(s, "j")
    assert state is not None and state.rows == [row] and state.last_seq == 3
    assert len(rows) == 1
    engine.dispose()
