"""Training in the projection: each job, its generations and its trials. Tables, folds, reads.

JSON columns hold contract structs (request, plan, front, metrics) as the events carry them. A
trial's first end (completed, failed, pruned) wins and a job's end is final, so applying an
event again changes nothing.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Boolean, Column, Float, Integer, String, Table, Text, func, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.api import (
    CreateJob,
    GenerationView,
    JobSummary,
    JobView,
    RegisteredModel,
    TrialView,
)
from cvops.contracts.training import (
    GenerationCompleted,
    GenerationStarted,
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingCompleted,
    TrainingFailed,
    TrainingPlan,
    TrainingRequested,
    TrainingStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialProgressed,
    TrialPruned,
    TrialRequested,
    TrialStarted,
    TrialSummary,
)
from cvops.gateway.catalog.projection import uploads_by_id
from cvops.gateway.core import (
    Fold,
    as_json,
    metadata,
    parse_dt,
    parse_optional_dt,
    request_fields,
)
from cvops.gateway.training.rules import TERMINAL_JOB, JobState

TERMINAL_TRIAL = ("completed", "failed", "pruned")

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("correlation_id", String, nullable=False),
    Column("owner", String, nullable=False, index=True),
    Column("role", String, nullable=False),
    Column("job_type", String, nullable=False),
    Column("arch", String, nullable=False),
    Column("dataset", String, nullable=False),
    Column("device", String, nullable=False),
    Column("status", String, nullable=False, index=True),
    Column("reason", String),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", String, nullable=False),
    Column("finished_at", String),
    Column("trials_total", Integer),
    Column("request", Text, nullable=False),
    Column("plan", Text),
    Column("front", Text, nullable=False, default="[]"),
    Column("registered", Text, nullable=False, default="[]"),  # upload ids
    Column("model_name", String),
)

job_generations = Table(
    "job_generations",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("trial_ids", Text, nullable=False),
    Column("completed", Boolean, nullable=False, default=False),
    Column("trials_completed", Integer, nullable=False, default=0),
    Column("trials_failed", Integer, nullable=False, default=0),
    Column("trials_pruned", Integer, nullable=False, default=0),
    Column("front", Text, nullable=False, default="[]"),
    Column("best_accuracy", Float),
)

job_trials = Table(
    "job_trials",
    metadata,
    Column("trial_id", String, primary_key=True),
    Column("job_id", String, nullable=False, index=True),
    Column("generation", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("hyperparameters", Text, nullable=False),
    Column("parents", Text, nullable=False, default="[]"),
    Column("attempt", Integer, nullable=False, default=0),
    Column("host", String, nullable=False, default=""),
    Column("device", String, nullable=False, default=""),
    Column("parameters", Integer),
    Column("epoch", Integer, nullable=False, default=0),
    Column("epochs", Integer),
    Column("train_loss", Float),
    Column("val_accuracy", Float),
    Column("metrics", Text),
    Column("reason", String),
)


def _job(job_id: str) -> Any:
    return jobs.c.job_id == job_id


def _job_running(job_id: str) -> Any:
    return (jobs.c.job_id == job_id) & jobs.c.status.not_in(TERMINAL_JOB)


def _trial_open(trial_id: str) -> Any:
    return (job_trials.c.trial_id == trial_id) & job_trials.c.status.not_in(TERMINAL_TRIAL)


def fold_training(session: Session, event: Event, seq: int, at: str) -> None:
    """Jobs and their generations from ``training.*`` events."""
    match event:
        case TrainingRequested():
            session.execute(
                insert(jobs)
                .values(
                    job_id=event.job_id,
                    correlation_id=event.correlation_id,
                    owner=event.actor,
                    role=event.role,
                    job_type=event.job_type,
                    arch=event.arch,
                    dataset=event.dataset,
                    device=event.device,
                    status="requested",
                    cancel_requested=False,
                    created_at=at,
                    request=request_fields(event, CreateJob),
                    front="[]",
                    registered="[]",
                )
                .on_conflict_do_nothing()
            )
        case TrainingStarted(plan=plan):
            session.execute(
                update(jobs)
                .where(_job(event.job_id), jobs.c.status == "requested")
                .values(status="running", plan=as_json(plan), trials_total=plan.trials)
            )
        case GenerationStarted(generation=g, trials=specs):
            session.execute(
                insert(job_generations)
                .values(
                    job_id=event.job_id,
                    generation=g,
                    trial_ids=as_json([t.trial_id for t in specs]),
                    completed=False,
                    front="[]",
                )
                .on_conflict_do_nothing()
            )
            for spec in specs:
                session.execute(
                    insert(job_trials)
                    .values(
                        trial_id=spec.trial_id,
                        job_id=event.job_id,
                        generation=g,
                        idx=spec.index,
                        status="planned",
                        hyperparameters=as_json(spec.hyperparameters),
                        parents=as_json(spec.parents),
                    )
                    .on_conflict_do_nothing()
                )
        case GenerationCompleted(generation=g):
            session.execute(
                update(job_generations)
                .where(
                    job_generations.c.job_id == event.job_id,
                    job_generations.c.generation == g,
                    ~job_generations.c.completed,
                )
                .values(
                    completed=True,
                    trials_completed=event.completed,
                    trials_failed=event.failed,
                    trials_pruned=event.pruned,
                    front=as_json(event.front),
                    best_accuracy=event.best_accuracy,
                )
            )
        case TrainingCompleted():
            session.execute(
                update(jobs)
                .where(_job_running(event.job_id))
                .values(
                    status="completed",
                    finished_at=at,
                    front=as_json(event.front),
                    registered=as_json(event.registered_uploads),
                    model_name=event.model_name,
                )
            )
        case TrainingFailed(reason=why):
            session.execute(
                update(jobs)
                .where(_job_running(event.job_id))
                .values(status="failed", reason=why, finished_at=at)
            )
        case TrainingCancelled(reason=why):
            session.execute(
                update(jobs)
                .where(_job_running(event.job_id))
                .values(status="cancelled", reason=why or "cancelled", finished_at=at)
            )
        case TrainingCancelRequested():
            session.execute(
                update(jobs).where(_job_running(event.job_id)).values(cancel_requested=True)
            )
        case _:
            pass


def fold_trial(session: Session, event: Event, seq: int, at: str) -> None:
    """A trial's state from ``trial.*`` events; its first end (completed, failed, pruned) wins."""
    match event:
        case TrialRequested():
            session.execute(
                insert(job_trials)
                .values(
                    trial_id=event.trial_id,
                    job_id=event.job_id,
                    generation=event.generation,
                    idx=event.index,
                    status="requested",
                    hyperparameters=as_json(event.hyperparameters),
                    parents="[]",
                )
                .on_conflict_do_nothing()
            )
            session.execute(
                update(job_trials)
                .where(job_trials.c.trial_id == event.trial_id, job_trials.c.status == "planned")
                .values(status="requested")
            )
        case TrialStarted():
            # a redelivered trial starts again with a higher attempt; an older start is stale
            values: dict[str, Any] = {
                "status": "running",
                "attempt": event.attempt,
                "host": event.host,
                "device": event.device,
                "parameters": event.parameters,
                "epoch": 0,
                "train_loss": None,
                "val_accuracy": None,
            }
            if event.hyperparameters:
                values["hyperparameters"] = as_json(event.hyperparameters)
            session.execute(
                update(job_trials)
                .where(_trial_open(event.trial_id), job_trials.c.attempt < event.attempt)
                .values(**values)
            )
        case TrialProgressed():
            same_attempt = (job_trials.c.attempt == event.attempt) & (
                job_trials.c.epoch <= event.epoch
            )
            session.execute(
                update(job_trials)
                .where(
                    _trial_open(event.trial_id),
                    (job_trials.c.attempt < event.attempt) | same_attempt,
                )
                .values(
                    status="running",
                    attempt=event.attempt,
                    epoch=event.epoch,
                    epochs=event.epochs,
                    train_loss=event.train_loss,
                    val_accuracy=event.val_accuracy,
                )
            )
        case TrialCompleted(metrics=m):
            values = {
                "status": "completed",
                "metrics": as_json(m),
                "val_accuracy": m.accuracy,
                "parameters": m.parameters,
                "hyperparameters": as_json(event.hyperparameters),
            }
            if m.epochs:
                values.update(epoch=m.epochs, epochs=m.epochs)
            if event.host:
                values.update(host=event.host, device=event.device)
            session.execute(update(job_trials).where(_trial_open(event.trial_id)).values(values))
        case TrialFailed(reason=why):
            session.execute(
                update(job_trials)
                .where(_trial_open(event.trial_id))
                .values(status="failed", reason=why)
            )
        case TrialPruned(reason=why):
            session.execute(
                update(job_trials)
                .where(_trial_open(event.trial_id))
                .values(
                    status="pruned",
                    reason=why,
                    epoch=event.epoch,
                    val_accuracy=event.val_accuracy,
                )
            )
        case _:
            pass


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"training": fold_training, "trial": fold_trial}


# -- reads -------------------------------------------------------------------------------------


def _trial_counts(s: Session, job_ids: list[str]) -> dict[str, tuple[int, float | None]]:
    """Per job: trials that ended, and the best accuracy of a completed one."""
    done = func.sum(sql_case((job_trials.c.status.in_(TERMINAL_TRIAL), 1), else_=0))
    best = func.max(sql_case((job_trials.c.status == "completed", job_trials.c.val_accuracy)))
    rows = s.execute(
        select(job_trials.c.job_id, done, best)
        .where(job_trials.c.job_id.in_(job_ids))
        .group_by(job_trials.c.job_id)
    ).all()
    return {r[0]: (int(r[1] or 0), r[2]) for r in rows}


def _job_summary(row: Row, counts: dict[str, tuple[int, float | None]]) -> JobSummary:
    done, best = counts.get(row.job_id, (0, None))
    return JobSummary(
        job_id=row.job_id,
        correlation_id=row.correlation_id,
        job_type=row.job_type,
        arch=row.arch,
        dataset=row.dataset,
        owner=row.owner,
        device=row.device,
        status=row.status,
        created_at=parse_dt(row.created_at),
        finished_at=parse_optional_dt(row.finished_at),
        cancel_requested=bool(row.cancel_requested),
        trials_total=row.trials_total,
        trials_done=done,
        best_accuracy=best,
    )


def list_jobs(s: Session, status: str | None = None, limit: int = 200) -> list[JobSummary]:
    """Training jobs, newest first."""
    q = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.job_id).limit(limit)
    if status is not None:
        q = q.where(jobs.c.status == status)
    rows = s.execute(q).all()
    counts = _trial_counts(s, [r.job_id for r in rows])
    return [_job_summary(r, counts) for r in rows]


def job_state(s: Session, job_id: str) -> JobState | None:
    row = s.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
    if row is None:
        return None
    return JobState(
        job_id=row.job_id,
        owner=row.owner,
        status=row.status,
        cancel_requested=bool(row.cancel_requested),
        correlation_id=row.correlation_id,
    )


def _trial_view(r: Row) -> TrialView:
    return TrialView(
        trial_id=r.trial_id,
        generation=r.generation,
        index=r.idx,
        status=r.status,
        hyperparameters=msgspec.json.decode(r.hyperparameters),
        parents=msgspec.json.decode(r.parents),
        attempt=r.attempt,
        host=r.host,
        device=r.device,
        parameters=r.parameters,
        epoch=r.epoch,
        epochs=r.epochs,
        train_loss=r.train_loss,
        val_accuracy=r.val_accuracy,
        metrics=msgspec.json.decode(r.metrics, type=TrialMetrics) if r.metrics else None,
        reason=r.reason,
    )


def _registered(s: Session, upload_ids: list[str], model_name: str | None) -> list[RegisteredModel]:
    found = uploads_by_id(s, upload_ids)
    out = []
    for upload_id in upload_ids:
        r = found.get(upload_id)
        out.append(
            RegisteredModel(
                upload_id=upload_id,
                model_name=r.name if r is not None else (model_name or ""),
                status=r.status if r is not None else "pending",
                version=r.version if r is not None else None,
                reason=r.reason if r is not None else None,
            )
        )
    return out


def get_job(s: Session, job_id: str) -> JobView | None:
    """A job with its request, plan, generations, trials, front and registered models."""
    row = s.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
    if row is None:
        return None
    summary = _job_summary(row, _trial_counts(s, [job_id]))
    generations = [
        GenerationView(
            generation=g.generation,
            trials=msgspec.json.decode(g.trial_ids),
            completed=bool(g.completed),
            trials_completed=g.trials_completed,
            trials_failed=g.trials_failed,
            trials_pruned=g.trials_pruned,
            front=msgspec.json.decode(g.front),
            best_accuracy=g.best_accuracy,
        )
        for g in s.execute(
            select(job_generations)
            .where(job_generations.c.job_id == job_id)
            .order_by(job_generations.c.generation)
        ).all()
    ]
    trials = s.execute(
        select(job_trials)
        .where(job_trials.c.job_id == job_id)
        .order_by(job_trials.c.generation, job_trials.c.idx, job_trials.c.trial_id)
    ).all()
    return JobView(
        **msgspec.structs.asdict(summary),
        request=msgspec.json.decode(row.request, type=CreateJob),
        reason=row.reason,
        plan=msgspec.json.decode(row.plan, type=TrainingPlan) if row.plan else None,
        generations=generations,
        trials=[_trial_view(t) for t in trials],
        front=msgspec.json.decode(row.front, type=list[TrialSummary]),
        models=_registered(s, msgspec.json.decode(row.registered), row.model_name),
    )


def running_gpu_jobs(s: Session, *, owner: str | None = None, role: str | None = None) -> int:
    """Jobs that asked for ``cuda`` and have not ended, of one user or one role."""
    q = (
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.device == "cuda", jobs.c.status.not_in(TERMINAL_JOB))
    )
    if owner is not None:
        q = q.where(jobs.c.owner == owner)
    if role is not None:
        q = q.where(jobs.c.role == role)
    return int(s.execute(q).scalar_one())
