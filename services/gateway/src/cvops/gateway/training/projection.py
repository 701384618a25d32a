"""Training in the projection: each job, its generations and its trials. Tables, folds, reads.

The domain's ``evolve`` folds a job into the ``jobs`` aggregate table ``cvops.core.jobs``
declares (the state as JSON, the columns jobs are listed and counted by, and a ``job_trials``
row per trial), so the rules of the fold (a trial's first end wins, a job's end is final, a
trial's progress ordered by attempt) are the domain's, and applying an event again changes
nothing. Reads build the API bodies from that state.
"""

from __future__ import annotations

from typing import cast

import msgspec
from sqlalchemy import func, select
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
from cvops.core.jobs import training_jobs_table
from cvops.domain.training import (
    TERMINAL_JOB,
    TERMINAL_TRIAL,
    GenerationState,
    JobState,
    TrialState,
)
from cvops.gateway.catalog.projection import uploads_by_id
from cvops.gateway.core import Fold, metadata, request_fields

# One aggregate per training job (its trials inside it), folded by the domain.
JOBS = training_jobs_table(metadata)
jobs = JOBS.table
job_trials = JOBS.children[0].table

_decode_state = msgspec.json.Decoder(JobState).decode


def load_state(session: Session, job_id: str) -> JobState | None:
    """A job's domain state, or None when no request of that id was seen."""
    return JOBS.get(session, job_id)


def fold_job(session: Session, event: Event, seq: int, at: str) -> None:
    """A job, its generations and its trials from ``training.*`` and ``trial.*`` events,
    folded by the domain's ``evolve``."""
    JOBS.apply(session, event, seq)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"training": fold_job, "trial": fold_job}


# -- reads -------------------------------------------------------------------------------------


def _job_summary(state: JobState) -> JobSummary:
    req = state.request
    assert req is not None
    trials = state.trials.values()
    accuracies = [
        t.val_accuracy for t in trials if t.status == "completed" and t.val_accuracy is not None
    ]
    return JobSummary(
        job_id=state.job_id,
        correlation_id=req.correlation_id,
        job_type=req.job_type,
        arch=req.arch,
        dataset=req.dataset,
        owner=req.actor,
        device=req.device,
        status=state.status,
        created_at=req.occurred_at,
        finished_at=state.finished_at,
        cancel_requested=state.cancel_requested,
        trials_total=state.plan.trials if state.plan else None,
        trials_done=sum(1 for t in trials if t.status in TERMINAL_TRIAL),
        best_accuracy=max(accuracies, default=None),
    )


def list_jobs(s: Session, status: str | None = None, limit: int = 200) -> list[JobSummary]:
    """Training jobs, newest first."""
    q = select(jobs.c.state).order_by(jobs.c.created_at.desc(), jobs.c.job_id).limit(limit)
    if status is not None:
        q = q.where(jobs.c.status == status)
    return [_job_summary(_decode_state(state)) for state in s.execute(q).scalars()]


def job_state(s: Session, job_id: str) -> JobState | None:
    return load_state(s, job_id)


def _generation_view(g: GenerationState) -> GenerationView:
    return GenerationView(
        generation=g.generation,
        trials=list(g.trial_ids),
        completed=g.completed,
        trials_completed=g.trials_completed,
        trials_failed=g.trials_failed,
        trials_pruned=g.trials_pruned,
        front=list(g.front),
        best_accuracy=g.best_accuracy,
    )


def _trial_view(t: TrialState) -> TrialView:
    return TrialView(
        trial_id=t.trial_id,
        generation=t.generation,
        index=t.index,
        status=t.status,
        hyperparameters=dict(t.hyperparameters),
        parents=list(t.parents),
        attempt=t.attempt,
        host=t.host,
        device=t.device,
        parameters=t.parameters,
        epoch=t.epoch,
        epochs=t.epochs,
        train_loss=t.train_loss,
        val_accuracy=t.val_accuracy,
        metrics=t.metrics,
        reason=t.reason or None,
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
    state = load_state(s, job_id)
    if state is None or state.request is None:
        return None
    trials = sorted(state.trials.values(), key=lambda t: (t.generation, t.index, t.trial_id))
    return JobView(
        **msgspec.structs.asdict(_job_summary(state)),
        request=msgspec.json.decode(request_fields(state.request, CreateJob), type=CreateJob),
        reason=state.reason or None,
        plan=state.plan,
        generations=[
            _generation_view(g) for g in sorted(state.generations, key=lambda g: g.generation)
        ],
        trials=[_trial_view(t) for t in trials],
        front=list(state.front),
        models=_registered(s, list(state.registered), state.model_name),
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
