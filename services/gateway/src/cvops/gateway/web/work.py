"""Work pages: training jobs, conversions, benchmarks and deployments — lists, detail pages
whose progress is live (``live.LiveFeed``), and the forms that request them, each through its
context's use case (the same checks and refusals as the API)."""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import quote

from litestar import Controller, get, post
from litestar.response import Redirect, ServerSentEvent

from cvops.contracts.api import (
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    JobStatus,
)
from cvops.contracts.identity import Permission
from cvops.contracts.training import ARCHITECTURES
from cvops.domain.training import TERMINAL_JOB
from cvops.gateway.auth import AuthRequest, allow
from cvops.gateway.benchmark import BenchmarkService
from cvops.gateway.catalog.service import CatalogService
from cvops.gateway.conversion import ConversionService
from cvops.gateway.core import correlation_id
from cvops.gateway.deployment import DeploymentService
from cvops.gateway.errors import Refused
from cvops.gateway.training.service import TrainingService
from cvops.gateway.web.catalog import model_page
from cvops.gateway.web.forms import FormFields, checked_form, request_body
from cvops.gateway.web.live import LiveFeed
from cvops.gateway.web.render import Pages, error, ok

JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
ENDED = TERMINAL_JOB  # conversions and benchmarks end the same way
DEPLOYMENT_SETTLED = ("ready", "degraded", "failed", "retired")


def _back(fields: FormFields, default: str) -> str:
    """The page a form came from (a web UI page only), to show a refusal on."""
    back = fields.text("back")
    return back if back.startswith("/ui/") and not back.startswith("//") else default


def _name_and_version(fields: FormFields) -> dict[str, Any]:
    return {"model_name": fields.text("model_name"), "version": fields.number("version")}


class JobPages(Controller):
    path = "/ui/jobs"
    guards = [allow(Permission.READ)]

    @get("/")
    async def jobs(
        self,
        request: AuthRequest,
        pages: Pages,
        training: TrainingService,
        catalog: CatalogService,
        status: str | None = None,
    ) -> Any:
        """Training jobs, newest first (``?status=`` to filter); the training form."""
        chosen: JobStatus | None = status if status in JOB_STATUSES else None  # type: ignore[assignment]
        return pages.render(
            request,
            "jobs.html",
            jobs=training.jobs(chosen),
            chosen=chosen,
            statuses=JOB_STATUSES,
            datasets=catalog.datasets(),
            archs=ARCHITECTURES,
            nav="jobs",
        )

    @post("/", guards=[allow(Permission.TRAIN)])
    async def train(
        self, request: AuthRequest, pages: Pages, training: TrainingService
    ) -> Redirect:
        """Start a training job: a genetic search or one plain run."""
        fields = await checked_form(request)
        back = _back(fields, "/ui/jobs")
        try:
            body = request_body(
                CreateJob,
                {
                    "dataset": fields.text("dataset"),
                    "arch": fields.text("arch"),
                    "job_type": fields.text("job_type") or None,
                    "epochs": fields.number("epochs"),
                    "seed": fields.number("seed"),
                    "device": fields.text("device") or None,
                    "model_name": fields.text("model_name") or None,
                    "budget": {"trials": fields.number("trials")},
                },
            )
            created = await training.create_job(request.user, body, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, back, error(f"Training refused: {err}"))
        return pages.redirect(
            request, f"/ui/jobs/{created.job_id}", ok(f"Training job {created.job_id} requested.")
        )

    @get("/{job_id:str}")
    async def job(
        self,
        request: AuthRequest,
        job_id: str,
        pages: Pages,
        training: TrainingService,
        live: LiveFeed,
    ) -> Any:
        """A job: status, progress (live), generations, trials, front, registered models."""
        after = live.position()
        return pages.render(
            request, "job.html", job=training.job(job_id), after=after, ended=ENDED, nav="jobs"
        )

    @get("/{job_id:str}/live")
    async def job_live(
        self, job_id: str, after: int, pages: Pages, training: TrainingService, live: LiveFeed
    ) -> ServerSentEvent:
        """The job's progress, sent again on each of its events until it ends."""
        job = training.job(job_id)

        def render() -> tuple[str, bool]:
            now = training.job(job_id)
            return pages.fragment("_job.html", job=now), now.status in ENDED

        return live.stream(job.correlation_id, after, render)

    @post("/{job_id:str}/cancel", guards=[allow(Permission.TRAIN)])
    async def cancel(
        self, request: AuthRequest, job_id: str, pages: Pages, training: TrainingService
    ) -> Redirect:
        """Ask the trainer to stop a job (your own; admins: anyone's)."""
        await checked_form(request)
        where = f"/ui/jobs/{job_id}"
        try:
            await training.cancel_job(request.user, job_id, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, where, error(f"Cancel refused: {err}"))
        return pages.redirect(request, where, ok("Cancel requested."))


class ConversionPages(Controller):
    path = "/ui/conversions"
    guards = [allow(Permission.READ)]

    @get("/")
    async def conversions(
        self, request: AuthRequest, pages: Pages, conversion: ConversionService
    ) -> Any:
        """Every conversion, newest first."""
        return pages.render(
            request, "conversions.html", conversions=conversion.conversions(), nav="conversions"
        )

    @post("/", guards=[allow(Permission.CONVERT)])
    async def convert(
        self, request: AuthRequest, pages: Pages, conversion: ConversionService
    ) -> Redirect:
        """Convert a model version to the chosen engines."""
        fields = await checked_form(request)
        back = _back(fields, "/ui/conversions")
        try:
            body = request_body(
                CreateConversion,
                {
                    **_name_and_version(fields),
                    "targets": fields.texts("targets") or None,
                    "dataset": fields.text("dataset") or None,
                    "max_accuracy_drop": fields.decimal("max_accuracy_drop"),
                },
            )
            created = await conversion.convert(request.user, body, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, back, error(f"Conversion refused: {err}"))
        return pages.redirect(
            request,
            f"/ui/conversions/{created.job_id}",
            ok(f"Conversion {created.job_id} requested."),
        )

    @get("/{job_id:str}")
    async def show(
        self,
        request: AuthRequest,
        job_id: str,
        pages: Pages,
        conversion: ConversionService,
        live: LiveFeed,
    ) -> Any:
        """A conversion: each target produced (with parity), rejected (why) or unavailable."""
        after = live.position()
        found = conversion.conversion(job_id)
        return pages.render(
            request, "conversion.html", c=found, after=after, ended=ENDED, nav="conversions"
        )

    @get("/{job_id:str}/live")
    async def live(
        self, job_id: str, after: int, pages: Pages, conversion: ConversionService, live: LiveFeed
    ) -> ServerSentEvent:
        """The conversion's targets, sent again on each of its events until it ends."""
        found = conversion.conversion(job_id)

        def render() -> tuple[str, bool]:
            now = conversion.conversion(job_id)
            return pages.fragment("_conversion.html", c=now), now.status in ENDED

        return live.stream(found.correlation_id, after, render)


class BenchmarkPages(Controller):
    path = "/ui/benchmarks"
    guards = [allow(Permission.READ)]

    @get("/")
    async def benchmarks(
        self, request: AuthRequest, pages: Pages, benchmark: BenchmarkService
    ) -> Any:
        """Every benchmark, newest first."""
        return pages.render(
            request, "benchmarks.html", benchmarks=benchmark.results(), nav="benchmarks"
        )

    @post("/", guards=[allow(Permission.CONVERT)])
    async def run(
        self, request: AuthRequest, pages: Pages, benchmark: BenchmarkService
    ) -> Redirect:
        """Benchmark the engines of a model version."""
        fields = await checked_form(request)
        back = _back(fields, "/ui/benchmarks")
        try:
            body = request_body(
                CreateBenchmark,
                {
                    **_name_and_version(fields),
                    "engines": fields.texts("engines") or None,
                    "dataset": fields.text("dataset") or None,
                    "time_cap_s": fields.decimal("time_cap_s"),
                },
            )
            created = await benchmark.benchmark(request.user, body, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, back, error(f"Benchmark refused: {err}"))
        return pages.redirect(
            request,
            f"/ui/benchmarks/{created.job_id}",
            ok(f"Benchmark {created.job_id} requested."),
        )

    @get("/{job_id:str}")
    async def show(
        self,
        request: AuthRequest,
        job_id: str,
        pages: Pages,
        benchmark: BenchmarkService,
        live: LiveFeed,
    ) -> Any:
        """A benchmark: the measured rows and the recommendation (live while it runs)."""
        after = live.position()
        found = benchmark.result(job_id)
        return pages.render(
            request, "benchmark.html", b=found, after=after, ended=ENDED, nav="benchmarks"
        )

    @get("/{job_id:str}/live")
    async def live(
        self, job_id: str, after: int, pages: Pages, benchmark: BenchmarkService, live: LiveFeed
    ) -> ServerSentEvent:
        """The benchmark's rows, sent again on each of its events until it ends."""
        found = benchmark.result(job_id)

        def render() -> tuple[str, bool]:
            now = benchmark.result(job_id)
            return pages.fragment("_benchmark.html", b=now), now.status in ENDED

        return live.stream(found.correlation_id, after, render)


class DeploymentPages(Controller):
    path = "/ui/deployments"
    guards = [allow(Permission.READ)]

    @get("/")
    async def deployments(
        self, request: AuthRequest, pages: Pages, deployment: DeploymentService
    ) -> Any:
        """Every deployment, retired ones included."""
        return pages.render(
            request, "deployments.html", deployments=deployment.deployments(), nav="deployments"
        )

    @post("/", guards=[allow(Permission.DEPLOY)])
    async def deploy(
        self, request: AuthRequest, pages: Pages, deployment: DeploymentService
    ) -> Redirect:
        """Serve a model version behind Triton (new, or a rolling update)."""
        fields = await checked_form(request)
        back = _back(fields, "/ui/deployments")
        try:
            body = request_body(
                CreateDeployment,
                {
                    **_name_and_version(fields),
                    "deployment": fields.text("deployment") or None,
                    "engine": fields.text("engine") or None,
                    "precision": fields.text("precision") or None,
                    "recommended": fields.flag("recommended"),
                },
            )
            found = await deployment.deploy(request.user, body, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, back, error(f"Deployment refused: {err}"))
        return pages.redirect(
            request,
            f"/ui/deployments/{quote(found.deployment, safe='')}",
            ok(f"Deployment {found.deployment} requested."),
        )

    @get("/{name:str}")
    async def show(
        self,
        request: AuthRequest,
        name: str,
        pages: Pages,
        deployment: DeploymentService,
        live: LiveFeed,
    ) -> Any:
        """A deployment: its spec, status (live while it settles) and the version it serves."""
        after = live.position()
        found = deployment.deployment(name)
        return pages.render(
            request,
            "deployment.html",
            d=found,
            after=after,
            settled=DEPLOYMENT_SETTLED,
            model_url=model_page(found.model_name, found.version),
            nav="deployments",
        )

    @get("/{name:str}/live")
    async def live(
        self, name: str, after: int, pages: Pages, deployment: DeploymentService, live: LiveFeed
    ) -> ServerSentEvent:
        """The deployment's status, sent again on each event of its last request."""
        found = deployment.deployment(name)

        def render() -> tuple[str, bool]:
            now = deployment.deployment(name)
            return pages.fragment("_deployment.html", d=now), now.status in DEPLOYMENT_SETTLED

        return live.stream(found.correlation_id, after, render)

    @post("/{name:str}/retire", guards=[allow(Permission.DEPLOY)])
    async def retire(
        self, request: AuthRequest, name: str, pages: Pages, deployment: DeploymentService
    ) -> Redirect:
        """Retire (undeploy) a deployment."""
        await checked_form(request)
        where = f"/ui/deployments/{quote(name, safe='')}"
        try:
            await deployment.retire(request.user, name, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, where, error(f"Retire refused: {err}"))
        return pages.redirect(request, where, ok(f"Deployment {name} is being retired."))
