"""Training decisions: the checks of a job request that need no model code, GPU quotas, cancel.

No clock, no uuid, no I/O: state + command -> events, or a refusal. The trainer checks the
rest (hyperparameter names and limits, image size) and answers ``training.failed``.
"""

from __future__ import annotations

import math

import msgspec

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateJob, DatasetView, JobStatus
from cvops.contracts.training import (
    ARCHITECTURES,
    OBJECTIVES,
    Budget,
    ParamSpec,
    TrainingCancelRequested,
    TrainingRequested,
)
from cvops.gateway.catalog.rules import dataset_refusal
from cvops.gateway.checks import at_least_one, check_name, positive
from cvops.gateway.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded

TERMINAL_JOB: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway decides a cancel from."""

    job_id: str
    owner: str
    status: JobStatus
    cancel_requested: bool
    correlation_id: str


def check_search_space(space: dict[str, ParamSpec]) -> None:
    """Refuse categorical entries without choices and empty, inverted or open ranges."""
    for name, spec in space.items():
        where = f"search_space {name!r}"
        if spec.kind == "categorical":
            if not spec.choices:
                raise Invalid(f"{where}: categorical with no choices")
            continue
        if spec.low is None or spec.high is None:
            raise Invalid(f"{where}: a {spec.kind} range needs low and high")
        if not (math.isfinite(spec.low) and math.isfinite(spec.high)):
            raise Invalid(f"{where}: bounds must be finite numbers")
        if spec.low > spec.high:
            raise Invalid(f"{where}: inverted range (low {spec.low:g} > high {spec.high:g})")
        if spec.low == spec.high:
            raise Invalid(
                f"{where}: empty range (low = high = {spec.low:g}); "
                "fix the value in hyperparameters instead"
            )
        if spec.kind == "log_float" and spec.low <= 0:
            raise Invalid(f"{where}: a log range needs low > 0, got {spec.low:g}")
        if spec.kind == "int" and (spec.low != int(spec.low) or spec.high != int(spec.high)):
            raise Invalid(f"{where}: an int range needs whole-number bounds")


def resolve_budget(budget: Budget) -> Budget:
    """Refuse a zero or contradictory budget; fill the missing factor of ``trials``.

    ``trials`` with one of ``population``/``generations`` gets the other (it must divide).
    """
    at_least_one(budget.trials, "budget trials")
    at_least_one(budget.population, "budget population")
    at_least_one(budget.generations, "budget generations")
    trials, population, generations = budget.trials, budget.population, budget.generations
    if trials is None or (population is None and generations is None):
        return budget
    if population is not None and generations is not None:
        if population * generations != trials:
            raise Invalid(
                f"budget of {trials} trials contradicts population {population} x generations "
                f"{generations} = {population * generations}; give one or the other"
            )
        return budget
    given, name = (
        (population, "population") if population is not None else (generations, "generations")
    )
    assert given is not None
    if trials % given:
        raise Invalid(f"budget of {trials} trials is not a multiple of the {name} {given}")
    other = trials // given
    if population is not None:
        return Budget(trials=trials, population=population, generations=other)
    return Budget(trials=trials, population=other, generations=given)


def check_objectives(body: CreateJob) -> list[str]:
    """The objectives without repeats; refused when empty, unknown or without accuracy."""
    objectives = list(dict.fromkeys(body.objectives))
    if not objectives:
        raise Invalid(f"at least one objective is needed ({', '.join(OBJECTIVES)})")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise Invalid(f"unknown objective {unknown[0]!r}; objectives: {', '.join(OBJECTIVES)}")
    if "accuracy" not in objectives:
        raise Invalid("objectives must include accuracy")
    if body.mode == "weighted":
        extra = sorted(set(body.weights) - set(objectives))
        if extra:
            raise Invalid(f"weights name objectives that are not searched: {', '.join(extra)}")
        for name, weight in body.weights.items():
            positive(weight, f"weight of {name}", allow_zero=True)
    elif body.weights:
        raise Invalid("weights need mode 'weighted'")
    return objectives


def request_training(
    body: CreateJob,
    *,
    job_id: str,
    role: str,
    dataset: DatasetView | None,
    dataset_rejection: str | None,
    stamp: Stamp,
) -> list[Event]:
    """A training job request, after the checks that need no model code.

    The trainer checks the rest (hyperparameter names and limits, image size) and answers
    ``training.failed`` with the reason.
    """
    check_name(body.arch, "architecture")
    if body.arch not in ARCHITECTURES:
        raise Invalid(
            f"unknown architecture {body.arch!r}; architectures: {', '.join(ARCHITECTURES)}"
        )
    if body.model_name is not None:
        check_name(body.model_name, "model name")
    if dataset is None:
        raise Invalid(dataset_refusal(body.dataset, body.dataset_version, dataset_rejection))
    if body.job_type == "single":
        if body.search_space:
            raise Invalid("a single training run takes hyperparameters, not a search_space")
        budget = Budget(trials=1, population=1, generations=1)
    else:
        budget = resolve_budget(body.budget)
        check_search_space(body.search_space)
    objectives = check_objectives(body)
    for name, value in msgspec.structs.asdict(body.constraints).items():
        positive(value, f"constraint {name}")
    at_least_one(body.epochs, "epochs")
    at_least_one(body.image_size, "image_size")
    at_least_one(body.max_batches_per_epoch, "max_batches_per_epoch")
    if body.register_limit < 0:
        raise Invalid(f"register_limit must not be negative, got {body.register_limit}")
    if body.seed < 0:
        raise Invalid(f"seed must not be negative, got {body.seed}")
    if not body.target_engine.strip():
        raise Invalid("target_engine must not be empty")
    return [
        TrainingRequested(
            **stamp.envelope(f"training/{job_id}"),
            job_id=job_id,
            dataset=body.dataset,
            arch=body.arch,
            dataset_version=body.dataset_version,
            job_type=body.job_type,
            search_space=body.search_space,
            hyperparameters=body.hyperparameters,
            budget=budget,
            objectives=objectives,  # type: ignore[arg-type]
            mode=body.mode,
            weights=body.weights,
            constraints=body.constraints,
            seed=body.seed,
            image_size=body.image_size,
            epochs=body.epochs,
            target_engine=body.target_engine,
            device=body.device,
            model_name=body.model_name,
            register_limit=body.register_limit,
            role=role,
            max_batches_per_epoch=body.max_batches_per_epoch,
        )
    ]


def check_gpu_quota(
    device: str,
    *,
    username: str,
    role: str,
    user_running: int,
    role_running: int,
    per_user: int,
    per_role: int,
) -> None:
    """Refuse a ``cuda`` job past the per-user or per-role limit (0: no limit)."""
    if device != "cuda":
        return
    hint = "wait for one to finish, cancel one (cvops jobs cancel) or ask for device cpu/auto"
    if per_user and user_running >= per_user:
        raise QuotaExceeded(
            f"GPU quota: {username} has {user_running} GPU job(s) running, the limit per user "
            f"is {per_user}; {hint}"
        )
    if per_role and role_running >= per_role:
        raise QuotaExceeded(
            f"GPU quota: role {role} has {role_running} GPU job(s) running, the limit per role "
            f"is {per_role}; {hint}"
        )


def cancel_training(
    job: JobState | None, *, username: str, is_admin: bool, stamp: Stamp
) -> list[Event]:
    """Ask the trainer to stop a job (yours, or anyone's for an admin); twice is a no-op.

    The request carries the job's correlation id, so the job's event feed shows it.
    """
    if job is None:
        raise NotFound("no such job")
    if job.owner != username and not is_admin:
        raise Forbidden(f"job {job.job_id} belongs to {job.owner}; only they or an admin cancel it")
    if job.status in TERMINAL_JOB:
        raise Conflict(f"job {job.job_id} has already {job.status}")
    if job.cancel_requested:
        return []
    job_stamp = msgspec.structs.replace(stamp, correlation_id=job.correlation_id)
    return [
        TrainingCancelRequested(
            **job_stamp.envelope(f"cancel/{job.job_id}"),
            job_id=job.job_id,
            reason=f"cancelled by {username}",
        )
    ]
