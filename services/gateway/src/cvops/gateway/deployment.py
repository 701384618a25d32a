"""Deployments: serve a model version behind Triton (or retire it).

Rules (a request checked against the catalog), the ``deployments`` table with its fold and
reads, the use cases and the routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Controller, delete, get, post
from sqlalchemy import Boolean, Column, Integer, String, Table, Text, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateDeployment, DeploymentView, ModelVersionView
from cvops.contracts.deployment import (
    ENGINES,
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.contracts.identity import Permission
from cvops.gateway.auth import AuthRequest, Principal, allow
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.checks import check_name
from cvops.gateway.core import (
    Fold,
    Gateway,
    as_json,
    correlation_id,
    metadata,
    parse_dt,
    provide,
)
from cvops.gateway.errors import Conflict, Invalid, NotFound
from cvops.gateway.openapi import refusals

# What a model version must be before it can be served or converted by the other services.
SERVABLE_FORMATS = ("onnx",)
MAX_BATCH_SIZE = 1024
MAX_INSTANCES = 16

# -- rules -------------------------------------------------------------------------------------

_CANARY = re.compile(r"(?:(?P<model>[^:=\s]+):)?v?(?P<version>\d+)=(?P<percent>[0-9.]+)%?")


def parse_canary(text: str, model_name: str) -> Canary:
    """``"MODEL:VERSION=10%"`` (or ``"VERSION=10%"``) -> a canary of the same model."""
    found = _CANARY.fullmatch(text.strip())
    if found is None:
        raise Invalid(f"canary must look like '{model_name}:2=10%', got {text!r}")
    model = found["model"]
    if model is not None and model != model_name:
        raise Invalid(
            f"a canary is another version of the same model ({model_name}), not {model!r}"
        )
    try:
        percent = float(found["percent"])
    except ValueError as err:
        raise Invalid(f"canary weight {found['percent']!r} is not a number") from err
    if not 0 < percent < 100:
        raise Invalid(f"canary weight must be strictly between 0 and 100 %, got {percent:g}")
    return Canary(model_version=int(found["version"]), weight_percent=percent)


def _servable(name: str, version: int, found: ModelVersionView | None) -> None:
    if found is None:
        raise NotFound(f"model {name!r} has no version {version}")
    if found.format not in SERVABLE_FORMATS:
        raise Invalid(
            f"{name}:{version} is {found.format}; convert it to ONNX first (cvops convert)"
        )


def request_deployment(
    body: CreateDeployment,
    *,
    canary: Canary | None,
    version: ModelVersionView | None,
    canary_version: ModelVersionView | None,
    stamp: Stamp,
) -> list[Event]:
    """Serve a model version (and optionally a canary of another version) under a name."""
    deployment = check_name(body.deployment or body.model_name, "deployment name")
    _servable(body.model_name, body.version, version)
    if canary is not None:
        if canary.model_version == body.version:
            raise Invalid("the canary version must differ from the deployed version")
        _servable(body.model_name, canary.model_version, canary_version)
    if body.engine not in ENGINES:
        raise Invalid(f"unknown engine {body.engine!r}; engines: {', '.join(ENGINES)}")
    if not 0 <= body.max_batch_size <= MAX_BATCH_SIZE:
        raise Invalid(f"max_batch_size must be within 0..{MAX_BATCH_SIZE} (0: no batching)")
    bad = [b for b in body.preferred_batch_sizes if not 0 < b <= body.max_batch_size]
    if bad:
        raise Invalid(
            f"preferred batch sizes {bad} are outside 1..max_batch_size ({body.max_batch_size})"
        )
    if body.max_queue_delay_us < 0:
        raise Invalid("max_queue_delay_us must not be negative")
    if not 1 <= body.instance_count <= MAX_INSTANCES:
        raise Invalid(f"instance_count must be within 1..{MAX_INSTANCES}")
    return [
        DeploymentRequested(
            **stamp.envelope(f"deploy/{deployment}"),
            deployment=deployment,
            model_name=body.model_name,
            version=body.version,
            engine=body.engine,
            canary=canary,
            public=body.public,
            max_batch_size=body.max_batch_size,
            preferred_batch_sizes=list(body.preferred_batch_sizes),
            max_queue_delay_us=body.max_queue_delay_us,
            instance_count=body.instance_count,
        )
    ]


def retire_deployment(current: DeploymentView | None, *, stamp: Stamp) -> list[Event]:
    """Undeploy; retiring what is already being retired changes nothing."""
    if current is None:
        raise NotFound("no such deployment")
    if current.status == "retired":
        raise Conflict(f"deployment {current.deployment} is retired already")
    if current.status == "retiring":
        return []
    return [
        DeploymentRetireRequested(
            **stamp.envelope(f"retire/{current.deployment}"),
            deployment=current.deployment,
            reason=f"retired by {stamp.actor}",
        )
    ]


# -- projection --------------------------------------------------------------------------------

# The last requested spec of each deployment, its outcome and the version it serves.
deployments = Table(
    "deployments",
    metadata,
    Column("name", String, primary_key=True),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("engine", String, nullable=False),
    Column("canary", Text),
    Column("public", Boolean, nullable=False),
    Column("max_batch_size", Integer, nullable=False),
    Column("preferred_batch_sizes", Text, nullable=False),
    Column("max_queue_delay_us", Integer, nullable=False),
    Column("instance_count", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", String),
    Column("serving_version", Integer),
    Column("instances", Text, nullable=False, default="[]"),
    Column("requested_by", String, nullable=False),
    Column("correlation_id", String, nullable=False),
    Column("requested_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
)


def _serving_spec(event: DeploymentRequested | DeploymentReady) -> dict[str, Any]:
    return {
        "model_name": event.model_name,
        "version": event.version,
        "engine": event.engine,
        "canary": as_json(event.canary) if event.canary is not None else None,
        "public": event.public,
        "max_batch_size": event.max_batch_size,
        "preferred_batch_sizes": as_json(event.preferred_batch_sizes),
        "max_queue_delay_us": event.max_queue_delay_us,
        "instance_count": event.instance_count,
    }


def fold_deployment(session: Session, event: Event, seq: int, at: str) -> None:
    """A deployment's state: each event sets it whole, so the last one tells."""
    match event:
        case DeploymentRequested():
            request = {
                **_serving_spec(event),
                "status": "requested",
                "reason": None,
                "requested_by": event.actor,
                "correlation_id": event.correlation_id,
                "requested_at": at,
                "updated_at": at,
            }
            session.execute(
                insert(deployments)
                .values(name=event.deployment, instances="[]", **request)
                .on_conflict_do_update(index_elements=["name"], set_=request)
            )
        case DeploymentReady():
            ready = {
                "status": "ready",
                "reason": None,
                "serving_version": event.version,
                "instances": as_json(event.instances),
                "updated_at": at,
            }
            session.execute(
                insert(deployments)
                .values(
                    name=event.deployment,
                    **_serving_spec(event),
                    **ready,
                    requested_by=event.actor,
                    correlation_id=event.correlation_id,
                    requested_at=at,
                )
                .on_conflict_do_update(index_elements=["name"], set_=ready)
            )
        case DeploymentFailed(reason=why) | DeploymentDegraded(reason=why):
            status = "failed" if isinstance(event, DeploymentFailed) else "degraded"
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(status=status, reason=why, updated_at=at)
            )
        case DeploymentRetireRequested(reason=why):
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(
                    status="retiring",
                    reason=why or None,
                    correlation_id=event.correlation_id,
                    updated_at=at,
                )
            )
        case DeploymentRetired(reason=why):
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(
                    status="retired",
                    reason=why or None,
                    serving_version=None,
                    instances="[]",
                    updated_at=at,
                )
            )
        case _:
            pass


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"deployment": fold_deployment}


def _deployment_view(r: Row) -> DeploymentView:
    return DeploymentView(
        deployment=r.name,
        model_name=r.model_name,
        version=r.version,
        engine=r.engine,
        canary=msgspec.json.decode(r.canary, type=Canary) if r.canary else None,
        public=bool(r.public),
        max_batch_size=r.max_batch_size,
        preferred_batch_sizes=msgspec.json.decode(r.preferred_batch_sizes),
        max_queue_delay_us=r.max_queue_delay_us,
        instance_count=r.instance_count,
        status=r.status,
        reason=r.reason,
        serving_version=r.serving_version,
        instances=msgspec.json.decode(r.instances),
        requested_by=r.requested_by,
        correlation_id=r.correlation_id,
        requested_at=parse_dt(r.requested_at),
        updated_at=parse_dt(r.updated_at),
    )


def list_deployments(s: Session) -> list[DeploymentView]:
    rows = s.execute(select(deployments).order_by(deployments.c.name)).all()
    return [_deployment_view(r) for r in rows]


def get_deployment(s: Session, name: str) -> DeploymentView | None:
    row = s.execute(select(deployments).where(deployments.c.name == name)).first()
    return _deployment_view(row) if row else None


# -- use cases ---------------------------------------------------------------------------------


@dataclass
class DeploymentService:
    """Deployments: the router serves them; the gateway requests, shows and retires them."""

    gateway: Gateway

    async def deploy(
        self, who: Principal, body: CreateDeployment, correlation_id: str
    ) -> DeploymentView:
        """Append ``deployment.requested``; the router answers ready or failed."""
        canary = parse_canary(body.canary, body.model_name) if body.canary else None
        with self.gateway.session() as s:
            version = catalog.get_version(s, body.model_name, body.version)
            canary_version = (
                catalog.get_version(s, body.model_name, canary.model_version) if canary else None
            )
        events = request_deployment(
            body,
            canary=canary,
            version=version,
            canary_version=canary_version,
            stamp=self.gateway.stamp(who.username, correlation_id),
        )
        await self.gateway.write(events)
        return self.deployment(body.deployment or body.model_name)

    def deployments(self) -> list[DeploymentView]:
        with self.gateway.session() as s:
            return list_deployments(s)

    def deployment(self, name: str) -> DeploymentView:
        with self.gateway.session() as s:
            found = get_deployment(s, name)
        if found is None:
            raise NotFound(f"no deployment {name!r}")
        return found

    async def retire(self, who: Principal, name: str, correlation_id: str) -> DeploymentView:
        with self.gateway.session() as s:
            current = get_deployment(s, name)
        events = retire_deployment(current, stamp=self.gateway.stamp(who.username, correlation_id))
        await self.gateway.write(events)
        return self.deployment(name)


# -- routes ------------------------------------------------------------------------------------


deploy = allow(Permission.DEPLOY)


class DeploymentsController(Controller):
    path = "/deployments"
    tags = ["deployments"]
    guards = [allow(Permission.READ)]
    dependencies = provide("deployment")

    @post("/", status_code=202, guards=[deploy], responses=refusals(404, 422))
    async def create_deployment(
        self, request: AuthRequest, data: CreateDeployment, service: DeploymentService
    ) -> DeploymentView:
        """Serve a model version behind Triton (a new deployment, or a rolling update).

        Returns:
            202 with the deployment in ``requested``; the router answers ready or failed on
            the ``/events/{correlation_id}`` feed. 404 for an unknown model version.
        """
        return await service.deploy(request.user, data, correlation_id(request))

    @get("/")
    async def list_deployments(self, service: DeploymentService) -> list[DeploymentView]:
        """Every deployment, retired ones included."""
        return service.deployments()

    @get("/{name:str}", responses=refusals(404))
    async def show_deployment(self, name: str, service: DeploymentService) -> DeploymentView:
        """One deployment: its spec, status and the version it serves."""
        return service.deployment(name)

    @delete("/{name:str}", status_code=202, guards=[deploy], responses=refusals(404, 409))
    async def retire_deployment(
        self, request: AuthRequest, name: str, service: DeploymentService
    ) -> DeploymentView:
        """Retire (undeploy) a deployment; the router answers ``deployment.retired``."""
        return await service.retire(request.user, name, correlation_id(request))
