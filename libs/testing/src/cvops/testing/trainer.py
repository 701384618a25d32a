"""Helpers for tests of the trainer (and cross-service scenarios): a tiny canonical data set
announced as validated, a request that trains in seconds, a collector of one job's events."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from nats.js.api import DeliverPolicy

from cvops.contracts import Event, Stamp, decode
from cvops.contracts.registry import DatasetValidated, ImageStats, SplitCounts
from cvops.contracts.training import Budget, ParamSpec, TrainingRequested
from cvops.core import ArtifactStore, Bus
from cvops.vision.data import save_npz, synthetic_arrays

TEST_ENV = {
    "CVOPS_TRAINER_ACK_WAIT_S": "3",
    "CVOPS_TRAINER_JOB_SLOTS": "2",
    "CVOPS_TORCH_THREADS": "1",
    "CVOPS_LOG_LEVEL": "info",
}


def stamp(actor: str = "alice") -> Stamp:
    return Stamp(now=datetime.now(UTC), actor=actor, correlation_id=f"req-{uuid.uuid4().hex[:8]}")


async def publish_dataset(bus: Bus, tmp_path: Path, name: str) -> DatasetValidated:
    """A learnable 4-class 8x8 grayscale set, stored and announced as validated."""
    arrays = synthetic_arrays(n=160, classes=4, hw=8, channels=1, seed=0)
    path = save_npz(tmp_path / f"{name}.npz", arrays)
    ref = await ArtifactStore(bus).put_file(path, media_type="application/x-npz")
    splits = {k: int(np.asarray(arrays[f"{k}_idx"]).size) for k in ("train", "val", "test")}
    event = DatasetValidated(
        **stamp("registry").envelope("validated"),
        dataset_name=name,
        version=1,
        upload_id=f"up-{name}",
        source=ref,
        canonical=ref,
        classes=[str(c) for c in arrays["classes"]],
        class_counts=[40, 40, 40, 40],
        num_images=160,
        images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=1),
        splits=SplitCounts(calibration=int(arrays["calib_idx"].size), **splits),
    )
    await bus.publish(event)
    return event


def tiny_request(dataset: str, **overrides: Any) -> TrainingRequested:
    """A search that takes seconds: 1 epoch of 3 batches, narrow widths, depth 1."""
    fields: dict[str, Any] = {
        "job_id": f"job-{uuid.uuid4().hex[:8]}",
        "dataset": dataset,
        "arch": "simple-cnn",
        "budget": Budget(population=4, generations=2),
        "epochs": 1,
        "hyperparameters": {"depth": 1, "batch_size": 32, "augment": 0.0},
        "search_space": {
            "width": ParamSpec(kind="float", low=0.25, high=0.5),
            "lr": ParamSpec(kind="log_float", low=0.01, high=0.2),
        },
        "max_batches_per_epoch": 3,
        "seed": 1,
        "model_name": f"{dataset}-cnn",
    }
    fields.update(overrides)
    return TrainingRequested(**stamp().envelope("request"), **fields)


class JobEvents:
    """Every event of one job (job, trial and registry events with its correlation id)."""

    def __init__(self, correlation_id: str, job_id: str) -> None:
        self.correlation_id = correlation_id
        self.job_id = job_id
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def add(self, e: Event) -> None:
        if e.correlation_id == self.correlation_id or getattr(e, "job_id", None) == self.job_id:
            self.events.append(e)
            self._changed.set()

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait(self, done: Callable[[JobEvents], bool], timeout: float) -> None:
        async def _until() -> None:
            while not done(self):
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(_until(), timeout)
        except TimeoutError:
            kinds = [e.tag() for e in self.events]
            raise AssertionError(f"timed out after {timeout}s; events: {kinds}") from None


@contextlib.asynccontextmanager
async def watch_job(bus: Bus, request: TrainingRequested) -> AsyncIterator[JobEvents]:
    """Collect the job's events from now on (an ordered consumer on the whole stream)."""
    seen = JobEvents(request.correlation_id, request.job_id)

    async def on_msg(msg: Any) -> None:
        e = decode(msg.data)
        if isinstance(e, Event):
            seen.add(e)

    sub = await bus.js.subscribe(
        "cvops.evt.>", cb=on_msg, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    try:
        yield seen
    finally:
        await sub.unsubscribe()
