"""Identity's own projection: the ``users``, ``passwords`` and ``tokens`` aggregate tables
(``cvops.core.identity``, folded by ``cvops.domain.identity``) and their reads.

Identity's events carry password and token hashes, so they live in their own stream
(``CVOPS_IDENTITY`` on ``cvops.sec.>``), which this projection follows into its own file
(``<home>/gateway-identity.sqlite``; the entry point ``cvops.projections: gateway-identity``).
Tokens are kept by their sha256 only; a row changes only through events. ``identity_requests``
lists the correlation id of every identity event (what an ``Idempotency-Key`` of a user or
token request is checked against: ``cvops.gateway.idempotency``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.api import TokenView, UserView
from cvops.core import IDENTITY_STREAM, Settings
from cvops.core.identity import Identity
from cvops.domain.identity import TokenState, UserState
from cvops.gateway.core import Generations
from cvops.gateway.workers import worker_files

STREAM = IDENTITY_STREAM

metadata = MetaData()
IDENTITY = Identity(metadata)
users = IDENTITY.users.table
tokens = IDENTITY.tokens.table
identity_requests = Table(
    "identity_requests",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("correlation_id", String, nullable=False, index=True),
)


class IdentityProjection(Generations):
    """Folds the identity stream into users, password hashes and token digests."""

    name = "gateway-identity"
    metadata = metadata
    version = 2  # 2: identity_requests

    def apply(self, session: Session, event: Event, seq: int) -> None:
        self._touched.add(event.context)
        session.execute(
            insert(identity_requests)
            .values(seq=seq, correlation_id=event.correlation_id)
            .on_conflict_do_nothing()
        )
        IDENTITY.apply(session, event)


projection = IdentityProjection()


def db_path(settings: Settings) -> Path:
    """Where the gateway keeps identity's projection."""
    return settings.home_path / "gateway-identity.sqlite"


def copies(settings: Settings) -> list[Path]:
    """The other gateway workers' files of the same projection (``cvops projections rebuild``
    deletes them; each worker replays the log into its own at its next start)."""
    return worker_files(db_path(settings))


# -- reads -------------------------------------------------------------------------------------


def get_user(s: Session, username: str) -> UserState | None:
    return IDENTITY.user(s, username)


def password_hash(s: Session, username: str) -> str | None:
    return IDENTITY.password_hash(s, username)


def user_view(user: UserState) -> UserView:
    return UserView(
        username=user.username, role=user.role, created_at=user.created_at, disabled=user.disabled
    )


def list_users(s: Session) -> list[UserView]:
    return [user_view(u) for u in IDENTITY.users.states(s)]


def count_users(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(users)).scalar_one())


def count_active_admins(s: Session) -> int:
    q = select(func.count()).select_from(users).where(users.c.role == "admin", ~users.c.disabled)
    return int(s.execute(q).scalar_one())


def token_by_digest(s: Session, digest: str) -> tuple[TokenState, UserState] | None:
    """The token with this sha256 and its user (whatever their state)."""
    token = IDENTITY.token_by_digest(s, digest)
    if token is None:
        return None
    user = IDENTITY.user(s, token.username)
    return None if user is None else (token, user)


def get_token(s: Session, token_id: str) -> TokenState | None:
    return IDENTITY.token(s, token_id)


def user_tokens(s: Session, username: str) -> list[TokenState]:
    """Every token of a user, sessions and API tokens, revoked or not."""
    return IDENTITY.tokens.states(s, username=username)


def list_tokens(s: Session, username: str) -> list[TokenView]:
    """A user's API tokens (session tokens from logins are not listed)."""
    found = IDENTITY.tokens.states(s, username=username, kind="api")
    found.sort(key=lambda t: (t.created_at, t.token_id))
    return [
        TokenView(token_id=t.token_id, label=t.label, created_at=t.created_at, revoked=t.revoked)
        for t in found
    ]
