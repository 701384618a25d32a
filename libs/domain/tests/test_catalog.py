"""Catalog rules on plain structs: names, versions, stages and uploads from registry events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cvops.contracts import ArtifactRef, Event, Stamp, TensorSpec
from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ImageStats,
    ModelRegistered,
    ModelRejected,
    ModelStageChanged,
    ModelUploadReceived,
    ModelVersionAdded,
    SplitCounts,
)
from cvops.domain import catalog as rules
from cvops.domain.errors import Invalid, NotFound

T0 = datetime(2026, 3, 1, tzinfo=UTC)
BLOB = ArtifactRef(sha256="11" * 32, size=10)
SPEC = [TensorSpec(name="x", shape=[-1, 3], dtype="float32")]


def stamp(i: int, actor: str = "alice") -> Stamp:
    return Stamp(now=T0 + timedelta(seconds=i), actor=actor, correlation_id=f"c{i}")


def added(version: int, i: int = 2, upload_id: str = "u1") -> ModelVersionAdded:
    return ModelVersionAdded(
        **stamp(i, "registry").envelope(f"v{version}"),
        model_name="m",
        version=version,
        upload_id=upload_id,
        artifact=BLOB,
        format="onnx",
        inputs=SPEC,
        outputs=SPEC,
        parameter_count=9,
    )


def validated(version: int = 1) -> DatasetValidated:
    return DatasetValidated(
        **stamp(8, "registry").envelope("d"),
        dataset_name="pets",
        version=version,
        upload_id="d1",
        source=BLOB,
        canonical=BLOB,
        classes=["a", "b"],
        class_counts=[3, 3],
        num_images=6,
        images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 6], channels=3),
        splits=SplitCounts(train=4, val=1, test=1, calibration=4),
    )


def fold(evolve, events):  # type: ignore[no-untyped-def]
    state = None
    for event in events:
        state = evolve(state, event)
    return state


def test_a_model_version_is_what_it_said_and_only_its_stage_moves() -> None:
    staged = ModelStageChanged(
        **stamp(5).envelope("s"), model_name="m", version=1, stage="production"
    )
    state = fold(rules.evolve_model_version, [added(1), staged])
    assert state is not None
    assert (state.format, state.stage, state.stage_changed_at) == (
        "onnx",
        "production",
        staged.occurred_at,
    )
    assert (state.upload_id, state.created_by, state.created_at) == (
        "u1",
        "registry",
        added(1).occurred_at,
    )
    again = rules.evolve_model_version(state, added(1, i=9))
    assert again is state  # the first version event wins


def test_a_stage_change_without_a_version_is_nothing() -> None:
    staged = ModelStageChanged(**stamp(5).envelope("s"), model_name="m", version=1, stage="staging")
    assert rules.evolve_model_version(None, staged) is None


def test_a_data_set_version_keeps_its_modal_size_and_calibration_split() -> None:
    state = fold(rules.evolve_dataset_version, [validated()])
    assert state is not None
    assert (state.channels, state.image_size, state.calibration) == (3, [8, 6], 4)


def test_names_count_their_versions() -> None:
    registered = ModelRegistered(**stamp(1).envelope("r"), model_name="m", owner="alice")
    state = fold(rules.evolve_name, [registered, added(2), added(1)])
    assert state is not None and (state.owner, state.latest_version) == ("alice", 2)
    unregistered = fold(rules.evolve_name, [added(1)])
    assert unregistered is not None and unregistered.owner == "registry"
    pets = fold(
        rules.evolve_name,
        [
            DatasetRegistered(**stamp(7).envelope("r"), dataset_name="pets", owner="bob"),
            validated(),
        ],
    )
    assert pets is not None and (pets.name, pets.owner, pets.latest_version) == ("pets", "bob", 1)


def test_uploads_get_a_verdict() -> None:
    received = ModelUploadReceived(
        **stamp(0).envelope("u"), upload_id="u1", model_name="m", artifact=BLOB
    )
    upload = fold(rules.evolve_upload, [received])
    assert upload is not None and (upload.kind, upload.status, upload.actor) == (
        "model",
        "pending",
        "alice",
    )
    ok = rules.evolve_upload(upload, added(1))
    assert ok is not None and (ok.status, ok.version) == ("validated", 1)
    rejected = rules.evolve_upload(
        upload,
        ModelRejected(**stamp(4).envelope("x"), upload_id="u1", model_name="m", reason="pickle"),
    )
    assert rejected is not None and (rejected.status, rejected.reason) == ("rejected", "pickle")
    assert rules.evolve_upload(None, added(1)) is None
    bundled = DatasetUploadReceived(
        **stamp(6).envelope("d"), upload_id="d1", dataset_name="pets", artifact=BLOB, bundled=True
    )
    data = fold(rules.evolve_upload, [bundled])
    assert data is not None and (data.kind, data.name, data.bundled) == ("dataset", "pets", True)


def test_applying_an_event_twice_changes_nothing() -> None:
    log: list[Event] = [
        ModelUploadReceived(
            **stamp(0).envelope("u"), upload_id="u1", model_name="m", artifact=BLOB
        ),
        ModelRegistered(**stamp(1).envelope("r"), model_name="m", owner="alice"),
        added(1),
        ModelStageChanged(**stamp(5).envelope("s"), model_name="m", version=1, stage="staging"),
        DatasetUploadReceived(
            **stamp(6).envelope("d"), upload_id="d1", dataset_name="pets", artifact=BLOB
        ),
        validated(),
        DatasetRejected(**stamp(9).envelope("x"), upload_id="d1", dataset_name="pets", reason="b"),
    ]
    for evolve in (
        rules.evolve_model_version,
        rules.evolve_dataset_version,
        rules.evolve_name,
        rules.evolve_upload,
    ):
        state = None
        for event in log:
            once = evolve(state, event)
            assert evolve(once, event) == once
            state = once


def test_stage_changes() -> None:
    version = fold(rules.evolve_model_version, [added(1)])
    assert rules.change_stage(version, "none", stamp=stamp(3)) == []
    (moved,) = rules.change_stage(version, "production", stamp=stamp(3))
    assert isinstance(moved, ModelStageChanged) and moved.previous == "none"
    with pytest.raises(Invalid):
        rules.change_stage(version, "live", stamp=stamp(3))
    with pytest.raises(NotFound):
        rules.change_stage(None, "staging", stamp=stamp(3))


def test_data_set_refusals_and_form_fields() -> None:
    assert "no validated version 3" in rules.dataset_refusal("pets", 3, None)
    assert "failed validation: bomb" in rules.dataset_refusal("pets", None, "bomb")
    assert "unknown data set" in rules.dataset_refusal("pets", None, None)
    with pytest.raises(Invalid):
        rules.dataset_named("pets", None, None)
    rules.dataset_named(None, None, None)
    assert rules.required_name({"name": " net "}) == "net"
    with pytest.raises(Invalid):
        rules.required_name({})
    assert rules.optional_int({"n": "3"}, "n", minimum=1) == 3
    with pytest.raises(Invalid):
        rules.optional_int({"n": "0"}, "n", minimum=1)
    assert rules.input_shape("3x32x32") == [3, 32, 32]
    with pytest.raises(Invalid):
        rules.input_shape("3,0")
    with pytest.raises(Invalid):
        rules.optional_text({"d": "x" * 5}, "d", 4)
