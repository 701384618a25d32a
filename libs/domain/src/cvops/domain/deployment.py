"""Deployments: what was last asked of a deployment and what the router serves for it —
state, ``evolve`` and decisions.

One ``DeploymentState`` holds both sides of a deployment. ``status``/``reason`` follow the
last request and its outcome (what the API shows: a failed rolling update is ``failed``);
``phase``/``serving`` say what the router serves (a failed rolling update keeps serving the
old spec, ``ready``). No clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime

import msgspec

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateDeployment, DeploymentStatus
from cvops.contracts.deployment import (
    SERVING_ENGINES,
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.domain.checks import check_name
from cvops.domain.errors import Conflict, Forbidden, Invalid, NotFound
from cvops.domain.identity import UserState

# What a model version must be before it can be served.
SERVABLE_FORMATS = ("onnx",)
DEPLOY_ROLES = ("admin", "engineer")
MAX_BATCH_SIZE = 1024
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INSTANCES = 16
# the router's phases in which a deployment answers requests
ROUTABLE = ("ready", "degraded")


class DeploymentSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a deployment serves (the fields a request and a ready event share)."""

    model_name: str
    version: int
    engine: str
    canary: Canary | None = None
    public: bool = False
    max_batch_size: int = 8
    preferred_batch_sizes: list[int] = []
    max_queue_delay_us: int = 500
    instance_count: int = 1


class DeploymentState(msgspec.Struct, frozen=True, kw_only=True):
    deployment: str
    # the last request and its outcome (the API's view)
    requested: DeploymentSpec
    status: DeploymentStatus
    reason: str | None = None
    serving_version: int | None = None
    instances: list[str] = []
    requested_by: str
    correlation_id: str
    requested_at: datetime
    updated_at: datetime
    # what the router serves: pending (requested, never served) | ready | degraded | failed |
    # retiring | retired; a rolling update keeps serving ``serving`` until ready
    phase: str
    serving: DeploymentSpec
    pending_version: int | None = None
    serving_reason: str = ""

    @property
    def routable(self) -> bool:
        return self.phase in ROUTABLE


def spec_of(event: DeploymentRequested | DeploymentReady) -> DeploymentSpec:
    return DeploymentSpec(
        model_name=event.model_name,
        version=event.version,
        engine=event.engine,
        canary=event.canary,
        public=event.public,
        max_batch_size=event.max_batch_size,
        preferred_batch_sizes=list(event.preferred_batch_sizes),
        max_queue_delay_us=event.max_queue_delay_us,
        instance_count=event.instance_count,
    )


def deployment_key(event: Event) -> str | None:
    """The deployment an event folds into (None: not a deployment event)."""
    if isinstance(
        event,
        DeploymentRequested
        | DeploymentReady
        | DeploymentDegraded
        | DeploymentFailed
        | DeploymentRetireRequested
        | DeploymentRetired,
    ):
        return event.deployment
    return None


def _new(event: DeploymentRequested | DeploymentReady) -> DeploymentState:
    spec = spec_of(event)
    return DeploymentState(
        deployment=event.deployment,
        requested=spec,
        status="requested",
        requested_by=event.actor,
        correlation_id=event.correlation_id,
        requested_at=event.occurred_at,
        updated_at=event.occurred_at,
        phase="pending",
        serving=spec,
        pending_version=event.version,
    )


def evolve_deployment(state: DeploymentState | None, event: Event) -> DeploymentState | None:
    """Each event sets the API's status whole (the last one tells); the router's phase moves
    only where it may (a rolling update keeps serving; degraded only from ready)."""
    replace = msgspec.structs.replace
    at = event.occurred_at
    match event:
        case DeploymentRequested():
            spec = spec_of(event)
            if state is None:
                return _new(event)
            state = replace(
                state,
                requested=spec,
                status="requested",
                reason=None,
                requested_by=event.actor,
                correlation_id=event.correlation_id,
                requested_at=at,
                updated_at=at,
                pending_version=event.version,
            )
            if state.phase in ("failed", "retired", "pending"):
                state = replace(state, phase="pending", serving=spec, serving_reason="")
            return state
        case DeploymentReady():
            if state is None:
                state = _new(event)
            return replace(
                state,
                status="ready",
                reason=None,
                serving_version=event.version,
                instances=list(event.instances),
                updated_at=at,
                phase="ready",
                serving=spec_of(event),
                pending_version=None,
                serving_reason="",
            )
        case DeploymentDegraded(reason=why) if state is not None:
            state = replace(state, status="degraded", reason=why, updated_at=at)
            if state.phase == "ready":
                state = replace(state, phase="degraded", serving_reason=why)
            return state
        case DeploymentFailed(reason=why) if state is not None:
            phase = "failed" if state.phase in ("pending", "failed") else state.phase
            return replace(
                state,
                status="failed",
                reason=why,
                updated_at=at,
                phase=phase,
                pending_version=None,
                serving_reason=why,
            )
        case DeploymentRetireRequested(reason=why) if state is not None:
            phase = "retiring" if state.phase in ROUTABLE else state.phase
            return replace(
                state,
                status="retiring",
                reason=why or None,
                correlation_id=event.correlation_id,
                updated_at=at,
                phase=phase,
            )
        case DeploymentRetired(reason=why) if state is not None:
            return replace(
                state,
                status="retired",
                reason=why or None,
                serving_version=None,
                instances=[],
                updated_at=at,
                phase="retired",
                pending_version=None,
                serving_reason=why,
            )
    return state


# -- decisions -------------------------------------------------------------------------------

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


def check_deployer(actor: UserState | None, username: str, what: str = "deploying") -> None:
    """Only an active engineer or admin deploys or retires."""
    if actor is None:
        raise Forbidden(f"forbidden: {username!r} is not a known user")
    if actor.disabled or actor.role not in DEPLOY_ROLES:
        raise Forbidden(
            f"forbidden: {what} needs role engineer or admin ({actor.username} is {actor.role})"
        )


def check_request(request: DeploymentRequested, formats: Mapping[int, str | None]) -> None:
    """A deployment request the router can serve; ``formats``: the model's version -> format
    (absent or None: no such version)."""
    check_name(request.deployment, "deployment name")
    if request.engine not in SERVING_ENGINES:
        raise Invalid(f"unknown engine {request.engine!r}; engines: {', '.join(SERVING_ENGINES)}")
    if not 0 <= request.max_batch_size <= MAX_BATCH_SIZE:
        raise Invalid(f"max_batch_size must be within 0..{MAX_BATCH_SIZE} (0: no batching)")
    bad = [b for b in request.preferred_batch_sizes if not 0 < b <= request.max_batch_size]
    if bad:
        raise Invalid(
            f"preferred batch sizes {bad} are outside 1..max_batch_size ({request.max_batch_size})"
        )
    if not 0 <= request.max_queue_delay_us <= MAX_QUEUE_DELAY_US:
        raise Invalid(f"max_queue_delay_us must be within 0..{MAX_QUEUE_DELAY_US}")
    if not 1 <= request.instance_count <= MAX_INSTANCES:
        raise Invalid(f"instance_count must be within 1..{MAX_INSTANCES}")
    wanted = [request.version]
    canary = request.canary
    if canary is not None:
        if canary.model_version == request.version:
            raise Invalid("the canary version must differ from the deployed version")
        if not 0 < canary.weight_percent < 100:
            raise Invalid("canary weight_percent must be strictly between 0 and 100")
        wanted.append(canary.model_version)
    for version in wanted:
        found = formats.get(version)
        if found is None:
            raise NotFound(f"model {request.model_name!r} has no version {version}")
        if found not in SERVABLE_FORMATS:
            raise Invalid(
                f"{request.model_name}:{version} is {found}; "
                "convert it to ONNX first (cvops convert)"
            )


def request_deployment(
    body: CreateDeployment,
    *,
    canary: Canary | None,
    formats: Mapping[int, str | None],
    stamp: Stamp,
) -> list[Event]:
    """Serve a model version (and optionally a canary of another version) under a name."""
    deployment = body.deployment or body.model_name
    request = DeploymentRequested(
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
    check_request(request, formats)
    return [request]


def retire_deployment(current: DeploymentState | None, *, stamp: Stamp) -> list[Event]:
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


def check_retirement(phase: str | None, name: str) -> None:
    """The router retires only a deployment it serves or is bringing up (``phase``: the
    deployment's ``DeploymentState.phase``, None when there is none)."""
    if phase is None or phase in ("retired", "failed"):
        raise NotFound(f"no deployment named {name!r} is served")
