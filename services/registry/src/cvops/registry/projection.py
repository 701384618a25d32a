"""The registry's projection: models, versions and stages, data sets, uploads and verdicts.

Each table is an aggregate table folded by ``cvops.domain.catalog`` (timestamps are the
events' ``occurred_at``), so applying an event twice or rebuilding from the log gives
identical rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import MetaData, or_, select
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core import Settings
from cvops.core.catalog import RegistryCatalog

SUBJECTS = ["cvops.evt.registry.>"]

metadata = MetaData()

# Every table is an aggregate table folded by cvops.domain.catalog (``cvops.core.catalog``
# declares them); the columns beside the state are what the queries below look up.
catalog = RegistryCatalog(metadata)
MODELS = catalog.models
DATASETS = catalog.datasets
MODEL_VERSIONS = catalog.model_versions
DATASET_VERSIONS = catalog.dataset_versions
UPLOADS = catalog.uploads
TABLES = catalog.tables
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
        catalog.apply(session, event)


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
