"""Deployments: what was last asked of a deployment and what the router serves for it —
state, ``evolve`` and decisions.

One ``DeploymentState`` holds both sides of a deployment. ``status``/``reason`` follow the
last request and its outcome (what the API shows: a failed rolling update is ``failed``);
``phase``/``serving`` say what the router serves (a failed rolling update keeps serving the
old spec, ``ready``). No clock, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.api import CreateDeployment, DeploymentStatus, EngineArtifactView
from cvops.contracts.conversion import BatcherAdvice, BenchmarkRow
from cvops.contracts.deployment import (
    PRECISIONS,
    SERVING_ENGINES,
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
    ServedArtifact,
    ServingCheck,
)
from cvops.domain.benchmark import ARTIFACT_ENGINES, BenchmarkState
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
SOURCE = "source"  # a served artifact that is the model version's own file
# A canary of another engine of the served version loads as Triton version CANARY_SLOT +
# version beside it (a Triton version directory holds one artifact).
CANARY_SLOT = 1_000_000
# Engines whose Triton instances run on a GPU.
GPU_ENGINES = ("onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")


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
    precision: str = "fp32"
    served: ServedArtifact | None = None
    benchmark_id: str | None = None


class Arm(msgspec.Struct, frozen=True, kw_only=True):
    """One artifact a deployment serves, under its Triton version (``slot``)."""

    name: str  # primary | canary
    slot: int
    version: int  # the registry version
    engine: str
    precision: str
    served: ServedArtifact | None  # None: the version's own ONNX file (older requests)


def arms(spec: DeploymentSpec | DeploymentRequested | DeploymentReady) -> list[Arm]:
    """The primary arm, then the canary's when there is one (each its own Triton version)."""
    out = [
        Arm(
            name="primary",
            slot=spec.version,
            version=spec.version,
            engine=spec.engine,
            precision=spec.precision,
            served=spec.served,
        )
    ]
    canary = spec.canary
    if canary is not None:
        v = canary.model_version
        out.append(
            Arm(
                name="canary",
                slot=CANARY_SLOT + v if v == spec.version else v,
                version=v,
                engine=canary.engine or spec.engine,
                precision=canary.precision or spec.precision,
                served=canary.served,
            )
        )
    return out


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
    checks: dict[str, ServingCheck] = {}  # the served-output checks of ``serving``

    @property
    def routable(self) -> bool:
        return self.phase in ROUTABLE


def spec_of(event: DeploymentRequested | DeploymentReady) -> DeploymentSpec:
    """The serving fields of a request or a ready event (the same names on both)."""
    return DeploymentSpec(**{f: getattr(event, f) for f in DeploymentSpec.__struct_fields__})


def spec_fields(spec: DeploymentSpec) -> dict[str, Any]:
    """A spec as the keyword arguments of a request or a ready event."""
    return msgspec.structs.asdict(spec)


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
                checks=dict(event.checks),
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

_CANARY = re.compile(
    r"(?:(?P<model>[^:=@\s]+):)?v?(?P<version>\d+)"
    r"(?:@(?:(?P<engine>[a-z0-9-]+)/)?(?P<precision>[a-z0-9]+))?"
    r"=(?P<percent>[0-9.]+)%?"
)


def parse_canary(text: str, model_name: str) -> Canary:
    """``"MODEL:VERSION=10%"`` (another version), ``"MODEL:VERSION@int8=10%"`` or
    ``"MODEL:VERSION@openvino-cpu/int8=10%"`` (another engine) -> a canary of the model."""
    found = _CANARY.fullmatch(text.strip())
    if found is None:
        raise Invalid(
            f"canary must look like '{model_name}:2=10%' or '{model_name}:1@int8=10%', got {text!r}"
        )
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
    return Canary(
        model_version=int(found["version"]),
        weight_percent=percent,
        engine=found["engine"],
        precision=found["precision"],
    )


def check_deployer(actor: UserState | None, username: str, what: str = "deploying") -> None:
    """Only an active engineer or admin deploys or retires."""
    if actor is None:
        raise Forbidden(f"forbidden: {username!r} is not a known user")
    if actor.disabled or actor.role not in DEPLOY_ROLES:
        raise Forbidden(
            f"forbidden: {what} needs role engineer or admin ({actor.username} is {actor.role})"
        )


def _check_engine(engine: str, precision: str) -> list[str]:
    """The conversion targets that serve ``engine`` at ``precision`` (raises when none)."""
    if engine not in SERVING_ENGINES:
        raise Invalid(f"unknown engine {engine!r}; engines: {', '.join(SERVING_ENGINES)}")
    if precision not in PRECISIONS:
        raise Invalid(f"unknown precision {precision!r}; precisions: {', '.join(PRECISIONS)}")
    targets = [t for t, ps in ARTIFACT_ENGINES[engine].items() if precision in ps]
    if not targets:
        offered = sorted({p for ps in ARTIFACT_ENGINES[engine].values() for p in ps})
        raise Invalid(f"{engine} serves {', '.join(offered)}, not {precision}")
    return targets


def check_request(request: DeploymentRequested, formats: Mapping[int, str | None]) -> None:
    """A deployment request the router can serve; ``formats``: the model's version -> format
    (absent or None: no such version)."""
    check_name(request.deployment, "deployment name")
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
    canary = request.canary
    if canary is not None and not 0 < canary.weight_percent < 100:
        raise Invalid("canary weight_percent must be strictly between 0 and 100")
    all_arms = arms(request)
    if len({(a.version, a.engine, a.precision) for a in all_arms}) < len(all_arms):
        raise Invalid("the canary must differ from the deployed arm (another version or engine)")
    for arm in all_arms:
        _check_engine(arm.engine, arm.precision)
        found = formats.get(arm.version)
        if found is None:
            raise NotFound(f"model {request.model_name!r} has no version {arm.version}")
        if arm.served is None and found not in SERVABLE_FORMATS:
            raise Invalid(
                f"{request.model_name}:{arm.version} is {found}; "
                "convert it to ONNX first (cvops convert)"
            )


def choose_artifact(
    model_name: str,
    version: int,
    engine: str,
    precision: str,
    *,
    source_format: str | None,
    source: ArtifactRef | None,
    produced: Sequence[EngineArtifactView],
    made_by: datetime | None = None,
    conversion_job: str | None = None,
) -> ServedArtifact:
    """What ``engine`` at ``precision`` serves of a model version: the newest produced
    artifact of a conversion target that engine runs at that precision (the benchmarker's
    choice too), made by ``made_by`` (a benchmark's start) and of ``conversion_job`` when
    given; an FP32 ONNX Runtime deployment of an ONNX version without one serves the
    version's own file. ``produced`` is in production order."""
    targets = _check_engine(engine, precision)
    found = [
        a
        for a in produced
        if a.target in targets
        and (made_by is None or a.created_at <= made_by)
        and (conversion_job is None or a.job_id == conversion_job)
    ]
    if found:
        a = found[-1]
        return ServedArtifact(
            target=a.target,
            format=a.format,
            precision=a.precision,
            artifact=a.artifact,
            companions=list(a.companions),
            conversion_job=a.job_id,
            parity=a.parity,
            probe=a.probe,
        )
    if "onnx" in targets and source_format in SERVABLE_FORMATS and source is not None:
        return ServedArtifact(target=SOURCE, format="onnx", precision="fp32", artifact=source)
    need = ", ".join(targets)
    where = " on a host with TensorRT" if targets[0].startswith("tensorrt") else ""
    raise Invalid(
        f"{model_name}:{version} has no produced {need} artifact for {engine} {precision}: "
        f"convert it first{where} (cvops convert {model_name}:{version} --targets {targets[0]})"
    )


class Recommendation(msgspec.Struct, frozen=True, kw_only=True):
    """What a completed benchmark picked, as deployment settings."""

    benchmark_id: str
    engine: str
    precision: str
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    instance_count: int
    made_by: datetime  # artifacts produced by then are what it measured
    conversion_job: str | None


def recommendation(
    state: BenchmarkState | None, bench_id: str, model_name: str, version: int
) -> Recommendation:
    """The deployment settings of a completed benchmark's pick of ``model_name:version``
    (refused when it has none)."""
    if state is None:
        raise NotFound(f"no benchmark {bench_id!r}")
    measured = (state.request.model_name, state.request.version)
    if measured != (model_name, version):
        raise Invalid(
            f"benchmark {bench_id} measured {measured[0]}:{measured[1]}, not {model_name}:{version}"
        )
    if state.status != "completed" or state.result is None:
        why = f": {state.reason}" if state.reason else ""
        raise Conflict(f"benchmark {bench_id} is {state.status}{why}; deploy a completed one")
    result = state.result
    pick: BenchmarkRow | None = result.pick
    if pick is None:
        closest = result.closest
        near = f" (closest: {closest.engine} {closest.precision})" if closest else ""
        raise Conflict(f"benchmark {bench_id} found nothing within its SLA{near}: {result.reason}")
    if pick.engine not in SERVING_ENGINES:
        raise Invalid(
            f"benchmark {bench_id} picked {pick.engine}, which Triton does not serve "
            f"(engines: {', '.join(SERVING_ENGINES)})"
        )
    batcher: BatcherAdvice | None = result.batcher
    if batcher is not None:
        max_batch = batcher.max_batch_size
        preferred = [b for b in batcher.preferred_batch_sizes if 0 < b <= max_batch]
        delay = batcher.max_queue_delay_us
    else:
        max_batch, preferred, delay = pick.batch_size, [pick.batch_size], 0
    return Recommendation(
        benchmark_id=bench_id,
        engine=pick.engine,
        precision=pick.precision,
        max_batch_size=max_batch,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=delay,
        # one instance: its session already uses every core, the batcher makes the batches
        instance_count=1,
        made_by=state.request.occurred_at,
        conversion_job=state.request.conversion_job,
    )


_RECOMMENDED_FIELDS = (
    "engine",
    "precision",
    "max_batch_size",
    "preferred_batch_sizes",
    "max_queue_delay_us",
    "instance_count",
)


def with_recommendation(body: CreateDeployment, rec: Recommendation) -> CreateDeployment:
    """``body`` with the benchmark's settings; a field given otherwise beside it is refused."""
    defaults = CreateDeployment(model_name=body.model_name, version=body.version)
    changes = {}
    for name in _RECOMMENDED_FIELDS:
        given, wanted = getattr(body, name), getattr(rec, name)
        if given != getattr(defaults, name) and given != wanted:
            raise Invalid(
                f"{name} {given!r} was given beside the benchmark's pick ({wanted!r}); "
                "leave it out or deploy without the benchmark"
            )
        changes[name] = wanted
    return msgspec.structs.replace(
        body, **changes, from_benchmark=rec.benchmark_id, recommended=False
    )


def newest_completed(states: Sequence[BenchmarkState], model_name: str, version: int) -> str:
    """The id of the newest completed benchmark of a model version (``--recommended``)."""
    done = [
        s
        for s in states
        if s.status == "completed"
        and s.request.model_name == model_name
        and s.request.version == version
    ]
    if not done:
        raise NotFound(f"{model_name}:{version} has no completed benchmark; run cvops bench first")
    return max(done, key=lambda s: (s.finished_at or s.request.occurred_at, s.job_id)).job_id


def request_deployment(
    body: CreateDeployment,
    *,
    canary: Canary | None,
    formats: Mapping[int, str | None],
    stamp: Stamp,
    served: ServedArtifact | None = None,
) -> list[Event]:
    """Serve a model version's artifact (and optionally a canary arm) under a name."""
    deployment = body.deployment or body.model_name
    request = DeploymentRequested(
        **stamp.envelope(f"deploy/{deployment}"),
        deployment=deployment,
        model_name=body.model_name,
        version=body.version,
        engine=body.engine,
        precision=body.precision,
        served=served,
        benchmark_id=body.from_benchmark,
        canary=canary,
        public=body.public,
        max_batch_size=body.max_batch_size,
        preferred_batch_sizes=list(body.preferred_batch_sizes),
        max_queue_delay_us=body.max_queue_delay_us,
        instance_count=body.instance_count,
    )
    check_request(request, formats)
    return [request]


# -- the served-output check -------------------------------------------------------------------

# What the served outputs may differ from the conversion's record on the probe images: the
# max abs error up to 1.5x the record (+1e-3: thread counts and batch sizes reorder sums),
# top-1 agreement down to the record minus one image in ten (+1 image: a small probe).
ERROR_SLACK = 1.5
ERROR_FLOOR = 1e-3
AGREEMENT_SLACK = 0.1


def serving_check(
    n_images: int, top1_agreement: float, max_abs_error: float, served: ServedArtifact
) -> ServingCheck:
    """Compare what Triton returned on the probe with the conversion's parity record."""
    parity = served.parity
    rec_top1 = parity.top1_agreement if parity else 1.0
    rec_err = parity.max_abs_error if parity else 0.0
    err_limit = rec_err * ERROR_SLACK + ERROR_FLOOR
    top1_limit = rec_top1 - AGREEMENT_SLACK - 1.0 / max(n_images, 1)
    problems = []
    if max_abs_error > err_limit:
        problems.append(f"max abs error {max_abs_error:.4g} > {err_limit:.4g}")
    if top1_agreement < top1_limit:
        problems.append(f"top-1 agreement {top1_agreement:.3f} < {top1_limit:.3f}")
    recorded = (
        f"recorded at conversion: max abs error {rec_err:.4g}, top-1 agreement {rec_top1:.3f}"
    )
    what = f"{served.target} artifact {served.artifact.sha256[:12]}"
    reason = (
        f"served {what} differs from what was measured on {n_images} images: "
        f"{'; '.join(problems)} ({recorded})"
        if problems
        else f"served {what} matches its record on {n_images} images ({recorded})"
    )
    return ServingCheck(
        n_images=n_images,
        top1_agreement=top1_agreement,
        max_abs_error=max_abs_error,
        recorded_top1_agreement=rec_top1,
        recorded_max_abs_error=rec_err,
        passed=not problems,
        reason=reason,
    )


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
