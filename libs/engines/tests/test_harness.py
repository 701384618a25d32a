"""The benchmark sweep: every cell measured or failed with its reason, never a lost sweep."""

from __future__ import annotations

import threading

import msgspec
import numpy as np

from cvops.engines import (
    BenchTarget,
    OrtCpuEngine,
    OrtCudaEngine,
    SweepConfig,
    TorchEagerEngine,
    host_fingerprint,
    recommend,
    run_sweep,
)

FAST = SweepConfig(
    batch_sizes=(1, 8), concurrency=(1, 4), warmup=1, min_requests=10, time_cap_s=0.15, window=5
)


class CrashingEngine(OrtCpuEngine):
    """Runs fine for a while, then its runtime dies."""

    name = "crashing"

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("device lost")
        return super().infer(batch)


def test_sweep_measures_every_cell_and_survives_a_crashing_engine(task):
    seen = []
    targets = [
        BenchTarget(TorchEagerEngine(), task.model, "source"),
        BenchTarget(CrashingEngine(after=12), task.onnx_path, "onnx"),
        BenchTarget(OrtCpuEngine(), task.onnx_path, "onnx"),
        BenchTarget(OrtCudaEngine(), task.onnx_path, "onnx"),
    ]
    rows = run_sweep(targets, task.val_images, task.val_labels, FAST, on_row=seen.append)
    assert seen == rows
    assert len(rows) == 4 * 2 * 2
    by_engine = {}
    for r in rows:
        by_engine.setdefault(r.engine, []).append(r)

    for name in ("torch-eager", "onnxruntime-cpu"):
        for r in by_engine[name]:
            assert r.error is None
            assert r.requests >= 1 and r.images == r.requests * r.batch_size
            assert 0 < r.p50_ms <= r.p95_ms <= r.p99_ms
            assert r.ci95_low_ms <= r.mean_ms <= r.ci95_high_ms
            assert r.throughput_ips > 0 and r.peak_rss_mb > 0
            assert r.accuracy > 0.9
            assert r.duration_s < 2.0  # the time cap holds

    crashed = by_engine["crashing"]
    assert any(r.error == "RuntimeError: device lost" for r in crashed)
    assert all(r.error is None or "device lost" in r.error for r in crashed)

    cuda = by_engine["onnxruntime-cuda"]
    if cuda[0].error:
        assert all(r.error.startswith("unavailable: onnxruntime-cuda") for r in cuda)

    rec = recommend(rows, max_accuracy_drop=1.0)
    assert rec.met_sla and rec.pick.engine in ("torch-eager", "onnxruntime-cpu")


class HangingEngine(OrtCpuEngine):
    """Its runtime stops answering."""

    name = "hanging"

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.release.wait(timeout=5.0)
        return super().infer(batch)


def test_a_hung_engine_fails_its_cells_and_the_sweep_goes_on(task):
    hanging = HangingEngine()
    config = msgspec.structs.replace(FAST, warmup=0, hang_timeout_s=0.2, concurrency=(1,))
    targets = [
        BenchTarget(hanging, task.onnx_path, "onnx"),
        BenchTarget(OrtCpuEngine(), task.onnx_path, "onnx"),
    ]
    try:
        rows = run_sweep(targets, task.val_images[:16], config=config)
    finally:
        hanging.release.set()
    hung = [r for r in rows if r.engine == "hanging"]
    assert [r.batch_size for r in hung] == [1, 8]
    assert all(r.error == "hung: infer did not return within 0.2 s" for r in hung)
    assert all(r.error is None for r in rows if r.engine == "onnxruntime-cpu")


def test_resumed_sweep_skips_rows_already_measured(task):
    target = BenchTarget(OrtCpuEngine(), task.onnx_path, "onnx")
    done = {("onnxruntime-cpu", "fp32", "onnx", 1, 1), ("onnxruntime-cpu", "fp32", "onnx", 1, 4)}
    rows = run_sweep([target], task.val_images[:16], config=FAST, done=done)
    assert {(r.batch_size, r.concurrency) for r in rows} == {(8, 1), (8, 4)}
    assert all(r.accuracy is None for r in rows)  # no labels given


def test_host_fingerprint_names_the_machine():
    host = host_fingerprint()
    assert host.logical_cores >= 1 and host.cpu_model
    assert "torch" in host.libraries and "onnxruntime" in host.libraries
