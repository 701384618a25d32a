"""Conversions: a model version converted to engines, each held to the accuracy gate.

Rules (targets, calibration, the data set to validate with), the ``conversions`` and
``conversion_targets`` tables with their fold and reads, the use cases and the routes. The
engines produced are listed per model version by the catalog.
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
    ConversionTargetView,
    ConversionView,
    CreateConversion,
    DatasetView,
    JobCreated,
    ModelVersionView,
)
from cvops.contracts.conversion import (
    CALIBRATION_METHODS,
    CONVERSION_TARGETS,
    ArtifactProduced,
    ArtifactRejected,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    TargetUnavailable,
)
from cvops.contracts.identity import Permission
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


def conversion_targets(targets: list[str]) -> list[str]:
    """Known targets without repeats; ``tensorrt`` stands for both TensorRT targets."""
    expanded: list[str] = []
    for raw in targets:
        target = raw.strip().lower()
        expanded.extend(["tensorrt-fp16", "tensorrt-int8"] if target == "tensorrt" else [target])
    unknown = [t for t in expanded if t not in CONVERSION_TARGETS]
    if unknown:
        raise Invalid(
            f"unknown target {unknown[0]!r}; targets: {', '.join(CONVERSION_TARGETS)}, tensorrt"
        )
    if not expanded:
        raise Invalid("at least one target is needed")
    return list(dict.fromkeys(expanded))


def request_conversion(
    body: CreateConversion,
    *,
    job_id: str,
    version: ModelVersionView | None,
    dataset: DatasetView | None,
    stamp: Stamp,
) -> list[Event]:
    """Convert a model version to engines, each held to the accuracy gate."""
    if version is None:
        raise NotFound(f"model {body.model_name!r} has no version {body.version}")
    targets = conversion_targets(body.targets)
    if body.calibration not in CALIBRATION_METHODS:
        raise Invalid(
            f"unknown calibration method {body.calibration!r}; "
            f"methods: {', '.join(CALIBRATION_METHODS)}"
        )
    positive(body.max_accuracy_drop, "max_accuracy_drop", allow_zero=True)
    dataset_named(body.dataset, body.dataset_version, dataset)
    if not (body.dataset or version.lineage.dataset):  # as the converter chooses
        raise Invalid(
            f"model {body.model_name}:{body.version} has no data set in its lineage (it was "
            "uploaded, not trained here): name one to validate and calibrate the engines with "
            "(dataset; cvops convert --dataset NAME)"
        )
    at_least_one(body.validation_images, "validation_images")
    if body.opset < 7:
        raise Invalid(f"opset must be at least 7, got {body.opset}")
    if body.int8_max_float_layers is not None and body.int8_max_float_layers < 0:
        raise Invalid("int8_max_float_layers must not be negative")
    return [
        ConversionRequested(
            **stamp.envelope(f"conversion/{job_id}"),
            job_id=job_id,
            model_name=body.model_name,
            version=body.version,
            targets=targets,  # type: ignore[arg-type]
            opset=body.opset,
            calibration=body.calibration,  # type: ignore[arg-type]
            max_accuracy_drop=body.max_accuracy_drop,
            dataset=body.dataset,
            dataset_version=body.dataset_version,
            validation_images=body.validation_images,
            int8_max_float_layers=body.int8_max_float_layers,
        )
    ]


# -- projection --------------------------------------------------------------------------------

# One row per conversion job and one per target (the engines produced: ``catalog``).
conversions = Table(
    "conversions",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("correlation_id", String, nullable=False),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("requested_by", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", String),
    Column("op", String),
    Column("dataset", String),
    Column("dataset_version", Integer),
    Column("host", String),
    Column("request", Text, nullable=False),
    Column("created_at", String, nullable=False),
    Column("finished_at", String),
)

# ``body`` is a ConversionTargetView as JSON; ``position`` orders the targets as requested.
conversion_targets_table = Table(
    "conversion_targets",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("target", String, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("body", Text, nullable=False),
)


def _conversion_open(job_id: str) -> Any:
    return (conversions.c.job_id == job_id) & conversions.c.status.in_(("requested", "running"))


def _target_outcome(session: Session, job_id: str, view: ConversionTargetView) -> None:
    """The first outcome of a target wins (a redelivered job re-announces the same ones)."""
    session.execute(
        insert(conversion_targets_table)
        .values(
            job_id=job_id, target=view.target, position=1000, status=view.status, body=as_json(view)
        )
        .on_conflict_do_update(
            index_elements=["job_id", "target"],
            set_={"status": view.status, "body": as_json(view)},
            where=conversion_targets_table.c.status == "pending",
        )
    )


def fold_conversion(session: Session, event: Event, seq: int, at: str) -> None:
    """Conversion jobs and each target's outcome (the catalog folds the engines produced)."""
    match event:
        case ConversionRequested():
            session.execute(
                insert(conversions)
                .values(
                    job_id=event.job_id,
                    correlation_id=event.correlation_id,
                    model_name=event.model_name,
                    version=event.version,
                    requested_by=event.actor,
                    status="requested",
                    dataset=event.dataset,
                    dataset_version=event.dataset_version,
                    request=request_fields(event, CreateConversion),
                    created_at=at,
                )
                .on_conflict_do_nothing()
            )
            for position, target in enumerate(event.targets):
                pending = ConversionTargetView(target=target, status="pending")
                session.execute(
                    insert(conversion_targets_table)
                    .values(
                        job_id=event.job_id,
                        target=target,
                        position=position,
                        status="pending",
                        body=as_json(pending),
                    )
                    .on_conflict_do_nothing()
                )
        case ConversionStarted():
            session.execute(
                update(conversions)
                .where(_conversion_open(event.job_id))
                .values(
                    status="running",
                    host=event.host,
                    dataset=event.dataset,
                    dataset_version=event.dataset_version,
                )
            )
        case ArtifactProduced():
            view = ConversionTargetView(
                target=event.target,
                status="produced",
                format=event.format,
                precision=event.precision,
                artifact=event.artifact,
                companions=list(event.companions),
                parity=event.parity,
                gate=event.gate,
                excluded_layers=list(event.excluded_layers),
            )
            _target_outcome(session, event.job_id, view)
        case ArtifactRejected():
            view = ConversionTargetView(
                target=event.target,
                status="rejected",
                reason=event.reason,
                parity=event.parity,
                gate=event.gate,
                excluded_layers=list(event.excluded_layers),
                attempts=list(event.attempts),
            )
            _target_outcome(session, event.job_id, view)
        case TargetUnavailable():
            view = ConversionTargetView(
                target=event.target, status="unavailable", reason=event.reason
            )
            _target_outcome(session, event.job_id, view)
        case ConversionCompleted():
            session.execute(
                update(conversions)
                .where(_conversion_open(event.job_id))
                .values(status="completed", finished_at=at)
            )
        case ConversionFailed():
            session.execute(
                update(conversions)
                .where(_conversion_open(event.job_id))
                .values(status="failed", reason=event.reason, op=event.op, finished_at=at)
            )
        case _:
            pass


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"conversion": fold_conversion}


def get_conversion(s: Session, job_id: str) -> ConversionView | None:
    row = s.execute(select(conversions).where(conversions.c.job_id == job_id)).first()
    if row is None:
        return None
    targets = s.execute(
        select(conversion_targets_table.c.body)
        .where(conversion_targets_table.c.job_id == job_id)
        .order_by(conversion_targets_table.c.position, conversion_targets_table.c.target)
    ).scalars()
    return ConversionView(
        job_id=row.job_id,
        correlation_id=row.correlation_id,
        model_name=row.model_name,
        version=row.version,
        status=row.status,
        requested_by=row.requested_by,
        created_at=parse_dt(row.created_at),
        finished_at=parse_optional_dt(row.finished_at),
        request=msgspec.json.decode(row.request, type=CreateConversion),
        reason=row.reason,
        op=row.op,
        dataset=row.dataset,
        dataset_version=row.dataset_version,
        host=row.host,
        targets=[msgspec.json.decode(b, type=ConversionTargetView) for b in targets],
    )


# -- use cases ---------------------------------------------------------------------------------


@dataclass
class ConversionService:
    """Conversions: the converter runs them; the gateway requests and shows them."""

    gateway: Gateway

    async def convert(
        self, who: Principal, body: CreateConversion, correlation_id: str
    ) -> JobCreated:
        job_id = new_job_id("conv")
        with self.gateway.session() as s:
            version = catalog.get_version(s, body.model_name, body.version)
            dataset = (
                catalog.get_dataset(s, body.dataset, body.dataset_version) if body.dataset else None
            )
        events = request_conversion(
            body,
            job_id=job_id,
            version=version,
            dataset=dataset,
            stamp=self.gateway.stamp(who.username, correlation_id),
        )
        await self.gateway.write(events)
        return JobCreated(job_id=job_id, kind="conversion", correlation_id=correlation_id)

    def conversion(self, job_id: str) -> ConversionView:
        with self.gateway.session() as s:
            found = get_conversion(s, job_id)
        if found is None:
            raise NotFound(f"no conversion {job_id!r}")
        return found


# -- routes ------------------------------------------------------------------------------------


class ConversionsController(Controller):
    path = "/conversions"
    tags = ["conversions"]
    guards = [allow(Permission.READ)]
    dependencies = provide("conversion")

    @post("/", status_code=201, guards=[allow(Permission.CONVERT)], responses=refusals(404, 422))
    async def create_conversion(
        self, request: AuthRequest, data: CreateConversion, service: ConversionService
    ) -> JobCreated:
        """Convert a model version to engines, each held to the accuracy gate.

        Returns:
            201 with the job id; follow ``/events/{correlation_id}`` for each target's result.
        """
        return await service.convert(request.user, data, correlation_id(request))

    @get("/{job_id:str}", responses=refusals(404))
    async def show_conversion(self, job_id: str, service: ConversionService) -> ConversionView:
        """A conversion: each target produced (with parity), rejected (why) or unavailable."""
        return service.conversion(job_id)
