"""Helpers for tests of the converter (and cross-service scenarios): a zoo model trained for
seconds, a canonical data set and a model version announced the way the registry would, and a
collector of one job's events."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from nats.js.api import DeliverPolicy

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp, TensorSpec, decode
from cvops.contracts.registry import (
    DatasetValidated,
    ImageStats,
    ModelFormat,
    ModelVersionAdded,
    SplitCounts,
)
from cvops.core import ArtifactStore, Bus

TEST_ENV = {
    "CVOPS_CONVERTER_ACK_WAIT_S": "3",
    "CVOPS_BENCHMARKER_ACK_WAIT_S": "3",
    "CVOPS_TORCH_THREADS": "1",
    "CVOPS_LOG_LEVEL": "info",
}


def stamp(actor: str = "alice") -> Stamp:
    return Stamp(now=datetime.now(UTC), actor=actor, correlation_id=f"req-{uuid.uuid4().hex[:8]}")


@dataclass(frozen=True)
class TrainedModel:
    """A zoo model trained briefly: its safetensors file and the lineage the trainer records."""

    weights: Path
    arch: str
    num_classes: int
    channels: int
    image_size: list[int]
    hyperparameters: dict[str, Any]


@functools.cache
def _digits() -> dict[str, np.ndarray]:
    from cvops.vision.bundled import digits_npz

    return digits_npz()


def digits_arrays() -> dict[str, np.ndarray]:
    """The bundled digits set (1 channel, 16x16, 10 classes) as canonical arrays (a copy)."""
    return {k: v.copy() for k, v in _digits().items()}


@functools.cache
def trained_digits_model() -> TrainedModel:
    """simple-cnn trained on digits, once per process (the file lies in a temp dir removed at
    exit): the converter's and the benchmarker's tests share it when they run together."""
    directory = Path(tempfile.mkdtemp(prefix="cvops-digits-model-"))
    atexit.register(shutil.rmtree, directory, True)
    return train_tiny_model(directory, digits_arrays())


def train_tiny_model(directory: Path, arrays: dict[str, np.ndarray], seed: int = 0) -> TrainedModel:
    """simple-cnn at width 0.25 trained for two epochs (seconds on one core)."""
    from cvops.vision.data import CanonicalDataset
    from cvops.vision.train import TrainConfig, train
    from cvops.vision.zoo import save_weights

    ds = CanonicalDataset.from_arrays(arrays)
    config = TrainConfig(
        arch="simple-cnn", epochs=2, batch_size=64, optimizer="adamw", lr=0.01,
        width=0.25, depth=1, seed=seed,
    )  # fmt: skip
    result = train(config, ds)
    directory.mkdir(parents=True, exist_ok=True)
    path = save_weights(
        result.model, directory / "simple-cnn.safetensors", normalization=result.normalization
    )
    h, w = ds.image_size
    return TrainedModel(
        weights=path,
        arch="simple-cnn",
        num_classes=ds.num_classes,
        channels=ds.channels,
        image_size=[h, w],
        hyperparameters={
            "arch": "simple-cnn",
            "width": 0.25,
            "depth": 1,
            "dropout": 0.0,
            "image_size": [h, w],
            "channels": ds.channels,
            "normalization": result.normalization.to_dict(),
            "class_names": list(ds.classes),
            "dataset_version": 1,
            "val_accuracy": float(result.best_val_acc),
        },
    )


async def publish_dataset(
    bus: Bus, directory: Path, name: str, arrays: dict[str, np.ndarray], version: int = 1
) -> DatasetValidated:
    """Store canonical arrays as an npz and announce them as a validated data set."""
    from cvops.vision.data import save_npz

    directory.mkdir(parents=True, exist_ok=True)
    path = save_npz(directory / f"{name}.npz", arrays)
    ref = await ArtifactStore(bus).put_file(path, media_type="application/x-npz")
    x = np.asarray(arrays["x"])
    y = np.asarray(arrays["y"])
    classes = [str(c) for c in arrays["classes"]]
    counts = {k: int(np.asarray(arrays[f"{k}_idx"]).size) for k in ("train", "val", "test")}
    event = DatasetValidated(
        **stamp("registry").envelope(f"validated/{name}/{version}"),
        dataset_name=name,
        version=version,
        upload_id=f"up-{name}-{version}",
        source=ref,
        canonical=ref,
        classes=classes,
        class_counts=[int((y == i).sum()) for i in range(len(classes))],
        num_images=len(x),
        images=ImageStats(
            min_hw=list(x.shape[1:3]),
            max_hw=list(x.shape[1:3]),
            modal_hw=list(x.shape[1:3]),
            channels=int(x.shape[3]),
        ),
        splits=SplitCounts(calibration=int(np.asarray(arrays["calib_idx"]).size), **counts),
    )
    await bus.publish(event)
    return event


async def publish_model_version(
    bus: Bus,
    path: Path,
    name: str,
    *,
    format: ModelFormat,
    input_shape: list[int],
    num_classes: int,
    architecture: str | None = None,
    dataset: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
    version: int = 1,
) -> ModelVersionAdded:
    """Store a model file and announce it as a registered version (what the registry does)."""
    media = {"onnx": "application/onnx", "safetensors": "application/vnd.safetensors"}
    ref: ArtifactRef = await ArtifactStore(bus).put_file(
        path, media_type=media.get(format, "application/zip"), filename=path.name
    )
    event = ModelVersionAdded(
        **stamp("registry").envelope(f"version/{name}/{version}"),
        model_name=name,
        version=version,
        upload_id=f"up-{name}-{version}",
        artifact=ref,
        format=format,
        inputs=[TensorSpec(name="input", shape=[-1, *input_shape], dtype="float32")],
        outputs=[TensorSpec(name="logits", shape=[-1, num_classes], dtype="float32")],
        parameter_count=0,
        architecture=architecture,
        num_classes=num_classes,
        lineage=Lineage(dataset=dataset, hyperparameters=dict(hyperparameters or {})),
    )
    await bus.publish(event)
    return event


class JobEvents:
    """Every event carrying one job id, in stream order."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def add(self, e: Event) -> None:
        if getattr(e, "job_id", None) == self.job_id:
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
async def watch_job(bus: Bus, job_id: str) -> AsyncIterator[JobEvents]:
    """Collect the job's events from now on (an ordered consumer on the whole stream)."""
    seen = JobEvents(job_id)

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
