"""Pure decisions: given what the log says and an inspected upload, which events follow."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from cvops.contracts import ArtifactRef, Stamp, TensorSpec
from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ImageStats,
    ModelRegistered,
    ModelRejected,
    ModelUploadReceived,
    ModelVersionAdded,
    SplitCounts,
)
from cvops.registry import handlers
from cvops.registry.inspect_dataset import DatasetFacts
from cvops.registry.inspect_model import ModelFacts
from cvops.registry.projection import NameState

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BLOB = ArtifactRef(sha256="ab" * 32, size=206, filename="m.onnx")
FACTS = ModelFacts(
    format="onnx",
    inputs=[TensorSpec(name="input", shape=[-1, 4], dtype="float32")],
    outputs=[TensorSpec(name="logits", shape=[-1, 3], dtype="float32")],
    parameter_count=15,
    opset=17,
    architecture=None,
    num_classes=3,
    size=206,
)
DATA_FACTS = DatasetFacts(
    classes=["a", "b"],
    class_counts=[5, 5],
    num_images=10,
    images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=1),
    splits=SplitCounts(train=6, val=2, test=2, calibration=6),
)
NEW = NameState(registered=False, latest_version=0)


def _model_upload(upload_id: str = "u1", name: str = "resnet") -> ModelUploadReceived:
    stamp = Stamp(now=NOW, actor="alice", correlation_id=f"req-{upload_id}")
    return ModelUploadReceived(
        **stamp.envelope("upload"), upload_id=upload_id, model_name=name, artifact=BLOB
    )


def _dataset_upload(upload_id: str = "d1") -> DatasetUploadReceived:
    stamp = Stamp(now=NOW, actor="bob", correlation_id=f"req-{upload_id}")
    return DatasetUploadReceived(
        **stamp.envelope("upload"), upload_id=upload_id, dataset_name="pets", artifact=BLOB, seed=4
    )


def _stamp(cause: ModelUploadReceived | DatasetUploadReceived) -> Stamp:
    base = Stamp(now=NOW, actor="registry", correlation_id=cause.correlation_id)
    return base.caused_by(cause, actor="registry")


def test_first_version_of_a_name_registers_it_for_the_uploader() -> None:
    upload = _model_upload()
    events = handlers.decide_model(NEW, upload, FACTS, _stamp(upload))
    assert [type(e) for e in events] == [ModelRegistered, ModelVersionAdded]
    registered, added = events
    assert registered.owner == "alice"
    assert (added.version, added.upload_id, added.format) == (1, "u1", "onnx")
    assert added.parameter_count == 15 and added.opset == 17
    assert all(e.correlation_id == upload.correlation_id for e in events)
    assert all(e.causation_id == upload.event_id for e in events)


def test_next_upload_of_a_known_name_is_the_next_version() -> None:
    upload = _model_upload("u7")
    known = NameState(registered=True, latest_version=4)
    [added] = handlers.decide_model(known, upload, FACTS, _stamp(upload))
    assert isinstance(added, ModelVersionAdded) and added.version == 5


def test_a_refusal_becomes_a_rejection_on_the_upload() -> None:
    upload = _model_upload()
    [rejected] = handlers.decide_model(NEW, upload, "it is a pickle", _stamp(upload))
    assert isinstance(rejected, ModelRejected)
    assert (rejected.upload_id, rejected.reason) == ("u1", "it is a pickle")
    assert rejected.subject == "cvops.evt.registry.upload-u1.model_rejected"


def test_a_retried_decision_reuses_the_same_event_ids() -> None:
    upload = _model_upload()
    first = handlers.decide_model(NEW, upload, FACTS, _stamp(upload))
    later = Stamp(now=datetime(2027, 1, 1, tzinfo=UTC), actor="registry", correlation_id="x")
    again = handlers.decide_model(NEW, upload, FACTS, later.caused_by(upload, actor="registry"))
    assert [e.event_id for e in first] == [e.event_id for e in again]
    other_version = handlers.decide_model(
        NameState(registered=True, latest_version=1), upload, FACTS, _stamp(upload)
    )
    assert other_version[-1].event_id != first[-1].event_id  # a new number is a new fact


def test_dataset_versions_carry_facts_seed_and_canonical_artifact() -> None:
    upload = _dataset_upload()
    canonical = ArtifactRef(sha256="cd" * 32, size=999, media_type="application/x-npz")
    events = handlers.decide_dataset(NEW, upload, DATA_FACTS, canonical, _stamp(upload))
    assert [type(e) for e in events] == [DatasetRegistered, DatasetValidated]
    validated = events[1]
    assert validated.version == 1 and validated.seed == 4
    assert validated.canonical == canonical and validated.source == BLOB
    assert validated.splits.calibration == 6


def test_dataset_refusal_or_missing_canonical_is_a_rejection() -> None:
    upload = _dataset_upload()
    [r1] = handlers.decide_dataset(NEW, upload, "zip slip", None, _stamp(upload))
    [r2] = handlers.decide_dataset(NEW, upload, DATA_FACTS, None, _stamp(upload))
    assert isinstance(r1, DatasetRejected) and r1.reason == "zip slip"
    assert isinstance(r2, DatasetRejected)


def test_upload_problems_are_found_before_reading_bytes() -> None:
    assert handlers.upload_problem("ok", 10, 100) is None
    assert "empty" in (handlers.upload_problem("  ", 10, 100) or "")
    assert "longer" in (handlers.upload_problem("x" * 200, 10, 100) or "")
    assert "control" in (handlers.upload_problem("a\nb", 10, 100) or "")
    assert "limit" in (handlers.upload_problem("ok", 101, 100) or "")


def test_bundled_uploads_have_ids_that_depend_only_on_the_name() -> None:
    a = handlers.bundled_upload(
        "digits", BLOB, "d", Stamp(now=NOW, actor="registry", correlation_id="c")
    )
    later = Stamp(now=datetime(2030, 1, 1, tzinfo=UTC), actor="registry", correlation_id="c2")
    b = handlers.bundled_upload("digits", BLOB, "d", later)
    assert a.event_id == b.event_id and a.upload_id == b.upload_id == "bundled-digits"
    assert a.bundled and a.actor == "registry"
    assert handlers.bundled_upload("shapes", BLOB, "s", later).event_id != a.event_id


def test_name_subjects_match_the_aggregate_of_version_events() -> None:
    upload = _model_upload(name="my.model v2")
    events = handlers.decide_model(NEW, upload, FACTS, _stamp(upload))
    assert {e.aggregate_subjects for e in events} == {
        handlers.name_subjects("model", "my.model v2")
    }
    assert uuid.UUID(str(events[0].event_id))
