"""The converter's projection: model versions and data sets the registry validated, and every
conversion job (its folded state and one row per target result).

Rows come from events only and every ``apply`` is an upsert or a fold keyed by the event's
sequence, so applying an event twice or rebuilding from the log gives identical rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.conversion import ArtifactProduced, ArtifactRejected, TargetUnavailable
from cvops.contracts.registry import DatasetValidated, ModelVersionAdded
from cvops.core import Settings
from cvops.core.catalog import Catalog, DatasetView, ModelVersionView
from cvops.domain.conversion import ConversionState, evolve

SUBJECTS = [f"{SUBJECT_PREFIX}.registry.>", f"{SUBJECT_PREFIX}.conversion.>"]

metadata = MetaData()

catalog = Catalog(metadata)  # validated model versions and data sets

conversions = Table(
    "conversions",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("model_name", String, nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("actor", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
    Column("state", Text, nullable=False),  # ConversionState as JSON
)

conversion_results = Table(
    "conversion_results",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("target", String, primary_key=True),
    Column("outcome", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("artifact_sha256", String),
    Column("accuracy_drop", Float),
    Column("max_abs_error", Float),
    Column("top1_agreement", Float),
    Column("excluded_layers", Text, nullable=False),
)

_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(ConversionState).decode


def _json(value: Any) -> str:
    return _encode(value).decode()


class ConverterProjection:
    """Folds registry and conversion events into SQLite (see ``ProjectionRunner``)."""

    name = "converter"
    version = 2  # the ``state`` column holds a ConversionState (richer target results)
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelVersionAdded() | DatasetValidated():
                catalog.apply(session, event)
            case _ if event.context == "conversion":
                self._job_event(session, event, seq)

    def _job_event(self, session: Session, event: Event, seq: int) -> None:
        job_id = str(getattr(event, "job_id", ""))
        before = load_job(session, job_id)
        if before is not None and seq <= before.last_seq:
            return
        state = evolve(before, event)
        if state is None:
            return
        state = msgspec.structs.replace(state, last_seq=seq)
        row = {
            "status": state.status,
            "reason": state.reason,
            "updated_at": event.occurred_at.isoformat(),
            "state": _json(state),
        }
        session.execute(
            insert(conversions)
            .values(
                job_id=job_id,
                model_name=state.request.model_name,
                version=state.request.version,
                actor=state.request.actor,
                requested_at=state.request.occurred_at.isoformat(),
                **row,
            )
            .on_conflict_do_update(index_elements=["job_id"], set_=row)
        )
        result: dict[str, Any] | None = None
        match event:
            case ArtifactProduced(target=t, artifact=a, parity=p, excluded_layers=x):
                result = {
                    "target": t,
                    "outcome": "produced",
                    "reason": event.gate.reason,
                    "artifact_sha256": a.sha256,
                    "accuracy_drop": p.accuracy_drop,
                    "max_abs_error": p.max_abs_error,
                    "top1_agreement": p.top1_agreement,
                    "excluded_layers": _json(x),
                }
            case ArtifactRejected(target=t, reason=r, parity=p, excluded_layers=x):
                result = {
                    "target": t,
                    "outcome": "rejected",
                    "reason": r,
                    "artifact_sha256": None,
                    "accuracy_drop": p.accuracy_drop if p else None,
                    "max_abs_error": p.max_abs_error if p else None,
                    "top1_agreement": p.top1_agreement if p else None,
                    "excluded_layers": _json(x),
                }
            case TargetUnavailable(target=t, reason=r):
                result = {
                    "target": t,
                    "outcome": "unavailable",
                    "reason": r,
                    "artifact_sha256": None,
                    "accuracy_drop": None,
                    "max_abs_error": None,
                    "top1_agreement": None,
                    "excluded_layers": "[]",
                }
        if result is not None:
            session.execute(
                insert(conversion_results)
                .values(job_id=job_id, **result)
                .on_conflict_do_nothing()  # the first result of a target is the only one
            )


projection = ConverterProjection()


def db_path(settings: Settings) -> Path:
    """Where the converter keeps its projection."""
    return settings.home_path / "converter.sqlite"


# -- queries ----------------------------------------------------------------------------------


def load_job(session: Session, job_id: str) -> ConversionState | None:
    """A job's folded state, or None when its request was not seen."""
    state = session.execute(select(conversions.c.state).where(conversions.c.job_id == job_id))
    value = state.scalar()
    return _decode_state(value) if value else None


def model_version(session: Session, name: str, version: int) -> ModelVersionView | None:
    return catalog.model_version(session, name, version)


def dataset_versions(session: Session) -> dict[str, list[DatasetView]]:
    """Every validated data-set version, by name."""
    return catalog.dataset_versions(session)


def job_results(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The result row of every target of a job."""
    rows = session.execute(
        select(conversion_results)
        .where(conversion_results.c.job_id == job_id)
        .order_by(conversion_results.c.target)
    ).all()
    return [dict(r._mapping) for r in rows]


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every conversion job, newest first (without the folded state)."""
    cols = [c for c in conversions.c if c.name != "state"]
    rows = session.execute(select(*cols).order_by(conversions.c.requested_at.desc())).all()
    return [dict(r._mapping) for r in rows]
