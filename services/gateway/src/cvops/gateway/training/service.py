"""Training use cases: request a job (checked, GPU quotas), read jobs, cancel one."""

from __future__ import annotations

from dataclasses import dataclass

from cvops.contracts.api import CreateJob, JobCreated, JobStatus, JobSummary, JobView
from cvops.gateway.auth import Principal
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.core import Gateway, new_job_id
from cvops.gateway.errors import NotFound
from cvops.gateway.idempotency import replayed
from cvops.gateway.training import projection as views
from cvops.gateway.training import rules


@dataclass
class TrainingService:
    """Training jobs: the trainer runs them; the gateway requests, shows and cancels them."""

    gateway: Gateway

    async def create_job(self, who: Principal, body: CreateJob, correlation_id: str) -> JobCreated:
        """Check the request and the GPU quotas, then append ``training.requested`` (a
        keyed request's retry answers the job its first attempt requested)."""
        job_id = new_job_id("job", correlation_id)
        created = JobCreated(job_id=job_id, kind="training", correlation_id=correlation_id)
        if replayed(self.gateway, correlation_id):
            return created
        with self.gateway.session() as s:
            dataset = catalog.get_dataset(s, body.dataset, body.dataset_version)
            rejection = catalog.dataset_rejection(s, body.dataset) if dataset is None else None
            user_running = views.running_gpu_jobs(s, owner=who.username)
            role_running = views.running_gpu_jobs(s, role=who.role)
        events = rules.request_training(
            body,
            job_id=job_id,
            role=who.role,
            dataset=dataset,
            dataset_rejection=rejection,
            stamp=self.gateway.stamp(who.username, correlation_id),
        )
        settings = self.gateway.settings
        rules.check_gpu_quota(
            body.device,
            username=who.username,
            role=who.role,
            user_running=user_running,
            role_running=role_running,
            per_user=settings.gpu_trials_per_user,
            per_role=settings.gpu_trials_per_role,
        )
        await self.gateway.write(events)
        return created

    def jobs(self, status: JobStatus | None) -> list[JobSummary]:
        with self.gateway.session() as s:
            return views.list_jobs(s, status)

    def job(self, job_id: str) -> JobView:
        with self.gateway.session() as s:
            found = views.get_job(s, job_id)
        if found is None:
            raise NotFound(f"no job {job_id!r}")
        return found

    async def cancel_job(self, who: Principal, job_id: str, correlation_id: str) -> JobView:
        if replayed(self.gateway, correlation_id):
            return self.job(job_id)
        with self.gateway.session() as s:
            state = views.job_state(s, job_id)
        events = rules.cancel_training(
            state,
            username=who.username,
            is_admin=who.role == "admin",
            stamp=self.gateway.stamp(who.username, correlation_id),
        )
        await self.gateway.write(events)
        return self.job(job_id)
