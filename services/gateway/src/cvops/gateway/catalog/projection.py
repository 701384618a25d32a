"""The catalog in the projection: models and their versions, data sets and their versions,
uploads awaiting or given the registry's verdict, and the engines converted from each model
version. Tables, folds and reads.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import Column, Integer, String, Table, Text, bindparam, func, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.api import (
    DatasetView,
    EngineArtifactView,
    ModelVersionView,
    ModelView,
    UploadStatus,
)
from cvops.contracts.conversion import ArtifactProduced
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
from cvops.gateway.core import Fold, as_json, metadata, parse_dt

models = Table(
    "models",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer),
)

# ``body`` is a ModelVersionView as JSON; ``stage`` (the only mutable part) is a column.
model_versions = Table(
    "model_versions",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("stage", String, nullable=False),
    Column("upload_id", String, nullable=False),
    Column("body", Text, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer),
)

# ``body`` is a DatasetView as JSON.
dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("upload_id", String, nullable=False),
    Column("body", Text, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("name", String, nullable=False),
    Column("status", String, nullable=False),
    Column("version", Integer),
    Column("reason", String),
    Column("correlation_id", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("created_at", String, nullable=False),
)

# ``body`` is an EngineArtifactView as JSON.
engine_artifacts = Table(
    "engine_artifacts",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("target", String, primary_key=True),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("body", Text, nullable=False),
)


class UploadState(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: str
    kind: str
    name: str
    status: UploadStatus
    version: int | None
    reason: str | None
    correlation_id: str


# -- folds -------------------------------------------------------------------------------------


def fold_catalog(session: Session, event: Event, seq: int, at: str) -> None:
    """Models, data sets, their versions and uploads from ``registry.*`` events."""
    match event:
        case ModelUploadReceived(upload_id=up, model_name=n):
            _upload(session, event, up, "model", n)
        case DatasetUploadReceived(upload_id=up, dataset_name=n):
            _upload(session, event, up, "dataset", n)
        case ModelRegistered(model_name=n, owner=o):
            session.execute(
                insert(models)
                .values(name=n, owner=o, created_at=at, latest_version=None)
                .on_conflict_do_nothing()
            )
        case ModelVersionAdded():
            _model_version(session, event, at)
        case ModelRejected(upload_id=up, reason=why):
            _verdict(session, up, "rejected", None, why)
        case ModelStageChanged(model_name=n, version=v, stage=s):
            session.execute(
                update(model_versions)
                .where(model_versions.c.model_name == n, model_versions.c.version == v)
                .values(stage=s)
            )
        case DatasetRegistered(dataset_name=n, owner=o):
            session.execute(
                insert(datasets)
                .values(name=n, owner=o, created_at=at, latest_version=None)
                .on_conflict_do_nothing()
            )
        case DatasetValidated():
            _dataset_version(session, event, at)
        case DatasetRejected(upload_id=up, reason=why):
            _verdict(session, up, "rejected", None, why)
        case _:
            pass


def _upload(session: Session, event: Event, upload_id: str, kind: str, name: str) -> None:
    session.execute(
        insert(uploads)
        .values(
            upload_id=upload_id,
            kind=kind,
            name=name,
            status="pending",
            correlation_id=event.correlation_id,
            actor=event.actor,
            created_at=event.occurred_at.isoformat(),
        )
        .on_conflict_do_nothing()
    )


def _verdict(
    session: Session, upload_id: str, status: str, version: int | None, reason: str | None
) -> None:
    session.execute(
        update(uploads)
        .where(uploads.c.upload_id == upload_id)
        .values(status=status, version=version, reason=reason)
    )


def _uploader(session: Session, upload_id: str, default: str) -> str:
    actor = session.execute(
        select(uploads.c.actor).where(uploads.c.upload_id == upload_id)
    ).scalar_one_or_none()
    return actor or default


def _model_version(session: Session, e: ModelVersionAdded, at: str) -> None:
    by = _uploader(session, e.upload_id, e.actor)
    session.execute(
        insert(models)
        .values(name=e.model_name, owner=by, created_at=at, latest_version=None)
        .on_conflict_do_nothing()
    )
    view = ModelVersionView(
        model_name=e.model_name,
        version=e.version,
        stage="none",
        format=e.format,
        artifact=e.artifact,
        inputs=e.inputs,
        outputs=e.outputs,
        parameter_count=e.parameter_count,
        opset=e.opset,
        architecture=e.architecture,
        num_classes=e.num_classes,
        description=e.description,
        lineage=e.lineage,
        created_at=e.occurred_at,
        created_by=by,
    )
    session.execute(
        insert(model_versions)
        .values(
            model_name=e.model_name,
            version=e.version,
            stage="none",
            upload_id=e.upload_id,
            body=msgspec.json.encode(view).decode(),
        )
        .on_conflict_do_nothing()
    )
    session.execute(
        update(models)
        .where(models.c.name == e.model_name)
        .values(latest_version=func.max(func.coalesce(models.c.latest_version, 0), e.version))
    )
    _verdict(session, e.upload_id, "validated", e.version, None)


def _dataset_version(session: Session, e: DatasetValidated, at: str) -> None:
    by = _uploader(session, e.upload_id, e.actor)
    session.execute(
        insert(datasets)
        .values(name=e.dataset_name, owner=by, created_at=at, latest_version=None)
        .on_conflict_do_nothing()
    )
    view = DatasetView(
        name=e.dataset_name,
        owner=by,
        version=e.version,
        created_at=e.occurred_at,
        classes=e.classes,
        class_counts=e.class_counts,
        num_images=e.num_images,
        images=e.images,
        splits=e.splits,
        source=e.source,
        canonical=e.canonical,
        seed=e.seed,
        description=e.description,
    )
    session.execute(
        insert(dataset_versions)
        .values(
            name=e.dataset_name,
            version=e.version,
            upload_id=e.upload_id,
            body=msgspec.json.encode(view).decode(),
        )
        .on_conflict_do_nothing()
    )
    session.execute(
        update(datasets)
        .where(datasets.c.name == e.dataset_name)
        .values(latest_version=func.max(func.coalesce(datasets.c.latest_version, 0), e.version))
    )
    _verdict(session, e.upload_id, "validated", e.version, None)


def fold_engine_artifacts(session: Session, event: Event, seq: int, at: str) -> None:
    """The engines converted from a model version (``conversion.artifact_produced``)."""
    match event:
        case ArtifactProduced():
            engine = EngineArtifactView(
                job_id=event.job_id,
                target=event.target,
                format=event.format,
                precision=event.precision,
                artifact=event.artifact,
                parity=event.parity,
                gate=event.gate,
                dataset=event.dataset,
                dataset_version=event.dataset_version,
                input_shape=list(event.input_shape),
                companions=list(event.companions),
                excluded_layers=list(event.excluded_layers),
                calibration=event.calibration,
                opset=event.opset,
                created_at=event.occurred_at,
            )
            session.execute(
                insert(engine_artifacts)
                .values(
                    job_id=event.job_id,
                    target=event.target,
                    model_name=event.model_name,
                    version=event.version,
                    seq=seq,
                    body=as_json(engine),
                )
                .on_conflict_do_nothing()
            )
        case _:
            pass


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"registry": fold_catalog, "conversion": fold_engine_artifacts}


# -- reads -------------------------------------------------------------------------------------


def _model_view(row: Row) -> ModelView:
    return ModelView(
        name=row.name,
        owner=row.owner,
        created_at=parse_dt(row.created_at),
        latest_version=row.latest_version,
    )


# Hot read statements are built once (bound parameters): building a select per request
# cost more than running it.
_LIST_MODELS = select(models).where(models.c.latest_version.is_not(None)).order_by(models.c.name)
_MODEL_VERSIONS = (
    select(model_versions)
    .where(model_versions.c.model_name == bindparam("name"))
    .order_by(model_versions.c.version)
)
_GET_MODEL = select(models).where(
    models.c.name == bindparam("name"), models.c.latest_version.is_not(None)
)
_GET_VERSION = select(model_versions).where(
    model_versions.c.model_name == bindparam("name"),
    model_versions.c.version == bindparam("version"),
)
_LIST_DATASETS = (
    select(dataset_versions)
    .join(
        datasets,
        (datasets.c.name == dataset_versions.c.name)
        & (datasets.c.latest_version == dataset_versions.c.version),
    )
    .order_by(dataset_versions.c.name)
)
_DATASET_VERSION = select(dataset_versions).where(
    dataset_versions.c.name == bindparam("name"),
    dataset_versions.c.version == bindparam("version"),
)
_DATASET_LATEST = (
    select(dataset_versions)
    .where(dataset_versions.c.name == bindparam("name"))
    .order_by(dataset_versions.c.version.desc())
    .limit(1)
)


def list_models(s: Session) -> list[ModelView]:
    """Models with at least one version."""
    rows = s.execute(_LIST_MODELS).all()
    return [_model_view(r) for r in rows]


def _version_view(row: Row) -> ModelVersionView:
    view = msgspec.json.decode(row.body, type=ModelVersionView)
    return msgspec.structs.replace(view, stage=row.stage)


def list_versions(s: Session, name: str) -> list[ModelVersionView]:
    rows = s.execute(_MODEL_VERSIONS, {"name": name}).all()
    return [_version_view(r) for r in rows]


def get_model(s: Session, name: str) -> ModelView | None:
    row = s.execute(_GET_MODEL, {"name": name}).first()
    if row is None:
        return None
    return msgspec.structs.replace(_model_view(row), versions=list_versions(s, name))


def get_version(s: Session, name: str, version: int) -> ModelVersionView | None:
    row = s.execute(_GET_VERSION, {"name": name, "version": version}).first()
    return _version_view(row) if row else None


def _dataset_view(row: Row) -> DatasetView:
    return msgspec.json.decode(row.body, type=DatasetView)


def list_datasets(s: Session) -> list[DatasetView]:
    """The latest validated version of every data set."""
    rows = s.execute(_LIST_DATASETS).all()
    return [_dataset_view(r) for r in rows]


def get_dataset(s: Session, name: str, version: int | None = None) -> DatasetView | None:
    if version is not None:
        row = s.execute(_DATASET_VERSION, {"name": name, "version": version}).first()
    else:
        row = s.execute(_DATASET_LATEST, {"name": name}).first()
    return _dataset_view(row) if row else None


def _upload_state(row: Row) -> UploadState:
    return UploadState(
        upload_id=row.upload_id,
        kind=row.kind,
        name=row.name,
        status=row.status,
        version=row.version,
        reason=row.reason,
        correlation_id=row.correlation_id,
    )


def get_upload(s: Session, upload_id: str) -> UploadState | None:
    row = s.execute(select(uploads).where(uploads.c.upload_id == upload_id)).first()
    return _upload_state(row) if row else None


def uploads_by_id(s: Session, upload_ids: list[str]) -> dict[str, UploadState]:
    """The uploads among ``upload_ids`` that the log has, by id."""
    rows = s.execute(select(uploads).where(uploads.c.upload_id.in_(upload_ids))).all()
    return {r.upload_id: _upload_state(r) for r in rows}


def dataset_rejection(s: Session, name: str) -> str | None:
    """Why the newest rejected upload of data set ``name`` was refused (None: none was)."""
    return s.execute(
        select(uploads.c.reason)
        .where(uploads.c.kind == "dataset", uploads.c.name == name, uploads.c.status == "rejected")
        .order_by(uploads.c.created_at.desc(), uploads.c.upload_id.desc())
        .limit(1)
    ).scalar_one_or_none()


def list_engine_artifacts(s: Session, name: str, version: int) -> list[EngineArtifactView]:
    """Engines produced from a model version, oldest first."""
    bodies = s.execute(
        select(engine_artifacts.c.body)
        .where(engine_artifacts.c.model_name == name, engine_artifacts.c.version == version)
        .order_by(engine_artifacts.c.seq)
    ).scalars()
    return [msgspec.json.decode(b, type=EngineArtifactView) for b in bodies]
