"""Deployments: serve a model version behind Triton (or retire it).

The rules and the fold are ``cvops.domain.deployment``'s; here: the ``deployments`` aggregate
table and its reads, the use cases and the routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, delete, get, post
from sqlalchemy import Column, String
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateDeployment, DeploymentView, ModelVersionView
from cvops.contracts.deployment import Canary
from cvops.contracts.identity import Permission
from cvops.core.aggregates import AggregateTable
from cvops.domain import deployment as rules
from cvops.domain.deployment import DeploymentState, parse_canary
from cvops.gateway.auth import AuthRequest, Principal, allow
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.core import Fold, Gateway, correlation_id, metadata, provide
from cvops.gateway.errors import NotFound
from cvops.gateway.openapi import refusals

# -- rules (cvops.domain.deployment) ------------------------------------------------------------


def request_deployment(
    body: CreateDeployment,
    *,
    canary: Canary | None,
    version: ModelVersionView | None,
    canary_version: ModelVersionView | None,
    stamp: Stamp,
) -> list[Event]:
    """Serve a model version (and optionally a canary of another version) under a name."""
    formats: dict[int, str | None] = {body.version: version.format if version else None}
    if canary is not None and canary.model_version != body.version:
        formats[canary.model_version] = canary_version.format if canary_version else None
    return rules.request_deployment(body, canary=canary, formats=formats, stamp=stamp)


# -- projection --------------------------------------------------------------------------------

# Each deployment's state: its last requested spec, the outcome and the version it serves.
DEPLOYMENTS = AggregateTable(
    metadata,
    "deployments",
    DeploymentState,
    key=[Column("name", String)],
    key_of=lambda e: None if (k := rules.deployment_key(e)) is None else (k,),
    evolve=rules.evolve_deployment,
    columns=[Column("status", String, nullable=False)],
)


def fold_deployment(session: Session, event: Event, seq: int, at: str) -> None:
    """A deployment's state, folded by ``cvops.domain.deployment.evolve_deployment``."""
    DEPLOYMENTS.apply(session, event)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"deployment": fold_deployment}


def deployment_view(state: DeploymentState) -> DeploymentView:
    spec = state.requested
    return DeploymentView(
        deployment=state.deployment,
        model_name=spec.model_name,
        version=spec.version,
        engine=spec.engine,
        canary=spec.canary,
        public=spec.public,
        max_batch_size=spec.max_batch_size,
        preferred_batch_sizes=list(spec.preferred_batch_sizes),
        max_queue_delay_us=spec.max_queue_delay_us,
        instance_count=spec.instance_count,
        status=state.status,
        reason=state.reason,
        serving_version=state.serving_version,
        instances=list(state.instances),
        requested_by=state.requested_by,
        correlation_id=state.correlation_id,
        requested_at=state.requested_at,
        updated_at=state.updated_at,
    )


def list_deployments(s: Session) -> list[DeploymentView]:
    return [deployment_view(state) for state in DEPLOYMENTS.states(s)]


def get_deployment(s: Session, name: str) -> DeploymentView | None:
    state = DEPLOYMENTS.get(s, name)
    return deployment_view(state) if state else None


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
            current = DEPLOYMENTS.get(s, name)
        stamp = self.gateway.stamp(who.username, correlation_id)
        events = rules.retire_deployment(current, stamp=stamp)
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
