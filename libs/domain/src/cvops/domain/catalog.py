"""Catalog: validated model versions and data-set versions — state, ``evolve`` and decisions
(stage changes, upload form fields, why a data set is unusable).

No clock, no uuid, no I/O: state + command -> events, or a refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import msgspec

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp, TensorSpec
from cvops.contracts.api import DatasetView, UploadStatus
from cvops.contracts.registry import (
    STAGES,
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
    Stage,
)
from cvops.domain.checks import check_name
from cvops.domain.errors import Invalid, NotFound

MAX_FIELD_CHARS = 2000


class ModelVersionState(msgspec.Struct, frozen=True, kw_only=True):
    """One validated model version: what ``model_version_added`` said, and its stage."""

    model_name: str
    version: int
    artifact: ArtifactRef
    format: str
    architecture: str | None = None
    num_classes: int | None = None
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    parameter_count: int = 0
    opset: int | None = None
    description: str = ""
    lineage: Lineage = Lineage()
    upload_id: str = ""
    stage: Stage = "none"
    stage_changed_at: datetime | None = None
    created_at: datetime | None = None
    created_by: str = ""  # the event's actor (the gateway shows the uploader)

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.lineage.hyperparameters)


class DatasetVersionState(msgspec.Struct, frozen=True, kw_only=True):
    """One validated data-set version and its canonical npz."""

    name: str
    version: int
    canonical: ArtifactRef
    channels: int
    image_size: list[int]  # modal H, W
    classes: list[str] = []
    calibration: int = 0  # images in the calibration split
    class_counts: list[int] = []
    num_images: int = 0
    images: ImageStats | None = None
    splits: SplitCounts | None = None
    source: ArtifactRef | None = None
    seed: int = 0
    description: str = ""
    upload_id: str = ""
    created_at: datetime | None = None
    created_by: str = ""  # the event's actor (the gateway shows the uploader)


def model_version_key(event: Event) -> tuple[str, int] | None:
    """The model version an event folds into (None: not a model-version event)."""
    if isinstance(event, ModelVersionAdded | ModelStageChanged):
        return (event.model_name, event.version)
    return None


def dataset_version_key(event: Event) -> tuple[str, int] | None:
    if isinstance(event, DatasetValidated):
        return (event.dataset_name, event.version)
    return None


def evolve_model_version(state: ModelVersionState | None, event: Event) -> ModelVersionState | None:
    """A version is what its ``model_version_added`` said (first one wins); only its stage
    moves, by ``model_stage_changed``."""
    match event:
        case ModelVersionAdded() if state is None:
            return ModelVersionState(
                model_name=event.model_name,
                version=event.version,
                artifact=event.artifact,
                format=event.format,
                architecture=event.architecture,
                num_classes=event.num_classes,
                inputs=list(event.inputs),
                outputs=list(event.outputs),
                parameter_count=event.parameter_count,
                opset=event.opset,
                description=event.description,
                lineage=event.lineage,
                upload_id=event.upload_id,
                created_at=event.occurred_at,
                created_by=event.actor,
            )
        case ModelStageChanged(stage=stage) if state is not None and state.stage != stage:
            return msgspec.structs.replace(state, stage=stage, stage_changed_at=event.occurred_at)
    return state


def evolve_dataset_version(
    state: DatasetVersionState | None, event: Event
) -> DatasetVersionState | None:
    """A data-set version is what its ``dataset_validated`` said; it never changes."""
    if state is None and isinstance(event, DatasetValidated):
        hw = [*event.images.modal_hw, 0, 0][:2]
        return DatasetVersionState(
            name=event.dataset_name,
            version=event.version,
            canonical=event.canonical,
            classes=list(event.classes),
            channels=event.images.channels,
            image_size=[int(hw[0]), int(hw[1])],
            calibration=event.splits.calibration,
            class_counts=list(event.class_counts),
            num_images=event.num_images,
            images=event.images,
            splits=event.splits,
            source=event.source,
            seed=event.seed,
            description=event.description,
            upload_id=event.upload_id,
            created_at=event.occurred_at,
            created_by=event.actor,
        )
    return state


class NameState(msgspec.Struct, frozen=True, kw_only=True):
    """A model or data-set name: who registered it, and its newest version (0: none yet)."""

    name: str
    owner: str
    created_at: datetime
    latest_version: int = 0


class UploadState(msgspec.Struct, frozen=True, kw_only=True):
    """An upload and the registry's verdict on it."""

    upload_id: str
    kind: str  # model | dataset
    name: str
    status: UploadStatus  # pending | validated | rejected
    reason: str | None = None
    version: int | None = None
    artifact_sha256: str = ""
    bundled: bool = False
    actor: str = ""
    correlation_id: str = ""
    received_at: datetime | None = None
    decided_at: datetime | None = None


def model_name_key(event: Event) -> tuple[str] | None:
    if isinstance(event, ModelRegistered | ModelVersionAdded):
        return (event.model_name,)
    return None


def dataset_name_key(event: Event) -> tuple[str] | None:
    if isinstance(event, DatasetRegistered | DatasetValidated):
        return (event.dataset_name,)
    return None


def upload_key(event: Event) -> tuple[str] | None:
    if isinstance(
        event,
        ModelUploadReceived
        | DatasetUploadReceived
        | ModelVersionAdded
        | DatasetValidated
        | ModelRejected
        | DatasetRejected,
    ):
        return (event.upload_id,)
    return None


def evolve_name(state: NameState | None, event: Event) -> NameState | None:
    """A name from its registration; a version raises its latest version. A version without
    a registration (a name registered by a newer writer) still makes the name known; its
    owner is then the version's author."""
    match event:
        case ModelRegistered() | DatasetRegistered() if state is None:
            name = event.model_name if isinstance(event, ModelRegistered) else event.dataset_name
            return NameState(name=name, owner=event.owner, created_at=event.occurred_at)
        case ModelVersionAdded() | DatasetValidated():
            if state is None:
                name = (
                    event.model_name if isinstance(event, ModelVersionAdded) else event.dataset_name
                )
                state = NameState(name=name, owner=event.actor, created_at=event.occurred_at)
            if state.latest_version < event.version:
                return msgspec.structs.replace(state, latest_version=event.version)
    return state


def evolve_upload(state: UploadState | None, event: Event) -> UploadState | None:
    """An upload is pending from its receipt until the registry's verdict."""
    match event:
        case ModelUploadReceived() | DatasetUploadReceived() if state is None:
            model = isinstance(event, ModelUploadReceived)
            return UploadState(
                upload_id=event.upload_id,
                kind="model" if model else "dataset",
                name=event.model_name if model else event.dataset_name,  # type: ignore[union-attr]
                status="pending",
                artifact_sha256=event.artifact.sha256,
                bundled=False if model else event.bundled,  # type: ignore[union-attr]
                actor=event.actor,
                correlation_id=event.correlation_id,
                received_at=event.occurred_at,
            )
        case ModelVersionAdded() | DatasetValidated() if state is not None:
            return msgspec.structs.replace(
                state,
                status="validated",
                reason=None,
                version=event.version,
                decided_at=event.occurred_at,
            )
        case ModelRejected() | DatasetRejected() if state is not None:
            return msgspec.structs.replace(
                state,
                status="rejected",
                reason=event.reason,
                version=None,
                decided_at=event.occurred_at,
            )
    return state


# -- decisions -------------------------------------------------------------------------------


class Staged(Protocol):
    """A model version as a stage change sees it."""

    @property
    def model_name(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def stage(self) -> Stage: ...


def change_stage(version: Staged | None, stage: str, *, stamp: Stamp) -> list[Event]:
    """Move a model version to another stage; asking for the current stage changes nothing."""
    if version is None:
        raise NotFound("no such model version")
    if stage not in STAGES:
        raise Invalid(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if stage == version.stage:
        return []
    new_stage: Stage = stage  # type: ignore[assignment]
    return [
        ModelStageChanged(
            **stamp.envelope(f"stage/{version.model_name}/{version.version}/{stage}"),
            model_name=version.model_name,
            version=version.version,
            stage=new_stage,
            previous=version.stage,
        )
    ]


def dataset_refusal(name: str, version: int | None, rejection: str | None) -> str:
    """Why a training or conversion cannot use data set ``name`` (it has no such version)."""
    if version is not None:
        return f"data set {name!r} has no validated version {version}"
    if rejection is not None:
        return f"data set {name!r} failed validation: {rejection}"
    return f"unknown data set {name!r}; upload it first (cvops datasets upload)"


def dataset_named(
    name: str | None, version: int | None, found: DatasetView | DatasetVersionState | None
) -> None:
    """Refuse a request that names a data set (version) the catalog does not have."""
    if name is not None and found is None:
        raise Invalid(dataset_refusal(name, version, None))


# -- upload forms ----------------------------------------------------------------------------


def required_name(fields: Mapping[str, str]) -> str:
    name = fields.get("name", "").strip()
    if not name:
        raise Invalid("missing form field 'name'")
    return check_name(name)


def optional_text(fields: Mapping[str, str], field: str, max_chars: int) -> str | None:
    value = fields.get(field, "").strip()
    if len(value) > max_chars:
        raise Invalid(f"field {field!r} is longer than {max_chars} characters")
    return value or None


def optional_int(fields: Mapping[str, str], field: str, *, minimum: int) -> int | None:
    raw = fields.get(field, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise Invalid(f"field {field!r} must be an integer, got {raw!r}") from err
    if value < minimum:
        raise Invalid(f"field {field!r} must be at least {minimum}")
    return value


def input_shape(raw: str) -> list[int] | None:
    """``"3,32,32"`` -> ``[3, 32, 32]``; 1 to 5 positive dimensions."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        dims = [int(d) for d in raw.replace("x", ",").split(",")]
    except ValueError as err:
        raise Invalid(f"input_shape must look like '3,32,32', got {raw!r}") from err
    if not 1 <= len(dims) <= 5 or any(d < 1 for d in dims):
        raise Invalid(f"input_shape must have 1 to 5 positive dimensions, got {raw!r}")
    return dims
