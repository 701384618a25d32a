"""The benchmark harness: sweep engines x batch size x concurrency, measure each cell until its p95
is known to a few percent (or its time cap), one row per cell; an engine that fails yields rows
with ``error`` and the sweep goes on."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from cvops.engines.engines import Engine
from cvops.engines.errors import EngineUnavailable
from cvops.engines.measurement import BenchmarkRow
from cvops.engines.parity import engine_outputs
from cvops.engines.recommend import BatcherAdvice, Recommendation, pareto_front, recommend
from cvops.engines.stats import is_settled, is_stable, summarize

__all__ = [
    "BatcherAdvice",
    "BenchTarget",
    "BenchmarkRow",
    "HostFingerprint",
    "Recommendation",
    "SweepConfig",
    "host_fingerprint",
    "pareto_front",
    "recommend",
    "run_sweep",
]

_POLL_S = 0.02


class SweepConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How long and how hard each cell is measured.

    A cell stops as soon as it is settled: the distribution-free 95% confidence interval of its
    p95 is within ``±ci_target`` of the p95 and the rolling medians do not drift (the interval
    assumes latencies that do not trend), checked every ``check_every`` requests once
    ``min_requests`` are in; else it stops at ``time_cap_s``. Its row is ``stable`` exactly when
    it settled. The cap bounds a sweep: 36 cells of a small CPU model took 37-39 s on a busy
    2-core host against 193 s for the reference long run (``time_cap_s=5, early_stop=False``;
    bench/sweep_time.py).
    """

    batch_sizes: tuple[int, ...] = (1, 8, 32)
    concurrency: tuple[int, ...] = (1, 4, 16)
    warmup: int = 3  # untimed calls per worker thread
    min_requests: int = 30  # before the first check (a p95's two-sided CI needs 72 anyway)
    time_cap_s: float = 1.0  # per cell, after warm-up; a cell still unsettled then is unstable
    ci_target: float = 0.05  # stop once the p95's 95% CI half-width is within this of the p95
    check_every: int = 10  # requests between two checks
    warmup_timeout_s: float = 600.0  # warm-up includes torch.compile / TensorRT tactic search
    hang_timeout_s: float = 60.0  # an infer call that has not returned by then fails the engine
    window: int = 10  # samples per rolling-median window (the drift guard)
    cv_threshold: float = 0.05  # drifting while the CV of the last window medians is above this
    early_stop: bool = True  # False: every cell runs to its time cap (the reference long run)
    seed: int = 0


@dataclass
class BenchTarget:
    """An unloaded engine and what it should load (an artifact path or a torch module)."""

    engine: Engine
    source: Any
    artifact: str = ""


class HostFingerprint(msgspec.Struct, frozen=True, kw_only=True):
    """What the numbers were measured on."""

    hostname: str
    platform: str
    python: str
    cpu_model: str
    logical_cores: int
    physical_cores: int | None
    memory_gb: float | None
    gpus: list[str]
    gpu_driver: str | None
    cuda: str | None
    libraries: dict[str, str]


# ---------------------------------------------------------------------------------------------
# the sweep


def run_sweep(
    targets: Sequence[BenchTarget],
    images: np.ndarray,
    labels: np.ndarray | None = None,
    config: SweepConfig | None = None,
    on_row: Callable[[BenchmarkRow], None] | None = None,
    done: Collection[tuple[str, str, str, int, int]] = (),
) -> list[BenchmarkRow]:
    """Measure every target at every batch size x concurrency.

    Args:
        targets: engines with their sources.
        images: ``(N, C, H, W)`` float32 inputs; batches are cut from (and tiled over) them.
        labels: ``(N,)`` class ids for each engine's accuracy (once per engine).
        config: the sweep's sizes and stopping rules.
        on_row: called with each finished row (a service checkpoints here).
        done: row keys already measured (a resumed sweep skips them).

    Returns:
        One ``BenchmarkRow`` per target x batch size x concurrency not in ``done``.
    """
    cfg = config or SweepConfig()
    rows: list[BenchmarkRow] = []

    def emit(row: BenchmarkRow) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for target in targets:
        engine = target.engine
        cells = [
            (b, c)
            for b in cfg.batch_sizes
            for c in cfg.concurrency
            if (engine.name, engine.precision, target.artifact, b, c) not in done
        ]
        if not cells:
            continue
        accuracy: float | None = None
        try:
            ok, why = engine.available()
            if not ok:
                raise EngineUnavailable(why)
            engine.load(target.source)
            if labels is not None:
                predictions = engine_outputs(engine, images, batch_size=32).argmax(axis=1)
                accuracy = float((predictions == np.asarray(labels).ravel()).mean())
        except Exception as err:
            reason = _describe(err)
            for b, c in cells:
                emit(_failed_row(target, b, c, reason))
            with contextlib.suppress(Exception):
                engine.close()
            continue
        try:
            hung: str | None = None
            for b, c in cells:
                if hung is not None:
                    emit(_failed_row(target, b, c, hung))
                    continue
                row = _measure_cell(target, _batch_of(images, b), c, cfg)
                emit(msgspec.structs.replace(row, accuracy=accuracy))
                if row.error is not None and row.error.startswith("hung:"):
                    hung = row.error  # its threads may still be inside the runtime
        finally:
            with contextlib.suppress(Exception):
                engine.close()
    return rows


def _measure_cell(
    target: BenchTarget, batch: np.ndarray, concurrency: int, cfg: SweepConfig
) -> BenchmarkRow:
    engine = target.engine
    latencies: list[float] = []
    finished: list[float] = []
    failures: list[BaseException] = []
    stop = threading.Event()
    ready = threading.Barrier(concurrency + 1)

    def worker() -> None:
        try:
            for _ in range(cfg.warmup):
                engine.infer(batch)
        except BaseException as err:
            failures.append(err)
            stop.set()
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        while not stop.is_set():
            start = time.perf_counter()
            try:
                engine.infer(batch)
            except BaseException as err:
                failures.append(err)
                stop.set()
                return
            end = time.perf_counter()
            latencies.append((end - start) * 1000.0)
            finished.append(end)

    threads = [
        threading.Thread(target=worker, name=f"bench-{engine.name}-{i}", daemon=True)
        for i in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    memory = _MemoryProbe(engine.device)
    try:
        ready.wait(timeout=cfg.warmup_timeout_s)
    except threading.BrokenBarrierError:
        stop.set()
    t0 = time.perf_counter()
    checked = 0
    settled = False
    while not stop.is_set():
        time.sleep(_POLL_S)
        memory.sample()
        elapsed = time.perf_counter() - t0
        if elapsed >= cfg.time_cap_s:
            break
        count = len(latencies)
        if cfg.early_stop and count >= max(cfg.min_requests, checked + cfg.check_every):
            checked = count
            settled = _settled(latencies[:count], cfg)
            if settled:
                break
    stop.set()
    deadline = time.perf_counter() + cfg.hang_timeout_s
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.perf_counter()))
    if any(thread.is_alive() for thread in threads):
        return _failed_row(
            target,
            len(batch),
            concurrency,
            f"hung: infer did not return within {cfg.hang_timeout_s:g} s",
        )
    memory.sample()

    if failures:
        return _failed_row(target, len(batch), concurrency, _describe(failures[0]))
    if not latencies:
        return _failed_row(target, len(batch), concurrency, "no request completed in time")
    samples = np.asarray(latencies)
    stats = summarize(samples, seed=cfg.seed)
    window_s = max(max(finished) - t0, 1e-9)
    return BenchmarkRow(
        engine=engine.name,
        precision=engine.precision,
        artifact=target.artifact,
        device=engine.device,
        batch_size=len(batch),
        concurrency=concurrency,
        requests=len(samples),
        images=len(samples) * len(batch),
        duration_s=window_s,
        mean_ms=stats.mean_ms,
        p50_ms=stats.p50_ms,
        p90_ms=stats.p90_ms,
        p95_ms=stats.p95_ms,
        p99_ms=stats.p99_ms,
        ci95_low_ms=stats.ci95_low_ms,
        ci95_high_ms=stats.ci95_high_ms,
        cv=stats.cv,
        # the rule's verdict when it stopped the cell; the calls still in flight then are kept
        stable=settled or _settled(samples, cfg),
        throughput_ips=len(samples) * len(batch) / window_s,
        peak_rss_mb=memory.peak_rss_mb,
        gpu_mem_mb=memory.peak_gpu_mb,
    )


def _settled(latencies: list[float] | np.ndarray, cfg: SweepConfig) -> bool:
    """The stopping rule: the p95's CI is tight and the latencies do not drift."""
    return is_settled(latencies, cfg.ci_target) and is_stable(
        latencies, cfg.window, cfg.cv_threshold
    )


def _failed_row(
    target: BenchTarget, batch_size: int, concurrency: int, reason: str
) -> BenchmarkRow:
    return BenchmarkRow(
        engine=target.engine.name,
        precision=target.engine.precision,
        artifact=target.artifact,
        device=target.engine.device,
        batch_size=batch_size,
        concurrency=concurrency,
        error=reason,
    )


def _describe(err: BaseException) -> str:
    if isinstance(err, EngineUnavailable):
        return f"unavailable: {err}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:500]


def _batch_of(images: np.ndarray, size: int) -> np.ndarray:
    if len(images) >= size:
        return np.ascontiguousarray(images[:size], dtype=np.float32)
    repeats = -(-size // len(images))
    return np.ascontiguousarray(np.concatenate([images] * repeats)[:size], dtype=np.float32)


class _MemoryProbe:
    """Peak resident memory of this process and, on GPU engines, device memory in use."""

    def __init__(self, device: str) -> None:
        self.peak_rss_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        try:
            import psutil

            self._process: Any = psutil.Process()
        except Exception:
            self._process = None
        self._nvml: Any = None
        if device == "cuda":
            with contextlib.suppress(Exception):
                import pynvml

                pynvml.nvmlInit()
                index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(index))

    def sample(self) -> None:
        if self._process is not None:
            rss = self._process.memory_info().rss / 2**20
        else:
            import resource

            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_rss_mb = max(self.peak_rss_mb or 0.0, rss)
        if self._nvml is not None:
            pynvml, handle = self._nvml
            used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
            self.peak_gpu_mb = max(self.peak_gpu_mb or 0.0, used)


# ---------------------------------------------------------------------------------------------
# host


def host_fingerprint() -> HostFingerprint:
    """CPU model, cores, memory, GPUs and driver, and the versions of the inference libraries."""
    cpu_model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    physical = memory_gb = None
    with contextlib.suppress(Exception):
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    gpus: list[str] = []
    driver = cuda = None
    with contextlib.suppress(Exception):
        import pynvml

        pynvml.nvmlInit()
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = [
            _text(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
    with contextlib.suppress(Exception):
        import torch

        cuda = torch.version.cuda
        if not gpus and torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    libraries = {}
    for dist in ("torch", "numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libraries[dist] = importlib.metadata.version(dist)
    for dist in ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libraries[dist] = importlib.metadata.version(dist)
    return HostFingerprint(
        hostname=platform.node(),
        platform=platform.platform(),
        python=platform.python_version(),
        cpu_model=cpu_model,
        logical_cores=os.cpu_count() or 1,
        physical_cores=physical,
        memory_gb=memory_gb,
        gpus=gpus,
        gpu_driver=driver,
        cuda=cuda,
        libraries=libraries,
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
