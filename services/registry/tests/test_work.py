"""The validator in-process on real NATS: redeliveries, crashes between publishes, races."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from cvops.contracts import Stamp
from cvops.contracts.registry import (
    DatasetRejected,
    DatasetUploadReceived,
    ModelRegistered,
    ModelRejected,
    ModelVersionAdded,
)
from cvops.core import ArtifactStore, Bus, ProjectionRunner, Settings
from cvops.registry import handlers
from cvops.registry import projection as view
from cvops.registry.inspect_model import ModelHints, inspect_model
from cvops.registry.projection import SUBJECTS, NameState, projection
from cvops.registry.work import UploadValidator
from cvops.testing import registry as samples


class Instance:
    """One registry instance: its own projection file and validator, sharing the bus."""

    def __init__(self, bus: Bus, settings: Settings, db: Path) -> None:
        self.runner = ProjectionRunner(bus, projection, db, subjects=SUBJECTS)
        self.validator = UploadValidator(bus, ArtifactStore(bus), self.runner, settings)
        self.task = asyncio.create_task(self.runner.run())

    async def close(self) -> None:
        self.validator.close()
        self.runner.stop()
        await self.task
        self.runner.engine.dispose()


@pytest.fixture
async def instances(bus: Bus, settings: Settings, tmp_path: Path) -> AsyncIterator[list[Instance]]:
    made = [Instance(bus, settings, tmp_path / f"registry-{i}.sqlite") for i in range(2)]
    try:
        yield made
    finally:
        for inst in made:
            await inst.close()


def _tag(tmp_path: Path) -> str:
    return tmp_path.name[-12:].replace("_", "-")


async def _events_of(bus: Bus, name: str) -> list[object]:
    return [
        e
        for e in await samples.registry_events(bus)
        if getattr(e, "model_name", None) == name or getattr(e, "dataset_name", None) == name
    ]


async def test_a_redelivered_upload_with_a_verdict_publishes_nothing(
    bus: Bus, instances: list[Instance], tmp_path: Path
) -> None:
    name = f"redeliver-{_tag(tmp_path)}"
    upload = await samples.announce_model_upload(bus, samples.onnx_model(), name)
    await instances[0].validator.validate(upload)
    last = await bus.last_seq()
    await instances[0].validator.validate(upload)  # the same message again
    await instances[1].validator.validate(upload)  # or another instance after a crash
    assert await bus.last_seq() == last
    versions = [e for e in await _events_of(bus, name) if isinstance(e, ModelVersionAdded)]
    assert [v.version for v in versions] == [1]


async def test_a_crash_between_registration_and_version_is_finished_once(
    bus: Bus, instances: list[Instance], tmp_path: Path
) -> None:
    name = f"halfway-{_tag(tmp_path)}"
    data = samples.onnx_model(seed=3)
    upload = await samples.announce_model_upload(bus, data, name)
    # given: a previous attempt published the registration, then died
    blob = tmp_path / "m.onnx"
    blob.write_bytes(data)
    facts = inspect_model(blob, ModelHints(), max_expanded_bytes=1 << 20)
    stamp = Stamp(now=datetime.now(UTC), actor="registry", correlation_id="x").caused_by(
        upload, actor="registry"
    )
    registered = handlers.decide_model(NameState(False, 0), upload, facts, stamp)[0]
    await bus.publish(registered, expected_last_subject_seq=0)
    # when: the upload is redelivered
    await instances[1].validator.validate(upload)
    # then: one registration, one version 1
    events = await _events_of(bus, name)
    assert Counter(type(e).__name__ for e in events) == {
        "ModelUploadReceived": 1,
        "ModelRegistered": 1,
        "ModelVersionAdded": 1,
    }


async def test_two_instances_racing_on_one_name_number_versions_without_gaps(
    bus: Bus, instances: list[Instance], tmp_path: Path
) -> None:
    name = f"race-{_tag(tmp_path)}"
    uploads = [
        await samples.announce_model_upload(bus, samples.onnx_model(seed=10 + i), name)
        for i in range(4)
    ]
    await asyncio.gather(*(instances[i % 2].validator.validate(u) for i, u in enumerate(uploads)))
    events = await _events_of(bus, name)
    assert sorted(e.version for e in events if isinstance(e, ModelVersionAdded)) == [1, 2, 3, 4]
    assert sum(isinstance(e, ModelRegistered) for e in events) == 1


async def test_refused_bytes_shared_with_an_accepted_version_are_kept(
    bus: Bus, instances: list[Instance], tmp_path: Path
) -> None:
    name = f"shared-{_tag(tmp_path)}"
    weights = samples.safetensors_weights()
    accepted = await samples.announce_model_upload(bus, weights, name, architecture="mlp")
    refused = await samples.announce_model_upload(bus, weights, name)  # no architecture
    for u in (accepted, refused):
        await instances[0].validator.validate(u)
    assert accepted.artifact.sha256 == refused.artifact.sha256
    assert await ArtifactStore(bus).exists(accepted.artifact.sha256)
    assert await instances[0].runner.catch_up(10)
    with instances[0].runner.session() as s:
        assert view.upload(s, refused.upload_id).status == "rejected"  # type: ignore[union-attr]


async def test_an_upload_whose_bytes_are_gone_is_rejected_with_a_reason(
    bus: Bus, instances: list[Instance], tmp_path: Path
) -> None:
    name = f"gone-{_tag(tmp_path)}"
    upload = await samples.announce_model_upload(bus, samples.onnx_model(seed=99), name)
    await ArtifactStore(bus).delete(upload.artifact.sha256)
    await instances[0].validator.validate(upload)
    [rejected] = [e for e in await _events_of(bus, name) if isinstance(e, ModelRejected)]
    assert "not in the artifact store" in rejected.reason


async def test_bundled_sets_are_published_once_even_by_two_instances(
    bus: Bus, instances: list[Instance]
) -> None:
    first, second = await asyncio.gather(
        instances[0].validator.ensure_bundled(), instances[1].validator.ensure_bundled()
    )
    received = [
        e
        for e in await samples.registry_events(bus)
        if isinstance(e, DatasetUploadReceived) and e.bundled
    ]
    assert sorted(e.dataset_name for e in received) == ["digits", "shapes"]
    assert not set(first) & set(second)


async def test_an_upload_logged_with_an_unstorable_number_is_rejected_not_stuck(
    bus: Bus, instances: list[Instance], tmp_path: Path
) -> None:
    """An upload that reached the log before numbers were checked (a seed of 2**63) gets a
    rejection naming the field, instead of a verdict that cannot be published."""
    name = f"seed-{_tag(tmp_path)}"
    logged = await samples.announce_dataset_upload(bus, b"not read", name)
    upload = msgspec.structs.replace(logged, seed=2**63)
    await instances[0].validator.validate(upload)
    [rejected] = [e for e in await _events_of(bus, name) if isinstance(e, DatasetRejected)]
    assert "seed" in rejected.reason and str(2**63) in rejected.reason
