"""The router's projection of the log: model versions, users and token digests, deployments.

Everything the router needs to serve without asking anyone: which artifact a model version
is (``registry.model_version_added``), who may call (``identity.*``: only token digests are
kept), and what each deployment serves (``deployment.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import JSON, Boolean, Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.dialects.sqlite import insert
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
from cvops.contracts.registry import ModelVersionAdded
from cvops.core import Settings

SUBJECTS = ["cvops.evt.registry.>", "cvops.evt.identity.>", "cvops.evt.deployment.>"]
# statuses in which a deployment answers requests
ROUTABLE = ("ready", "degraded")

metadata = MetaData()

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("format", String, nullable=False),
    Column("artifact_sha256", String, nullable=False),
    Column("artifact_size", Integer, nullable=False),
    Column("artifact_filename", String, nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("hyperparameters", JSON, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("username", String, primary_key=True),
    Column("role", String, nullable=False),
    Column("disabled", Boolean, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_sha256", String, primary_key=True),
    Column("token_id", String, nullable=False, index=True),
    Column("username", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("expires_at", String),
    Column("revoked", Boolean, nullable=False),
)

deployments = Table(
    "deployments",
    metadata,
    Column("name", String, primary_key=True),
    # pending (requested, never served) | ready | degraded | failed | retiring | retired
    Column("status", String, nullable=False),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("engine", String, nullable=False),
    Column("canary_version", Integer),
    Column("canary_weight", Integer),  # basis points (1/100 %)
    Column("public", Boolean, nullable=False),
    Column("max_batch_size", Integer, nullable=False),
    Column("preferred_batch_sizes", JSON, nullable=False),
    Column("max_queue_delay_us", Integer, nullable=False),
    Column("instance_count", Integer, nullable=False),
    Column("pending_version", Integer),
    Column("reason", String, nullable=False),
    Column("updated_seq", Integer, nullable=False),
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
    updated_seq: int

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


@dataclass(frozen=True)
class TokenRow:
    token_sha256: str
    token_id: str
    username: str
    kind: str
    expires_at: datetime | None
    revoked: bool


@dataclass(frozen=True)
class UserRow:
    username: str
    role: str
    disabled: bool


def _specs(items: list[TensorSpec]) -> list[dict[str, Any]]:
    return [msgspec.to_builtins(t) for t in items]


def _spec_fields(e: DeploymentRequested | DeploymentReady) -> dict[str, Any]:
    return {
        "model_name": e.model_name,
        "version": e.version,
        "engine": e.engine,
        "canary_version": e.canary.model_version if e.canary else None,
        "canary_weight": round(e.canary.weight_percent * 100) if e.canary else 0,
        "public": e.public,
        "max_batch_size": e.max_batch_size,
        "preferred_batch_sizes": list(e.preferred_batch_sizes),
        "max_queue_delay_us": e.max_queue_delay_us,
        "instance_count": e.instance_count,
    }


class RouterProjection:
    """Folds registry, identity and deployment events into the router's tables."""

    name = "inference-router"
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelVersionAdded():
                session.execute(
                    insert(model_versions)
                    .values(
                        model_name=event.model_name,
                        version=event.version,
                        format=event.format,
                        artifact_sha256=event.artifact.sha256,
                        artifact_size=event.artifact.size,
                        artifact_filename=event.artifact.filename,
                        inputs=_specs(event.inputs),
                        outputs=_specs(event.outputs),
                        hyperparameters=dict(event.lineage.hyperparameters),
                    )
                    .on_conflict_do_nothing()
                )
            case UserCreated(username=u, role=r):
                session.execute(
                    insert(users)
                    .values(username=u, role=r, disabled=False)
                    .on_conflict_do_nothing()
                )
            case RoleChanged(username=u, role=r):
                session.execute(update(users).where(users.c.username == u).values(role=r))
            case UserDisabled(username=u):
                session.execute(update(users).where(users.c.username == u).values(disabled=True))
            case UserEnabled(username=u):
                session.execute(update(users).where(users.c.username == u).values(disabled=False))
            case TokenIssued():
                session.execute(
                    insert(tokens)
                    .values(
                        token_sha256=event.token_sha256,
                        token_id=event.token_id,
                        username=event.username,
                        kind=event.kind,
                        expires_at=event.expires_at,
                        revoked=False,
                    )
                    .on_conflict_do_nothing()
                )
            case TokenRevoked(token_id=tid):
                session.execute(update(tokens).where(tokens.c.token_id == tid).values(revoked=True))
            case DeploymentRequested():
                self._requested(session, event, seq)
            case DeploymentReady():
                values = {
                    **_spec_fields(event),
                    "status": "ready",
                    "pending_version": None,
                    "reason": "",
                    "updated_seq": seq,
                }
                session.execute(
                    insert(deployments)
                    .values(name=event.deployment, **values)
                    .on_conflict_do_update(index_elements=["name"], set_=values)
                )
            case DeploymentDegraded(deployment=d, reason=reason):
                session.execute(
                    update(deployments)
                    .where(deployments.c.name == d, deployments.c.status == "ready")
                    .values(status="degraded", reason=reason, updated_seq=seq)
                )
            case DeploymentFailed(deployment=d, reason=reason):
                row = _row(session, d)
                if row is None:
                    return
                status = "failed" if row.status in ("pending", "failed") else row.status
                session.execute(
                    update(deployments)
                    .where(deployments.c.name == d)
                    .values(status=status, reason=reason, pending_version=None, updated_seq=seq)
                )
            case DeploymentRetireRequested(deployment=d):
                session.execute(
                    update(deployments)
                    .where(deployments.c.name == d, deployments.c.status.in_(ROUTABLE))
                    .values(status="retiring", updated_seq=seq)
                )
            case DeploymentRetired(deployment=d, reason=reason):
                session.execute(
                    update(deployments)
                    .where(deployments.c.name == d)
                    .values(status="retired", reason=reason, pending_version=None, updated_seq=seq)
                )
            case _:
                pass

    def _requested(self, session: Session, event: DeploymentRequested, seq: int) -> None:
        row = _row(session, event.deployment)
        if row is None or row.status in ("failed", "retired", "pending"):
            values = {
                **_spec_fields(event),
                "status": "pending",
                "pending_version": event.version,
                "reason": "",
                "updated_seq": seq,
            }
            session.execute(
                insert(deployments)
                .values(name=event.deployment, **values)
                .on_conflict_do_update(index_elements=["name"], set_=values)
            )
        else:  # a rolling update: keep serving the current spec until ready
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(pending_version=event.version, updated_seq=seq)
            )


# what the ``cvops.projections`` entry point names (``cvops projections rebuild``)
projection = RouterProjection()


def db_path(settings: Settings) -> Path:
    """The router's projection: ``<home>/inference-router/router.sqlite``."""
    return settings.home_path / "inference-router" / "router.sqlite"


# -- queries --------------------------------------------------------------------------


def _row(session: Session, name: str) -> DeploymentRow | None:
    r = session.execute(select(deployments).where(deployments.c.name == name)).first()
    return None if r is None else _deployment(r)


def _deployment(r: Any) -> DeploymentRow:
    return DeploymentRow(
        name=r.name,
        status=r.status,
        model_name=r.model_name,
        version=r.version,
        engine=r.engine,
        canary_version=r.canary_version,
        canary_weight_bp=int(r.canary_weight or 0),
        public=bool(r.public),
        max_batch_size=r.max_batch_size,
        preferred_batch_sizes=list(r.preferred_batch_sizes or []),
        max_queue_delay_us=r.max_queue_delay_us,
        instance_count=r.instance_count,
        pending_version=r.pending_version,
        reason=r.reason,
        updated_seq=r.updated_seq,
    )


def deployment(session: Session, name: str) -> DeploymentRow | None:
    return _row(session, name)


def all_deployments(session: Session) -> list[DeploymentRow]:
    rows = session.execute(select(deployments).order_by(deployments.c.name)).all()
    return [_deployment(r) for r in rows]


def model_version(session: Session, model_name: str, version: int) -> ModelVersionRow | None:
    r = session.execute(
        select(model_versions).where(
            model_versions.c.model_name == model_name, model_versions.c.version == version
        )
    ).first()
    if r is None:
        return None
    return ModelVersionRow(
        model_name=r.model_name,
        version=r.version,
        format=r.format,
        artifact_sha256=r.artifact_sha256,
        artifact_size=r.artifact_size,
        artifact_filename=r.artifact_filename,
        inputs=[msgspec.convert(t, TensorSpec) for t in r.inputs],
        outputs=[msgspec.convert(t, TensorSpec) for t in r.outputs],
        hyperparameters=dict(r.hyperparameters or {}),
    )


def user(session: Session, username: str) -> UserRow | None:
    r = session.execute(select(users).where(users.c.username == username)).first()
    return None if r is None else UserRow(r.username, r.role, bool(r.disabled))


def all_tokens(session: Session) -> list[tuple[TokenRow, UserRow | None]]:
    """Every token with its user (for the router's in-memory token table)."""
    rows = session.execute(
        select(tokens, users.c.role, users.c.disabled).join(
            users, users.c.username == tokens.c.username, isouter=True
        )
    ).all()
    out = []
    for r in rows:
        token = TokenRow(
            token_sha256=r.token_sha256,
            token_id=r.token_id,
            username=r.username,
            kind=r.kind,
            expires_at=_parse_time(r.expires_at),
            revoked=bool(r.revoked),
        )
        who = None if r.role is None else UserRow(r.username, r.role, bool(r.disabled))
        out.append((token, who))
    return out


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
