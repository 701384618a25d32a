"""The benchmarker on a real nats-server, as a subprocess: a digits model measured on every CPU
engine with a recommendation; kill -9 mid-sweep resumes after the last published row and ends
with exactly one result."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRowMeasured,
    BenchmarkStarted,
)
from cvops.core import Bus, Settings
from cvops.testing.benchmarker import Converted, log_tail, publish_conversion, stop_service
from cvops.testing.converter import (
    TEST_ENV,
    TrainedModel,
    publish_dataset,
    publish_model_version,
    stamp,
    watch_job,
)
from cvops.testing.core import start_service

# torch-compiled is left out: inductor compiles each shape cold for most of a minute here
CPU_ENGINES = ["torch-eager", "onnxruntime-cpu", "openvino-cpu"]
ABSENT_ENGINES = ["tensorrt", "onnxruntime-cuda"]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _ended(job) -> bool:  # type: ignore[no-untyped-def]
    return bool(job.of(BenchmarkCompleted) or job.of(BenchmarkFailed))


async def _registered_and_converted(
    bus: Bus, tmp_path: Path, trained: TrainedModel, digits, converted: list[Converted]
) -> str:  # type: ignore[no-untyped-def]
    dataset = _name("digits")
    await publish_dataset(bus, tmp_path, dataset, digits)
    model = _name("cnn")
    version = await publish_model_version(
        bus, trained.weights, model, format="safetensors", architecture=trained.arch,
        input_shape=[trained.channels, *trained.image_size], num_classes=trained.num_classes,
        dataset=dataset, hyperparameters=trained.hyperparameters,
    )  # fmt: skip
    await publish_conversion(
        bus, version, converted, job_id=_name("conv"), dataset=dataset,
        input_shape=[trained.channels, *trained.image_size],
        normalization=trained.hyperparameters["normalization"], stamp=stamp("converter"),
    )  # fmt: skip
    return model


def _request(model: str, **fields) -> BenchmarkRequested:  # type: ignore[no-untyped-def]
    sweep = dict(batch_sizes=[1, 8], concurrency=[1, 2], time_cap_s=0.2, min_requests=5, warmup=1)
    return BenchmarkRequested(
        **stamp().envelope("request"),
        job_id=_name("bench"),
        model_name=model,
        version=1,
        **{**sweep, **fields},
    )


async def test_benchmark_measures_every_cpu_engine_and_recommends_one(
    bus: Bus, service_settings: Settings, tmp_path: Path, trained, digits, converted
) -> None:
    model = await _registered_and_converted(bus, tmp_path, trained, digits, converted)
    request = _request(
        model, engines=CPU_ENGINES + ABSENT_ENGINES, p95_ms=2000.0, max_accuracy_drop=2.0
    )
    log = Path(service_settings.home) / "benchmarker.log"
    proc = start_service("cvops.benchmarker", service_settings, log, **TEST_ENV)
    try:
        async with watch_job(bus, request.job_id) as job:
            await bus.publish(request)
            await job.wait(_ended, timeout=120)
    finally:
        stop_service(proc)
    assert not job.of(BenchmarkFailed), (job.of(BenchmarkFailed), log_tail(log))
    (done,) = job.of(BenchmarkCompleted)
    rows = [e.row for e in job.of(BenchmarkRowMeasured)]
    measured = {(r.engine, r.precision, r.artifact) for r in rows}
    assert measured == {
        ("torch-eager", "fp32", "source"),
        ("onnxruntime-cpu", "fp32", "onnx"),
        ("onnxruntime-cpu", "fp16", "fp16"),
        ("onnxruntime-cpu", "int8", "int8"),
        ("openvino-cpu", "fp32", "openvino"),
    }
    assert len(rows) == done.rows == 5 * 2 * 2
    for r in rows:  # every cell measured, with its accuracy on the validation split
        assert r.error is None, r.error
        assert r.p50_ms <= r.p95_ms <= r.p99_ms and r.throughput_ips > 0 and r.requests >= 1
        assert r.ci95_low_ms <= r.mean_ms <= r.ci95_high_ms and r.cv is not None
        assert 0.5 < r.accuracy <= 1.0 and r.peak_rss_mb > 0
    for engine in ABSENT_ENGINES:
        assert done.unavailable[engine].startswith("unavailable: ")
    assert done.met_sla and done.pick is not None and done.pick in done.pareto
    meeting = [
        r
        for r in rows
        if (done.reference_accuracy - r.accuracy) * 100 <= 2.0 and r.p95_ms <= 2000.0
    ]
    # under a p95 SLA the rows whose p95 settled come first (when there are any)
    pool = [r for r in meeting if r.stable] or meeting
    assert done.pick.throughput_ips == max(r.throughput_ips for r in pool)
    assert done.batcher is not None and done.batcher.max_batch_size in (1, 8)
    assert done.reference_accuracy == pytest.approx(trained.hyperparameters["val_accuracy"])
    assert done.host["cpu_model"] and done.host["usable_cores"] >= 1
    assert "images/s" in done.reason


@pytest.mark.faults  # a kill -9 scenario: ./justw faults (tests/faults/README.md)
async def test_killed_benchmarker_resumes_after_its_last_row_and_completes_once(
    bus: Bus, service_settings: Settings, tmp_path: Path, trained, digits, converted
) -> None:
    model = await _registered_and_converted(bus, tmp_path, trained, digits, converted)
    request = _request(model, engines=["onnxruntime-cpu"], time_cap_s=0.3)
    log = Path(service_settings.home) / "benchmarker-kill.log"
    first = start_service("cvops.benchmarker", service_settings, log, **TEST_ENV)
    second: subprocess.Popen[bytes] | None = None
    try:
        async with watch_job(bus, request.job_id) as job:
            await bus.publish(request)
            await job.wait(lambda j: len(j.of(BenchmarkRowMeasured)) >= 3, timeout=90)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            before = len(job.of(BenchmarkRowMeasured))
            assert not job.of(BenchmarkCompleted) and before < 12
            second = start_service("cvops.benchmarker", service_settings, log, **TEST_ENV)
            await job.wait(_ended, timeout=120)
            await asyncio.sleep(1.5)  # anything published twice would arrive by now
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if second is not None:
            stop_service(second)
    assert len(job.of(BenchmarkCompleted)) == 1, log_tail(log)
    assert not job.of(BenchmarkFailed)
    keys = Counter(e.row.key for e in job.of(BenchmarkRowMeasured))
    assert len(keys) == 3 * 2 * 2 and set(keys.values()) == {1}  # every cell exactly once
    started = job.of(BenchmarkStarted)
    assert started[0].rows_done == 0 and started[-1].rows_done >= before >= 3
    assert job.of(BenchmarkCompleted)[0].rows == 12
