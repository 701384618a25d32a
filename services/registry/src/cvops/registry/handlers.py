"""Pure decisions of the registry: (what the log says, an upload, its inspection) -> events.

No clock, no ids, no I/O here: the ``Stamp`` brings the time and the cause, and event ids are
derived from the cause, so a retried decision re-publishes the same ids.
"""

from __future__ import annotations

from cvops.contracts import SUBJECT_PREFIX, ArtifactRef, Event, Stamp, stable_id, subject_token
from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ModelRegistered,
    ModelRejected,
    ModelUploadReceived,
    ModelVersionAdded,
)
from cvops.registry.inspect_dataset import DatasetFacts
from cvops.registry.inspect_model import ModelFacts
from cvops.registry.projection import NameState

ACTOR = "registry"
MAX_NAME_LENGTH = 128


def name_subjects(kind: str, name: str) -> str:
    """Subject wildcard of a model's or data set's aggregate (where versions are numbered)."""
    return f"{SUBJECT_PREFIX}.registry.{subject_token(f'{kind}-{name}')}.*"


def upload_problem(name: str, size: int, max_bytes: int) -> str | None:
    """A reason to refuse an upload before reading it, or None."""
    if not name.strip():
        return "the name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the name is longer than {MAX_NAME_LENGTH} characters"
    if any(ord(ch) < 32 for ch in name):
        return "the name contains control characters"
    if size > max_bytes:
        return f"the upload is {size} bytes, more than the limit of {max_bytes}"
    return None


def decide_model(
    name: NameState,
    upload: ModelUploadReceived,
    verdict: ModelFacts | str,
    stamp: Stamp,
) -> list[Event]:
    """Events for a checked model upload; ``verdict`` is the facts or the refusal reason."""
    if isinstance(verdict, str):
        return [
            ModelRejected(
                **stamp.envelope("model_rejected"),
                upload_id=upload.upload_id,
                model_name=upload.model_name,
                reason=verdict,
            )
        ]
    events: list[Event] = []
    if not name.registered:
        events.append(
            ModelRegistered(
                **stamp.envelope("model_registered"),
                model_name=upload.model_name,
                owner=upload.actor,
            )
        )
    version = name.latest_version + 1
    events.append(
        ModelVersionAdded(
            **stamp.envelope(f"model_version_added/{version}"),
            model_name=upload.model_name,
            version=version,
            upload_id=upload.upload_id,
            artifact=upload.artifact,
            format=verdict.format,
            inputs=verdict.inputs,
            outputs=verdict.outputs,
            parameter_count=verdict.parameter_count,
            opset=verdict.opset,
            architecture=verdict.architecture,
            num_classes=verdict.num_classes,
            description=upload.description,
            lineage=upload.lineage,
        )
    )
    return events


def decide_dataset(
    name: NameState,
    upload: DatasetUploadReceived,
    verdict: DatasetFacts | str,
    canonical: ArtifactRef | None,
    stamp: Stamp,
) -> list[Event]:
    """Events for a checked data-set upload; ``canonical`` is the stored canonical npz."""
    if isinstance(verdict, str) or canonical is None:
        reason = verdict if isinstance(verdict, str) else "the canonical data set was not stored"
        return [
            DatasetRejected(
                **stamp.envelope("dataset_rejected"),
                upload_id=upload.upload_id,
                dataset_name=upload.dataset_name,
                reason=reason,
            )
        ]
    events: list[Event] = []
    if not name.registered:
        events.append(
            DatasetRegistered(
                **stamp.envelope("dataset_registered"),
                dataset_name=upload.dataset_name,
                owner=upload.actor,
            )
        )
    version = name.latest_version + 1
    events.append(
        DatasetValidated(
            **stamp.envelope(f"dataset_validated/{version}"),
            dataset_name=upload.dataset_name,
            version=version,
            upload_id=upload.upload_id,
            source=upload.artifact,
            canonical=canonical,
            classes=verdict.classes,
            class_counts=verdict.class_counts,
            num_images=verdict.num_images,
            images=verdict.images,
            splits=verdict.splits,
            seed=upload.seed,
            description=upload.description,
        )
    )
    return events


def bundled_upload(
    name: str, artifact: ArtifactRef, description: str, stamp: Stamp
) -> DatasetUploadReceived:
    """The upload event of a bundled data set; its ids depend only on the name."""
    envelope = stamp.envelope(f"bundled/{name}")
    envelope["event_id"] = stable_id(ACTOR, "bundled-dataset", name)
    return DatasetUploadReceived(
        **envelope,  # type: ignore[arg-type]
        upload_id=bundled_upload_id(name),
        dataset_name=name,
        artifact=artifact,
        description=description,
        seed=0,
        bundled=True,
    )


def bundled_upload_id(name: str) -> str:
    return f"bundled-{name}"
