"""Pure decisions of the router: deployment plans, verdicts, canary choice, token checks.

No clock, no randomness, no I/O here: the caller passes a ``Stamp``, the time and a
random draw, so every decision is a plain function to test.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from cvops.contracts import Stamp
from cvops.contracts.deployment import (
    ENGINES,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.inference_router.projection import DeploymentRow, ModelVersionRow, TokenRow, UserRow

ACTOR = "inference-router"
DEPLOY_ROLES = ("admin", "engineer")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_BATCH = 1024
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INSTANCES = 16
SERVABLE_FORMATS = ("onnx",)
PROVIDERS = {
    "onnxruntime-cpu": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
BUCKETS = 10_000  # canary weights are in basis points


@dataclass(frozen=True)
class DeployPlan:
    """How to get from what a deployment serves to what it was asked to serve."""

    request: DeploymentRequested
    versions: tuple[int, ...]  # served once ready (primary first)
    transition: tuple[int, ...]  # loaded while switching: old and new side by side

    @property
    def retiring(self) -> tuple[int, ...]:
        return tuple(v for v in self.transition if v not in self.versions)


def plan_deployment(
    request: DeploymentRequested,
    current: DeploymentRow | None,
    versions: dict[int, ModelVersionRow | None],
    actor: UserRow | None,
    stamp: Stamp,
) -> DeployPlan | DeploymentFailed:
    """Check a deployment request; a refusal is a ``deployment.failed`` event."""
    reason = _refusal(request, versions, actor)
    if reason is not None:
        return deployment_failed(request, reason, stamp)
    wanted = [request.version]
    if request.canary is not None:
        wanted.append(request.canary.model_version)
    served = list(current.versions) if current is not None and current.routable else []
    transition = tuple(dict.fromkeys([*served, *wanted]))
    return DeployPlan(request=request, versions=tuple(wanted), transition=transition)


def _refusal(
    r: DeploymentRequested,
    versions: dict[int, ModelVersionRow | None],
    actor: UserRow | None,
) -> str | None:
    if actor is None:
        return f"forbidden: {r.actor!r} is not a known user"
    if actor.disabled or actor.role not in DEPLOY_ROLES:
        return (
            f"forbidden: deploying needs role engineer or admin ({actor.username} is {actor.role})"
        )
    if not NAME_RE.match(r.deployment):
        return f"invalid deployment name {r.deployment!r} (letters, digits, '_', '.', '-')"
    if r.engine not in ENGINES:
        return f"unknown engine {r.engine!r}; one of {', '.join(ENGINES)}"
    if not 0 <= r.max_batch_size <= MAX_BATCH:
        return f"max_batch_size must be within 0..{MAX_BATCH}"
    bad = [b for b in r.preferred_batch_sizes if not 0 < b <= max(r.max_batch_size, 0)]
    if bad:
        return f"preferred batch sizes {bad} are outside 1..max_batch_size ({r.max_batch_size})"
    if not 0 <= r.max_queue_delay_us <= MAX_QUEUE_DELAY_US:
        return f"max_queue_delay_us must be within 0..{MAX_QUEUE_DELAY_US}"
    if not 1 <= r.instance_count <= MAX_INSTANCES:
        return f"instance_count must be within 1..{MAX_INSTANCES}"
    wanted = [r.version]
    if r.canary is not None:
        if r.canary.model_version == r.version:
            return "the canary version must differ from the deployed version"
        if not 0 < r.canary.weight_percent < 100:
            return "canary weight_percent must be strictly between 0 and 100"
        wanted.append(r.canary.model_version)
    for v in wanted:
        row = versions.get(v)
        if row is None:
            return f"model {r.model_name!r} has no version {v}"
        if row.format not in SERVABLE_FORMATS:
            return f"{r.model_name}:{v} is {row.format}; convert it to ONNX before deploying"
    return None


def deployment_ready(
    request: DeploymentRequested, instances: list[str], stamp: Stamp
) -> DeploymentReady:
    return DeploymentReady(
        **stamp.envelope(f"ready/{request.deployment}/{request.version}"),
        deployment=request.deployment,
        model_name=request.model_name,
        version=request.version,
        engine=request.engine,
        canary=request.canary,
        public=request.public,
        max_batch_size=request.max_batch_size,
        preferred_batch_sizes=list(request.preferred_batch_sizes),
        max_queue_delay_us=request.max_queue_delay_us,
        instance_count=request.instance_count,
        instances=instances,
    )


def deployment_failed(request: DeploymentRequested, reason: str, stamp: Stamp) -> DeploymentFailed:
    return DeploymentFailed(
        **stamp.envelope(f"failed/{request.deployment}/{request.version}"),
        deployment=request.deployment,
        model_name=request.model_name,
        version=request.version,
        reason=reason,
    )


def plan_retirement(
    request: DeploymentRetireRequested,
    current: DeploymentRow | None,
    actor: UserRow | None,
    stamp: Stamp,
) -> DeploymentRetired | DeploymentFailed:
    """Retire a deployment, or refuse (unknown deployment, caller lacks the role)."""
    reason = None
    if actor is None or actor.disabled or actor.role not in DEPLOY_ROLES:
        reason = f"forbidden: retiring a deployment needs role engineer or admin ({request.actor})"
    elif current is None or current.status in ("retired", "failed"):
        reason = f"no deployment named {request.deployment!r} is served"
    if reason is not None:
        return DeploymentFailed(
            **stamp.envelope(f"retire-failed/{request.deployment}"),
            deployment=request.deployment,
            model_name=current.model_name if current else "",
            version=current.version if current else 0,
            reason=reason,
        )
    return DeploymentRetired(
        **stamp.envelope(f"retired/{request.deployment}"),
        deployment=request.deployment,
        reason=request.reason,
    )


def triton_message(message: str) -> str:
    """Triton's error without the python traceback it appends (``At: ...``)."""
    text = message.strip()
    head = text.split("\n\nAt:", 1)[0].strip()
    return head or text


# -- routing decisions ----------------------------------------------------------------


def sticky_bucket(key: str) -> int:
    """A stable bucket in [0, 10000) for a request key (same key, same version)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose_version(d: DeploymentRow, key: str | None, draw: float) -> int:
    """Primary or canary version for one request.

    With a request key the choice is sticky (hash bucket below the weight: canary);
    without one ``draw`` (uniform in [0, 1)) decides by weight.
    """
    if d.canary_version is None or d.canary_weight_bp <= 0:
        return d.version
    bucket = sticky_bucket(key) if key else int(draw * BUCKETS)
    return d.canary_version if bucket < d.canary_weight_bp else d.version


def token_refusal(token: TokenRow | None, user: UserRow | None, now: datetime) -> str | None:
    """Why a bearer token may not call (None: it may)."""
    if token is None:
        return "unknown token"
    if token.revoked:
        return "token revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "token expired"
    if user is None:
        return "unknown user"
    if user.disabled:
        return "user disabled"
    return None
