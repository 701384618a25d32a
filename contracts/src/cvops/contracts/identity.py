"""Identity events: users, roles, password and token hashes (never secrets)."""

from __future__ import annotations

import enum
from typing import Literal

from cvops.contracts.envelope import Event

Role = Literal["admin", "engineer", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "engineer", "viewer")


class Permission(enum.StrEnum):
    """What a route needs; roles are sets of these (the README's permission matrix)."""

    READ = "read"  # models, data sets, versions, artifacts, event feeds, jobs, deployments
    OWN_TOKENS = "own_tokens"  # /auth/me and your own API tokens
    WRITE = "write"  # upload models and data sets, change stages
    TRAIN = "train"  # start training jobs, cancel your own (admins: anyone's)
    CONVERT = "convert"  # start conversions and benchmarks
    DEPLOY = "deploy"  # deploy, update and retire deployments
    MANAGE_USERS = "manage_users"  # create users, change roles, passwords, disable


_ENGINEER = frozenset(
    {
        Permission.READ,
        Permission.OWN_TOKENS,
        Permission.WRITE,
        Permission.TRAIN,
        Permission.CONVERT,
        Permission.DEPLOY,
    }
)
# The gateway's guards enforce this; the client reads it to refuse early (an upload before
# its body is sent).
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({Permission.READ, Permission.OWN_TOKENS}),
    "engineer": _ENGINEER,
    "admin": frozenset(Permission),
}


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
