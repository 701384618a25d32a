"""Benchmarks: measure every engine of a model version and recommend one under the SLA.

The rules and the job's fold are the domain's (``cvops.domain.benchmark``); here: the
``benchmarks`` aggregate table (with its ``benchmark_rows``) they fold into, its reads as API
bodies, the use cases and the routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, get, post
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.api import (
    BenchmarkRecommendation,
    BenchmarkView,
    CreateBenchmark,
    DatasetView,
    JobCreated,
    ModelVersionView,
)
from cvops.contracts.conversion import (
    BenchmarkCompleted,
)
from cvops.contracts.identity import Permission
from cvops.core.jobs import benchmark_jobs_table
from cvops.domain import benchmark as rules
from cvops.gateway import conversion as conversions
from cvops.gateway.auth import AuthRequest, Principal, allow
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.catalog.rules import dataset_named
from cvops.gateway.core import (
    Fold,
    Gateway,
    correlation_id,
    job_fields,
    metadata,
    new_job_id,
    provide,
)
from cvops.gateway.errors import NotFound
from cvops.gateway.idempotency import replayed
from cvops.gateway.openapi import refusals
from cvops.gateway.reads import CACHED

# -- rules -------------------------------------------------------------------------------------


def request_benchmark(
    body: CreateBenchmark,
    *,
    job_id: str,
    version: ModelVersionView | None,
    dataset: DatasetView | None,
    conversion: tuple[str, int] | None,
    stamp: Stamp,
) -> list[Event]:
    """Measure the engines of a model version and pick one under the SLA.

    ``conversion`` is the (model, version) of ``body.conversion_job`` when it exists.
    """
    rules.check_model(body.model_name, body.version, version is not None)
    event = rules.request(body, job_id=job_id, converted=conversion, stamp=stamp)
    dataset_named(body.dataset, body.dataset_version, dataset)
    return [event]


# -- projection --------------------------------------------------------------------------------


# One aggregate per benchmark job, folded by the domain, and one row per measured cell.
benchmarks = benchmark_jobs_table(metadata)


def fold_benchmark(session: Session, event: Event, seq: int, at: str) -> None:
    """Benchmark jobs, their measured rows and the recommendation."""
    benchmarks.apply(session, event, seq)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"benchmark": fold_benchmark}


def _recommendation(done: BenchmarkCompleted) -> BenchmarkRecommendation:
    return BenchmarkRecommendation(
        met_sla=done.met_sla,
        reason=done.reason,
        pick=done.pick,
        closest=done.closest,
        pareto=list(done.pareto),
        batcher=done.batcher,
        reference_accuracy=done.reference_accuracy,
        p95_ms=done.p95_ms,
        max_accuracy_drop=done.max_accuracy_drop,
        host=dict(done.host),
    )


def benchmark_view(state: rules.BenchmarkState) -> BenchmarkView:
    """The API body of a benchmark job's state."""
    return BenchmarkView(
        **job_fields(state, CreateBenchmark),
        planned=list(state.planned),
        unavailable=dict(state.unavailable),
        rows=list(state.rows),
        recommendation=_recommendation(state.result) if state.result else None,
    )


def get_benchmark(s: Session, job_id: str) -> BenchmarkView | None:
    state = benchmarks.get(s, job_id)
    return benchmark_view(state) if state is not None else None


# -- use cases ---------------------------------------------------------------------------------


@dataclass
class BenchmarkService:
    """Benchmarks: the benchmarker runs them; the gateway requests and shows them."""

    gateway: Gateway

    async def benchmark(
        self, who: Principal, body: CreateBenchmark, correlation_id: str
    ) -> JobCreated:
        job_id = new_job_id("bench", correlation_id)
        created = JobCreated(job_id=job_id, kind="benchmark", correlation_id=correlation_id)
        if replayed(self.gateway, correlation_id):
            return created
        with self.gateway.session() as s:
            version = catalog.get_version(s, body.model_name, body.version)
            dataset = (
                catalog.get_dataset(s, body.dataset, body.dataset_version) if body.dataset else None
            )
            conversion = (
                conversions.get_conversion(s, body.conversion_job) if body.conversion_job else None
            )
        events = request_benchmark(
            body,
            job_id=job_id,
            version=version,
            dataset=dataset,
            conversion=(conversion.model_name, conversion.version) if conversion else None,
            stamp=self.gateway.stamp(who.username, correlation_id),
        )
        await self.gateway.write(events)
        return created

    def results(self) -> list[BenchmarkView]:
        """Every benchmark, newest first (the web UI's list)."""
        with self.gateway.session() as s:
            found = [benchmark_view(state) for state in benchmarks.states(s)]
        return sorted(found, key=lambda b: (b.created_at, b.job_id), reverse=True)

    def result(self, job_id: str) -> BenchmarkView:
        with self.gateway.session() as s:
            found = get_benchmark(s, job_id)
        if found is None:
            raise NotFound(f"no benchmark {job_id!r}")
        return found


# -- routes ------------------------------------------------------------------------------------


class BenchmarksController(Controller):
    path = "/benchmarks"
    tags = ["conversions"]  # documented with the conversions whose engines they measure
    guards = [allow(Permission.READ)]
    dependencies = provide("benchmark")

    @post("/", status_code=201, guards=[allow(Permission.CONVERT)], responses=refusals(404, 422))
    async def create_benchmark(
        self, request: AuthRequest, data: CreateBenchmark, service: BenchmarkService
    ) -> JobCreated:
        """Benchmark every engine of a model version and recommend one under the SLA."""
        return await service.benchmark(request.user, data, correlation_id(request))

    @get("/{job_id:str}", responses=refusals(404), **CACHED)
    async def show_benchmark(self, job_id: str, service: BenchmarkService) -> BenchmarkView:
        """A benchmark: the measured rows and the recommendation."""
        return service.result(job_id)
