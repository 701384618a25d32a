"""The registry's projection: models, versions and stages, data sets, uploads and verdicts.

Rows come from events only (timestamps are the events' ``occurred_at``), and every ``apply``
is an upsert, so applying an event twice or rebuilding from the log gives identical rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, or_, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ModelRegistered,
    ModelRejected,
    ModelStageChanged,
    ModelUploadReceived,
    ModelVersionAdded,
)
from cvops.core import Settings

SUBJECTS = ["cvops.evt.registry.>"]

metadata = MetaData()

models = Table(
    "models",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer, nullable=False, default=0),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("upload_id", String, nullable=False),
    Column("format", String, nullable=False),
    Column("artifact_sha256", String, nullable=False, index=True),
    Column("artifact", String, nullable=False),  # ArtifactRef as JSON
    Column("inputs", String, nullable=False),
    Column("outputs", String, nullable=False),
    Column("parameter_count", Integer, nullable=False),
    Column("opset", Integer),
    Column("architecture", String),
    Column("num_classes", Integer),
    Column("description", String, nullable=False),
    Column("lineage", String, nullable=False),
    Column("stage", String, nullable=False),
    Column("stage_changed_at", String),
    Column("created_at", String, nullable=False),
    Column("created_by", String, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer, nullable=False, default=0),
)

dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("dataset_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("upload_id", String, nullable=False),
    Column("source_sha256", String, nullable=False, index=True),
    Column("canonical_sha256", String, nullable=False, index=True),
    Column("source", String, nullable=False),
    Column("canonical", String, nullable=False),
    Column("classes", String, nullable=False),
    Column("class_counts", String, nullable=False),
    Column("num_images", Integer, nullable=False),
    Column("images", String, nullable=False),
    Column("splits", String, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("description", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("created_by", String, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String, primary_key=True),
    Column("kind", String, nullable=False),  # model | dataset
    Column("name", String, nullable=False),
    Column("status", String, nullable=False),  # pending | validated | rejected
    Column("reason", String),
    Column("version", Integer),
    Column("artifact_sha256", String, nullable=False, index=True),
    Column("bundled", Boolean, nullable=False, default=False),
    Column("actor", String, nullable=False),
    Column("correlation_id", String, nullable=False),
    Column("received_at", String, nullable=False),
    Column("decided_at", String),
)

_json = msgspec.json.Encoder(order="deterministic")


def _enc(value: Any) -> str:
    return _json.encode(value).decode()


def _when(event: Event) -> str:
    return event.occurred_at.isoformat()


class RegistryProjection:
    """Folds registry events into the tables above (cvops.core.Projection)."""

    name = "registry"
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelUploadReceived():
                _receive(session, event, "model", event.model_name, event.artifact.sha256, False)
            case DatasetUploadReceived():
                _receive(
                    session,
                    event,
                    "dataset",
                    event.dataset_name,
                    event.artifact.sha256,
                    event.bundled,
                )
            case ModelRegistered():
                _register(session, models, event.model_name, event.owner, _when(event))
            case DatasetRegistered():
                _register(session, datasets, event.dataset_name, event.owner, _when(event))
            case ModelVersionAdded():
                _add_model_version(session, event)
                _decide(session, event, event.upload_id, "validated", None, event.version)
            case DatasetValidated():
                _add_dataset_version(session, event)
                _decide(session, event, event.upload_id, "validated", None, event.version)
            case ModelRejected() | DatasetRejected():
                _decide(session, event, event.upload_id, "rejected", event.reason, None)
            case ModelStageChanged():
                session.execute(
                    model_versions.update()
                    .where(
                        model_versions.c.model_name == event.model_name,
                        model_versions.c.version == event.version,
                    )
                    .values(stage=event.stage, stage_changed_at=_when(event))
                )
            case _:
                pass


def _receive(
    session: Session, event: Event, kind: str, name: str, sha256: str, bundled: bool
) -> None:
    upload_id = str(event.upload_id)  # type: ignore[attr-defined]
    session.execute(
        insert(uploads)
        .values(
            upload_id=upload_id,
            kind=kind,
            name=name,
            status="pending",
            artifact_sha256=sha256,
            bundled=bundled,
            actor=event.actor,
            correlation_id=event.correlation_id,
            received_at=_when(event),
        )
        .on_conflict_do_nothing(index_elements=["upload_id"])
    )


def _decide(
    session: Session,
    event: Event,
    upload_id: str,
    status: str,
    reason: str | None,
    version: int | None,
) -> None:
    session.execute(
        uploads.update()
        .where(uploads.c.upload_id == upload_id)
        .values(status=status, reason=reason, version=version, decided_at=_when(event))
    )


def _register(session: Session, table: Table, name: str, owner: str, when: str) -> None:
    session.execute(
        insert(table)
        .values(name=name, owner=owner, created_at=when, latest_version=0)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def _bump_latest(session: Session, table: Table, name: str, version: int, event: Event) -> None:
    # a version event without a registration (a name registered by a newer writer) still
    # makes the name visible; the owner is then the version's author
    _register(session, table, name, event.actor, _when(event))
    current = session.execute(select(table.c.latest_version).where(table.c.name == name)).scalar()
    if (current or 0) < version:
        session.execute(table.update().where(table.c.name == name).values(latest_version=version))


def _add_model_version(session: Session, e: ModelVersionAdded) -> None:
    session.execute(
        insert(model_versions)
        .values(
            model_name=e.model_name,
            version=e.version,
            upload_id=e.upload_id,
            format=e.format,
            artifact_sha256=e.artifact.sha256,
            artifact=_enc(e.artifact),
            inputs=_enc(e.inputs),
            outputs=_enc(e.outputs),
            parameter_count=e.parameter_count,
            opset=e.opset,
            architecture=e.architecture,
            num_classes=e.num_classes,
            description=e.description,
            lineage=_enc(e.lineage),
            stage="none",
            stage_changed_at=None,
            created_at=_when(e),
            created_by=e.actor,
        )
        .on_conflict_do_nothing(index_elements=["model_name", "version"])
    )
    _bump_latest(session, models, e.model_name, e.version, e)


def _add_dataset_version(session: Session, e: DatasetValidated) -> None:
    session.execute(
        insert(dataset_versions)
        .values(
            dataset_name=e.dataset_name,
            version=e.version,
            upload_id=e.upload_id,
            source_sha256=e.source.sha256,
            canonical_sha256=e.canonical.sha256,
            source=_enc(e.source),
            canonical=_enc(e.canonical),
            classes=_enc(e.classes),
            class_counts=_enc(e.class_counts),
            num_images=e.num_images,
            images=_enc(e.images),
            splits=_enc(e.splits),
            seed=e.seed,
            description=e.description,
            created_at=_when(e),
            created_by=e.actor,
        )
        .on_conflict_do_nothing(index_elements=["dataset_name", "version"])
    )
    _bump_latest(session, datasets, e.dataset_name, e.version, e)


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
    row = session.execute(select(uploads).where(uploads.c.upload_id == upload_id)).first()
    if row is None:
        return None
    return UploadRow(
        upload_id=row.upload_id,
        kind=row.kind,
        name=row.name,
        status=row.status,
        reason=row.reason,
        version=row.version,
        artifact_sha256=row.artifact_sha256,
        bundled=bool(row.bundled),
    )


def name_state(session: Session, kind: str, name: str) -> NameState:
    table = models if kind == "model" else datasets
    latest = session.execute(select(table.c.latest_version).where(table.c.name == name)).first()
    if latest is None:
        return NameState(registered=False, latest_version=0)
    return NameState(registered=True, latest_version=int(latest[0] or 0))


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
