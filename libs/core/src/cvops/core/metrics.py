"""Prometheus metrics every service shares: events handled, handler latency, work consumers'
pending messages, projection lag, job outcomes and durations, and the host's GPUs.

They live in :data:`CORE_METRICS`, part of the default registry that ``cvops.core.runtime``
serves; the gateway and the inference router add it to their own ``/metrics``. The GPU
numbers are read from NVML at scrape time (:class:`GpuCollector`); a host without NVML or
without a GPU says so (``cvops_gpu_metrics_available 0``) and never fails a scrape.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cvops.contracts import Event
from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkFailed,
    ConversionCompleted,
    ConversionFailed,
)
from cvops.contracts.deployment import DeploymentFailed, DeploymentReady, DeploymentRetired
from cvops.contracts.training import (
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrialCompleted,
    TrialFailed,
)
from cvops.core.accel import GpuReading, gpu_readings

CORE_METRICS = CollectorRegistry(auto_describe=True)

EVENTS_HANDLED = Counter(
    "cvops_events_handled",
    "Events applied by a projection or handled by a work consumer, by consumer and type",
    ["consumer", "type"],
    registry=CORE_METRICS,
)
EVENTS_FAILED = Counter(
    "cvops_events_failed",
    "Events a projection could not apply or a work handler failed on (each attempt)",
    ["consumer", "type"],
    registry=CORE_METRICS,
)
HANDLER_SECONDS = Histogram(
    "cvops_event_handler_duration_seconds",
    "Time to handle one work message, or to apply one projection batch",
    ["consumer"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600, 1800, 3600),
    registry=CORE_METRICS,
)
CONSUMER_PENDING = Gauge(
    "cvops_consumer_pending_messages",
    "Messages of a durable work consumer not yet delivered (its num_pending)",
    ["consumer"],
    registry=CORE_METRICS,
)
PROJECTION_LAG = Gauge(
    "cvops_projection_lag_events",
    "Stream last sequence on the projection's subjects minus the projection's position",
    ["projection"],
    registry=CORE_METRICS,
)
JOBS = Counter(
    "cvops_jobs",
    "Long-running work that ended, by kind and outcome (completed, failed, cancelled)",
    ["kind", "outcome"],
    registry=CORE_METRICS,
)
JOB_SECONDS = Histogram(
    "cvops_job_duration_seconds",
    "From a job's request to its end (queue time and redeliveries included)",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
    registry=CORE_METRICS,
)

# the events that end a job: tag -> (kind, outcome); counted where they are appended
JOB_ENDS: dict[str, tuple[str, str]] = {
    TrainingCompleted.tag(): ("training", "completed"),
    TrainingFailed.tag(): ("training", "failed"),
    TrainingCancelled.tag(): ("training", "cancelled"),
    TrialCompleted.tag(): ("trial", "completed"),
    TrialFailed.tag(): ("trial", "failed"),
    ConversionCompleted.tag(): ("conversion", "completed"),
    ConversionFailed.tag(): ("conversion", "failed"),
    BenchmarkCompleted.tag(): ("benchmark", "completed"),
    BenchmarkFailed.tag(): ("benchmark", "failed"),
    DeploymentReady.tag(): ("deployment", "completed"),
    DeploymentFailed.tag(): ("deployment", "failed"),
    DeploymentRetired.tag(): ("retirement", "completed"),
}

# the request a work handler is handling now (its job's start, for the duration)
_HANDLING: contextvars.ContextVar[Event | None] = contextvars.ContextVar(
    "cvops_handling", default=None
)


@contextlib.contextmanager
def handling(request: Event) -> Iterator[None]:
    """While a work handler handles ``request``: the job whose end it appends started then."""
    token = _HANDLING.set(request)
    try:
        yield
    finally:
        _HANDLING.reset(token)


def job_ended(event: Event) -> None:
    """Count ``event`` when it ends a job: called once per event appended (a duplicate is
    not), counted when a work handler appends it (a router that announces a deployment ready
    again after Triton came back ends no job); its duration is known when it ends the very
    request being handled (same aggregate)."""
    end = JOB_ENDS.get(event.tag())
    request = _HANDLING.get()
    if end is None or request is None:
        return
    kind, outcome = end
    JOBS.labels(kind, outcome).inc()
    if request.aggregate_prefix == event.aggregate_prefix:
        seconds = (event.occurred_at - request.occurred_at).total_seconds()
        JOB_SECONDS.labels(kind).observe(max(0.0, seconds))


def record_job(kind: str, outcome: str, seconds: float) -> None:
    """Count a job that ends without an event of its own (e.g. a report that failed)."""
    JOBS.labels(kind, outcome).inc()
    JOB_SECONDS.labels(kind).observe(max(0.0, seconds))


# -- what the monitor watches ---------------------------------------------------------------


class WatchedConsumer(Protocol):
    durable: str
    subjects: list[str]


class WatchedProjection(Protocol):
    stream: str
    subjects: list[str]

    @property
    def position(self) -> int: ...


# the work consumers and projections running in this process (``cvops.core.presence`` reads
# their pending counts and lag every few seconds)
consumers: dict[str, WatchedConsumer] = {}
projections: dict[str, WatchedProjection] = {}


# -- GPUs ---------------------------------------------------------------------------------


class GpuCollector(Collector):
    """Per-GPU utilization, memory, temperature and power, read from NVML at scrape time."""

    def collect(self) -> Iterator[Metric]:
        readings = gpu_readings()
        yield from gpu_families(readings)

    def describe(self) -> Iterator[Metric]:
        yield from gpu_families([])


def gpu_families(readings: list[GpuReading] | None) -> list[Metric]:
    """The GPU metric families for ``readings`` (None: NVML is not available here)."""
    labels = ["gpu", "name"]
    available = GaugeMetricFamily(
        "cvops_gpu_metrics_available", "1 when NVML answers on this host, else 0"
    )
    count = GaugeMetricFamily("cvops_gpus", "GPUs NVML sees on this host")
    util = GaugeMetricFamily(
        "cvops_gpu_utilization_ratio", "Share of time a kernel ran (0-1)", labels=labels
    )
    used = GaugeMetricFamily("cvops_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
    total = GaugeMetricFamily("cvops_gpu_memory_total_bytes", "GPU memory", labels=labels)
    temp = GaugeMetricFamily("cvops_gpu_temperature_celsius", "GPU temperature", labels=labels)
    power = GaugeMetricFamily("cvops_gpu_power_watts", "GPU power draw", labels=labels)
    available.add_metric([], 0.0 if readings is None else 1.0)
    count.add_metric([], float(len(readings or [])))
    for r in readings or []:
        key = [str(r.index), r.name]
        total.add_metric(key, float(r.memory_total_bytes))
        if r.memory_used_bytes is not None:
            used.add_metric(key, float(r.memory_used_bytes))
        if r.utilization_ratio is not None:
            util.add_metric(key, r.utilization_ratio)
        if r.temperature_celsius is not None:
            temp.add_metric(key, r.temperature_celsius)
        if r.power_watts is not None:
            power.add_metric(key, r.power_watts)
    return [available, count, util, used, total, temp, power]


CORE_METRICS.register(GpuCollector())
with contextlib.suppress(ValueError):  # already registered (module reloaded)
    REGISTRY.register(CORE_METRICS)  # type: ignore[arg-type]
