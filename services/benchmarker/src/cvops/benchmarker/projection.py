"""The benchmarker's projection: model versions and data sets the registry validated, the
artifacts conversions produced, and every benchmark (its folded state and its rows).

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

from cvops.benchmarker.handlers import ArtifactView, DatasetView, ModelVersionView
from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.conversion import ArtifactProduced, BenchmarkRow, BenchmarkRowMeasured
from cvops.contracts.registry import DatasetValidated, ModelVersionAdded
from cvops.core import Settings
from cvops.core.catalog import Catalog
from cvops.domain.benchmark import BenchmarkState, evolve

SUBJECTS = [
    f"{SUBJECT_PREFIX}.registry.>",
    f"{SUBJECT_PREFIX}.conversion.>",
    f"{SUBJECT_PREFIX}.benchmark.>",
]

metadata = MetaData()

catalog = Catalog(metadata)  # validated model versions and data sets

artifacts = Table(
    "artifacts",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("target", String, primary_key=True),
    Column("job_id", String, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("view", Text, nullable=False),  # ArtifactView as JSON
)

benchmarks = Table(
    "benchmarks",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("model_name", String, nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("actor", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", Text, nullable=False),
    Column("requested_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
    Column("state", Text, nullable=False),  # BenchmarkState as JSON
)

benchmark_rows = Table(
    "benchmark_rows",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("engine", String, primary_key=True),
    Column("precision", String, primary_key=True),
    Column("artifact", String, primary_key=True),
    Column("batch_size", Integer, primary_key=True),
    Column("concurrency", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("p95_ms", Float),
    Column("throughput_ips", Float),
    Column("accuracy", Float),
    Column("error", Text),
    Column("row", Text, nullable=False),  # BenchmarkRow as JSON
)

_encode = msgspec.json.Encoder().encode
_decode_state = msgspec.json.Decoder(BenchmarkState).decode
_decode_artifact = msgspec.json.Decoder(ArtifactView).decode
_decode_row = msgspec.json.Decoder(BenchmarkRow).decode


def _json(value: Any) -> str:
    return _encode(value).decode()


class BenchmarkerProjection:
    """Folds registry, conversion and benchmark events into SQLite."""

    name = "benchmarker"
    version = 2  # the ``state`` column holds a BenchmarkState (its rows and its end)
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelVersionAdded() | DatasetValidated():
                catalog.apply(session, event)
            case ArtifactProduced():
                session.execute(
                    insert(artifacts)
                    .values(
                        model_name=event.model_name,
                        version=event.version,
                        target=event.target,
                        job_id=event.job_id,
                        seq=seq,
                        view=_json(ArtifactView.of(event, seq)),
                    )
                    .on_conflict_do_nothing()  # one result per target and job
                )
            case _ if event.context == "benchmark":
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
            insert(benchmarks)
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
        if isinstance(event, BenchmarkRowMeasured) and len(state.rows) > len(
            before.rows if before else []
        ):
            r = event.row  # a cell's first row is its only one
            session.execute(
                insert(benchmark_rows)
                .values(
                    job_id=job_id,
                    engine=r.engine,
                    precision=r.precision,
                    artifact=r.artifact,
                    batch_size=r.batch_size,
                    concurrency=r.concurrency,
                    seq=seq,
                    p95_ms=r.p95_ms,
                    throughput_ips=r.throughput_ips,
                    accuracy=r.accuracy,
                    error=r.error,
                    row=_json(r),
                )
                .on_conflict_do_nothing()
            )


projection = BenchmarkerProjection()


def db_path(settings: Settings) -> Path:
    """Where the benchmarker keeps its projection."""
    return settings.home_path / "benchmarker.sqlite"


# -- queries ----------------------------------------------------------------------------------


def load_job(session: Session, job_id: str) -> BenchmarkState | None:
    value = session.execute(select(benchmarks.c.state).where(benchmarks.c.job_id == job_id))
    state = value.scalar()
    return _decode_state(state) if state else None


def model_version(session: Session, name: str, version: int) -> ModelVersionView | None:
    return catalog.model_version(session, name, version)


def dataset_versions(session: Session) -> dict[str, list[DatasetView]]:
    return catalog.dataset_versions(session)


def model_artifacts(session: Session, name: str, version: int) -> list[ArtifactView]:
    """Every produced artifact of a model version, oldest first."""
    rows = session.execute(
        select(artifacts.c.view)
        .where(artifacts.c.model_name == name, artifacts.c.version == version)
        .order_by(artifacts.c.seq)
    ).all()
    return [_decode_artifact(v) for (v,) in rows]


def job_rows(session: Session, job_id: str) -> list[BenchmarkRow]:
    """The rows of a benchmark in the order they were measured."""
    rows = session.execute(
        select(benchmark_rows.c.row)
        .where(benchmark_rows.c.job_id == job_id)
        .order_by(benchmark_rows.c.seq)
    ).all()
    return [_decode_row(v) for (v,) in rows]


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every benchmark, newest first (without the folded state)."""
    cols = [c for c in benchmarks.c if c.name != "state"]
    rows = session.execute(select(*cols).order_by(benchmarks.c.requested_at.desc())).all()
    return [dict(r._mapping) for r in rows]
