"""Identity in the projection: the ``users``, ``passwords`` and ``tokens`` aggregate tables
(``cvops.core.identity``, folded by ``cvops.domain.identity``) and their reads.

Tokens are kept by their sha256 only; a row changes only through events.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.api import TokenView, UserView
from cvops.core.identity import Identity
from cvops.domain.identity import TokenState, UserState
from cvops.gateway.core import Fold, metadata

IDENTITY = Identity(metadata)
users = IDENTITY.users.table
tokens = IDENTITY.tokens.table


def fold_identity(session: Session, event: Event, seq: int, at: str) -> None:
    """Users, password hashes and tokens from ``identity.*`` events."""
    IDENTITY.apply(session, event)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"identity": fold_identity}


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
