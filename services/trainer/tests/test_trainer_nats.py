"""The trainer on a real nats-server: a tiny search survives kill -9 and finishes once with
exactly its budget of trials and registers models with lineage; cancel; refusals."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from cvops.contracts.registry import ModelUploadReceived
from cvops.contracts.training import (
    Budget,
    GenerationCompleted,
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingCompleted,
    TrainingFailed,
    TrialCompleted,
    TrialFailed,
    TrialProgressed,
    TrialRequested,
    TrialStarted,
)
from cvops.core import ArtifactStore, Bus, Settings, load_settings
from cvops.testing.core import start_service
from cvops.testing.trainer import TEST_ENV, publish_dataset, stamp, tiny_request, watch_job
from cvops.trainer import app


@pytest.fixture
def dataset_name() -> str:
    return f"digits-{uuid.uuid4().hex[:6]}"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.mark.faults  # a kill -9 scenario: ./justw faults (tests/faults/README.md)
async def test_killed_trainer_resumes_and_finishes_once_with_the_budgeted_trials(
    bus: Bus, settings: Settings, tmp_path: Path, dataset_name: str
) -> None:
    await publish_dataset(bus, tmp_path, dataset_name)
    request = tiny_request(dataset_name)
    log = tmp_path / "trainer.log"
    first = start_service("cvops.trainer", settings, log, **TEST_ENV)
    second: subprocess.Popen[bytes] | None = None
    try:
        async with watch_job(bus, request) as job:
            await bus.publish(request)
            # kill -9 mid-generation: one trial of generation 0 done, others not
            await job.wait(lambda j: len(j.of(TrialCompleted)) >= 1, timeout=90)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            assert not job.of(GenerationCompleted)
            second = start_service("cvops.trainer", settings, log, **TEST_ENV)
            await job.wait(lambda j: bool(j.of(TrainingCompleted) or j.of(TrainingFailed)), 150)
            await asyncio.sleep(1.0)  # anything published twice would arrive by now
    finally:
        first.kill() if first.poll() is None else None
        if second is not None:
            _stop(second)
    assert not job.of(TrainingFailed), job.of(TrainingFailed)
    [done] = job.of(TrainingCompleted)
    requested = Counter(e.trial_id for e in job.of(TrialRequested))
    assert len(requested) == 8 and set(requested.values()) == {1}, _log_tail(log)
    finished = Counter(e.trial_id for e in job.of(TrialCompleted) + job.of(TrialFailed))
    assert set(finished) == set(requested) and set(finished.values()) == {1}
    gens = job.of(GenerationCompleted)
    assert sorted(g.generation for g in gens) == [0, 1]
    assert done.trials_completed + done.trials_failed + done.trials_pruned == 8
    assert done.front

    store = ArtifactStore(bus)
    population = msgspec.json.decode(await store.get_bytes(gens[0].population.sha256))
    assert len(population["individuals"]) == 4 and population["generation"] == 0

    uploads = job.of(ModelUploadReceived)
    assert uploads and len(uploads) == len(done.registered_uploads)
    u = uploads[0]
    assert u.model_name == f"{dataset_name}-cnn" and u.input_shape == [1, 8, 8]
    assert u.lineage.job_id == request.job_id and u.lineage.trial_id in requested
    assert set(u.lineage.hyperparameters["normalization"]) == {"mean", "std"}
    assert u.lineage.hyperparameters["class_names"] == ["class_0", "class_1", "class_2", "class_3"]
    assert 0.0 <= u.lineage.metrics["accuracy"] <= 1.0 and u.lineage.metrics["latency_ms"] > 0
    onnx = await store.get_bytes(u.artifact.sha256)
    assert len(onnx) == u.artifact.size and u.artifact.size == u.lineage.metrics["size_bytes"]


async def test_cancel_stops_the_job_and_its_running_trial_within_seconds(
    bus: Bus,
    settings: Settings,
    tmp_path: Path,
    dataset_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CVOPS_TORCH_THREADS", "1")  # in-process training: one thread
    await publish_dataset(bus, tmp_path, dataset_name)
    env = {k.removeprefix("CVOPS_").lower(): v for k, v in TEST_ENV.items() if "TORCH" not in k}
    local = load_settings({}, **{**msgspec.structs.asdict(settings), **env})
    stop = asyncio.Event()
    service = asyncio.create_task(app.main(bus, local, stop))
    try:
        refused = tiny_request("no-such-data")
        async with watch_job(bus, refused) as job:
            await bus.publish(refused)
            await job.wait(lambda j: bool(j.of(TrainingFailed)), timeout=60)
        assert "unknown data set 'no-such-data'" in job.of(TrainingFailed)[0].reason

        # long trials: many epochs of a few batches, so the cancel lands mid-training
        request = tiny_request(dataset_name, epochs=200, budget=Budget(population=2))
        async with watch_job(bus, request) as job:
            await bus.publish(request)
            await job.wait(lambda j: bool(j.of(TrialProgressed)), timeout=60)
            [running] = {e.trial_id for e in job.of(TrialStarted)}
            cancel = TrainingCancelRequested(**stamp().envelope("cancel"), job_id=request.job_id)
            await bus.publish(cancel)
            t0 = asyncio.get_running_loop().time()
            await job.wait(lambda j: bool(j.of(TrainingCancelled)), timeout=10)
            await job.wait(
                lambda j: any(e.trial_id == running for e in j.of(TrialFailed)), timeout=10
            )
            took = asyncio.get_running_loop().time() - t0
            await job.wait(lambda j: len(j.of(TrialFailed)) == 2, timeout=20)
        assert took < 10
        assert all(e.cancelled for e in job.of(TrialFailed))
        assert not job.of(TrialCompleted) and not job.of(ModelUploadReceived)
        assert max(e.epoch for e in job.of(TrialProgressed)) < 200
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(service, 30)
