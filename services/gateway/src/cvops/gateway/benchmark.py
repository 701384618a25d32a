"""Benchmarks: measure every engine of a model version and recommend one under the SLA.

Rules (engines, batch sizes, concurrency, SLA), the ``benchmarks`` and ``benchmark_rows``
tables with their fold and reads, the use cases and the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, get, post
from sqlalchemy import Column, Integer, String, Table, Text, select, update
from sqlalchemy.dialects.sqlite import insert
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
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
)
from cvops.contracts.identity import Permission
from cvops.gateway import conversion as conversions
from cvops.gateway.auth import AuthRequest, Principal, allow
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.catalog.rules import dataset_named
from cvops.gateway.checks import at_least_one, positive
from cvops.gateway.core import (
    Fold,
    Gateway,
    as_json,
    correlation_id,
    metadata,
    new_job_id,
    parse_dt,
    parse_optional_dt,
    provide,
    request_fields,
)
from cvops.gateway.errors import Invalid, NotFound
from cvops.gateway.openapi import refusals

# -- rules -------------------------------------------------------------------------------------


def _sizes(values: list[int], what: str, limit: int) -> list[int]:
    if not values:
        raise Invalid(f"at least one {what} is needed")
    bad = [v for v in values if not 1 <= v <= limit]
    if bad:
        raise Invalid(f"{what} must be within 1..{limit}, got {bad}")
    return sorted(set(values))


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
    if version is None:
        raise NotFound(f"model {body.model_name!r} has no version {body.version}")
    engines = list(dict.fromkeys(e.strip() for e in body.engines))
    if any(not e for e in engines):
        raise Invalid("engine names must not be empty")
    batch_sizes = _sizes(body.batch_sizes, "batch size", 4096)
    concurrency = _sizes(body.concurrency, "concurrency", 1024)
    positive(body.p95_ms, "p95_ms")
    positive(body.max_accuracy_drop, "max_accuracy_drop", allow_zero=True)
    positive(body.time_cap_s, "time_cap_s")
    at_least_one(body.min_requests, "min_requests")
    at_least_one(body.validation_images, "validation_images")
    dataset_named(body.dataset, body.dataset_version, dataset)
    if body.conversion_job is not None:
        if conversion is None:
            raise Invalid(f"unknown conversion job {body.conversion_job!r}")
        if conversion != (body.model_name, body.version):
            model, v = conversion
            raise Invalid(f"conversion job {body.conversion_job} converted {model}:{v}")
    return [
        BenchmarkRequested(
            **stamp.envelope(f"benchmark/{job_id}"),
            job_id=job_id,
            model_name=body.model_name,
            version=body.version,
            engines=engines,
            batch_sizes=batch_sizes,
            concurrency=concurrency,
            p95_ms=body.p95_ms,
            max_accuracy_drop=body.max_accuracy_drop,
            time_cap_s=body.time_cap_s,
            min_requests=body.min_requests,
            dataset=body.dataset,
            dataset_version=body.dataset_version,
            validation_images=body.validation_images,
            conversion_job=body.conversion_job,
        )
    ]


# -- projection --------------------------------------------------------------------------------

# One row per benchmark job and one per measured cell.
benchmarks = Table(
    "benchmarks",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("correlation_id", String, nullable=False),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("requested_by", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", String),
    Column("host", String),
    Column("planned", Text, nullable=False, default="[]"),
    Column("unavailable", Text, nullable=False, default="{}"),
    Column("recommendation", Text),
    Column("request", Text, nullable=False),
    Column("created_at", String, nullable=False),
    Column("finished_at", String),
)

# ``body`` is a BenchmarkRow as JSON; the key is the row's cell.
benchmark_rows = Table(
    "benchmark_rows",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("engine", String, primary_key=True),
    Column("precision", String, primary_key=True),
    Column("artifact", String, primary_key=True),
    Column("batch_size", Integer, primary_key=True),
    Column("concurrency", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("body", Text, nullable=False),
)


def _benchmark_open(job_id: str) -> Any:
    return (benchmarks.c.job_id == job_id) & benchmarks.c.status.in_(("requested", "running"))


def fold_benchmark(session: Session, event: Event, seq: int, at: str) -> None:
    """Benchmark jobs, their measured rows and the recommendation."""
    match event:
        case BenchmarkRequested():
            session.execute(
                insert(benchmarks)
                .values(
                    job_id=event.job_id,
                    correlation_id=event.correlation_id,
                    model_name=event.model_name,
                    version=event.version,
                    requested_by=event.actor,
                    status="requested",
                    planned="[]",
                    unavailable="{}",
                    request=request_fields(event, CreateBenchmark),
                    created_at=at,
                )
                .on_conflict_do_nothing()
            )
        case BenchmarkStarted():
            session.execute(
                update(benchmarks)
                .where(_benchmark_open(event.job_id))
                .values(
                    status="running",
                    host=event.host,
                    planned=as_json(event.targets),
                    unavailable=as_json(event.unavailable),
                )
            )
        case BenchmarkRowMeasured(row=row):
            session.execute(
                insert(benchmark_rows)
                .values(
                    job_id=event.job_id,
                    engine=row.engine,
                    precision=row.precision,
                    artifact=row.artifact,
                    batch_size=row.batch_size,
                    concurrency=row.concurrency,
                    seq=seq,
                    body=as_json(row),
                )
                .on_conflict_do_nothing()
            )
        case BenchmarkCompleted():
            recommendation = BenchmarkRecommendation(
                met_sla=event.met_sla,
                reason=event.reason,
                pick=event.pick,
                closest=event.closest,
                pareto=list(event.pareto),
                batcher=event.batcher,
                reference_accuracy=event.reference_accuracy,
                p95_ms=event.p95_ms,
                max_accuracy_drop=event.max_accuracy_drop,
                host=dict(event.host),
            )
            session.execute(
                update(benchmarks)
                .where(_benchmark_open(event.job_id))
                .values(
                    status="completed",
                    recommendation=as_json(recommendation),
                    unavailable=as_json(event.unavailable),
                    finished_at=at,
                )
            )
        case BenchmarkFailed(reason=why):
            session.execute(
                update(benchmarks)
                .where(_benchmark_open(event.job_id))
                .values(status="failed", reason=why, finished_at=at)
            )
        case _:
            pass


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"benchmark": fold_benchmark}


def get_benchmark(s: Session, job_id: str) -> BenchmarkView | None:
    row = s.execute(select(benchmarks).where(benchmarks.c.job_id == job_id)).first()
    if row is None:
        return None
    rows = s.execute(
        select(benchmark_rows.c.body)
        .where(benchmark_rows.c.job_id == job_id)
        .order_by(benchmark_rows.c.seq)
    ).scalars()
    recommendation = (
        msgspec.json.decode(row.recommendation, type=BenchmarkRecommendation)
        if row.recommendation
        else None
    )
    return BenchmarkView(
        job_id=row.job_id,
        correlation_id=row.correlation_id,
        model_name=row.model_name,
        version=row.version,
        status=row.status,
        requested_by=row.requested_by,
        created_at=parse_dt(row.created_at),
        finished_at=parse_optional_dt(row.finished_at),
        request=msgspec.json.decode(row.request, type=CreateBenchmark),
        reason=row.reason,
        host=row.host,
        planned=msgspec.json.decode(row.planned),
        unavailable=msgspec.json.decode(row.unavailable),
        rows=[msgspec.json.decode(b, type=BenchmarkRow) for b in rows],
        recommendation=recommendation,
    )


# -- use cases ---------------------------------------------------------------------------------


@dataclass
class BenchmarkService:
    """Benchmarks: the benchmarker runs them; the gateway requests and shows them."""

    gateway: Gateway

    async def benchmark(
        self, who: Principal, body: CreateBenchmark, correlation_id: str
    ) -> JobCreated:
        job_id = new_job_id("bench")
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
        return JobCreated(job_id=job_id, kind="benchmark", correlation_id=correlation_id)

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

    @get("/{job_id:str}", responses=refusals(404))
    async def show_benchmark(self, job_id: str, service: BenchmarkService) -> BenchmarkView:
        """A benchmark: the measured rows and the recommendation."""
        return service.result(job_id)
