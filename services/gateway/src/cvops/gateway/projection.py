"""The gateway's projection of the whole log: users, tokens, models, data sets, uploads,
and every event indexed by correlation id (for the SSE feed). Plus the read queries.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import msgspec
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    select,
    update,
)
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cvops.contracts import Event, encode
from cvops.contracts.api import DatasetView, ModelVersionView, ModelView, TokenView, UserView
from cvops.contracts.identity import (
    PasswordSet,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ModelRegistered,
    ModelRejected,
    ModelStageChanged,
    ModelUploadReceived,
    ModelVersionAdded,
)
from cvops.core import Settings
from cvops.gateway.handlers import TokenState, UserState

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("username", String, primary_key=True),
    Column("role", String, nullable=False),
    Column("password_hash", String, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", String, nullable=False),
    Column("created_by", String, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_id", String, primary_key=True),
    Column("username", String, nullable=False, index=True),
    Column("token_sha256", String, nullable=False, unique=True),
    Column("label", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("expires_at", String),
    Column("revoked", Boolean, nullable=False, default=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer),
)

# ``body`` is a ModelVersionView as JSON; ``stage`` (the only mutable part) is a column.
model_versions = Table(
    "model_versions",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("stage", String, nullable=False),
    Column("upload_id", String, nullable=False),
    Column("body", Text, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer),
)

# ``body`` is a DatasetView as JSON.
dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("upload_id", String, nullable=False),
    Column("body", Text, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("name", String, nullable=False),
    Column("status", String, nullable=False),
    Column("version", Integer),
    Column("reason", String),
    Column("correlation_id", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("created_at", String, nullable=False),
)

correlated_events = Table(
    "correlated_events",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("correlation_id", String, nullable=False, index=True),
    Column("type", String, nullable=False),
    Column("body", Text, nullable=False),
)


SECRET_FIELDS = ("password_hash", "token_sha256")


def public_json(event: Event) -> str:
    """The event as JSON for the SSE feed, without password hashes or token digests."""
    if event.context != "identity":
        return encode(event).decode()
    raw = msgspec.json.decode(encode(event))
    for name in SECRET_FIELDS:
        if name in raw:
            raw[name] = "<redacted>"
    return msgspec.json.encode(raw).decode()


class GatewayProjection:
    """Folds every event of the log into the gateway's read model."""

    name = "gateway"
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        session.execute(
            insert(correlated_events)
            .values(
                seq=seq,
                correlation_id=event.correlation_id,
                type=event.tag(),
                body=public_json(event),
            )
            .on_conflict_do_nothing()
        )
        at = event.occurred_at.isoformat()
        match event:
            case UserCreated(username=u, role=r, password_hash=h):
                session.execute(
                    insert(users)
                    .values(
                        username=u,
                        role=r,
                        password_hash=h,
                        disabled=False,
                        created_at=at,
                        created_by=event.actor,
                    )
                    .on_conflict_do_nothing()
                )
            case RoleChanged(username=u, role=r):
                session.execute(update(users).where(users.c.username == u).values(role=r))
            case PasswordSet(username=u, password_hash=h):
                session.execute(update(users).where(users.c.username == u).values(password_hash=h))
            case UserDisabled(username=u):
                session.execute(update(users).where(users.c.username == u).values(disabled=True))
            case UserEnabled(username=u):
                session.execute(update(users).where(users.c.username == u).values(disabled=False))
            case TokenIssued():
                session.execute(
                    insert(tokens)
                    .values(
                        token_id=event.token_id,
                        username=event.username,
                        token_sha256=event.token_sha256,
                        label=event.label,
                        kind=event.kind,
                        created_at=at,
                        expires_at=event.expires_at,
                        revoked=False,
                    )
                    .on_conflict_do_nothing()
                )
            case TokenRevoked(token_id=t):
                session.execute(update(tokens).where(tokens.c.token_id == t).values(revoked=True))
            case ModelUploadReceived(upload_id=up, model_name=n):
                self._upload(session, event, up, "model", n)
            case DatasetUploadReceived(upload_id=up, dataset_name=n):
                self._upload(session, event, up, "dataset", n)
            case ModelRegistered(model_name=n, owner=o):
                session.execute(
                    insert(models)
                    .values(name=n, owner=o, created_at=at, latest_version=None)
                    .on_conflict_do_nothing()
                )
            case ModelVersionAdded():
                self._model_version(session, event, at)
            case ModelRejected(upload_id=up, reason=why):
                self._verdict(session, up, "rejected", None, why)
            case ModelStageChanged(model_name=n, version=v, stage=s):
                session.execute(
                    update(model_versions)
                    .where(model_versions.c.model_name == n, model_versions.c.version == v)
                    .values(stage=s)
                )
            case DatasetRegistered(dataset_name=n, owner=o):
                session.execute(
                    insert(datasets)
                    .values(name=n, owner=o, created_at=at, latest_version=None)
                    .on_conflict_do_nothing()
                )
            case DatasetValidated():
                self._dataset_version(session, event, at)
            case DatasetRejected(upload_id=up, reason=why):
                self._verdict(session, up, "rejected", None, why)
            case _:
                pass

    @staticmethod
    def _upload(session: Session, event: Event, upload_id: str, kind: str, name: str) -> None:
        session.execute(
            insert(uploads)
            .values(
                upload_id=upload_id,
                kind=kind,
                name=name,
                status="pending",
                correlation_id=event.correlation_id,
                actor=event.actor,
                created_at=event.occurred_at.isoformat(),
            )
            .on_conflict_do_nothing()
        )

    @staticmethod
    def _verdict(
        session: Session, upload_id: str, status: str, version: int | None, reason: str | None
    ) -> None:
        session.execute(
            update(uploads)
            .where(uploads.c.upload_id == upload_id)
            .values(status=status, version=version, reason=reason)
        )

    def _uploader(self, session: Session, upload_id: str, default: str) -> str:
        actor = session.execute(
            select(uploads.c.actor).where(uploads.c.upload_id == upload_id)
        ).scalar_one_or_none()
        return actor or default

    def _model_version(self, session: Session, e: ModelVersionAdded, at: str) -> None:
        by = self._uploader(session, e.upload_id, e.actor)
        session.execute(
            insert(models)
            .values(name=e.model_name, owner=by, created_at=at, latest_version=None)
            .on_conflict_do_nothing()
        )
        view = ModelVersionView(
            model_name=e.model_name,
            version=e.version,
            stage="none",
            format=e.format,
            artifact=e.artifact,
            inputs=e.inputs,
            outputs=e.outputs,
            parameter_count=e.parameter_count,
            opset=e.opset,
            architecture=e.architecture,
            num_classes=e.num_classes,
            description=e.description,
            lineage=e.lineage,
            created_at=e.occurred_at,
            created_by=by,
        )
        session.execute(
            insert(model_versions)
            .values(
                model_name=e.model_name,
                version=e.version,
                stage="none",
                upload_id=e.upload_id,
                body=msgspec.json.encode(view).decode(),
            )
            .on_conflict_do_nothing()
        )
        session.execute(
            update(models)
            .where(models.c.name == e.model_name)
            .values(latest_version=func.max(func.coalesce(models.c.latest_version, 0), e.version))
        )
        self._verdict(session, e.upload_id, "validated", e.version, None)

    def _dataset_version(self, session: Session, e: DatasetValidated, at: str) -> None:
        by = self._uploader(session, e.upload_id, e.actor)
        session.execute(
            insert(datasets)
            .values(name=e.dataset_name, owner=by, created_at=at, latest_version=None)
            .on_conflict_do_nothing()
        )
        view = DatasetView(
            name=e.dataset_name,
            owner=by,
            version=e.version,
            created_at=e.occurred_at,
            classes=e.classes,
            class_counts=e.class_counts,
            num_images=e.num_images,
            images=e.images,
            splits=e.splits,
            source=e.source,
            canonical=e.canonical,
            seed=e.seed,
            description=e.description,
        )
        session.execute(
            insert(dataset_versions)
            .values(
                name=e.dataset_name,
                version=e.version,
                upload_id=e.upload_id,
                body=msgspec.json.encode(view).decode(),
            )
            .on_conflict_do_nothing()
        )
        session.execute(
            update(datasets)
            .where(datasets.c.name == e.dataset_name)
            .values(latest_version=func.max(func.coalesce(datasets.c.latest_version, 0), e.version))
        )
        self._verdict(session, e.upload_id, "validated", e.version, None)


projection = GatewayProjection()


def db_path(settings: Settings) -> Path:
    """Where the gateway keeps its projection."""
    return settings.home_path / "gateway.sqlite"


# -- queries -------------------------------------------------------------------------


class UploadState(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: str
    kind: str
    name: str
    status: str
    version: int | None
    reason: str | None
    correlation_id: str


class CorrelatedEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    body: str


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _user_state(row: Row) -> UserState:
    return UserState(
        username=row.username,
        role=row.role,
        password_hash=row.password_hash,
        disabled=bool(row.disabled),
        created_at=_dt(row.created_at),
    )


def get_user(s: Session, username: str) -> UserState | None:
    row = s.execute(select(users).where(users.c.username == username)).first()
    return _user_state(row) if row else None


def user_view(user: UserState) -> UserView:
    return UserView(
        username=user.username, role=user.role, created_at=user.created_at, disabled=user.disabled
    )


def list_users(s: Session) -> list[UserView]:
    rows = s.execute(select(users).order_by(users.c.username)).all()
    return [user_view(_user_state(r)) for r in rows]


def count_users(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(users)).scalar_one())


def count_active_admins(s: Session) -> int:
    q = select(func.count()).select_from(users).where(users.c.role == "admin", ~users.c.disabled)
    return int(s.execute(q).scalar_one())


def _token_state(row: Row) -> TokenState:
    return TokenState(
        token_id=row.token_id,
        username=row.username,
        kind=row.kind,
        label=row.label,
        created_at=_dt(row.created_at),
        expires_at=_dt(row.expires_at) if row.expires_at else None,
        revoked=bool(row.revoked),
    )


def token_by_digest(s: Session, digest: str) -> tuple[TokenState, UserState] | None:
    """The token with this sha256 and its user (whatever their state)."""
    row = s.execute(
        select(tokens, users.c.role, users.c.password_hash, users.c.disabled)
        .add_columns(users.c.created_at.label("user_created_at"))
        .join(users, users.c.username == tokens.c.username)
        .where(tokens.c.token_sha256 == digest)
    ).first()
    if row is None:
        return None
    user = UserState(
        username=row.username,
        role=row.role,
        password_hash=row.password_hash,
        disabled=bool(row.disabled),
        created_at=_dt(row.user_created_at),
    )
    return _token_state(row), user


def get_token(s: Session, token_id: str) -> TokenState | None:
    row = s.execute(select(tokens).where(tokens.c.token_id == token_id)).first()
    return _token_state(row) if row else None


def list_tokens(s: Session, username: str) -> list[TokenView]:
    """A user's API tokens (session tokens from logins are not listed)."""
    rows = s.execute(
        select(tokens)
        .where(tokens.c.username == username, tokens.c.kind == "api")
        .order_by(tokens.c.created_at, tokens.c.token_id)
    ).all()
    return [
        TokenView(
            token_id=r.token_id, label=r.label, created_at=_dt(r.created_at), revoked=r.revoked
        )
        for r in rows
    ]


def _model_view(row: Row) -> ModelView:
    return ModelView(
        name=row.name,
        owner=row.owner,
        created_at=_dt(row.created_at),
        latest_version=row.latest_version,
    )


def list_models(s: Session) -> list[ModelView]:
    """Models with at least one version."""
    rows = s.execute(
        select(models).where(models.c.latest_version.is_not(None)).order_by(models.c.name)
    ).all()
    return [_model_view(r) for r in rows]


def _version_view(row: Row) -> ModelVersionView:
    view = msgspec.json.decode(row.body, type=ModelVersionView)
    return msgspec.structs.replace(view, stage=row.stage)


def list_versions(s: Session, name: str) -> list[ModelVersionView]:
    rows = s.execute(
        select(model_versions)
        .where(model_versions.c.model_name == name)
        .order_by(model_versions.c.version)
    ).all()
    return [_version_view(r) for r in rows]


def get_model(s: Session, name: str) -> ModelView | None:
    row = s.execute(
        select(models).where(models.c.name == name, models.c.latest_version.is_not(None))
    ).first()
    if row is None:
        return None
    return msgspec.structs.replace(_model_view(row), versions=list_versions(s, name))


def get_version(s: Session, name: str, version: int) -> ModelVersionView | None:
    row = s.execute(
        select(model_versions).where(
            model_versions.c.model_name == name, model_versions.c.version == version
        )
    ).first()
    return _version_view(row) if row else None


def _dataset_view(row: Row) -> DatasetView:
    return msgspec.json.decode(row.body, type=DatasetView)


def list_datasets(s: Session) -> list[DatasetView]:
    """The latest validated version of every data set."""
    rows = s.execute(
        select(dataset_versions)
        .join(
            datasets,
            (datasets.c.name == dataset_versions.c.name)
            & (datasets.c.latest_version == dataset_versions.c.version),
        )
        .order_by(dataset_versions.c.name)
    ).all()
    return [_dataset_view(r) for r in rows]


def get_dataset(s: Session, name: str, version: int | None = None) -> DatasetView | None:
    q = select(dataset_versions).where(dataset_versions.c.name == name)
    q = (
        q.where(dataset_versions.c.version == version)
        if version is not None
        else q.order_by(dataset_versions.c.version.desc()).limit(1)
    )
    row = s.execute(q).first()
    return _dataset_view(row) if row else None


def get_upload(s: Session, upload_id: str) -> UploadState | None:
    row = s.execute(select(uploads).where(uploads.c.upload_id == upload_id)).first()
    if row is None:
        return None
    return UploadState(
        upload_id=row.upload_id,
        kind=row.kind,
        name=row.name,
        status=row.status,
        version=row.version,
        reason=row.reason,
        correlation_id=row.correlation_id,
    )


def events_after(
    s: Session, correlation_id: str, after_seq: int, limit: int = 500
) -> list[CorrelatedEvent]:
    """Events of one correlation id with a stream sequence above ``after_seq``, oldest first."""
    rows = s.execute(
        select(correlated_events)
        .where(
            correlated_events.c.correlation_id == correlation_id,
            correlated_events.c.seq > after_seq,
        )
        .order_by(correlated_events.c.seq)
        .limit(limit)
    ).all()
    return [CorrelatedEvent(seq=r.seq, type=r.type, body=r.body) for r in rows]
