"""The benchmarker's projection: model versions and data sets the registry validated, the
artifacts conversions produced, and every benchmark (the aggregate table ``cvops.core.jobs``
declares: its folded state and one row per measured cell).

Rows come from events only and every ``apply`` is an upsert or a fold keyed by the event's
sequence, so applying an event twice or rebuilding from the log gives identical rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.benchmarker.handlers import ArtifactView
from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.conversion import ArtifactProduced, BenchmarkRow
from cvops.contracts.registry import DatasetValidated, ModelVersionAdded
from cvops.core import Settings
from cvops.core.catalog import Catalog
from cvops.core.jobs import benchmark_jobs_table, job_summaries

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

# every benchmark: the domain's BenchmarkState (its rows in the order they were measured, the
# first per cell) and its ``benchmark_rows``
jobs = benchmark_jobs_table(metadata)
benchmarks = jobs.table
benchmark_rows = jobs.children[0].table

_encode = msgspec.json.Encoder().encode
_decode_artifact = msgspec.json.Decoder(ArtifactView).decode


def _json(value: Any) -> str:
    return _encode(value).decode()


class BenchmarkerProjection:
    """Folds registry, conversion and benchmark events into SQLite."""

    name = "benchmarker"
    # 2: the ``state`` column holds a BenchmarkState (its rows and its end)
    # 3: benchmarks are cvops.core.jobs' aggregate table, ``benchmark_rows`` its children
    version = 3
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
            case _:
                jobs.apply(session, event, seq)


projection = BenchmarkerProjection()


def db_path(settings: Settings) -> Path:
    """Where the benchmarker keeps its projection."""
    return settings.home_path / "benchmarker.sqlite"


# -- queries ----------------------------------------------------------------------------------


# a job's folded state (None when its request was not seen); the catalogue's reads
load_job = jobs.get
model_version = catalog.model_version
dataset_versions = catalog.dataset_versions


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
    state = jobs.get(session, job_id)
    return list(state.rows) if state is not None else []


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every benchmark, newest first (without the folded state)."""
    return job_summaries(jobs, session)
