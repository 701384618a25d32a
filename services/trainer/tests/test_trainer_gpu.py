"""The trainer on a GPU host (skipped where torch sees no CUDA device): trials train on the GPU
while holding its lease in KV ``cvops-leases``; two trial slots on one GPU take turns (a
trial waits for the lease, never trains beside another); every lease is released when the
job ends."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import torch

from cvops.contracts.training import (
    Budget,
    TrainingCompleted,
    TrainingFailed,
    TrialCompleted,
    TrialStarted,
)
from cvops.core import Bus, Settings, leases
from cvops.testing.core import start_service
from cvops.testing.trainer import TEST_ENV, publish_dataset, tiny_request, watch_job

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


async def test_gpu_trials_take_turns_on_the_gpu_lease_and_release_it(
    bus: Bus, settings: Settings, tmp_path: Path
) -> None:
    await publish_dataset(bus, tmp_path, "digits-gpu")
    # one generation, accuracy only: three trials for two trial slots
    request = tiny_request(
        "digits-gpu",
        device="cuda",
        budget=Budget(population=3, generations=1),
        objectives=["accuracy"],
        max_batches_per_epoch=20,
    )
    env = {
        **TEST_ENV,
        "CVOPS_TRAINER_TRIAL_SLOTS": "2",
        "CVOPS_TORCH_THREADS": "4",
    }
    proc = start_service("cvops.trainer", settings, tmp_path / "trainer.log", **env)
    seen: list[list[leases.Lease]] = []

    async def sample_leases() -> None:
        while True:
            seen.append(leases.live(await leases.all_leases(bus), time.time()))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample_leases())
    try:
        async with watch_job(bus, request) as job:
            await bus.publish(request)
            await job.wait(lambda j: bool(j.of(TrainingCompleted) or j.of(TrainingFailed)), 240)
    finally:
        sampler.cancel()
        proc.terminate()
        proc.wait(timeout=30)
    assert not job.of(TrainingFailed), job.of(TrainingFailed)
    started = job.of(TrialStarted)
    assert len(job.of(TrialCompleted)) == 3
    assert {s.device for s in started} == {"cuda:0"}, [s.device for s in started]
    held = [lease for sample in seen for lease in sample]
    assert held, "no GPU lease was seen while the trials trained"
    assert {lease.resource for lease in held} == {leases.gpu_resource(started[0].host, 0)}
    assert {lease.user for lease in held} == {request.actor}
    assert max(len(sample) for sample in seen) == 1  # one trial on the GPU at a time
    assert leases.live(await leases.all_leases(bus), time.time()) == []  # released at the end
