"""Training decisions of the gateway: a job request (the domain's checks, the data set from the
catalog) and GPU quotas; cancel is the domain's.

No clock, no uuid, no I/O: state + command -> events, or a refusal. The trainer checks the
rest (hyperparameter names and limits, image size) and answers ``training.failed``.
"""

from __future__ import annotations

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateJob, DatasetView
from cvops.contracts.training import TrainingRequested
from cvops.domain import training as domain
from cvops.domain.training import cancel_training
from cvops.gateway.catalog.rules import dataset_refusal
from cvops.gateway.errors import QuotaExceeded

__all__ = ["cancel_training", "check_gpu_quota", "request_training"]


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
    request = TrainingRequested(
        **stamp.envelope(f"training/{job_id}"),
        job_id=job_id,
        dataset=body.dataset,
        arch=body.arch,
        dataset_version=body.dataset_version,
        job_type=body.job_type,
        search_space=body.search_space,
        hyperparameters=body.hyperparameters,
        budget=body.budget,
        objectives=body.objectives,  # type: ignore[arg-type]
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
    refusal = (
        dataset_refusal(body.dataset, body.dataset_version, dataset_rejection)
        if dataset is None
        else None
    )
    return domain.request_training(request, dataset_refusal=refusal)


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
