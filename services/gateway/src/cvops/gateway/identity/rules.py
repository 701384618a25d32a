"""Identity decisions: users, passwords, tokens and the first admin. State + command -> events.

No clock, no uuid, no I/O. Secrets never reach a rule: it gets password hashes and token
digests, and the ``Stamp`` that carries the time, the actor and the correlation id.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from cvops.contracts import Event, Stamp
from cvops.contracts.api import UpdateUser
from cvops.contracts.identity import (
    ROLES,
    PasswordSet,
    Role,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.gateway.checks import check_name
from cvops.gateway.errors import Conflict, Invalid, NotFound

MIN_PASSWORD_LENGTH = 8
BOOTSTRAP_ADMIN = "admin"


class UserState(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    role: Role
    password_hash: str
    disabled: bool
    created_at: datetime


class TokenState(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    username: str
    kind: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def create_user(
    existing: UserState | None,
    *,
    username: str,
    role: str,
    password_hash: str,
    stamp: Stamp,
) -> list[Event]:
    """A new user; refused when the name is taken or malformed."""
    check_name(username, "username")
    checked_role = _check_role(role)
    if existing is not None:
        raise Conflict(f"user {username!r} exists already")
    return [
        UserCreated(
            **stamp.envelope(f"user-created/{username}"),
            username=username,
            role=checked_role,
            password_hash=password_hash,
        )
    ]


def update_user(
    user: UserState | None,
    change: UpdateUser,
    *,
    password_hash: str | None,
    active_admins: int,
    stamp: Stamp,
) -> list[Event]:
    """Role, password and enabled/disabled changes; the last active admin stays an admin."""
    if user is None:
        raise NotFound("no such user")
    events: list[Event] = []
    new_role = _check_role(change.role) if change.role is not None else user.role
    disables = change.disabled is True and not user.disabled
    loses_admin = user.role == "admin" and not user.disabled and (new_role != "admin" or disables)
    if loses_admin and active_admins <= 1:
        raise Conflict("refused: this is the last active admin")
    if new_role != user.role:
        events.append(
            RoleChanged(
                **stamp.envelope(f"role-changed/{user.username}"),
                username=user.username,
                role=new_role,
            )
        )
    if password_hash is not None:
        events.append(
            PasswordSet(
                **stamp.envelope(f"password-set/{user.username}"),
                username=user.username,
                password_hash=password_hash,
            )
        )
    if disables:
        events.append(
            UserDisabled(**stamp.envelope(f"disabled/{user.username}"), username=user.username)
        )
    elif change.disabled is False and user.disabled:
        events.append(
            UserEnabled(**stamp.envelope(f"enabled/{user.username}"), username=user.username)
        )
    return events


def issue_token(
    user: UserState | None,
    *,
    token_id: str,
    token_sha256: str,
    label: str,
    kind: str,
    expires_at: datetime | None,
    stamp: Stamp,
) -> list[Event]:
    """A session (login) or API token for an active user; only its digest is recorded."""
    if user is None or user.disabled:
        raise NotFound("no such active user")
    if len(label) > 200:
        raise Invalid("token label is longer than 200 characters")
    return [
        TokenIssued(
            **stamp.envelope(f"token-issued/{token_id}"),
            username=user.username,
            token_id=token_id,
            token_sha256=token_sha256,
            label=label,
            kind="session" if kind == "session" else "api",
            expires_at=expires_at.isoformat() if expires_at else None,
        )
    ]


def revoke_token(
    token: TokenState | None, *, username: str, is_admin: bool, stamp: Stamp
) -> list[Event]:
    """Revoke one of your own tokens (an admin may revoke anyone's); revoking twice is a no-op."""
    if token is None or (token.username != username and not is_admin):
        raise NotFound("no such token")
    if token.revoked:
        return []
    return [
        TokenRevoked(
            **stamp.envelope(f"token-revoked/{token.token_id}"),
            username=token.username,
            token_id=token.token_id,
        )
    ]


def bootstrap_admin(
    user_count: int, *, password_hash: str, token_id: str, token_sha256: str, stamp: Stamp
) -> list[Event]:
    """On a platform with no user at all: an ``admin`` with a password and an API token."""
    if user_count > 0:
        return []
    created = create_user(
        None, username=BOOTSTRAP_ADMIN, role="admin", password_hash=password_hash, stamp=stamp
    )
    admin = UserState(
        username=BOOTSTRAP_ADMIN,
        role="admin",
        password_hash=password_hash,
        disabled=False,
        created_at=stamp.now,
    )
    token = issue_token(
        admin,
        token_id=token_id,
        token_sha256=token_sha256,
        label="bootstrap",
        kind="api",
        expires_at=None,
        stamp=stamp,
    )
    return created + token
