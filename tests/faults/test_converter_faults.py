"""Faults around a conversion job, with real processes on a real NATS: ``python -m
cvops.converter`` killed -9 mid-calibration, nats-server killed -9 mid-job, and a poison event
on the converter's work subject. Each job ends exactly once, no event id is in the log twice,
each target has one result, and the converter's projection rebuilt from the log equals the
live one."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from cvops.contracts import Event, encode
from cvops.contracts.conversion import (
    ArtifactProduced,
    ArtifactRejected,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    TargetUnavailable,
)
from cvops.converter import projection as converter_projection
from cvops.core import Bus
from cvops.core.projection import quarantine_event, read_state
from cvops.testing.converter import (
    TEST_ENV,
    TrainedModel,
    publish_dataset,
    publish_model_version,
    stamp,
    watch_job,
)
from cvops.testing.faults import (
    KillableNats,
    Service,
    read_log,
    rebuilt_equals_live,
    repeated_ids,
    services,
    wait_checkpoint,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]

RESULTS = (ArtifactProduced, ArtifactRejected, TargetUnavailable)
ENDS = (ConversionCompleted, ConversionFailed)
# int8 follows fp16: once fp16 has its result the converter is calibrating int8
TARGETS = ["onnx", "fp16", "int8", "openvino"]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def _given_model(bus: Bus, tmp_path: Path, trained: TrainedModel, digits) -> str:  # type: ignore[no-untyped-def]
    dataset = _name("digits")
    await publish_dataset(bus, tmp_path / "data", dataset, digits)
    model = _name("cnn")
    await publish_model_version(
        bus, trained.weights, model, format="safetensors", architecture=trained.arch,
        input_shape=[trained.channels, *trained.image_size], num_classes=trained.num_classes,
        dataset=dataset, hyperparameters=trained.hyperparameters,
    )  # fmt: skip
    return model


def _request(model: str) -> ConversionRequested:
    return ConversionRequested(
        **stamp().envelope("request"), job_id=_name("conv"), model_name=model, version=1,
        targets=TARGETS,  # type: ignore[arg-type]
    )  # fmt: skip


def _converter(nats: KillableNats, tmp_path: Path) -> Service:
    return Service(
        "cvops.converter",
        nats.settings(tmp_path / "converter"),
        tmp_path / "converter.log",
        dict(TEST_ENV),
    )


def _of_job(log: list[tuple[int, Event]], job_id: str) -> list[Event]:
    return [e for _, e in log if getattr(e, "job_id", None) == job_id]


async def _ended_in_log(bus: Bus, job_id: str, timeout: float, converter: Service) -> float:
    """Poll the log (not a live subscription: it must survive a NATS restart) for the job's
    end; returns when it appeared (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(isinstance(e, ENDS) for e in _of_job(await read_log(bus), job_id)):
                return time.monotonic()
        except Exception:  # the server is still coming back
            pass
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end in {timeout} s\n{converter.tail()}")


async def _check_once_and_rebuild(
    bus: Bus, request: ConversionRequested, converter: Service, tmp_path: Path
) -> dict[str, object]:
    """The checks every converter fault ends with; returns the figures."""
    p = converter_projection
    db = p.db_path(converter.settings)
    await wait_checkpoint(db, p.projection.name, p.SUBJECTS, bus)
    assert converter.stop() == 0, converter.tail()
    log = await read_log(bus)
    events = _of_job(log, request.job_id)
    ends = [e for e in events if isinstance(e, ENDS)]
    assert [type(e) for e in ends] == [ConversionCompleted], (ends, converter.tail())
    results = Counter(e.target for e in events if isinstance(e, RESULTS))  # type: ignore[attr-defined]
    assert results == Counter(TARGETS), results  # one result per target: none lost, none twice
    assert not repeated_ids(log), repeated_ids(log)
    live, rebuilt = await rebuilt_equals_live(bus, p.projection, db, p.SUBJECTS, tmp_path)
    assert rebuilt == live
    assert any(r[0] == request.job_id for rows in live.values() for r in rows)
    return {
        "events_in_log": len(log),
        "job_events": len(events),
        "duplicate_ids": 0,
        "results": dict(results),
        "rebuild_equal": True,
        "projection_rows": sum(len(r) for r in live.values()),
    }


async def test_converter_killed_mid_calibration_finishes_the_job_once(
    nats: KillableNats, fault_bus: Bus, tmp_path: Path, trained: TrainedModel, digits
) -> None:
    model = await _given_model(fault_bus, tmp_path, trained, digits)
    request = _request(model)
    converter = _converter(nats, tmp_path)
    t0 = time.monotonic()
    with services(converter):
        converter.start()
        async with watch_job(fault_bus, request.job_id) as job:
            await fault_bus.publish(request)
            # fp16 has its result: the converter now calibrates int8 (minmax on the calib split)
            await job.wait(
                lambda j: any(e.target == "fp16" for e in j.of(ArtifactProduced)), timeout=240
            )
            converter.kill9()
            killed_at = time.monotonic() - t0
            seq_at_kill = await fault_bus.last_seq()
            before = {e.target for e in job.events if isinstance(e, RESULTS)}  # type: ignore[attr-defined]
        assert "int8" not in before and not any(isinstance(e, ENDS) for e in job.events), before
        converter.start()
        await _ended_in_log(fault_bus, request.job_id, 240, converter)
        await asyncio.sleep(1.5)  # a second result or end would be in the log by now
        figures = await _check_once_and_rebuild(fault_bus, request, converter, tmp_path)
    started = [e for e in _of_job(await read_log(fault_bus), request.job_id)]
    attempts = [e for e in started if isinstance(e, ConversionStarted)]
    # the second attempt resumed after the finished targets instead of starting from zero
    assert [a.attempt for a in attempts] == [1, 2]
    assert attempts[1].targets == ["int8", "openvino"], attempts[1].targets
    print(
        f"\nFAULT converter kill -9 mid-calibration at {killed_at:.1f} s (seq {seq_at_kill}, "
        f"done before: {sorted(before)}); {figures}; total {time.monotonic() - t0:.1f} s"
    )


async def test_nats_killed_mid_conversion_comes_back_and_the_job_ends_once(
    nats: KillableNats, fault_bus: Bus, tmp_path: Path, trained: TrainedModel, digits
) -> None:
    model = await _given_model(fault_bus, tmp_path, trained, digits)
    request = _request(model)
    converter = _converter(nats, tmp_path)
    t0 = time.monotonic()
    with services(converter):
        converter.start()
        async with watch_job(fault_bus, request.job_id) as job:
            await fault_bus.publish(request)
            await job.wait(lambda j: bool(j.of(ConversionStarted)), timeout=240)
            acked = {str(e.event_id) for _, e in await read_log(fault_bus)}
            nats.kill9()
            killed_at = time.monotonic() - t0
        await asyncio.sleep(2.0)  # down long enough for the converter to notice
        nats.start()  # same port, same store
        await _ended_in_log(fault_bus, request.job_id, 240, converter)
        await asyncio.sleep(1.5)
        assert converter.alive(), converter.tail()
        figures = await _check_once_and_rebuild(fault_bus, request, converter, tmp_path)
    after = {str(e.event_id) for _, e in await read_log(fault_bus)}
    lost = acked - after
    assert not lost, f"{len(lost)} acknowledged events lost across the NATS kill"
    print(
        f"\nFAULT nats-server kill -9 mid-conversion at {killed_at:.1f} s, down 2 s; "
        f"acked before {len(acked)}, lost {len(lost)}, after {len(after)}; {figures}; "
        f"total {time.monotonic() - t0:.1f} s"
    )


async def test_a_poison_event_on_the_work_subject_is_loud_and_the_next_job_still_runs(
    nats: KillableNats, fault_bus: Bus, tmp_path: Path, trained: TrainedModel, digits
) -> None:
    """A conversion request whose fields no reader can decode (appended around Bus.publish,
    as a buggy or hostile producer could) stops the converter's projection with a reason;
    once the operator quarantines it, the job after it runs and ends once."""
    model = await _given_model(fault_bus, tmp_path, trained, digits)
    converter = _converter(nats, tmp_path)
    poison_id = str(uuid.uuid4())
    good = _request(model)
    raw = encode(good).replace(b'"version":1', b'"version":"one"')
    raw = raw.replace(str(good.event_id).encode(), poison_id.encode())
    assert raw != encode(good)
    t0 = time.monotonic()
    with services(converter):
        converter.start()
        ack = await fault_bus.js.publish(
            f"cvops.evt.conversion.poison-{poison_id[:8]}.requested",
            raw,
            headers={"Nats-Msg-Id": poison_id},
        )
        await fault_bus.publish(good)
        p = converter_projection
        db = p.db_path(converter.settings)
        deadline = time.monotonic() + 60
        while (state := read_state(db, p.projection.name)) is None or state.stuck is None:
            assert time.monotonic() < deadline, converter.tail()
            await asyncio.sleep(0.2)
        assert (state.stuck.seq, state.stuck.type) == (ack.seq, "undecodable")
        assert "ValidationError" in state.stuck.reason and "$.version" in state.stuck.reason
        assert '"projection_stuck"' in converter.tail(20000).replace(" ", "")
        assert converter.alive(), converter.tail()
        stuck_for = time.monotonic() - t0

        quarantine_event(db, ack.seq, "fault suite: poison event", type=state.stuck.type)
        await _ended_in_log(fault_bus, good.job_id, 240, converter)
        await asyncio.sleep(1.0)
        figures = await _check_once_and_rebuild(fault_bus, good, converter, tmp_path)
    print(
        f"\nFAULT poison event at seq {ack.seq}: projection stuck after {stuck_for:.1f} s "
        f"({state.stuck.reason[:60]}); quarantined; next job {figures}; "
        f"total {time.monotonic() - t0:.1f} s"
    )
