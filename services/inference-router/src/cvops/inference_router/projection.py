"""The router's projection of the log: model versions and deployments.

Everything the router needs to serve without asking anyone: which artifact a model version
is (``registry.model_version_added``) and what each deployment serves (``deployment.*``).
Who may call is identity's own stream and projection (``inference_router.identity``).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import Event, TensorSpec
from cvops.contracts.deployment import (
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.contracts.registry import DatasetValidated, ModelStageChanged, ModelVersionAdded
from cvops.core import Settings
from cvops.core.catalog import Catalog
from cvops.core.jobs import deployments_table
from cvops.domain.deployment import (
    ROUTABLE,
    Arm,
    DeploymentSpec,
    DeploymentState,
    arms,
)

SUBJECTS = ["cvops.evt.registry.>", "cvops.evt.deployment.>"]

metadata = MetaData()

# validated model versions (and data sets): cvops.core.catalog's tables
CATALOG = Catalog(metadata)

# each deployment's state (cvops.domain.deployment); ``status`` is the router's phase
DEPLOYMENTS = deployments_table(metadata, status=attrgetter("phase"))


@dataclass(frozen=True)
class ModelVersionRow:
    model_name: str
    version: int
    format: str
    artifact_sha256: str
    artifact_size: int
    artifact_filename: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    hyperparameters: dict[str, Any]


@dataclass(frozen=True)
class DeploymentRow:
    """What one deployment serves now (and what it was last asked to serve)."""

    name: str
    status: str  # the router's phase
    pending_version: int | None
    reason: str
    spec: DeploymentSpec  # what it serves, whole
    arms: tuple[Arm, ...]  # primary first; each its own Triton version (``slot``)

    @classmethod
    def of(cls, state: DeploymentState) -> DeploymentRow:
        return cls(
            name=state.deployment,
            status=state.phase,
            pending_version=state.pending_version,
            reason=state.serving_reason,
            spec=state.serving,
            arms=tuple(arms(state.serving)),
        )

    model_name = property(lambda self: self.spec.model_name)
    version = property(lambda self: self.spec.version)
    engine = property(lambda self: self.spec.engine)
    precision = property(lambda self: self.spec.precision)
    public = property(lambda self: self.spec.public)
    max_batch_size = property(lambda self: self.spec.max_batch_size)
    preferred_batch_sizes = property(lambda self: self.spec.preferred_batch_sizes)
    max_queue_delay_us = property(lambda self: self.spec.max_queue_delay_us)
    instance_count = property(lambda self: self.spec.instance_count)

    @property
    def routable(self) -> bool:
        return self.status in ROUTABLE

    @property
    def versions(self) -> tuple[int, ...]:
        """The Triton versions served (primary first): a registry version, or a slot above
        ``CANARY_SLOT`` for a canary of another engine of the same version."""
        return tuple(dict.fromkeys(a.slot for a in self.arms))

    @property
    def canary(self) -> Canary | None:
        return self.spec.canary

    @property
    def canary_version(self) -> int | None:
        """The canary's registry version."""
        return self.spec.canary.model_version if self.spec.canary else None

    @property
    def canary_slot(self) -> int | None:
        """The canary's Triton version."""
        return self.arms[1].slot if len(self.arms) > 1 else None

    @property
    def canary_weight_bp(self) -> int:
        """The canary's share in basis points."""
        canary = self.spec.canary
        return round(canary.weight_percent * 100) if canary else 0


class RouterProjection:
    """Folds registry and deployment events into the router's tables."""

    name = "inference-router"
    metadata = metadata
    # 2: model versions, users, tokens and deployments as aggregate tables folded by
    # cvops.domain; 3: deployments serve artifacts (arms); 4: identity in its own stream
    version = 4

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelVersionAdded() | ModelStageChanged() | DatasetValidated():
                CATALOG.apply(session, event)
            case (
                DeploymentRequested()
                | DeploymentReady()
                | DeploymentDegraded()
                | DeploymentFailed()
                | DeploymentRetireRequested()
                | DeploymentRetired()
            ):
                DEPLOYMENTS.apply(session, event)
            case _:
                pass


# what the ``cvops.projections`` entry point names (``cvops projections rebuild``)
projection = RouterProjection()


def db_path(settings: Settings) -> Path:
    """The router's projection: ``<home>/inference-router/router.sqlite``."""
    return settings.home_path / "inference-router" / "router.sqlite"


# -- queries --------------------------------------------------------------------------


def deployment_state(session: Session, name: str) -> DeploymentState | None:
    return DEPLOYMENTS.get(session, name)


def deployment(session: Session, name: str) -> DeploymentRow | None:
    state = DEPLOYMENTS.get(session, name)
    return None if state is None else DeploymentRow.of(state)


def all_deployments(session: Session) -> list[DeploymentRow]:
    return [DeploymentRow.of(state) for state in DEPLOYMENTS.states(session)]


def model_version(session: Session, model_name: str, version: int) -> ModelVersionRow | None:
    state = CATALOG.model_version(session, model_name, version)
    if state is None:
        return None
    return ModelVersionRow(
        model_name=state.model_name,
        version=state.version,
        format=state.format,
        artifact_sha256=state.artifact.sha256,
        artifact_size=state.artifact.size,
        artifact_filename=state.artifact.filename,
        inputs=list(state.inputs),
        outputs=list(state.outputs),
        hyperparameters=state.hyperparameters,
    )


def artifact_shas(session: Session, exclude: str = "") -> set[str]:
    """Every blob a deployment (but ``exclude``) serves or was asked to serve: artifacts,
    companions and probes."""
    keep: set[str] = set()
    for state in DEPLOYMENTS.states(session):
        if state.deployment == exclude or state.phase in ("retired", "failed", "retiring"):
            continue
        for spec in (state.serving, state.requested):
            for arm in arms(spec):
                served = arm.served
                if served is None:
                    mv = CATALOG.model_version(session, spec.model_name, arm.version)
                    if mv is not None:
                        keep.add(mv.artifact.sha256)
                    continue
                keep.add(served.artifact.sha256)
                keep.update(c.sha256 for c in served.companions)
                if served.probe is not None:
                    keep.add(served.probe.sha256)
    return keep
