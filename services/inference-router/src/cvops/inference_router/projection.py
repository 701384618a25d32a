"""The router's projection of the log: model versions, users and token digests, deployments.

Everything the router needs to serve without asking anyone: which artifact a model version
is (``registry.model_version_added``), who may call (``identity.*``: only token digests are
kept), and what each deployment serves (``deployment.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Column, MetaData, String
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
from cvops.contracts.identity import (
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.contracts.registry import DatasetValidated, ModelStageChanged, ModelVersionAdded
from cvops.core import Settings
from cvops.core.aggregates import AggregateTable
from cvops.core.catalog import Catalog
from cvops.core.identity import Identity
from cvops.domain.deployment import (
    ROUTABLE,
    DeploymentState,
    deployment_key,
    evolve_deployment,
)
from cvops.domain.identity import TokenState, UserState

SUBJECTS = ["cvops.evt.registry.>", "cvops.evt.identity.>", "cvops.evt.deployment.>"]

metadata = MetaData()

# validated model versions (and data sets): cvops.core.catalog's tables
CATALOG = Catalog(metadata)

# users and token digests (no password hash): aggregate tables folded by cvops.domain
IDENTITY = Identity(metadata, passwords=False)

# each deployment's state (cvops.domain.deployment); ``status`` is the router's phase
DEPLOYMENTS = AggregateTable(
    metadata,
    "deployments",
    DeploymentState,
    key=[Column("name", String)],
    key_of=lambda e: None if (k := deployment_key(e)) is None else (k,),
    evolve=evolve_deployment,
    columns=[(Column("status", String, nullable=False), attrgetter("phase"))],
)


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
    status: str
    model_name: str
    version: int
    engine: str
    canary_version: int | None
    canary_weight_bp: int
    public: bool
    max_batch_size: int
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int
    instance_count: int
    pending_version: int | None
    reason: str

    @property
    def routable(self) -> bool:
        return self.status in ROUTABLE

    @property
    def versions(self) -> tuple[int, ...]:
        """The registry versions served (primary first)."""
        if self.canary_version is None or self.canary_version == self.version:
            return (self.version,)
        return (self.version, self.canary_version)

    @property
    def canary(self) -> Canary | None:
        if self.canary_version is None:
            return None
        return Canary(model_version=self.canary_version, weight_percent=self.canary_weight_bp / 100)


class RouterProjection:
    """Folds registry, identity and deployment events into the router's tables."""

    name = "inference-router"
    metadata = metadata
    # 2: model versions, users, tokens and deployments as aggregate tables folded by
    # cvops.domain
    version = 2

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelVersionAdded() | ModelStageChanged() | DatasetValidated():
                CATALOG.apply(session, event)
            case UserCreated() | RoleChanged() | UserDisabled() | UserEnabled():
                IDENTITY.apply(session, event)
            case TokenIssued() | TokenRevoked():
                IDENTITY.apply(session, event)
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


def _deployment(state: DeploymentState) -> DeploymentRow:
    spec = state.serving
    canary = spec.canary
    return DeploymentRow(
        name=state.deployment,
        status=state.phase,
        model_name=spec.model_name,
        version=spec.version,
        engine=spec.engine,
        canary_version=canary.model_version if canary else None,
        canary_weight_bp=round(canary.weight_percent * 100) if canary else 0,
        public=spec.public,
        max_batch_size=spec.max_batch_size,
        preferred_batch_sizes=list(spec.preferred_batch_sizes),
        max_queue_delay_us=spec.max_queue_delay_us,
        instance_count=spec.instance_count,
        pending_version=state.pending_version,
        reason=state.serving_reason,
    )


def deployment_state(session: Session, name: str) -> DeploymentState | None:
    return DEPLOYMENTS.get(session, name)


def deployment(session: Session, name: str) -> DeploymentRow | None:
    state = DEPLOYMENTS.get(session, name)
    return None if state is None else _deployment(state)


def all_deployments(session: Session) -> list[DeploymentRow]:
    return [_deployment(state) for state in DEPLOYMENTS.states(session)]


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


def user(session: Session, username: str) -> UserState | None:
    return IDENTITY.user(session, username)


def all_tokens(session: Session) -> list[tuple[TokenState, UserState | None]]:
    """Every token with its user (for the router's in-memory token table)."""
    users = {u.username: u for u in IDENTITY.users.states(session)}
    return [(t, users.get(t.username)) for t in IDENTITY.tokens.states(session)]
