"""Registry events: model and data-set uploads, their verdicts, versions and stages."""

from __future__ import annotations

from typing import Literal

import msgspec

from cvops.contracts.common import ArtifactRef, Lineage, TensorSpec
from cvops.contracts.envelope import Event

Stage = Literal["none", "staging", "production", "archived"]
STAGES: tuple[Stage, ...] = ("none", "staging", "production", "archived")
ModelFormat = Literal["onnx", "torchscript", "torch_export", "safetensors"]


class _ModelEvent(Event, frozen=True, kw_only=True):
    model_name: str

    @property
    def aggregate_id(self) -> str:
        return f"model-{self.model_name}"


class _UploadEvent(Event, frozen=True, kw_only=True):
    upload_id: str

    @property
    def aggregate_id(self) -> str:
        return f"upload-{self.upload_id}"


class _DatasetEvent(Event, frozen=True, kw_only=True):
    dataset_name: str

    @property
    def aggregate_id(self) -> str:
        return f"dataset-{self.dataset_name}"


class ModelUploadReceived(_UploadEvent, tag="registry.model_upload_received.v1"):
    """The gateway stored the bytes; the registry must validate them."""

    model_name: str
    artifact: ArtifactRef
    architecture: str | None = None  # required for safetensors weights
    num_classes: int | None = None
    input_shape: list[int] | None = None  # C,H,W hint for safetensors
    description: str = ""
    lineage: Lineage = Lineage()


class ModelRegistered(_ModelEvent, tag="registry.model_registered.v1"):
    owner: str


class ModelVersionAdded(_ModelEvent, tag="registry.model_version_added.v1"):
    """A validated upload became version ``version`` of ``model_name``."""

    version: int
    upload_id: str
    artifact: ArtifactRef
    format: ModelFormat
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    opset: int | None = None
    architecture: str | None = None
    num_classes: int | None = None
    description: str = ""
    lineage: Lineage = Lineage()


class ModelRejected(_UploadEvent, tag="registry.model_rejected.v1"):
    model_name: str
    reason: str


class ModelStageChanged(_ModelEvent, tag="registry.model_stage_changed.v1"):
    version: int
    stage: Stage
    previous: Stage = "none"


class DatasetUploadReceived(_UploadEvent, tag="registry.dataset_upload_received.v1"):
    dataset_name: str
    artifact: ArtifactRef
    description: str = ""
    seed: int = 0
    bundled: bool = False


class SplitCounts(msgspec.Struct, frozen=True, kw_only=True):
    train: int
    val: int
    test: int
    calibration: int


class ImageStats(msgspec.Struct, frozen=True, kw_only=True):
    min_hw: list[int]
    max_hw: list[int]
    modal_hw: list[int]
    channels: int


class DatasetRegistered(_DatasetEvent, tag="registry.dataset_registered.v1"):
    owner: str


class DatasetValidated(_DatasetEvent, tag="registry.dataset_validated.v1"):
    """A checked data set; ``canonical`` is an npz (x uint8 NHWC, y, classes, split indices)."""

    version: int
    upload_id: str
    source: ArtifactRef
    canonical: ArtifactRef
    classes: list[str]
    class_counts: list[int]
    num_images: int
    images: ImageStats
    splits: SplitCounts
    seed: int = 0
    description: str = ""


class DatasetRejected(_UploadEvent, tag="registry.dataset_rejected.v1"):
    dataset_name: str
    reason: str


REGISTRY_EVENTS = (
    ModelUploadReceived,
    ModelRegistered,
    ModelVersionAdded,
    ModelRejected,
    ModelStageChanged,
    DatasetUploadReceived,
    DatasetRegistered,
    DatasetValidated,
    DatasetRejected,
)
