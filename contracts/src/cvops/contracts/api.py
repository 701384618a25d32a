"""HTTP bodies of the gateway (shared by the gateway and the typed client)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from cvops.contracts.common import ArtifactRef, Lineage, TensorSpec
from cvops.contracts.identity import Role
from cvops.contracts.registry import ImageStats, SplitCounts, Stage


class ErrorBody(msgspec.Struct, kw_only=True):
    """The one error shape: ``{"error": code, "detail": ...}``."""

    error: str
    detail: str | dict[str, object] | list[object] | None = None


class LoginRequest(msgspec.Struct, kw_only=True):
    username: str
    password: str


class LoginResponse(msgspec.Struct, kw_only=True):
    token: str
    token_type: str = "bearer"
    expires_at: datetime
    username: str
    role: Role


class UserView(msgspec.Struct, kw_only=True):
    username: str
    role: Role
    created_at: datetime
    disabled: bool = False


class CreateUser(msgspec.Struct, kw_only=True):
    username: str
    password: str
    role: Role = "viewer"


class UpdateUser(msgspec.Struct, kw_only=True):
    role: Role | None = None
    password: str | None = None
    disabled: bool | None = None


class CreateToken(msgspec.Struct, kw_only=True):
    label: str = ""


class TokenCreated(msgspec.Struct, kw_only=True):
    token_id: str
    token: str  # shown once; only its hash is stored
    label: str


class TokenView(msgspec.Struct, kw_only=True):
    token_id: str
    label: str
    created_at: datetime
    revoked: bool


UploadStatus = Literal["pending", "validated", "rejected"]


class ModelVersionView(msgspec.Struct, kw_only=True):
    model_name: str
    version: int
    stage: Stage
    format: str
    artifact: ArtifactRef
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    opset: int | None = None
    architecture: str | None = None
    num_classes: int | None = None
    description: str = ""
    # a factory, not a shared instance: OpenAPI generation hashes plain defaults
    lineage: Lineage = msgspec.field(default_factory=Lineage)
    created_at: datetime
    created_by: str


class ModelView(msgspec.Struct, kw_only=True):
    name: str
    owner: str
    created_at: datetime
    latest_version: int | None
    versions: list[ModelVersionView] = []


class UploadResult(msgspec.Struct, kw_only=True):
    """Outcome of a model or data-set upload (201 validated, 422 rejected, 202 pending)."""

    upload_id: str
    kind: Literal["model", "dataset"]
    name: str
    status: UploadStatus
    version: int | None = None
    reason: str | None = None
    correlation_id: str


class StageChange(msgspec.Struct, kw_only=True):
    stage: Stage


class DatasetView(msgspec.Struct, kw_only=True):
    name: str
    owner: str
    version: int
    created_at: datetime
    classes: list[str]
    class_counts: list[int]
    num_images: int
    images: ImageStats
    splits: SplitCounts
    source: ArtifactRef
    canonical: ArtifactRef
    seed: int = 0
    description: str = ""


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, object] = {}
