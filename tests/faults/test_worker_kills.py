"""kill -9 of each worker at its named moment, real processes on a NATS of the test's own:
the registry mid-validation, the trainer mid-generation, the benchmarker mid-sweep. Each is
restarted; every job ends exactly once, no event id is in the log twice, the domain outcome
is not duplicated (one verdict per upload and one version number each; one result per
trial; one row per benchmark cell) and the service's projection rebuilt from the log into a
new file equals the live one.

The services' own suites already kill these workers and count domain outcomes
(tests/faults/README.md names them); these add the whole-log and the rebuild checks."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cvops.benchmarker import projection as benchmarker_projection
from cvops.contracts import Event
from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRowMeasured,
    BenchmarkStarted,
)
from cvops.contracts.registry import (
    DatasetRejected,
    DatasetValidated,
    ModelRegistered,
    ModelRejected,
    ModelVersionAdded,
)
from cvops.contracts.training import (
    GenerationCompleted,
    GenerationStarted,
    TrainingCompleted,
    TrainingFailed,
    TrialCompleted,
    TrialFailed,
    TrialPruned,
    TrialRequested,
)
from cvops.core import Bus
from cvops.registry import projection as registry_projection
from cvops.testing import converter as conv
from cvops.testing import registry as samples
from cvops.testing import trainer as train
from cvops.testing.benchmarker import Converted, convert_in_process, publish_conversion
from cvops.testing.faults import (
    KillableNats,
    Service,
    read_log,
    rebuilt_equals_live,
    repeated_ids,
    services,
    wait_checkpoint,
)
from cvops.trainer import projection as trainer_projection

pytestmark = [pytest.mark.faults, pytest.mark.timeout(420)]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


async def _wait_log(bus: Bus, done: Any, timeout: float, service: Service) -> list[Event]:
    """Poll the whole log until ``done(events)``; returns the events."""
    deadline = time.monotonic() + timeout
    while True:
        events = [e for _, e in await read_log(bus)]
        if done(events):
            return events
        assert time.monotonic() < deadline, service.tail()
        await asyncio.sleep(0.3)


async def _finish(bus: Bus, service: Service, module: ModuleType, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    """Stop the service once its projection has the log; the whole-log and rebuild checks."""
    db = module.db_path(service.settings)
    await wait_checkpoint(db, module.projection.name, module.SUBJECTS, bus)
    assert service.stop() == 0, service.tail()
    log = await read_log(bus)
    assert not repeated_ids(log), repeated_ids(log)
    live, rebuilt = await rebuilt_equals_live(bus, module.projection, db, module.SUBJECTS, tmp_path)
    assert rebuilt == live
    return {
        "events_in_log": len(log),
        "duplicate_ids": 0,
        "rebuild_equal": True,
        "projection_rows": sum(len(r) for r in live.values()),
    }


async def test_registry_killed_mid_validation_gives_each_upload_one_verdict(
    nats: KillableNats, fault_bus: Bus, tmp_path: Path
) -> None:
    registry = Service(
        "cvops.registry", nats.settings(tmp_path / "registry"), tmp_path / "registry.log", {}
    )
    model = _name("m")
    t0 = time.monotonic()
    with services(registry):
        registry.start()
        uploads = [
            await samples.announce_model_upload(fault_bus, samples.onnx_model(seed=i), model)
            for i in range(8)
        ]
        uploads.append(
            await samples.announce_dataset_upload(fault_bus, samples.image_folder_zip(), "d")
        )
        ids = {u.upload_id for u in uploads}
        verdicts = (ModelVersionAdded, ModelRejected, DatasetValidated, DatasetRejected)

        def judged(events: list[Event]) -> set[str]:
            return {e.upload_id for e in events if isinstance(e, verdicts)} & ids  # type: ignore[attr-defined]

        await _wait_log(fault_bus, lambda ev: len(judged(ev)) >= 2, 120, registry)
        registry.kill9()
        killed_at = time.monotonic() - t0
        before = len(judged([e for _, e in await read_log(fault_bus)]))
        assert before < len(ids), "the registry finished before it could be killed"
        registry.start()
        events = await _wait_log(fault_bus, lambda ev: judged(ev) == ids, 180, registry)
        await asyncio.sleep(1.5)
        figures = await _finish(fault_bus, registry, registry_projection, tmp_path)
    events = [e for _, e in await read_log(fault_bus)]
    per_upload = Counter(e.upload_id for e in events if isinstance(e, verdicts))  # type: ignore[attr-defined]
    assert all(per_upload[u] == 1 for u in ids), per_upload
    versions = [
        e.version for e in events if isinstance(e, ModelVersionAdded) and e.model_name == model
    ]
    assert sorted(versions) == list(range(1, 9))  # one registered version each, no gap
    assert sum(isinstance(e, ModelRegistered) and e.model_name == model for e in events) == 1
    print(
        f"\nFAULT registry kill -9 mid-validation at {killed_at:.1f} s ({before}/{len(ids)} "
        f"verdicts out); verdicts once each, versions 1..8; {figures}; "
        f"total {time.monotonic() - t0:.1f} s"
    )


async def test_trainer_killed_mid_generation_finishes_once_with_its_budget(
    nats: KillableNats, fault_bus: Bus, tmp_path: Path
) -> None:
    dataset = _name("digits")
    await train.publish_dataset(fault_bus, tmp_path, dataset)
    request = train.tiny_request(dataset)
    trainer = Service(
        "cvops.trainer", nats.settings(tmp_path / "trainer"), tmp_path / "trainer.log",
        dict(train.TEST_ENV),
    )  # fmt: skip
    t0 = time.monotonic()
    with services(trainer):
        trainer.start()
        async with train.watch_job(fault_bus, request) as job:
            await fault_bus.publish(request)
            # generation 0 started and one of its trials done, the others not
            await job.wait(
                lambda j: bool(j.of(GenerationStarted)) and len(j.of(TrialCompleted)) >= 1, 120
            )
            trainer.kill9()
            killed_at = time.monotonic() - t0
            assert not job.of(GenerationCompleted)
            trainer.start()
            await job.wait(lambda j: bool(j.of(TrainingCompleted) or j.of(TrainingFailed)), 200)
            await asyncio.sleep(1.5)
        figures = await _finish(fault_bus, trainer, trainer_projection, tmp_path)
    assert [type(e) for e in job.events if isinstance(e, (TrainingCompleted, TrainingFailed))] == [
        TrainingCompleted
    ]
    requested = Counter(e.trial_id for e in job.of(TrialRequested))
    assert len(requested) == 8 and set(requested.values()) == {1}
    ended = Counter(e.trial_id for e in job.of(TrialCompleted) + job.of(TrialFailed))
    ended.update(e.trial_id for e in job.of(TrialPruned) if e.trial_id not in ended)
    assert set(ended) == set(requested) and set(ended.values()) == {1}, ended
    assert sorted(g.generation for g in job.of(GenerationCompleted)) == [0, 1]
    print(
        f"\nFAULT trainer kill -9 mid-generation 0 at {killed_at:.1f} s; 8 trials, each "
        f"requested once and ended once, 2 generations, 1 completed; {figures}; "
        f"total {time.monotonic() - t0:.1f} s"
    )


@pytest.fixture(scope="module")
def converted(
    tmp_path_factory: pytest.TempPathFactory, trained: conv.TrainedModel, digits: Any
) -> list[Converted]:
    return convert_in_process(
        trained.weights, trained.arch, digits, trained.hyperparameters["normalization"],
        tmp_path_factory.mktemp("artifacts"), targets=("onnx", "int8"),
    )  # fmt: skip


async def test_benchmarker_killed_mid_sweep_measures_each_cell_once(
    nats: KillableNats,
    fault_bus: Bus,
    tmp_path: Path,
    trained: conv.TrainedModel,
    digits: Any,
    converted: list[Converted],
) -> None:
    dataset, model = _name("digits"), _name("cnn")
    await conv.publish_dataset(fault_bus, tmp_path, dataset, digits)
    version = await conv.publish_model_version(
        fault_bus, trained.weights, model, format="safetensors", architecture=trained.arch,
        input_shape=[trained.channels, *trained.image_size], num_classes=trained.num_classes,
        dataset=dataset, hyperparameters=trained.hyperparameters,
    )  # fmt: skip
    await publish_conversion(
        fault_bus, version, converted, job_id=_name("conv"), dataset=dataset,
        input_shape=[trained.channels, *trained.image_size],
        normalization=trained.hyperparameters["normalization"], stamp=conv.stamp("converter"),
    )  # fmt: skip
    request = BenchmarkRequested(
        **conv.stamp().envelope("request"), job_id=_name("bench"), model_name=model, version=1,
        engines=["onnxruntime-cpu"], batch_sizes=[1, 8], concurrency=[1, 2], time_cap_s=0.3,
        min_requests=5, warmup=1,
    )  # fmt: skip
    bench = Service(
        "cvops.benchmarker", nats.settings(tmp_path / "benchmarker"),
        tmp_path / "benchmarker.log", dict(conv.TEST_ENV),
    )  # fmt: skip
    t0 = time.monotonic()
    with services(bench):
        bench.start()
        async with conv.watch_job(fault_bus, request.job_id) as job:
            await fault_bus.publish(request)
            await job.wait(lambda j: len(j.of(BenchmarkRowMeasured)) >= 2, timeout=120)
            bench.kill9()
            killed_at = time.monotonic() - t0
            before = len(job.of(BenchmarkRowMeasured))
            assert not job.of(BenchmarkCompleted)
            bench.start()
            await job.wait(lambda j: bool(j.of(BenchmarkCompleted) or j.of(BenchmarkFailed)), 180)
            await asyncio.sleep(1.5)
        figures = await _finish(fault_bus, bench, benchmarker_projection, tmp_path)
    assert not job.of(BenchmarkFailed), job.of(BenchmarkFailed)
    (done,) = job.of(BenchmarkCompleted)
    cells = Counter(e.row.key for e in job.of(BenchmarkRowMeasured))
    assert set(cells.values()) == {1} and len(cells) == done.rows == 2 * 2 * 2, cells
    started = job.of(BenchmarkStarted)
    assert started[-1].rows_done >= before  # resumed after its rows, not from zero
    print(
        f"\nFAULT benchmarker kill -9 mid-sweep at {killed_at:.1f} s after {before}/8 rows; "
        f"each cell once, 1 completed, resumed at row {started[-1].rows_done}; {figures}; "
        f"total {time.monotonic() - t0:.1f} s"
    )
