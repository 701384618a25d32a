"""Training in the projection: each job, its generations and its trials. Tables, folds, reads.

The domain's ``evolve`` folds a job (kept as JSON in ``jobs.state``); the columns of the three
tables are read off that state, so the rules of the fold (a trial's first end wins, a job's end
is final, a trial's progress ordered by attempt) are the domain's, and applying an event again
changes nothing. JSON columns hold contract structs (request, plan, front, metrics).
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
from sqlalchemy import Boolean, Column, Float, Integer, String, Table, Text, func, select
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
    UploadStatus,
)
from cvops.contracts.training import (
    GenerationCompleted,
    GenerationStarted,
    TrainingPlan,
    TrialMetrics,
    TrialSummary,
)
from cvops.domain.training import (
    TERMINAL_JOB,
    TERMINAL_TRIAL,
    GenerationState,
    JobState,
    TrialState,
    evolve,
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
    Column("state", Text, nullable=False),  # the domain's JobState as JSON
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


_decode_state = msgspec.json.Decoder(JobState).decode


def load_state(session: Session, job_id: str) -> JobState | None:
    """A job's domain state, or None when no request of that id was seen."""
    state = session.execute(select(jobs.c.state).where(jobs.c.job_id == job_id)).scalar()
    return _decode_state(state) if state else None


def fold_job(session: Session, event: Event, seq: int, at: str) -> None:
    """A job, its generations and its trials from ``training.*`` and ``trial.*`` events,
    folded by the domain's ``evolve``; the rows are the state's columns."""
    job_id = str(getattr(event, "job_id", ""))
    state = evolve(load_state(session, job_id), event)
    if state is None or state.request is None:
        return
    req = state.request
    row: dict[str, Any] = {
        "status": state.status,
        "reason": state.reason or None,
        "cancel_requested": state.cancel_requested,
        "finished_at": state.finished_at.isoformat() if state.finished_at else None,
        "trials_total": state.plan.trials if state.plan else None,
        "plan": as_json(state.plan) if state.plan else None,
        "front": as_json(state.front),
        "registered": as_json(state.registered),
        "model_name": state.model_name,
        "state": as_json(state),
    }
    session.execute(
        insert(jobs)
        .values(
            job_id=job_id,
            correlation_id=req.correlation_id,
            owner=req.actor,
            role=req.role,
            job_type=req.job_type,
            arch=req.arch,
            dataset=req.dataset,
            device=req.device,
            created_at=req.occurred_at.isoformat(),
            request=request_fields(req, CreateJob),
            **row,
        )
        .on_conflict_do_update(index_elements=["job_id"], set_=row)
    )
    if isinstance(event, GenerationStarted | GenerationCompleted):
        gen = state.generation_state(event.generation)
        if gen is not None:
            _generation_row(session, job_id, gen)
    touched: list[str] = []
    if isinstance(event, GenerationStarted):
        touched = [t.trial_id for t in event.trials]
    elif event.context == "trial":
        touched = [str(getattr(event, "trial_id", ""))]
    for trial_id in touched:
        if trial_id in state.trials:
            _trial_row(session, job_id, state.trials[trial_id])


def _generation_row(session: Session, job_id: str, gen: GenerationState) -> None:
    row: dict[str, Any] = {
        "trial_ids": as_json(gen.trial_ids),
        "completed": gen.completed,
        "trials_completed": gen.trials_completed,
        "trials_failed": gen.trials_failed,
        "trials_pruned": gen.trials_pruned,
        "front": as_json(gen.front),
        "best_accuracy": gen.best_accuracy,
    }
    session.execute(
        insert(job_generations)
        .values(job_id=job_id, generation=gen.generation, **row)
        .on_conflict_do_update(index_elements=["job_id", "generation"], set_=row)
    )


def _trial_row(session: Session, job_id: str, t: TrialState) -> None:
    row: dict[str, Any] = {
        "generation": t.generation,
        "idx": t.index,
        "status": t.status,
        "hyperparameters": as_json(t.hyperparameters),
        "parents": as_json(t.parents),
        "attempt": t.attempt,
        "host": t.host,
        "device": t.device,
        "parameters": t.parameters,
        "epoch": t.epoch,
        "epochs": t.epochs,
        "train_loss": t.train_loss,
        "val_accuracy": t.val_accuracy,
        "metrics": as_json(t.metrics) if t.metrics else None,
        "reason": t.reason or None,
    }
    session.execute(
        insert(job_trials)
        .values(trial_id=t.trial_id, job_id=job_id, **row)
        .on_conflict_do_update(index_elements=["trial_id"], set_=row)
    )


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"training": fold_job, "trial": fold_job}


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
    return load_state(s, job_id)


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
                status=cast(UploadStatus, r.status) if r is not None else "pending",
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
