"""Pure decisions of the router: deployment plans, verdicts, canary choice, token checks.

No clock, no randomness, no I/O here: the caller passes a ``Stamp``, the time and a
random draw, so every decision is a plain function to test.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cvops.contracts import Stamp
from cvops.contracts.deployment import (
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
    ServingCheck,
)
from cvops.domain.deployment import (
    arms,
    check_deployer,
    check_request,
    check_retirement,
    spec_fields,
    spec_of,
)
from cvops.domain.errors import Refused
from cvops.domain.identity import UserState
from cvops.inference_router.projection import DeploymentRow, ModelVersionRow

ACTOR = "inference-router"
BUCKETS = 10_000  # canary weights are in basis points


@dataclass(frozen=True)
class DeployPlan:
    """How to get from what a deployment serves to what it was asked to serve."""

    request: DeploymentRequested
    versions: tuple[int, ...]  # Triton versions served once ready (primary first)
    transition: tuple[int, ...]  # loaded while switching: old and new side by side

    @property
    def retiring(self) -> tuple[int, ...]:
        return tuple(v for v in self.transition if v not in self.versions)


def plan_deployment(
    request: DeploymentRequested,
    current: DeploymentRow | None,
    versions: dict[int, ModelVersionRow | None],
    actor: UserState | None,
    stamp: Stamp,
) -> DeployPlan | DeploymentFailed:
    """Check a deployment request; a refusal is a ``deployment.failed`` event."""
    reason = _refusal(request, versions, actor)
    if reason is not None:
        return deployment_failed(request, reason, stamp)
    wanted = list(dict.fromkeys(a.slot for a in arms(request)))
    served = list(current.versions) if current is not None and current.routable else []
    transition = tuple(dict.fromkeys([*served, *wanted]))
    return DeployPlan(request=request, versions=tuple(wanted), transition=transition)


def _refusal(
    r: DeploymentRequested,
    versions: dict[int, ModelVersionRow | None],
    actor: UserState | None,
) -> str | None:
    try:
        check_deployer(actor, r.actor)
        check_request(r, {v: row.format if row else None for v, row in versions.items()})
    except Refused as err:
        return str(err)
    return None


def deployment_ready(
    request: DeploymentRequested,
    instances: list[str],
    stamp: Stamp,
    checks: dict[str, ServingCheck] | None = None,
) -> DeploymentReady:
    return DeploymentReady(
        **stamp.envelope(f"ready/{request.deployment}/{request.version}"),
        deployment=request.deployment,
        **spec_fields(spec_of(request)),
        instances=instances,
        checks=dict(checks or {}),
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
    actor: UserState | None,
    stamp: Stamp,
) -> DeploymentRetired | DeploymentFailed:
    """Retire a deployment, or refuse (unknown deployment, caller lacks the role)."""
    reason = None
    try:
        check_deployer(actor, request.actor, "retiring a deployment")
        check_retirement(current.status if current else None, request.deployment)
    except Refused as err:
        reason = str(err)
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
    """A stable bucket in [0, 10000) for a request key (same key, same version): the first
    8 bytes of its sha256, as nginx's rule (``dataplane.js``) computes it too."""
    digest = hashlib.sha256(key.encode()).digest()[:8]
    return int.from_bytes(digest, "big") % BUCKETS


def choose_version(d: DeploymentRow, key: str | None, draw: float) -> int:
    """Primary or canary version for one request.

    With a request key the choice is sticky (hash bucket below the weight: canary);
    without one ``draw`` (uniform in [0, 1)) decides by weight.
    """
    canary = d.canary_slot
    if canary is None or d.canary_weight_bp <= 0:
        return d.version
    bucket = sticky_bucket(key) if key else int(draw * BUCKETS)
    return canary if bucket < d.canary_weight_bp else d.version
