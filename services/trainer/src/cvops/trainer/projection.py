"""The trainer's projection: jobs (the aggregate table ``cvops.core.jobs`` declares: the folded
state and a row per trial), per-epoch progress and the data sets the registry validated. The
coordinator rebuilds a job's state from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.registry import DatasetRejected, DatasetValidated
from cvops.contracts.training import TrialProgressed
from cvops.core import Settings, catalog
from cvops.core.catalog import datasets_table
from cvops.core.jobs import training_jobs_table
from cvops.domain.catalog import DatasetVersionState
from cvops.domain.training import JobState
from cvops.trainer.search import PeerProgress

metadata = MetaData()
SUBJECTS = [  # what the trainer folds (the rebuild command replays the same)
    f"{SUBJECT_PREFIX}.training.>",
    f"{SUBJECT_PREFIX}.trial.>",
    f"{SUBJECT_PREFIX}.registry.>",
]

# every job: the domain's JobState (the coordinator rebuilds from it) and a row per trial
JOBS = training_jobs_table(metadata)
jobs = JOBS.table
job_trials = JOBS.children[0].table

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


class TrainerProjection:
    """Folds training, trial and data-set events into SQLite (see ``ProjectionRunner``)."""

    name = "trainer"
    metadata = metadata
    # 1: data sets are the catalogue's aggregate table
    # 2: jobs are cvops.core.jobs' aggregate table, trials its ``job_trials``
    version = 2

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
            case _:
                if JOBS.apply(session, event, seq) and isinstance(event, TrialProgressed):
                    self._progress(session, event)

    def _progress(self, session: Session, event: TrialProgressed) -> None:
        """An epoch of a trial the job planned (a trial's first row of an epoch stands)."""
        state = JOBS.get(session, event.job_id)
        if state is None or event.trial_id not in state.trials:
            return
        session.execute(
            insert(trial_progress)
            .values(
                trial_id=event.trial_id,
                epoch=event.epoch,
                job_id=event.job_id,
                generation=event.generation,
                train_loss=event.train_loss,
                val_accuracy=event.val_accuracy,
            )
            .on_conflict_do_nothing()
        )


projection = TrainerProjection()


def db_path(settings: Settings) -> Path:
    """Where the trainer keeps its projection."""
    return settings.home_path / "trainer.sqlite"


# -- queries ------------------------------------------------------------------------------


def load_job(session: Session, job_id: str) -> JobState | None:
    """A job's folded state, or None when no request of that id was seen."""
    return JOBS.get(session, job_id)


def dataset_versions(session: Session) -> dict[str, list[DatasetVersionState]]:
    """Every validated data-set version, by name."""
    return catalog.dataset_versions(datasets, session)


def dataset_rejection_reasons(session: Session) -> dict[str, str]:
    return {r.name: r.reason for r in session.execute(select(dataset_rejections)).all()}


def peer_progress(session: Session, job_id: str, epoch: int, exclude: str) -> list[PeerProgress]:
    """Val accuracy after ``epoch`` of the job's completed trials (pruning compares to these)."""
    rows = session.execute(
        select(trial_progress.c.val_accuracy, job_trials.c.parameters)
        .join(
            job_trials,
            (job_trials.c.job_id == trial_progress.c.job_id)
            & (job_trials.c.trial_id == trial_progress.c.trial_id),
        )
        .where(
            trial_progress.c.job_id == job_id,
            trial_progress.c.epoch == epoch,
            job_trials.c.status == "completed",
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


def _summary(state: JobState) -> dict[str, Any]:
    req = state.request
    assert req is not None
    counts = state.counts()
    return {
        "job_id": state.job_id,
        "status": state.status,
        "actor": req.actor,
        "dataset": req.dataset,
        "arch": req.arch,
        "job_type": req.job_type,
        "generation": state.generations[-1].generation if state.generations else None,
        "trials_completed": counts["completed"],
        "trials_failed": counts["failed"],
        "trials_pruned": counts["pruned"],
        "cancel_requested": int(state.cancel_requested),
        "reason": state.reason,
        "requested_at": req.occurred_at.isoformat(),
    }


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every job, newest first (without the folded state)."""
    rows = [_summary(state) for state in JOBS.states(session)]
    return sorted(rows, key=lambda r: r["requested_at"], reverse=True)
