"""The trainer's projection: jobs (their folded state), trials, per-epoch progress and the
data sets the registry validated. The coordinator rebuilds a job's state from here.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.registry import DatasetRejected, DatasetValidated
from cvops.contracts.training import GenerationStarted, TrialProgressed
from cvops.core import Settings, catalog
from cvops.core.catalog import datasets_table
from cvops.domain.catalog import DatasetVersionState
from cvops.domain.training import JobState, TrialState, evolve
from cvops.trainer.search import PeerProgress

metadata = MetaData()
SUBJECTS = [  # what the trainer folds (the rebuild command replays the same)
    f"{SUBJECT_PREFIX}.training.>",
    f"{SUBJECT_PREFIX}.trial.>",
    f"{SUBJECT_PREFIX}.registry.>",
]

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("status", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("dataset", String, nullable=False),
    Column("arch", String, nullable=False),
    Column("job_type", String, nullable=False),
    Column("generation", Integer),  # newest started generation
    Column("trials_completed", Integer, nullable=False, default=0),
    Column("trials_failed", Integer, nullable=False, default=0),
    Column("trials_pruned", Integer, nullable=False, default=0),
    Column("cancel_requested", Integer, nullable=False, default=0),
    Column("reason", Text, nullable=False, default=""),
    Column("requested_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
    Column("state", Text, nullable=False),  # the JobState as JSON
)

trials = Table(
    "trials",
    metadata,
    Column("trial_id", String, primary_key=True),
    Column("job_id", String, nullable=False, index=True),
    Column("generation", Integer, nullable=False),
    Column("index", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("starts", Integer, nullable=False),
    Column("parameters", Integer),
    Column("epoch", Integer, nullable=False),
    Column("val_accuracy", Float),
    Column("accuracy", Float),
    Column("latency_ms", Float),
    Column("size_bytes", Integer),
    Column("hyperparameters", Text, nullable=False),
    Column("reason", Text, nullable=False),
)

trial_progress = Table(
    "trial_progress",
    metadata,
    Column("trial_id", String, primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("job_id", String, nullable=False, index=True),
    Column("generation", Integer, nullable=False),
    Column("train_loss", Float, nullable=False),
    Column("val_accuracy", Float, nullable=False),
)

# the registry's validated data sets, folded by the catalogue's one rule (cvops.domain.catalog)
datasets = datasets_table(metadata)

dataset_rejections = Table(
    "dataset_rejections",
    metadata,
    Column("name", String, primary_key=True),
    Column("reason", Text, nullable=False),
)

_encode = msgspec.json.Encoder().encode
_decode_view = msgspec.json.Decoder(JobState).decode


def _iso(value: datetime) -> str:
    return value.isoformat()


class TrainerProjection:
    """Folds training, trial and data-set events into SQLite (see ``ProjectionRunner``)."""

    name = "trainer"
    metadata = metadata
    version = 1  # 1: data sets are the catalogue's aggregate table

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case DatasetValidated():
                datasets.apply(session, event)
            case DatasetRejected(dataset_name=name, reason=reason):
                session.execute(
                    insert(dataset_rejections)
                    .values(name=name, reason=reason)
                    .on_conflict_do_update(index_elements=["name"], set_={"reason": reason})
                )
            case _ if event.context in ("training", "trial"):
                self._job_event(session, event, seq)

    def _job_event(self, session: Session, event: Event, seq: int) -> None:
        job_id = str(getattr(event, "job_id", ""))
        before = load_job(session, job_id)
        view = evolve(before, event, seq)
        if view is None:
            return
        now = _iso(event.occurred_at)
        counts = view.counts()
        req = view.request
        assert req is not None
        row = {
            "status": view.status,
            "generation": view.generations[-1].generation if view.generations else None,
            "trials_completed": counts["completed"],
            "trials_failed": counts["failed"],
            "trials_pruned": counts["pruned"],
            "cancel_requested": int(view.cancel_requested),
            "reason": view.reason,
            "updated_at": now,
            "state": _encode(view).decode(),
        }
        session.execute(
            insert(jobs)
            .values(
                job_id=job_id,
                actor=req.actor,
                dataset=req.dataset,
                arch=req.arch,
                job_type=req.job_type,
                requested_at=_iso(req.occurred_at),
                **row,
            )
            .on_conflict_do_update(index_elements=["job_id"], set_=row)
        )
        touched: list[str] = []
        if isinstance(event, GenerationStarted):
            touched = [s.trial_id for s in event.trials]
        elif event.context == "trial":
            touched = [str(getattr(event, "trial_id", ""))]
        for tid in touched:
            if tid in view.trials:
                self._trial_row(session, job_id, view.trials[tid])
        if isinstance(event, TrialProgressed) and event.trial_id in view.trials:
            session.execute(
                insert(trial_progress)
                .values(
                    trial_id=event.trial_id,
                    epoch=event.epoch,
                    job_id=job_id,
                    generation=event.generation,
                    train_loss=event.train_loss,
                    val_accuracy=event.val_accuracy,
                )
                .on_conflict_do_nothing()
            )

    def _trial_row(self, session: Session, job_id: str, t: TrialState) -> None:
        m = t.metrics
        row: dict[str, Any] = {
            "status": t.status,
            "starts": t.starts,
            "parameters": t.parameters,
            "epoch": t.epoch,
            "val_accuracy": t.val_accuracy,
            "accuracy": m.accuracy if m else None,
            "latency_ms": m.latency_ms if m else None,
            "size_bytes": m.size_bytes if m else None,
            "hyperparameters": _encode(t.hyperparameters).decode(),
            "reason": t.reason,
        }
        session.execute(
            insert(trials)
            .values(
                trial_id=t.trial_id,
                job_id=job_id,
                generation=t.generation,
                index=t.index,
                **row,
            )
            .on_conflict_do_update(index_elements=["trial_id"], set_=row)
        )


projection = TrainerProjection()


def db_path(settings: Settings) -> Path:
    """Where the trainer keeps its projection."""
    return settings.home_path / "trainer.sqlite"


# -- queries ------------------------------------------------------------------------------


def load_job(session: Session, job_id: str) -> JobState | None:
    """A job's folded state, or None when no request of that id was seen."""
    state = session.execute(select(jobs.c.state).where(jobs.c.job_id == job_id)).scalar()
    return _decode_view(state) if state else None


def dataset_versions(session: Session) -> dict[str, list[DatasetVersionState]]:
    """Every validated data-set version, by name."""
    return catalog.dataset_versions(datasets, session)


def dataset_rejection_reasons(session: Session) -> dict[str, str]:
    return {r.name: r.reason for r in session.execute(select(dataset_rejections)).all()}


def peer_progress(session: Session, job_id: str, epoch: int, exclude: str) -> list[PeerProgress]:
    """Val accuracy after ``epoch`` of the job's completed trials (pruning compares to these)."""
    rows = session.execute(
        select(trial_progress.c.val_accuracy, trials.c.parameters)
        .join(trials, trials.c.trial_id == trial_progress.c.trial_id)
        .where(
            trial_progress.c.job_id == job_id,
            trial_progress.c.epoch == epoch,
            trials.c.status == "completed",
            trial_progress.c.trial_id != exclude,
        )
    ).all()
    return [PeerProgress(val_accuracy=r.val_accuracy, parameters=r.parameters or 0) for r in rows]


def job_status(session: Session, job_id: str) -> tuple[str, bool] | None:
    """(status, cancel requested) of a job — what a running trial polls."""
    row = session.execute(
        select(jobs.c.status, jobs.c.cancel_requested).where(jobs.c.job_id == job_id)
    ).first()
    return None if row is None else (row.status, bool(row.cancel_requested))


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every job, newest first (without the folded state)."""
    cols = [c for c in jobs.c if c.name != "state"]
    rows = session.execute(select(*cols).order_by(jobs.c.requested_at.desc())).all()
    return [dict(r._mapping) for r in rows]
