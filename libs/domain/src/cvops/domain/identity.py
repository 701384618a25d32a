"""Identity: users, their passwords and tokens — state, ``evolve`` and decisions.

No clock, no uuid, no I/O. Secrets never reach a rule: it gets password hashes and token
digests, and the ``Stamp`` that carries the time, the actor and the correlation id. A user's
password hash is its own aggregate (``PasswordState``) so that services that only check
tokens (the router) fold users and tokens without keeping any password hash.

Credentials end with the events that change them: a new password revokes the user's live
sessions (their API tokens stay), disabling a user revokes every live session and API token,
so enabling them again brings no old credential back. The revocations are ``token_revoked``
events, which every holder of tokens (the gateway, the router) already folds.
"""

from __future__ import annotations

from collections.abc import Iterable
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
from cvops.domain.checks import check_name
from cvops.domain.errors import Conflict, Invalid, NotFound

MIN_PASSWORD_LENGTH = 8
MAX_TOKEN_LABEL = 200
BOOTSTRAP_ADMIN = "admin"


class UserState(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    role: Role
    disabled: bool = False
    created_at: datetime
    created_by: str = ""


class PasswordState(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    password_hash: str


class TokenState(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    username: str
    token_sha256: str
    kind: str
    label: str = ""
    created_at: datetime
    expires_at: datetime | None = None
    revoked: bool = False


# -- evolve ----------------------------------------------------------------------------------


def evolve_user(state: UserState | None, event: Event) -> UserState | None:
    """A user from ``user_created``, then its role and enabled/disabled changes."""
    match event:
        case UserCreated() if state is None:
            return UserState(
                username=event.username,
                role=event.role,
                disabled=False,
                created_at=event.occurred_at,
                created_by=event.actor,
            )
        case RoleChanged(role=role) if state is not None and state.role != role:
            return msgspec.structs.replace(state, role=role)
        case UserDisabled() if state is not None and not state.disabled:
            return msgspec.structs.replace(state, disabled=True)
        case UserEnabled() if state is not None and state.disabled:
            return msgspec.structs.replace(state, disabled=False)
    return state


def evolve_password(state: PasswordState | None, event: Event) -> PasswordState | None:
    """A user's password hash: set when created, replaced by ``password_set``."""
    match event:
        case UserCreated() if state is None:
            return PasswordState(username=event.username, password_hash=event.password_hash)
        case PasswordSet(password_hash=h) if state is not None and state.password_hash != h:
            return msgspec.structs.replace(state, password_hash=h)
    return state


def parse_time(value: str | None) -> datetime | None:
    """An ISO time of an event field (``Z`` accepted); None when absent."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def evolve_token(state: TokenState | None, event: Event) -> TokenState | None:
    """A token from ``token_issued`` (only its digest); revoked once and for good."""
    match event:
        case TokenIssued() if state is None:
            return TokenState(
                token_id=event.token_id,
                username=event.username,
                token_sha256=event.token_sha256,
                kind=event.kind,
                label=event.label,
                created_at=event.occurred_at,
                expires_at=parse_time(event.expires_at),
                revoked=False,
            )
        case TokenRevoked() if state is not None and not state.revoked:
            return msgspec.structs.replace(state, revoked=True)
    return state


def user_key(event: Event) -> str | None:
    """The user an event folds into (None: not a user event)."""
    if isinstance(event, UserCreated | RoleChanged | UserDisabled | UserEnabled):
        return event.username
    return None


def password_key(event: Event) -> str | None:
    if isinstance(event, UserCreated | PasswordSet):
        return event.username
    return None


def token_key(event: Event) -> str | None:
    if isinstance(event, TokenIssued | TokenRevoked):
        return event.token_id
    return None


# -- token validity --------------------------------------------------------------------------


def is_live(token: TokenState, now: datetime) -> bool:
    """Neither revoked nor expired."""
    return not token.revoked and (token.expires_at is None or token.expires_at > now)


def token_refusal(token: TokenState | None, user: UserState | None, now: datetime) -> str | None:
    """Why a bearer token may not call (None: it may) — the gateway's and the router's rule."""
    if token is None:
        return "unknown token"
    if token.revoked:
        return "token revoked"
    if token.expires_at is not None and token.expires_at <= now:
        return "token expired"
    if user is None:
        return "unknown user"
    if user.disabled:
        return "user disabled"
    return None


# -- decisions -------------------------------------------------------------------------------


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def check_role(role: str) -> Role:
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
    checked_role = check_role(role)
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
    tokens: Iterable[TokenState] = (),
    keep_token_id: str | None = None,
) -> list[Event]:
    """Role, password and enabled/disabled changes; the last active admin stays an admin.

    A new password revokes the user's live sessions (``keep_token_id``: the one the user
    changes their own password with stays); disabling revokes every live session and API
    token. ``tokens`` are the user's tokens as the projection has them.
    """
    if user is None:
        raise NotFound("no such user")
    events: list[Event] = []
    new_role = check_role(change.role) if change.role is not None else user.role
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
    if disables:
        events += revoke_credentials(user.username, tokens, kinds=("session", "api"), stamp=stamp)
    elif password_hash is not None:
        events += revoke_credentials(
            user.username, tokens, kinds=("session",), keep_token_id=keep_token_id, stamp=stamp
        )
    return events


def revoke_credentials(
    username: str,
    tokens: Iterable[TokenState],
    *,
    kinds: tuple[str, ...],
    stamp: Stamp,
    keep_token_id: str | None = None,
) -> list[Event]:
    """``token_revoked`` for each of the user's live tokens of these kinds (not expired, not
    revoked; ``keep_token_id`` excepted)."""
    return [
        TokenRevoked(
            **stamp.envelope(f"token-revoked/{token.token_id}"),
            username=username,
            token_id=token.token_id,
        )
        for token in sorted(tokens, key=lambda t: t.token_id)
        if token.username == username
        and token.kind in kinds
        and token.token_id != keep_token_id
        and is_live(token, stamp.now)
    ]


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
    if len(label) > MAX_TOKEN_LABEL:
        raise Invalid(f"token label is longer than {MAX_TOKEN_LABEL} characters")
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
    admin = None
    for event in created:
        admin = evolve_user(admin, event)
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
