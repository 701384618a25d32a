"""Prometheus numbers of the router, plus Triton's own, served on one port (8002).

The router counts requests, errors and latency per model/version/protocol; at scrape
time it also reads each Triton's statistics (queue time, executed batch sizes) and
re-exposes each Triton's ``/metrics`` text with a ``triton_instance`` label, so clients
that scrape Triton's usual metrics port need no flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cvops.core.metrics import CORE_METRICS
from cvops.core.projection import PROJECTION_METRICS
from cvops.inference_router.routing import Pool

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SCRAPE_TIMEOUT_S = 2.0
Getter = Callable[[str, str, float], Awaitable[tuple[int, bytes]]]


class RouterMetrics:
    """The router's own counters and histograms (one registry per router)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cvops_router_requests",
            "Inference requests answered by the router",
            ["model", "version", "protocol", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cvops_router_request_duration_seconds",
            "Time from request received to response sent, per model version",
            ["model", "version", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "cvops_router_upstream_errors",
            "Failed attempts to reach a Triton instance",
            ["instance", "kind"],
            registry=self.registry,
        )
        self.retries = Counter(
            "cvops_router_retries",
            "Requests retried on another (or a fresh) Triton connection",
            ["model"],
            registry=self.registry,
        )
        self.triton_restarts = Counter(
            "cvops_router_triton_restarts",
            "Restarts of the supervised tritonserver",
            registry=self.registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}

    def observe(self, model: str, version: int | str, protocol: str, code: str, s: float) -> None:
        """Count one answered request (children cached: this is the hot path)."""
        key = (model, str(version), protocol, code)
        child = self._children.get(key)
        if child is None:
            child = (
                self.requests.labels(*key),
                self.latency.labels(model, str(version), protocol),
            )
            self._children[key] = child
        child[0].inc()
        child[1].observe(s)

    def upstream_error(self, instance: str, kind: str) -> None:
        self.errors.labels(instance, kind).inc()

    def retry(self, model: str) -> None:
        self.retries.labels(model).inc()


class PoolCollector(Collector):
    """Instance health, outstanding requests and breaker state at scrape time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "cvops_router_instance_up", "Triton instance up", labels=["instance"]
        )
        out = GaugeMetricFamily(
            "cvops_router_outstanding_requests",
            "Requests in flight per Triton instance",
            labels=["instance"],
        )
        breaker = GaugeMetricFamily(
            "cvops_router_circuit_open",
            "1 while an instance's circuit breaker is open",
            labels=["instance"],
        )
        for inst in self.pool.instances:
            up.add_metric([inst.name], 1.0 if inst.up else 0.0)
            out.add_metric([inst.name], float(inst.outstanding))
            breaker.add_metric([inst.name], 0.0 if inst.breaker.state == "closed" else 1.0)
        yield from (up, out, breaker)


class TritonStatsCollector(Collector):
    """Queue time and executed batch sizes per model version from Triton's statistics."""

    def __init__(self) -> None:
        self.stats: list[dict[str, Any]] = []

    def collect(self) -> Iterator[Metric]:
        batch = HistogramMetricFamily(
            "cvops_triton_batch_size",
            "Batch sizes Triton executed (dynamic batching), per model version",
            labels=["model", "version"],
        )
        queue = CounterMetricFamily(
            "cvops_triton_queue_seconds",
            "Total time requests waited in Triton's queue, per model version",
            labels=["model", "version"],
        )
        queued = CounterMetricFamily(
            "cvops_triton_queued_requests",
            "Requests that went through Triton's queue, per model version",
            labels=["model", "version"],
        )
        counts: dict[tuple[str, str], dict[int, int]] = defaultdict(lambda: defaultdict(int))
        qtime: dict[tuple[str, str], float] = defaultdict(float)
        qcount: dict[tuple[str, str], int] = defaultdict(int)
        for model in self.stats:
            key = (str(model.get("name", "")), str(model.get("version", "")))
            q = model.get("inference_stats", {}).get("queue", {})
            qtime[key] += float(q.get("ns", 0)) / 1e9
            qcount[key] += int(q.get("count", 0))
            for b in model.get("batch_stats", []):
                size = int(b.get("batch_size", 0))
                counts[key][size] += int(b.get("compute_infer", {}).get("count", 0))
        for key, per_size in counts.items():
            buckets = []
            for edge in BATCH_BUCKETS:
                buckets.append((str(edge), sum(c for s, c in per_size.items() if s <= edge)))
            buckets.append(("+Inf", sum(per_size.values())))
            total = sum(s * c for s, c in per_size.items())
            batch.add_metric(list(key), buckets, total)
        for key in qtime:
            queue.add_metric(list(key), qtime[key])
            queued.add_metric(list(key), qcount[key])
        yield from (batch, queue, queued)


def relabel_triton(texts: Iterable[tuple[str, str]]) -> str:
    """Merge Triton ``/metrics`` texts, adding ``triton_instance`` to every sample."""
    headers: dict[str, list[str]] = {}
    samples: dict[str, list[str]] = defaultdict(list)
    for instance, text in texts:
        family = ""
        label = f'triton_instance="{instance}"'
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    lines = headers.setdefault(family, [])
                    if len(lines) < 2 and line not in lines:
                        lines.append(line)
                continue
            brace, space = line.find("{"), line.find(" ")
            if brace != -1 and (space == -1 or brace < space):
                sep = "" if line[brace + 1 : brace + 2] == "}" else ","
                line = f"{line[: brace + 1]}{label}{sep}{line[brace + 1 :]}"
            elif space != -1:
                line = f"{line[:space]}{{{label}}}{line[space:]}"
            samples[family or line.split("{", 1)[0]].append(line)
    out: list[str] = []
    for family in dict.fromkeys([*headers, *samples]):
        out.extend(headers.get(family, []))
        out.extend(samples.get(family, []))
    return "\n".join(out) + ("\n" if out else "")


class MetricsExporter:
    """Renders the router's registry plus Triton's scraped numbers."""

    def __init__(self, metrics: RouterMetrics, pool: Pool) -> None:
        self.metrics = metrics
        self.pool = pool
        self.stats = TritonStatsCollector()
        metrics.registry.register(PoolCollector(pool))
        metrics.registry.register(self.stats)

    async def render(self, get: Getter) -> bytes:
        """Own registry and the numbers every service shares (events, lag, jobs, GPUs), then
        Triton's statistics and metrics of every up instance."""
        up = [i for i in self.pool.instances if i.up]
        texts = await asyncio.gather(*(_text(get, i.metrics, "/metrics") for i in up))
        stats = await asyncio.gather(*(_text(get, i.http, "/v2/models/stats") for i in up))
        merged: list[dict[str, Any]] = []
        for raw in stats:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                merged.extend(json.loads(raw).get("model_stats", []))
        self.stats.stats = merged
        own = (
            generate_latest(self.metrics.registry)
            + generate_latest(PROJECTION_METRICS)
            + await asyncio.to_thread(generate_latest, CORE_METRICS)  # NVML: off the loop
        )
        triton = relabel_triton((i.name, t) for i, t in zip(up, texts, strict=True) if t)
        return own + triton.encode()


async def _text(get: Getter, address: str, path: str) -> str:
    try:
        status, body = await get(address, path, SCRAPE_TIMEOUT_S)
    except (ConnectionError, TimeoutError):
        return ""
    return body.decode(errors="replace") if status == 200 else ""
