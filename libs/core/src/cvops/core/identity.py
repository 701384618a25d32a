"""Users, password hashes and tokens as aggregate tables, folded by ``cvops.domain.identity``.

The gateway keeps all three; the router keeps users and tokens only (no password hash).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Boolean, Column, MetaData, String
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core.aggregates import AggregateTable
from cvops.domain.identity import (
    PasswordState,
    TokenState,
    UserState,
    evolve_password,
    evolve_token,
    evolve_user,
    password_key,
    token_key,
    user_key,
)


def _one(key_of: Callable[[Event], str | None]) -> Callable[[Event], tuple[str] | None]:
    def keyed(event: Event) -> tuple[str] | None:
        key = key_of(event)
        return None if key is None else (key,)

    return keyed


class Identity:
    """The identity tables inside a service's own ``metadata``, their fold and queries."""

    def __init__(self, metadata: MetaData, *, passwords: bool = True) -> None:
        self.users = AggregateTable(
            metadata,
            "users",
            UserState,
            key=[Column("username", String)],
            key_of=_one(user_key),
            evolve=evolve_user,
            columns=[
                Column("role", String, nullable=False),
                Column("disabled", Boolean, nullable=False),
            ],
        )
        self.tokens = AggregateTable(
            metadata,
            "tokens",
            TokenState,
            key=[Column("token_id", String)],
            key_of=_one(token_key),
            evolve=evolve_token,
            columns=[
                Column("username", String, nullable=False, index=True),
                Column("token_sha256", String, nullable=False, unique=True),
                Column("kind", String, nullable=False),
            ],
        )
        self.passwords: AggregateTable[PasswordState] | None = None
        if passwords:
            self.passwords = AggregateTable(
                metadata,
                "passwords",
                PasswordState,
                key=[Column("username", String)],
                key_of=_one(password_key),
                evolve=evolve_password,
            )

    def apply(self, session: Session, event: Event) -> bool:
        """Fold an identity event into every table that holds its aggregate."""
        applied = [self.users.apply(session, event), self.tokens.apply(session, event)]
        if self.passwords is not None:
            applied.append(self.passwords.apply(session, event))
        return any(applied)

    def user(self, session: Session, username: str) -> UserState | None:
        return self.users.get(session, username)

    def password_hash(self, session: Session, username: str) -> str | None:
        if self.passwords is None:
            return None
        found = self.passwords.get(session, username)
        return found.password_hash if found else None

    def token(self, session: Session, token_id: str) -> TokenState | None:
        return self.tokens.get(session, token_id)

    def token_by_digest(self, session: Session, digest: str) -> TokenState | None:
        found = self.tokens.states(session, token_sha256=digest)
        return found[0] if found else None
