"""The benchmarker's pure decisions: which engine runs what, resuming, an engine that keeps
killing the process, and the completed event with or without an SLA that anything meets."""

from __future__ import annotations

from datetime import UTC, datetime

from cvops.benchmarker import handlers
from cvops.benchmarker.handlers import (
    ArtifactView,
    DatasetView,
    EngineInfo,
    ModelVersionView,
    TargetSpec,
)
from cvops.contracts import ArtifactRef, Lineage, Stamp
from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRow,
)
from cvops.domain import benchmark

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="alice", correlation_id="req-1")
WORK = Stamp(
    now=datetime(2026, 1, 1, tzinfo=UTC),
    actor="benchmarker",
    correlation_id="req-1",
    causation_id=STAMP.envelope("request")["event_id"],  # type: ignore[arg-type]
)
REF = ArtifactRef(sha256="a" * 64, size=1)
CPU_HOST = [
    EngineInfo(name="torch-eager", device="cpu", available=True, detail="available"),
    EngineInfo(name="onnxruntime-cpu", device="cpu", available=True, detail="available"),
    EngineInfo(name="openvino-cpu", device="cpu", available=True, detail="available"),
    EngineInfo(
        name="tensorrt", device="cuda", available=False,
        detail="unavailable: tensorrt: python package not importable",
    ),
]  # fmt: skip


def _request(**fields) -> BenchmarkRequested:  # type: ignore[no-untyped-def]
    return BenchmarkRequested(
        **STAMP.envelope("request"), job_id="b-1", model_name="cnn", version=1, **fields
    )


def _model(fmt: str = "safetensors") -> ModelVersionView:
    return ModelVersionView(
        model_name="cnn", version=1, artifact=REF, format=fmt, architecture="simple-cnn",
        lineage=Lineage(dataset="digits", hyperparameters={"normalization": {"mean": [0.5],
                                                                             "std": [0.2]}}),
    )  # fmt: skip


def _artifact(target: str, seq: int, job: str = "c-1", fmt: str = "onnx") -> ArtifactView:
    return ArtifactView(
        target=target, job_id=job, artifact=REF, format=fmt, precision="fp32",
        input_shape=[-1, 1, 16, 16], normalization={"mean": [0.3], "std": [0.3]},
        dataset="digits", dataset_version=1, seq=seq,
    )  # fmt: skip


DATASETS = {
    "digits": [
        DatasetView(name="digits", version=1, canonical=REF, channels=1, image_size=[16, 16])
    ]
}


def _row(
    engine: str, precision: str, batch: int, p95: float, thr: float, acc: float
) -> BenchmarkRow:
    return BenchmarkRow(
        engine=engine, precision=precision, artifact="x", device="cpu", batch_size=batch,
        concurrency=1, requests=50, images=50 * batch, duration_s=1.0, mean_ms=p95 * 0.8,
        p50_ms=p95 * 0.7, p90_ms=p95 * 0.9, p95_ms=p95, p99_ms=p95 * 1.1, throughput_ips=thr,
        accuracy=acc,
    )  # fmt: skip


def test_each_engine_runs_the_artifacts_of_its_format_and_the_rest_say_why_not() -> None:
    artifacts = {t: _artifact(t, i) for i, t in enumerate(["onnx", "fp16", "int8"])}
    targets, unavailable = handlers.plan_targets(CPU_HOST, [], _model(), artifacts, cuda=False)
    assert [t.label for t in targets] == [
        "torch-eager/fp32 [source]",
        "onnxruntime-cpu/fp32 [onnx]",
        "onnxruntime-cpu/fp16 [fp16]",
        "onnxruntime-cpu/int8 [int8]",
    ]
    assert unavailable["tensorrt"] == "unavailable: tensorrt: python package not importable"
    assert "no artifact it runs (openvino, openvino-int8)" in unavailable["openvino-cpu"]


def test_an_onnx_model_version_runs_on_onnx_engines_only() -> None:
    targets, unavailable = handlers.plan_targets(
        CPU_HOST, ["onnxruntime-cpu", "torch-eager", "warp-drive"], _model("onnx"), {}, cuda=False
    )
    assert [t.label for t in targets] == ["onnxruntime-cpu/fp32 [source]"]
    assert "torch engines need torch weights" in unavailable["torch-eager"]
    assert unavailable["warp-drive"].startswith("unavailable: unknown engine")


def test_on_a_gpu_host_torch_runs_fp32_and_fp16_on_cuda() -> None:
    targets, _ = handlers.plan_targets(CPU_HOST, ["torch-eager"], _model(), {}, cuda=True)
    assert [(t.precision, t.device) for t in targets] == [("fp32", "cuda"), ("fp16", "cuda")]


def test_the_newest_artifact_per_target_is_measured() -> None:
    old, new, other = _artifact("int8", 3), _artifact("int8", 9), _artifact("int8", 12, job="c-2")
    assert handlers.newest_artifacts([new, old])["int8"] is new
    assert handlers.newest_artifacts([old, new, other])["int8"] is other
    assert handlers.newest_artifacts([old, new, other], "c-1")["int8"] is new


def test_the_plan_uses_the_converters_input_layout_and_data_set() -> None:
    view = benchmark.evolve(None, _request())
    plan = handlers.plan_benchmark(
        view, _model(), [_artifact("onnx", 4)], DATASETS, CPU_HOST, False, WORK
    )
    assert isinstance(plan, handlers.BenchPlan)
    assert plan.layout.normalization == {"mean": [0.3], "std": [0.3]} and not plan.layout.resize
    assert plan.dataset.name == "digits" and len(plan.expected_keys) == 2 * 3 * 3


def test_bad_requests_and_unknown_models_end_the_job_with_a_reason() -> None:
    view = benchmark.evolve(None, _request())
    (failed,) = handlers.plan_benchmark(view, None, [], DATASETS, CPU_HOST, False, WORK)
    assert isinstance(failed, BenchmarkFailed) and "has no version" in failed.reason
    view = benchmark.evolve(None, _request(batch_sizes=[0]))
    (failed,) = handlers.plan_benchmark(view, _model(), [], DATASETS, CPU_HOST, False, WORK)
    assert "batch size must be within 1..4096" in failed.reason
    view = benchmark.evolve(None, _request(engines=["tensorrt"]))
    (failed,) = handlers.plan_benchmark(view, _model(), [], DATASETS, CPU_HOST, False, WORK)
    assert "no engine can run" in failed.reason and "tensorrt" in failed.reason


def test_rgb_images_for_a_grayscale_model_are_refused() -> None:
    rgb = DatasetView(name="rgb", version=1, canonical=REF, channels=3, image_size=[16, 16])
    reason = handlers.choose_layout(_model(), {"onnx": _artifact("onnx", 1)}, rgb)
    assert reason == "the data set's images have 3 channel(s); the model takes 1 (1x16x16)"


def test_an_engine_that_killed_the_process_twice_is_given_up_and_the_rest_still_run() -> None:
    a = TargetSpec(engine="tensorrt", precision="fp16", artifact="tensorrt-fp16", device="cuda")
    b = TargetSpec(engine="onnxruntime-cpu", precision="fp32", artifact="onnx", device="cpu")
    assert handlers.crashing_target([0, 4], 4, [a, b]) is None  # the first attempt progressed
    assert handlers.crashing_target([0, 4, 4], 4, [a, b]) is a
    assert handlers.crashing_target([4], 4, [a, b]) is None
    req = _request(batch_sizes=[1, 8], concurrency=[1])
    rows = handlers.crash_rows(a, req, {a.key(1, 1)})
    assert [(r.batch_size, r.error.startswith("crashed:")) for r in rows] == [(8, True)]


def test_a_cell_is_published_once_whatever_attempt_measures_it() -> None:
    row = _row("onnxruntime-cpu", "fp32", 8, 3.0, 900.0, 0.9)
    first = handlers.row_measured(_request(), row, WORK)
    remeasured = BenchmarkRow(**{**_as_dict(row), "p95_ms": 3.5})  # a later attempt, same cell
    again = handlers.row_measured(_request(), remeasured, WORK)
    assert first.event_id == again.event_id
    other = BenchmarkRow(**{**_as_dict(row), "concurrency": 4})
    assert handlers.row_measured(_request(), other, WORK).event_id != first.event_id


def test_the_pick_is_the_fastest_row_meeting_the_sla_with_batcher_advice() -> None:
    rows = [
        _row("torch-eager", "fp32", 1, 4.0, 250.0, 0.90),
        _row("torch-eager", "fp32", 8, 9.0, 900.0, 0.90),
        _row("onnxruntime-cpu", "int8", 1, 1.0, 1000.0, 0.80),  # fast but loses 10 points
        _row("onnxruntime-cpu", "fp32", 1, 2.0, 500.0, 0.90),
        _row("onnxruntime-cpu", "fp32", 8, 6.0, 1300.0, 0.90),
    ]
    rows = [BenchmarkRow(**{**_as_dict(r), "artifact": r.engine}) for r in rows]
    req = _request(p95_ms=8.0, max_accuracy_drop=1.0)
    done = handlers.completed(req, rows, {"tensorrt": "unavailable: no"}, 0.90, {"h": 1}, WORK)
    assert isinstance(done, BenchmarkCompleted) and done.met_sla
    assert (done.pick.engine, done.pick.batch_size) == ("onnxruntime-cpu", 8)
    assert done.batcher is not None and done.batcher.preferred_batch_sizes == [8]
    assert done.batcher.max_queue_delay_us > 0
    assert "not measured: tensorrt" in done.reason and done.rows == 5
    assert done.event_id == benchmark.fail(req, "x", WORK).event_id  # one end per job


def test_an_sla_nothing_meets_says_so_and_names_the_closest() -> None:
    rows = [
        _row("onnxruntime-cpu", "fp32", 1, 2.0, 500.0, 0.90),
        _row("torch-eager", "fp32", 1, 4.0, 250.0, 0.90),
        BenchmarkRow(engine="openvino-cpu", precision="fp32", artifact="openvino", device="cpu",
                     batch_size=1, concurrency=1, error="EngineFailure: boom"),
    ]  # fmt: skip
    done = handlers.completed(_request(p95_ms=0.5), rows, {}, 0.90, {}, WORK)
    assert not done.met_sla and done.pick is None and done.batcher is None
    assert done.closest is not None and done.closest.engine == "onnxruntime-cpu"
    assert done.reason.startswith("nothing meets the SLA (p95 <= 0.5 ms")
    assert "closest is onnxruntime-cpu/fp32" in done.reason and done.failed_rows == 1


def test_folding_counts_rows_and_remembers_where_each_attempt_started() -> None:
    req = _request()
    view = benchmark.evolve(None, req)
    plan = handlers.plan_benchmark(view, _model(), [], DATASETS, CPU_HOST, False, WORK)
    assert isinstance(plan, handlers.BenchPlan)
    events = [
        handlers.started(plan, 1, "h", 0, None, WORK),
        handlers.row_measured(req, _row("torch-eager", "fp32", 1, 1, 1, 1), WORK),
        handlers.row_measured(
            req,
            BenchmarkRow(
                engine="e",
                precision="fp32",
                artifact="a",
                device="cpu",
                batch_size=1,
                concurrency=1,
                error="x",
            ),
            WORK,
        ),
        handlers.started(plan, 2, "h", 2, None, WORK),
    ]
    for e in events:
        view = benchmark.evolve(view, e)
    assert (len(view.rows), view.failed_rows, view.started_rows) == (2, 1, [0, 2])
    assert view.status == "running"


def _as_dict(row: BenchmarkRow) -> dict:  # type: ignore[type-arg]
    return {f: getattr(row, f) for f in row.__struct_fields__}
