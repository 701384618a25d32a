"""One measured cell of an engine benchmark: the row every report, event and pick is made of."""

from __future__ import annotations

import msgspec


class BenchRow(msgspec.Struct, frozen=True, kw_only=True):
    """One cell of the sweep: an engine at a batch size and a concurrency.

    Latencies are per request (one ``infer`` of ``batch_size`` images) in ms; ``throughput_ips``
    is images per second over the measured window; ``accuracy`` is a fraction on the labelled
    split. A failed cell has ``error`` set and no measurements.
    """

    engine: str
    precision: str
    artifact: str
    device: str
    batch_size: int
    concurrency: int
    requests: int = 0
    images: int = 0
    duration_s: float = 0.0
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ci95_low_ms: float | None = None
    ci95_high_ms: float | None = None
    cv: float | None = None
    stable: bool = False
    throughput_ips: float | None = None
    peak_rss_mb: float | None = None
    gpu_mem_mb: float | None = None
    accuracy: float | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.engine, self.precision, self.artifact, self.batch_size, self.concurrency)
