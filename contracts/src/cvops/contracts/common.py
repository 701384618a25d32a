"""Small value types shared by events and API bodies."""

from __future__ import annotations

from typing import Any

import msgspec


class ArtifactRef(msgspec.Struct, frozen=True, kw_only=True):
    """A blob in the object store ``cvops-artifacts``, named by its sha256."""

    sha256: str
    size: int
    media_type: str = "application/octet-stream"
    filename: str = ""


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One model input or output; -1 marks a dynamic dimension."""

    name: str
    shape: list[int]
    dtype: str


class Lineage(msgspec.Struct, frozen=True, kw_only=True):
    """Where a model version came from (filled by the trainer and converter)."""

    parent_version: int | None = None
    job_id: str | None = None
    generation: int | None = None
    trial_id: str | None = None
    dataset: str | None = None
    hyperparameters: dict[str, Any] = {}
    metrics: dict[str, float] = {}
