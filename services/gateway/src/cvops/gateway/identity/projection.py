"""Identity in the projection: the ``users`` and ``tokens`` tables, their fold and reads.

Tokens are kept by their sha256 only; a row changes only through events.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, String, Table, func, select, update
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.api import TokenView, UserView
from cvops.contracts.identity import (
    PasswordSet,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.gateway.core import Fold, metadata, parse_dt
from cvops.gateway.identity.rules import TokenState, UserState

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


def fold_identity(session: Session, event: Event, seq: int, at: str) -> None:
    """Users and tokens from ``identity.*`` events."""
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
        case _:
            pass


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"identity": fold_identity}


# -- reads -------------------------------------------------------------------------------------


def _user_state(row: Row) -> UserState:
    return UserState(
        username=row.username,
        role=row.role,
        password_hash=row.password_hash,
        disabled=bool(row.disabled),
        created_at=parse_dt(row.created_at),
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
        created_at=parse_dt(row.created_at),
        expires_at=parse_dt(row.expires_at) if row.expires_at else None,
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
        created_at=parse_dt(row.user_created_at),
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
            token_id=r.token_id, label=r.label, created_at=parse_dt(r.created_at), revoked=r.revoked
        )
        for r in rows
    ]
