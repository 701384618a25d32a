"""The benchmark sweep: every cell measured or failed with its reason, never a lost sweep."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import msgspec
import numpy as np
import pytest

from cvops.engines import (
    BenchTarget,
    Engine,
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


class VirtualClock:
    """``time.perf_counter`` for the harness: worker threads read a clock only the fake engine
    moves, so measured latencies are exactly what the engine says; other threads read real time.
    """

    def __init__(self, real: Callable[[], float]) -> None:
        self.real = real
        self.local = threading.local()

    def __call__(self) -> float:
        if not threading.current_thread().name.startswith("bench-"):
            return self.real()
        if not hasattr(self.local, "now"):
            self.local.now = self.real()
        return self.local.now

    def advance(self, ms: float) -> None:
        self.local.now = self() + ms / 1000.0


class ScriptedEngine(Engine):
    """Each call takes the next latency of a repeating script (about 1 ms of real time)."""

    name = "scripted"
    formats = ("none",)

    def __init__(self, clock: VirtualClock, script_ms: list[float]) -> None:
        super().__init__()
        self.clock = clock
        self.script = script_ms
        self.calls = 0
        self.lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        return True, "available"

    def load(self, source: object) -> None:
        self._loaded = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        with self.lock:
            latency = self.script[self.calls % len(self.script)]
            self.calls += 1
        time.sleep(0.001)
        self.clock.advance(latency)
        return np.zeros((len(batch), 2), dtype=np.float32)


def _scripted_cell(monkeypatch, script_ms, **config):
    clock = VirtualClock(time.perf_counter)
    monkeypatch.setattr(time, "perf_counter", clock)
    cfg = SweepConfig(batch_sizes=(1,), concurrency=(1,), warmup=0, min_requests=30, **config)
    started = clock.real()
    (row,) = run_sweep([BenchTarget(ScriptedEngine(clock, script_ms), None)], IMAGES, config=cfg)
    return row, clock.real() - started


IMAGES = np.zeros((4, 3, 8, 8), dtype=np.float32)


def test_a_cell_with_constant_latency_stops_once_its_p95_interval_exists(monkeypatch):
    row, wall_s = _scripted_cell(monkeypatch, [2.0], time_cap_s=5.0)
    assert row.error is None and row.stable
    assert row.p95_ms == pytest.approx(2.0) and row.cv == pytest.approx(0.0, abs=1e-6)
    # a p95's two-sided 95% interval needs 72 requests; checks come every 10, polls every 20 ms
    assert 72 <= row.requests < 72 + 60
    assert wall_s < 2.0  # far from the 5 s cap


def test_a_bimodal_cell_runs_to_its_cap_and_is_unstable(monkeypatch):
    row, wall_s = _scripted_cell(monkeypatch, [1.0] * 19 + [10.0], time_cap_s=0.5)
    assert row.error is None and not row.stable
    assert row.requests > 150  # it kept measuring well past the 72 a settled cell needs
    assert wall_s >= 0.5


def test_without_early_stop_every_cell_runs_to_its_cap(monkeypatch):
    row, wall_s = _scripted_cell(monkeypatch, [2.0], time_cap_s=0.4, early_stop=False)
    assert row.stable  # settled, but it measured for the whole cap
    assert wall_s >= 0.4 and row.requests > 100


def test_host_fingerprint_names_the_machine():
    host = host_fingerprint()
    assert host.logical_cores >= 1 and host.cpu_model
    assert "torch" in host.libraries and "onnxruntime" in host.libraries
