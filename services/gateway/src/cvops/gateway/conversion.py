"""Conversions: a model version converted to engines, each held to the accuracy gate.

The rules and the job's fold are the domain's (``cvops.domain.conversion``); here: the
``conversions`` aggregate table they fold into, its reads as API bodies, the use cases and the
routes. The engines produced are listed per model version by the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, get, post
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
from cvops.contracts.identity import Permission
from cvops.core.jobs import conversion_jobs_table
from cvops.domain import conversion as rules
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

conversion_targets = rules.conversion_targets


def request_conversion(
    body: CreateConversion,
    *,
    job_id: str,
    version: ModelVersionView | None,
    dataset: DatasetView | None,
    stamp: Stamp,
) -> list[Event]:
    """Convert a model version to engines, each held to the accuracy gate."""
    rules.check_registered(body.model_name, body.version, version is not None)
    assert version is not None
    event = rules.request(body, job_id=job_id, stamp=stamp)
    dataset_named(body.dataset, body.dataset_version, dataset)
    rules.check_source(
        body.model_name,
        body.version,
        fmt=version.format,
        architecture=version.architecture,
        hyperparameters=version.lineage.hyperparameters,
        lineage_dataset=version.lineage.dataset,
        dataset=body.dataset,
    )
    return [event]


# -- projection --------------------------------------------------------------------------------


# One aggregate per conversion job, folded by the domain (the engines produced: ``catalog``).
conversions = conversion_jobs_table(metadata)


def fold_conversion(session: Session, event: Event, seq: int, at: str) -> None:
    """Conversion jobs and each target's outcome (the catalog folds the engines produced)."""
    conversions.apply(session, event, seq)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"conversion": fold_conversion}


def _target_view(target: str, result: rules.TargetState | None) -> ConversionTargetView:
    if result is None:
        return ConversionTargetView(target=target, status="pending")
    return ConversionTargetView(
        target=target,
        status=result.outcome,
        reason=result.reason or None,
        format=result.format,
        precision=result.precision,
        artifact=result.artifact,
        companions=list(result.companions),
        parity=result.parity,
        gate=result.gate,
        excluded_layers=list(result.excluded_layers),
        attempts=list(result.attempts),
    )


def conversion_view(state: rules.ConversionState) -> ConversionView:
    """The API body of a conversion job's state."""
    return ConversionView(
        **job_fields(state, CreateConversion),
        op=state.op,
        dataset=state.dataset,
        dataset_version=state.dataset_version,
        targets=[_target_view(t, state.results.get(t)) for t in state.targets],
    )


def get_conversion(s: Session, job_id: str) -> ConversionView | None:
    state = conversions.get(s, job_id)
    return conversion_view(state) if state is not None else None


# -- use cases ---------------------------------------------------------------------------------


@dataclass
class ConversionService:
    """Conversions: the converter runs them; the gateway requests and shows them."""

    gateway: Gateway

    async def convert(
        self, who: Principal, body: CreateConversion, correlation_id: str
    ) -> JobCreated:
        job_id = new_job_id("conv", correlation_id)
        created = JobCreated(job_id=job_id, kind="conversion", correlation_id=correlation_id)
        if replayed(self.gateway, correlation_id):
            return created
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
        return created

    def conversions(self) -> list[ConversionView]:
        """Every conversion, newest first (the web UI's list)."""
        with self.gateway.session() as s:
            found = [conversion_view(state) for state in conversions.states(s)]
        return sorted(found, key=lambda c: (c.created_at, c.job_id), reverse=True)

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

    @get("/{job_id:str}", responses=refusals(404), **CACHED)
    async def show_conversion(self, job_id: str, service: ConversionService) -> ConversionView:
        """A conversion: each target produced (with parity), rejected (why) or unavailable."""
        return service.conversion(job_id)
