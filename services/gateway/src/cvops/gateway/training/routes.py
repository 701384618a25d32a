"""Training routes: ``/jobs`` (request, list, show, cancel)."""

from __future__ import annotations

from litestar import Controller, get, post

from cvops.contracts.api import CreateJob, JobCreated, JobStatus, JobSummary, JobView
from cvops.contracts.identity import Permission
from cvops.gateway.auth import AuthRequest, allow
from cvops.gateway.core import correlation_id, provide
from cvops.gateway.openapi import refusals
from cvops.gateway.reads import CACHED
from cvops.gateway.training.service import TrainingService

train = allow(Permission.TRAIN)


class JobsController(Controller):
    path = "/jobs"
    tags = ["training"]
    guards = [allow(Permission.READ)]
    dependencies = provide("training")

    @post("/", status_code=201, guards=[train], responses=refusals(422, 429))
    async def create_job(
        self, request: AuthRequest, data: CreateJob, service: TrainingService
    ) -> JobCreated:
        """Start a training job: a genetic search (``search``) or one plain run (``single``).

        The request is checked here as far as it can be without model code (ranges, budget,
        objectives, the data set, GPU quotas for ``device`` ``cuda``); the trainer checks the
        rest and answers ``training.failed`` with the reason.

        Returns:
            201 with the job id and the correlation id whose ``/events/{id}`` feed shows the
            job's progress; 422 with the reason; 429 past a GPU quota.
        """
        return await service.create_job(request.user, data, correlation_id(request))

    @get("/", responses=refusals(422), **CACHED)
    async def list_jobs(
        self, service: TrainingService, status: JobStatus | None = None
    ) -> list[JobSummary]:
        """Training jobs, newest first (``?status=running`` to filter)."""
        return service.jobs(status)

    @get("/{job_id:str}", responses=refusals(404), **CACHED)
    async def show_job(self, job_id: str, service: TrainingService) -> JobView:
        """A job: status, request, plan, generations, trials with metrics, front, models."""
        return service.job(job_id)

    @post(
        "/{job_id:str}/cancel", status_code=202, guards=[train], responses=refusals(403, 404, 409)
    )
    async def cancel_job(
        self, request: AuthRequest, job_id: str, service: TrainingService
    ) -> JobView:
        """Ask the trainer to stop a job (your own; admins: anyone's).

        Returns:
            202 with the job (``cancel_requested``); 409 when it has ended already.
        """
        return await service.cancel_job(request.user, job_id, correlation_id(request))
