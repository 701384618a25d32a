"""The catalog in the projection: models and their versions, data sets and their versions,
uploads awaiting or given the registry's verdict, and the engines converted from each model
version. The tables (aggregate tables folded by ``cvops.domain.catalog``, and the engines'
table), their folds and reads.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from sqlalchemy import Column, Integer, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.api import DatasetView, EngineArtifactView, ModelVersionView, ModelView
from cvops.contracts.conversion import ArtifactProduced
from cvops.core.catalog import RegistryCatalog
from cvops.domain.catalog import DatasetVersionState, ModelVersionState, NameState, UploadState
from cvops.gateway.core import Fold, as_json, metadata

# Models, data sets, their versions and uploads: the registry's catalogue, the aggregate tables
# ``cvops.core.catalog`` declares, folded by ``cvops.domain.catalog``.
CATALOG = RegistryCatalog(metadata)

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


# -- folds -------------------------------------------------------------------------------------


def fold_catalog(session: Session, event: Event, seq: int, at: str) -> None:
    """Models, data sets, their versions and uploads from ``registry.*`` events."""
    CATALOG.apply(session, event)


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
                probe=event.probe,
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


def _model_view(name: NameState) -> ModelView:
    return ModelView(
        name=name.name,
        owner=name.owner,
        created_at=name.created_at,
        latest_version=name.latest_version or None,
    )


def _uploader(s: Session, upload_id: str, default: str) -> str:
    found = CATALOG.uploads.get(s, upload_id)
    return found.actor if found is not None and found.actor else default


def _version_view(s: Session, v: ModelVersionState) -> ModelVersionView:
    return ModelVersionView(
        model_name=v.model_name,
        version=v.version,
        stage=v.stage,
        format=v.format,  # type: ignore[arg-type]
        artifact=v.artifact,
        inputs=v.inputs,
        outputs=v.outputs,
        parameter_count=v.parameter_count,
        opset=v.opset,
        architecture=v.architecture,
        num_classes=v.num_classes,
        description=v.description,
        lineage=v.lineage,
        created_at=v.created_at,  # type: ignore[arg-type]
        created_by=_uploader(s, v.upload_id, v.created_by),
    )


def _dataset_view(s: Session, d: DatasetVersionState) -> DatasetView:
    return DatasetView(
        name=d.name,
        owner=_uploader(s, d.upload_id, d.created_by),
        version=d.version,
        created_at=d.created_at,  # type: ignore[arg-type]
        classes=d.classes,
        class_counts=d.class_counts,
        num_images=d.num_images,
        images=d.images,  # type: ignore[arg-type]
        splits=d.splits,  # type: ignore[arg-type]
        source=d.source,  # type: ignore[arg-type]
        canonical=d.canonical,
        seed=d.seed,
        description=d.description,
    )


def list_models(s: Session) -> list[ModelView]:
    """Models with at least one version."""
    return [_model_view(m) for m in CATALOG.models.states(s) if m.latest_version]


def list_versions(s: Session, name: str) -> list[ModelVersionView]:
    return [_version_view(s, v) for v in CATALOG.model_versions.states(s, model_name=name)]


def get_model(s: Session, name: str) -> ModelView | None:
    found = CATALOG.models.get(s, name)
    if found is None or not found.latest_version:
        return None
    return msgspec.structs.replace(_model_view(found), versions=list_versions(s, name))


def get_version(s: Session, name: str, version: int) -> ModelVersionView | None:
    found = CATALOG.model_versions.get(s, name, version)
    return _version_view(s, found) if found else None


def list_datasets(s: Session) -> list[DatasetView]:
    """The latest validated version of every data set."""
    out = []
    for name in CATALOG.datasets.states(s):
        found = CATALOG.dataset_versions.get(s, name.name, name.latest_version)
        if found is not None:
            out.append(_dataset_view(s, found))
    return out


def get_dataset(s: Session, name: str, version: int | None = None) -> DatasetView | None:
    if version is None:  # the latest validated one (one row, however many versions it has)
        dataset = CATALOG.datasets.get(s, name)
        version = dataset.latest_version if dataset is not None else None
    found = CATALOG.dataset_versions.get(s, name, version) if version is not None else None
    return _dataset_view(s, found) if found else None


def get_upload(s: Session, upload_id: str) -> UploadState | None:
    return CATALOG.uploads.get(s, upload_id)


def uploads_by_id(s: Session, upload_ids: list[str]) -> dict[str, UploadState]:
    """The uploads among ``upload_ids`` that the log has, by id."""
    found = (CATALOG.uploads.get(s, upload_id) for upload_id in dict.fromkeys(upload_ids))
    return {u.upload_id: u for u in found if u is not None}


def dataset_rejection(s: Session, name: str) -> str | None:
    """Why the newest rejected upload of data set ``name`` was refused (None: none was)."""
    rejected = CATALOG.uploads.states(s, kind="dataset", name=name, status="rejected")
    if not rejected:
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    newest = max(rejected, key=lambda u: (u.received_at or oldest, u.upload_id))
    return newest.reason


def list_engine_artifacts(s: Session, name: str, version: int) -> list[EngineArtifactView]:
    """Engines produced from a model version, oldest first."""
    bodies = s.execute(
        select(engine_artifacts.c.body)
        .where(engine_artifacts.c.model_name == name, engine_artifacts.c.version == version)
        .order_by(engine_artifacts.c.seq)
    ).scalars()
    return [msgspec.json.decode(b, type=EngineArtifactView) for b in bodies]
