"""The registry projection: rows from events only; the same events twice give the same rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

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
from cvops.core import ProjectionRunner, dump_rows, load_settings
from cvops.registry import projection as view
from cvops.registry.projection import db_path, projection

T0 = datetime(2026, 3, 1, tzinfo=UTC)
BLOB = ArtifactRef(sha256="11" * 32, size=10)
OTHER = ArtifactRef(sha256="22" * 32, size=20)


def _stamp(i: int) -> Stamp:
    return Stamp(now=T0 + timedelta(seconds=i), actor="alice", correlation_id=f"c{i}")


def _history() -> list[Event]:
    spec = [TensorSpec(name="x", shape=[-1, 3], dtype="float32")]
    version = dict(format="onnx", inputs=spec, outputs=spec, parameter_count=9, artifact=BLOB)
    return [
        ModelUploadReceived(
            **_stamp(0).envelope("a"), upload_id="u1", model_name="m", artifact=BLOB
        ),
        ModelRegistered(**_stamp(1).envelope("a"), model_name="m", owner="alice"),
        ModelVersionAdded(
            **_stamp(2).envelope("a"), model_name="m", version=1, upload_id="u1", **version
        ),
        ModelUploadReceived(
            **_stamp(3).envelope("a"), upload_id="u2", model_name="m", artifact=OTHER
        ),
        ModelRejected(**_stamp(4).envelope("a"), upload_id="u2", model_name="m", reason="pickle"),
        ModelStageChanged(**_stamp(5).envelope("a"), model_name="m", version=1, stage="production"),
        DatasetUploadReceived(
            **_stamp(6).envelope("a"), upload_id="d1", dataset_name="pets", artifact=OTHER
        ),
        DatasetRegistered(**_stamp(7).envelope("a"), dataset_name="pets", owner="alice"),
        DatasetValidated(
            **_stamp(8).envelope("a"),
            dataset_name="pets",
            version=1,
            upload_id="d1",
            source=OTHER,
            canonical=BLOB,
            classes=["a", "b"],
            class_counts=[3, 3],
            num_images=6,
            images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=3),
            splits=SplitCounts(train=4, val=1, test=1, calibration=4),
        ),
        DatasetUploadReceived(
            **_stamp(9).envelope("a"), upload_id="d2", dataset_name="pets", artifact=OTHER
        ),
        DatasetRejected(
            **_stamp(10).envelope("a"), upload_id="d2", dataset_name="pets", reason="bomb"
        ),
    ]


def _apply_all(runner: ProjectionRunner, events: list[Event]) -> None:
    with Session(runner.engine) as s, s.begin():
        for seq, e in enumerate(events, start=1):
            projection.apply(s, e, seq)


def test_applying_every_event_twice_leaves_identical_rows(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, projection, tmp_path / "r.sqlite")
    _apply_all(runner, _history())
    once = dump_rows(runner.engine, view.metadata)
    _apply_all(runner, _history())
    assert dump_rows(runner.engine, view.metadata) == once
    fresh = ProjectionRunner(None, projection, tmp_path / "fresh.sqlite")
    _apply_all(fresh, _history())
    assert dump_rows(fresh.engine, view.metadata) == once  # a rebuild gives the same rows


def test_rows_tell_versions_stages_and_verdicts(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, projection, tmp_path / "r.sqlite")
    _apply_all(runner, _history())
    rows = dump_rows(runner.engine, view.metadata)
    [model] = rows["models"]
    assert model[:2] == ("m", "alice") and model[3] == 1
    [mv] = rows["model_versions"]
    assert mv[0:2] == ("m", 1)
    with runner.session() as s:
        stage = s.execute(view.model_versions.select()).one().stage
        assert stage == "production"
        assert view.upload(s, "u1").status == "validated"  # type: ignore[union-attr]
        assert view.upload(s, "u2").reason == "pickle"  # type: ignore[union-attr]
        assert view.upload(s, "d1").version == 1  # type: ignore[union-attr]
        assert view.upload(s, "d2").status == "rejected"  # type: ignore[union-attr]
        assert view.upload(s, "nope") is None
        assert view.name_state(s, "model", "m") == view.NameState(True, 1)
        assert view.name_state(s, "dataset", "pets") == view.NameState(True, 1)
        assert view.name_state(s, "model", "new") == view.NameState(False, 0)
        assert view.dataset_names(s) == {"pets"}
        # BLOB backs model version 1 and the canonical set; OTHER is the data set's source
        assert view.blob_in_use(s, BLOB.sha256, besides_upload="u2")
        assert view.blob_in_use(s, OTHER.sha256, besides_upload="d2")
        assert not view.blob_in_use(s, "33" * 32, besides_upload="x")


def test_timestamps_come_from_events_not_the_clock(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, projection, tmp_path / "r.sqlite")
    _apply_all(runner, _history())
    with runner.session() as s:
        row = s.execute(view.uploads.select().where(view.uploads.c.upload_id == "u2")).one()
    assert row.received_at == (T0 + timedelta(seconds=3)).isoformat()
    assert row.decided_at == (T0 + timedelta(seconds=4)).isoformat()


def test_db_path_lives_in_the_home_directory(tmp_path: Path) -> None:
    settings = load_settings({}, home=str(tmp_path / "h"))
    assert db_path(settings) == tmp_path / "h" / "registry.sqlite"
    assert projection.name == "registry"
