"""The registry's projection: models, versions and stages, data sets, uploads and verdicts.

Each table is an aggregate table folded by ``cvops.domain.catalog`` (timestamps are the
events' ``occurred_at``), so applying an event twice or rebuilding from the log gives
identical rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, or_, select
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core import Settings
from cvops.core.aggregates import AggregateTable
from cvops.domain.catalog import (
    DatasetVersionState,
    ModelVersionState,
    UploadState,
    dataset_name_key,
    dataset_version_key,
    evolve_dataset_version,
    evolve_model_version,
    evolve_name,
    evolve_upload,
    model_name_key,
    model_version_key,
    upload_key,
)
from cvops.domain.catalog import NameState as NameRow

SUBJECTS = ["cvops.evt.registry.>"]

metadata = MetaData()


def _iso(get: Callable[[Any], datetime | None]) -> Callable[[Any], str | None]:
    return lambda state: None if (when := get(state)) is None else when.isoformat()


def _names(name: str, key_of: Callable[[Event], tuple[str] | None]) -> AggregateTable[NameRow]:
    return AggregateTable(
        metadata,
        name,
        NameRow,
        key=[Column("name", String)],
        key_of=key_of,
        evolve=evolve_name,
        columns=[
            Column("owner", String, nullable=False),
            (Column("created_at", String, nullable=False), _iso(attrgetter("created_at"))),
            Column("latest_version", Integer, nullable=False),
        ],
    )


# Every table is an aggregate table folded by cvops.domain.catalog; the columns beside the
# state are what the queries below look up.
MODELS = _names("models", model_name_key)
DATASETS = _names("datasets", dataset_name_key)
MODEL_VERSIONS = AggregateTable(
    metadata,
    "model_versions",
    ModelVersionState,
    key=[Column("model_name", String), Column("version", Integer)],
    key_of=model_version_key,
    evolve=evolve_model_version,
    columns=[
        Column("format", String, nullable=False),
        (
            Column("artifact_sha256", String, nullable=False, index=True),
            lambda v: v.artifact.sha256,
        ),
        Column("stage", String, nullable=False),
    ],
)
DATASET_VERSIONS = AggregateTable(
    metadata,
    "dataset_versions",
    DatasetVersionState,
    key=[Column("dataset_name", String), Column("version", Integer)],
    key_of=dataset_version_key,
    evolve=evolve_dataset_version,
    columns=[
        (
            Column("source_sha256", String, nullable=False, index=True),
            lambda d: d.source.sha256 if d.source else "",
        ),
        (
            Column("canonical_sha256", String, nullable=False, index=True),
            lambda d: d.canonical.sha256,
        ),
    ],
)
UPLOADS = AggregateTable(
    metadata,
    "uploads",
    UploadState,
    key=[Column("upload_id", String)],
    key_of=upload_key,
    evolve=evolve_upload,
    columns=[
        Column("kind", String, nullable=False),  # model | dataset
        Column("name", String, nullable=False),
        Column("status", String, nullable=False),  # pending | validated | rejected
        Column("artifact_sha256", String, nullable=False, index=True),
        (Column("received_at", String), _iso(attrgetter("received_at"))),
        (Column("decided_at", String), _iso(attrgetter("decided_at"))),
    ],
)
TABLES: list[AggregateTable[Any]] = [MODELS, DATASETS, MODEL_VERSIONS, DATASET_VERSIONS, UPLOADS]
models = MODELS.table
datasets = DATASETS.table
model_versions = MODEL_VERSIONS.table
dataset_versions = DATASET_VERSIONS.table
uploads = UPLOADS.table


class RegistryProjection:
    """Folds registry events into the tables above (cvops.core.Projection)."""

    name = "registry"
    metadata = metadata
    # 2: aggregate tables (state as JSON) folded by cvops.domain.catalog
    version = 2

    def apply(self, session: Session, event: Event, seq: int) -> None:
        for table in TABLES:
            table.apply(session, event)


projection = RegistryProjection()


def db_path(settings: Settings) -> Path:
    """Where the registry's SQLite projection lives."""
    return settings.home_path / "registry.sqlite"


# -- queries (used by work.py) ------------------------------------------------------------------


@dataclass(frozen=True)
class UploadRow:
    upload_id: str
    kind: str
    name: str
    status: str
    reason: str | None
    version: int | None
    artifact_sha256: str
    bundled: bool


@dataclass(frozen=True)
class NameState:
    """What the log says about one model or data-set name."""

    registered: bool
    latest_version: int


def upload(session: Session, upload_id: str) -> UploadRow | None:
    found = UPLOADS.get(session, upload_id)
    if found is None:
        return None
    return UploadRow(
        upload_id=found.upload_id,
        kind=found.kind,
        name=found.name,
        status=found.status,
        reason=found.reason,
        version=found.version,
        artifact_sha256=found.artifact_sha256,
        bundled=found.bundled,
    )


def name_state(session: Session, kind: str, name: str) -> NameState:
    found = (MODELS if kind == "model" else DATASETS).get(session, name)
    if found is None:
        return NameState(registered=False, latest_version=0)
    return NameState(registered=True, latest_version=found.latest_version)


def dataset_names(session: Session) -> set[str]:
    return set(session.execute(select(datasets.c.name)).scalars())


def blob_in_use(session: Session, sha256: str, *, besides_upload: str) -> bool:
    """Whether an accepted version or another pending upload still needs this blob."""
    checks = [
        select(model_versions.c.version).where(model_versions.c.artifact_sha256 == sha256),
        select(dataset_versions.c.version).where(
            or_(
                dataset_versions.c.source_sha256 == sha256,
                dataset_versions.c.canonical_sha256 == sha256,
            )
        ),
        select(uploads.c.upload_id).where(
            uploads.c.artifact_sha256 == sha256,
            uploads.c.status == "pending",
            uploads.c.upload_id != besides_upload,
        ),
    ]
    return any(session.execute(q.limit(1)).first() is not None for q in checks)
