"""The reporter's projection: everything a model version's report shows, folded by
``cvops.domain`` through the shared declarations of ``cvops.core`` (catalogue, training,
conversion and benchmark jobs, deployments, and the newest report of each version,
``cvops.core.reports``, which the gateway keeps too), plus two small tables of its own: which
training job produced which version, and which versions have a result their report does not
show yet (``report_due``).

Rows come from events only; every ``apply`` is an upsert or a fold guarded by the event's
sequence, so applying an event twice or rebuilding from the log gives identical rows.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.conversion import (
    BenchmarkCompleted,
    BenchmarkFailed,
    ConversionCompleted,
    ConversionFailed,
)
from cvops.contracts.deployment import (
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRetired,
)
from cvops.contracts.registry import ModelStageChanged, ModelVersionAdded
from cvops.contracts.reporting import ReportGenerated
from cvops.contracts.training import TrainingCancelled, TrainingCompleted, TrainingFailed
from cvops.core import Settings
from cvops.core.catalog import Catalog
from cvops.core.jobs import (
    benchmark_jobs_table,
    conversion_jobs_table,
    deployments_table,
    training_jobs_table,
)
from cvops.core.reports import Reports
from cvops.domain.deployment import DeploymentState

SUBJECTS = [
    f"{SUBJECT_PREFIX}.registry.>",
    f"{SUBJECT_PREFIX}.training.>",
    f"{SUBJECT_PREFIX}.trial.>",
    f"{SUBJECT_PREFIX}.conversion.>",
    f"{SUBJECT_PREFIX}.benchmark.>",
    f"{SUBJECT_PREFIX}.deployment.>",
    f"{SUBJECT_PREFIX}.report.>",
]

metadata = MetaData()

catalog = Catalog(metadata)  # validated model versions and data sets
trainings = training_jobs_table(metadata)
conversions = conversion_jobs_table(metadata)
benchmarks = benchmark_jobs_table(metadata)
deployments = deployments_table(metadata)

# the training job each version came from (its lineage), to find the versions a job's end
# changes
lineage_jobs = Table(
    "lineage_jobs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
)

# a version whose report should show the log up to ``due_seq`` (its newest result)
report_due = Table(
    "report_due",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("due_seq", Integer, nullable=False),
    Column("cause", String, nullable=False),  # the tag of the event that made it due
    # that event's id and correlation: the report is its consequence (the user who asked for
    # the benchmark sees report.generated in the request's feed)
    Column("causation_id", String, nullable=False),
    Column("correlation_id", String, nullable=False),
)

# the newest report of each version: the one reflecting the most of the log
report_store = Reports(metadata)
reports = report_store.table

# events after which a version's report shows something new
_RESULTS = (
    ModelVersionAdded,
    ModelStageChanged,
    TrainingCompleted,
    TrainingFailed,
    TrainingCancelled,
    ConversionCompleted,
    ConversionFailed,
    BenchmarkCompleted,
    BenchmarkFailed,
    DeploymentReady,
    DeploymentFailed,
    DeploymentDegraded,
    DeploymentRetired,
)


def served_versions(state: DeploymentState | None) -> set[tuple[str, int]]:
    """The model versions a deployment serves or asked for (primary and canary)."""
    if state is None:
        return set()
    out: set[tuple[str, int]] = set()
    for spec in (state.serving, state.requested):
        out.add((spec.model_name, spec.version))
        if spec.canary is not None:
            out.add((spec.model_name, spec.canary.model_version))
    return out


def _mark_due(session: Session, versions: set[tuple[str, int]], seq: int, event: Event) -> None:
    for name, version in sorted(versions):
        stmt = insert(report_due).values(
            model_name=name,
            version=version,
            due_seq=seq,
            cause=event.tag(),
            causation_id=str(event.event_id),
            correlation_id=event.correlation_id,
        )
        ex = stmt.excluded
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=["model_name", "version"],
                set_={
                    "due_seq": ex.due_seq,
                    "cause": ex.cause,
                    "causation_id": ex.causation_id,
                    "correlation_id": ex.correlation_id,
                },
                where=report_due.c.due_seq < ex.due_seq,
            )
        )


def _lineage_versions(session: Session, job_id: str) -> set[tuple[str, int]]:
    rows = session.execute(
        select(lineage_jobs.c.model_name, lineage_jobs.c.version).where(
            lineage_jobs.c.job_id == job_id
        )
    ).all()
    return {(str(n), int(v)) for n, v in rows}


class ReporterProjection:
    """Folds the log into what reports show, and which reports are due."""

    name = "reporter"
    version = 1
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ReportGenerated():
                report_store.apply(session, event, seq)
                return
            case ModelVersionAdded() | ModelStageChanged():
                catalog.apply(session, event)
                if isinstance(event, ModelVersionAdded) and event.lineage.job_id:
                    session.execute(
                        insert(lineage_jobs)
                        .values(
                            job_id=event.lineage.job_id,
                            model_name=event.model_name,
                            version=event.version,
                        )
                        .on_conflict_do_nothing()
                    )
            case _:
                catalog.apply(session, event)
                for table in (trainings, conversions, benchmarks, deployments):
                    table.apply(session, event, seq)
        if isinstance(event, _RESULTS):
            _mark_due(session, self._touched(session, event), seq, event)

    def _touched(self, session: Session, event: Event) -> set[tuple[str, int]]:
        """The model versions whose report ``event`` (already folded) changes."""
        match event:
            case TrainingCompleted() | TrainingFailed() | TrainingCancelled():
                return _lineage_versions(session, event.job_id)
            case DeploymentReady() | DeploymentDegraded() | DeploymentRetired():
                return served_versions(deployments.get(session, event.deployment))
            case DeploymentFailed():
                state = deployments.get(session, event.deployment)
                return {(event.model_name, event.version)} | served_versions(state)
        name, version = getattr(event, "model_name", ""), getattr(event, "version", None)
        return {(str(name), int(version))} if name and version is not None else set()


projection = ReporterProjection()


def db_path(settings: Settings) -> Path:
    """Where the reporter keeps its projection."""
    return settings.home_path / "reporter.sqlite"


# -- queries ----------------------------------------------------------------------------------


class Due(msgspec.Struct, frozen=True, kw_only=True):
    """A report to regenerate: the version, and the newest event it must reflect."""

    model_name: str
    version: int
    due_seq: int
    cause: str
    causation_id: str
    correlation_id: str


def due_reports(session: Session) -> list[Due]:
    """Versions whose newest result is past their newest report, newest result first (fresh
    results are reported before an old backlog)."""
    d = report_due.c
    query = (
        select(d.model_name, d.version, d.due_seq, d.cause, d.causation_id, d.correlation_id)
        .select_from(
            report_due.outerjoin(
                reports,
                (reports.c.model_name == report_due.c.model_name)
                & (reports.c.version == report_due.c.version),
            )
        )
        .where((reports.c.last_seq.is_(None)) | (reports.c.last_seq < report_due.c.due_seq))
        .order_by(report_due.c.due_seq.desc())
    )
    return [
        Due(model_name=n, version=v, due_seq=q, cause=c, causation_id=k, correlation_id=r)
        for n, v, q, c, k, r in session.execute(query).all()
    ]


def latest_report(session: Session, model_name: str, version: int) -> ReportGenerated | None:
    """The newest report of a version (None: none generated yet)."""
    return report_store.latest(session, model_name, version)
