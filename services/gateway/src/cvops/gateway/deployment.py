"""Deployments: serve a model version's artifact behind Triton (or retire it).

The rules and the fold are ``cvops.domain.deployment``'s; here: the ``deployments`` aggregate
table and its reads, the use cases (which artifact an engine and precision serve, a
benchmark's pick) and the routes.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar import Controller, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.response import Stream
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateDeployment, DeploymentView, ModelVersionView
from cvops.contracts.deployment import Canary, ServedArtifact
from cvops.contracts.identity import Permission
from cvops.core import ArtifactStore
from cvops.core.jobs import deployments_table
from cvops.domain import deployment as rules
from cvops.domain.deployment import DeploymentState, parse_canary
from cvops.gateway import benchmark
from cvops.gateway.auth import AuthRequest, Principal, allow
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.core import Fold, Gateway, correlation_id, metadata, provide
from cvops.gateway.errors import NotFound
from cvops.gateway.idempotency import replayed
from cvops.gateway.openapi import refusals
from cvops.gateway.package import Bundle, build_bundle, plan_bundle
from cvops.gateway.reads import CACHED

# -- rules (cvops.domain.deployment) ------------------------------------------------------------


def request_deployment(
    body: CreateDeployment,
    *,
    canary: Canary | None,
    version: ModelVersionView | None,
    canary_version: ModelVersionView | None,
    stamp: Stamp,
    served: ServedArtifact | None = None,
) -> list[Event]:
    """Serve a model version (and optionally a canary arm) under a name."""
    formats: dict[int, str | None] = {body.version: version.format if version else None}
    if canary is not None and canary.model_version != body.version:
        formats[canary.model_version] = canary_version.format if canary_version else None
    return rules.request_deployment(
        body, canary=canary, formats=formats, stamp=stamp, served=served
    )


def _served(
    s: Session,
    body: CreateDeployment,
    version: int,
    engine: str,
    precision: str,
    rec: rules.Recommendation | None,
) -> ServedArtifact | None:
    """The artifact ``engine`` at ``precision`` serves (None: no such version, refused later)."""
    found = catalog.get_version(s, body.model_name, version)
    if found is None:
        return None
    return rules.choose_artifact(
        body.model_name,
        version,
        engine,
        precision,
        source_format=found.format,
        source=found.artifact,
        produced=catalog.list_engine_artifacts(s, body.model_name, version),
        made_by=rec.made_by if rec else None,
        conversion_job=rec.conversion_job if rec else None,
    )


# -- projection --------------------------------------------------------------------------------

# Each deployment's state: its last requested spec, the outcome and the version it serves.
DEPLOYMENTS = deployments_table(metadata)


def fold_deployment(session: Session, event: Event, seq: int, at: str) -> None:
    """A deployment's state, folded by ``cvops.domain.deployment.evolve_deployment``."""
    DEPLOYMENTS.apply(session, event)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"deployment": fold_deployment}


def deployment_view(state: DeploymentState) -> DeploymentView:
    spec = state.requested
    served = spec.served
    return DeploymentView(
        deployment=state.deployment,
        model_name=spec.model_name,
        version=spec.version,
        engine=spec.engine,
        precision=spec.precision,
        artifact_sha256=served.artifact.sha256 if served else None,
        artifact_target=served.target if served else None,
        benchmark_id=spec.benchmark_id,
        checks=dict(state.checks) if state.serving == spec else {},
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
        """Append ``deployment.requested``; the router answers ready or failed.

        The request names the artifact served (by sha256): the one the engine and precision
        serve, or the pick of ``from_benchmark`` / the newest completed benchmark.
        """
        if replayed(self.gateway, correlation_id):
            return self.deployment(body.deployment or body.model_name)
        canary = parse_canary(body.canary, body.model_name) if body.canary else None
        with self.gateway.session() as s:
            rec = None
            bench_id = body.from_benchmark
            if body.recommended and bench_id is None:
                states = benchmark.benchmarks.states(s)
                bench_id = rules.newest_completed(states, body.model_name, body.version)
            if bench_id is not None:
                found = benchmark.benchmarks.get(s, bench_id)
                rec = rules.recommendation(found, bench_id, body.model_name, body.version)
                body = rules.with_recommendation(body, rec)
            version = catalog.get_version(s, body.model_name, body.version)
            served = _served(s, body, body.version, body.engine, body.precision, rec)
            canary_version = None
            if canary is not None:
                canary_version = catalog.get_version(s, body.model_name, canary.model_version)
                if canary.engine is not None or canary.precision is not None:
                    engine = canary.engine or body.engine
                    precision = canary.precision or body.precision
                    canary = msgspec.structs.replace(
                        canary,
                        engine=engine,
                        precision=precision,
                        served=_served(s, body, canary.model_version, engine, precision, None),
                    )
        events = request_deployment(
            body,
            canary=canary,
            version=version,
            canary_version=canary_version,
            stamp=self.gateway.stamp(who.username, correlation_id),
            served=served,
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

    async def package(self, name: str) -> Bundle:
        """The model bundle of what ``name`` serves (``cvops.gateway.package``)."""
        with self.gateway.session() as s:
            state = DEPLOYMENTS.get(s, name)
            versions = {}
            if state is not None:
                spec = state.serving
                versions = {
                    a.version: catalog.get_version(s, spec.model_name, a.version)
                    for a in rules.arms(spec)
                }
        plan = plan_bundle(state, name, versions)
        spool = self.gateway.settings.home_path / "spool"
        return await build_bundle(plan, ArtifactStore(self.gateway.bus), spool)

    async def retire(self, who: Principal, name: str, correlation_id: str) -> DeploymentView:
        if replayed(self.gateway, correlation_id):
            return self.deployment(name)
        with self.gateway.session() as s:
            current = DEPLOYMENTS.get(s, name)
        stamp = self.gateway.stamp(who.username, correlation_id)
        events = rules.retire_deployment(current, stamp=stamp)
        await self.gateway.write(events)
        return self.deployment(name)


# -- routes ------------------------------------------------------------------------------------


deploy = allow(Permission.DEPLOY)
BUNDLE_BYTES = ResponseSpec(
    bytes,
    generate_examples=False,
    media_type="application/gzip",
    description=(
        "The bundle (.tar.gz), streamed; X-Content-Sha256 is its digest. The same deployment "
        "gives the same bytes"
    ),
)


class DeploymentsController(Controller):
    path = "/deployments"
    tags = ["deployments"]
    guards = [allow(Permission.READ)]
    dependencies = provide("deployment")

    @post("/", status_code=202, guards=[deploy], responses=refusals(404, 409, 422))
    async def create_deployment(
        self, request: AuthRequest, data: CreateDeployment, service: DeploymentService
    ) -> DeploymentView:
        """Serve a model version behind Triton (a new deployment, or a rolling update).

        Returns:
            202 with the deployment in ``requested``; the router answers ready or failed on
            the ``/events/{correlation_id}`` feed. 404 for an unknown model version.
        """
        return await service.deploy(request.user, data, correlation_id(request))

    @get("/", **CACHED)
    async def list_deployments(self, service: DeploymentService) -> list[DeploymentView]:
        """Every deployment, retired ones included."""
        return service.deployments()

    @get("/{name:str}", responses=refusals(404), **CACHED)
    async def show_deployment(self, name: str, service: DeploymentService) -> DeploymentView:
        """One deployment: its spec, status and the version it serves."""
        return service.deployment(name)

    @get("/{name:str}/package", responses={200: BUNDLE_BYTES, **refusals(404, 409)})
    async def package_deployment(self, name: str, service: DeploymentService) -> Stream:
        """What a deployment serves, as a model bundle for the NGC Triton image.

        Returns:
            a reproducible ``.tar.gz``: the Triton model repository (each arm's artifact and
            the ``config.pbtxt`` of the engine's native backend), a Dockerfile, a
            tritonclient example, a README and ``SHA256SUMS``. 404 for an unknown deployment
            or an artifact the object store no longer has; 409 when it serves nothing.
        """
        bundle = await service.package(name)
        return Stream(
            bundle.chunks(),
            media_type="application/gzip",
            headers={
                "Content-Disposition": f'attachment; filename="{bundle.filename}"',
                "Content-Length": str(bundle.size),
                "X-Content-Sha256": bundle.sha256,
            },
        )

    @delete("/{name:str}", status_code=202, guards=[deploy], responses=refusals(404, 409))
    async def retire_deployment(
        self, request: AuthRequest, name: str, service: DeploymentService
    ) -> DeploymentView:
        """Retire (undeploy) a deployment; the router answers ``deployment.retired``."""
        return await service.retire(request.user, name, correlation_id(request))
