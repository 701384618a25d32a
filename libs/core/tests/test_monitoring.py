"""Monitoring: the shared Prometheus metrics (events handled, consumer pending, projection lag,
jobs, GPUs) and each instance's presence in KV ``cvops-services``, on a real nats-server.

The GPU tests are unit tests of the collector's arithmetic: one without NVML (this host), one
with a fake NVML module injected, which claims nothing about real GPUs.
"""

from __future__ import annotations

import asyncio
import sys
import types
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.msg import Msg
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.training import TrainingCancelRequested, TrainingFailed
from cvops.core import STREAM, Bus, ProjectionRunner, WorkConsumer, metrics
from cvops.core.accel import gpu_readings
from cvops.core.presence import Presence, health_of, instances

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape() -> Samples:
    """Every sample of the shared metrics, parsed from the text a scrape gets."""
    text = generate_latest(metrics.CORE_METRICS).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


# -- GPUs ---------------------------------------------------------------------------------


def test_a_host_without_nvml_says_so_and_the_scrape_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails as without nvidia-ml-py
    assert gpu_readings() is None
    samples = scrape()
    assert value(samples, "cvops_gpu_metrics_available") == 0
    assert value(samples, "cvops_gpus") == 0
    assert not [k for k in samples if k[0] == "cvops_gpu_memory_total_bytes"]


class _NVMLError(Exception):
    pass


def fake_nvml(*, fail_init: bool = False) -> types.ModuleType:
    """Two GPUs: the second reports no power (NVML raises for it, as on some boards)."""
    nvml = types.ModuleType("pynvml")
    gpus = [
        {"name": b"NVIDIA H200", "used": 3 * 2**30, "total": 140 * 2**30, "util": 87, "temp": 61,
         "mw": 412_500},
        {"name": "NVIDIA H200", "used": 0, "total": 140 * 2**30, "util": 0, "temp": 35,
         "mw": None},
    ]  # fmt: skip

    def init() -> None:
        if fail_init:
            raise _NVMLError("Driver Not Loaded")

    def power(h: int) -> int:
        mw = gpus[h]["mw"]
        if mw is None:
            raise _NVMLError("Not Supported")
        return int(mw)  # type: ignore[call-overload]

    nvml.NVMLError = _NVMLError  # type: ignore[attr-defined]
    nvml.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(gpus)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: gpus[h]["name"]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        used=gpus[h]["used"], total=gpus[h]["total"], free=0
    )
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        gpu=gpus[h]["util"], memory=0
    )
    nvml.nvmlDeviceGetTemperature = lambda h, _sensor: gpus[h]["temp"]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetPowerUsage = power  # type: ignore[attr-defined]
    return nvml


def test_the_gpu_collector_reports_each_gpu_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    samples = scrape()
    assert value(samples, "cvops_gpu_metrics_available") == 1
    assert value(samples, "cvops_gpus") == 2
    first = {"gpu": "0", "name": "NVIDIA H200"}
    second = {"gpu": "1", "name": "NVIDIA H200"}
    assert value(samples, "cvops_gpu_utilization_ratio", **first) == pytest.approx(0.87)
    assert value(samples, "cvops_gpu_memory_used_bytes", **first) == 3 * 2**30
    assert value(samples, "cvops_gpu_memory_total_bytes", **second) == 140 * 2**30
    assert value(samples, "cvops_gpu_temperature_celsius", **first) == 61
    assert value(samples, "cvops_gpu_power_watts", **first) == pytest.approx(412.5)
    assert value(samples, "cvops_gpu_power_watts", **second) is None  # not reported: no sample
    assert value(samples, "cvops_gpu_utilization_ratio", **second) == 0


def test_nvml_without_a_driver_is_no_gpu_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(fail_init=True))
    samples = scrape()
    assert value(samples, "cvops_gpu_metrics_available") == 0
    assert value(samples, "cvops_gpus") == 0


# -- jobs -----------------------------------------------------------------------------------


def _stamp(now: datetime) -> Stamp:
    return Stamp(now=now, actor="test", correlation_id=f"c-{uuid.uuid4().hex[:8]}")


def test_a_job_end_counts_with_its_duration_only_inside_its_handler() -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    request = TrainingCancelRequested(**_stamp(t0).envelope("r"), job_id=job)
    end = TrainingFailed(**_stamp(t0 + timedelta(seconds=42)).envelope("e"), job_id=job, reason="x")
    before = scrape()
    metrics.job_ended(end)  # not while handling a request (a recovery's re-announcement)
    with metrics.handling(request):
        metrics.job_ended(end)
    after = scrape()

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("cvops_jobs_total", kind="training", outcome="failed") == 1
    assert delta("cvops_job_duration_seconds_count", kind="training") == 1
    assert delta("cvops_job_duration_seconds_sum", kind="training") == 42
    assert delta("cvops_job_duration_seconds_bucket", kind="training", le="60.0") == 1
    assert delta("cvops_job_duration_seconds_bucket", kind="training", le="30.0") == 0


# -- on NATS: events handled, pending, lag, presence ------------------------------------------


class NothingProjection:
    """Applies every event and keeps nothing (the runner's checkpoint is all that moves)."""

    name = f"monitor-test-{uuid.uuid4().hex[:6]}"
    metadata = MetaData()

    def apply(self, session: Session, event: Event, seq: int) -> None:
        pass


async def test_handled_events_pending_messages_lag_and_presence(bus: Bus, tmp_path: Path) -> None:
    job = f"job-{uuid.uuid4().hex[:8]}"
    subjects = [f"cvops.evt.training.{job}.cancel_requested"]
    durable = f"monitor-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    for i in range(3):
        await bus.publish(TrainingCancelRequested(**_stamp(now).envelope(str(i)), job_id=job))
    release = asyncio.Event()
    handled: list[Event] = []

    async def handler(event: Event, _msg: Msg) -> None:
        await release.wait()
        if not handled:  # the first request ends the job
            end = _stamp(datetime.now(UTC)).caused_by(event, actor="test")
            await bus.publish(TrainingFailed(**end.envelope("end"), job_id=job, reason="test"))
        handled.append(event)

    before = scrape()
    consumer = WorkConsumer(bus, durable, subjects, handler)
    runner = ProjectionRunner(
        bus, NothingProjection(), tmp_path / "p.sqlite", subjects=[f"cvops.evt.training.{job}.>"]
    )
    tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(runner.run())]
    presence = Presence(bus, "registry")
    try:
        # one message in the handler, two waiting: pending 2, in flight 1
        for _ in range(50):
            status = await presence.refresh()
            mine = [c for c in status.consumers if c.durable == durable]
            if mine and mine[0].in_flight == 1:
                break
            await asyncio.sleep(0.1)
        assert mine and (mine[0].pending, mine[0].in_flight) == (2, 1), status.consumers
        assert value(scrape(), "cvops_consumer_pending_messages", consumer=durable) == 2

        release.set()
        for _ in range(100):
            if len(handled) == 3:
                break
            await asyncio.sleep(0.05)
        assert len(handled) == 3
        assert await runner.catch_up(10)
        status = await presence.refresh()
        (mine,) = [c for c in status.consumers if c.durable == durable]
        assert (mine.pending, mine.in_flight) == (0, 0)
        (lag,) = [p for p in status.projections if p.name == NothingProjection.name]
        assert lag.lag == 0 and lag.position >= 4 and lag.stuck_at == 0
        # a projection that has applied nothing yet is behind by the last event on its subjects
        last = await bus.last_subject_seq(f"cvops.evt.training.{job}.>")
        behind = types.SimpleNamespace(
            stream=STREAM, subjects=[f"cvops.evt.training.{job}.>"], position=0, stuck=None
        )
        metrics.projections["monitor-test-behind"] = behind  # type: ignore[assignment]
        try:
            status = await presence.refresh()
        finally:
            del metrics.projections["monitor-test-behind"]
        (behind_status,) = [p for p in status.projections if p.name == "monitor-test-behind"]
        assert behind_status.lag == last >= 4

        after = scrape()
        handled_type = "training.cancel_requested.v1"
        moved = value(after, "cvops_events_handled_total", consumer=durable, type=handled_type)
        assert moved == 3
        applied = value(
            after, "cvops_events_handled_total", consumer=NothingProjection.name, type=handled_type
        )
        assert applied == 3
        assert value(after, "cvops_projection_lag_events", projection=NothingProjection.name) == 0
        assert value(after, "cvops_event_handler_duration_seconds_count", consumer=durable) == 3
        ended = ("cvops_jobs_total", (("kind", "training"), ("outcome", "failed")))
        assert after[ended] - before.get(ended, 0) == 1

        # the instance is in the bucket, as the gateway reads it
        present = [s for s in await instances(bus) if s.instance == presence.instance]
        (me,) = [s for s in present if s.service == "registry"]
        assert me.health == "ready" and me.version != "" and me.pid == presence.pid
        assert any(c.durable == durable for c in me.consumers)
    finally:
        consumer.stop()
        runner.stop()
        release.set()
        await asyncio.gather(*tasks)
        runner.engine.dispose()
        presence.stop()
        await presence.run()  # stopped: withdraws the key at once
    assert not [s for s in await instances(bus) if s.instance == presence.instance]


def test_health_names_the_first_reason_an_instance_is_not_ready() -> None:
    from cvops.core.presence import ProjectionStatus

    ok = ProjectionStatus(name="a", position=10, lag=0)
    stuck = ProjectionStatus(name="b", position=10, lag=5, stuck_at=11)
    behind = ProjectionStatus(name="c", position=10, lag=5000)
    assert health_of(True, [ok]) == "ready"
    assert health_of(False, [ok]) == "NATS disconnected"
    assert health_of(True, [ok, behind, stuck]) == "projection b stuck at seq 11"
    assert health_of(True, [behind]) == "projection c is 5000 events behind"
