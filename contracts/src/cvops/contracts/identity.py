"""Identity events: users, roles, password and token hashes (never secrets)."""

from __future__ import annotations

from typing import Literal

from cvops.contracts.envelope import Event

Role = Literal["admin", "engineer", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "engineer", "viewer")


class UserCreated(Event, tag="identity.user_created.v1"):
    aggregate_field = "username"
    username: str
    role: Role
    password_hash: str


class RoleChanged(Event, tag="identity.role_changed.v1"):
    aggregate_field = "username"
    username: str
    role: Role


class PasswordSet(Event, tag="identity.password_set.v1"):
    aggregate_field = "username"
    username: str
    password_hash: str


class TokenIssued(Event, tag="identity.token_issued.v1"):
    """An API or session token; only its sha256 is kept."""

    aggregate_field = "username"
    username: str
    token_id: str
    token_sha256: str
    label: str = ""
    kind: Literal["api", "session"] = "api"
    expires_at: str | None = None


class TokenRevoked(Event, tag="identity.token_revoked.v1"):
    aggregate_field = "username"
    username: str
    token_id: str


class UserDisabled(Event, tag="identity.user_disabled.v1"):
    aggregate_field = "username"
    username: str


class UserEnabled(Event, tag="identity.user_enabled.v1"):
    """A disabled user may sign in again."""

    aggregate_field = "username"
    username: str


IDENTITY_EVENTS = (
    UserCreated,
    RoleChanged,
    PasswordSet,
    TokenIssued,
    TokenRevoked,
    UserDisabled,
    UserEnabled,
)
