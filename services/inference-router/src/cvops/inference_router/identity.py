"""The router's projection of identity: who may call, as users and token digests (never a
password hash), folded by ``cvops.domain.identity``.

Identity's events carry credentials, so they live in their own stream (``CVOPS_IDENTITY``
on ``cvops.sec.>``); this projection follows it into its own file
(``<home>/inference-router/identity.sqlite``; the entry point
``cvops.projections: inference-router-identity``).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.contracts.identity import (
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.core import IDENTITY_STREAM, Settings
from cvops.core.identity import Identity
from cvops.domain.identity import TokenState, UserState

STREAM = IDENTITY_STREAM

metadata = MetaData()

# users and token digests (no password hash): aggregate tables folded by cvops.domain
IDENTITY = Identity(metadata, passwords=False)


class RouterIdentityProjection:
    """Folds users and tokens (not password changes) into the router's identity tables."""

    name = "inference-router-identity"
    metadata = metadata
    version = 1

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case UserCreated() | RoleChanged() | UserDisabled() | UserEnabled():
                IDENTITY.apply(session, event)
            case TokenIssued() | TokenRevoked():
                IDENTITY.apply(session, event)
            case _:
                pass


# what the ``cvops.projections`` entry point names (``cvops projections rebuild``)
projection = RouterIdentityProjection()


def db_path(settings: Settings) -> Path:
    """``<home>/inference-router/identity.sqlite``."""
    return settings.home_path / "inference-router" / "identity.sqlite"


def user(session: Session, username: str) -> UserState | None:
    return IDENTITY.user(session, username)


def all_tokens(session: Session) -> list[tuple[TokenState, UserState | None]]:
    """Every token with its user (for the router's in-memory token table)."""
    users = {u.username: u for u in IDENTITY.users.states(session)}
    return [(t, users.get(t.username)) for t in IDENTITY.tokens.states(session)]
