"""Identity use cases: sign-in, tokens, users, and the first admin of an empty log.

Reads go through ``identity.projection``, decisions through ``identity.rules``; user writes are
optimistic on the user's subjects (``Nats-Expected-Last-Subject-Sequence``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cvops.contracts import SECRET_PREFIX, Event, subject_token
from cvops.contracts.api import (
    CreateUser,
    LoginResponse,
    TokenCreated,
    TokenView,
    UpdateUser,
    UserView,
)
from cvops.core import ConcurrencyConflict, append_guarded, get_logger
from cvops.gateway.auth import Passwords, Principal, new_password, new_token
from cvops.gateway.checks import check_name
from cvops.gateway.core import Gateway
from cvops.gateway.errors import Conflict, NotFound
from cvops.gateway.idempotency import AlreadyIssued, derived_id, replayed
from cvops.gateway.identity import projection as views
from cvops.gateway.identity import rules
from cvops.gateway.identity.rules import TokenState, UserState
from cvops.gateway.identity.throttle import LoginThrottle, worker_share

log = get_logger(__name__)

CREDENTIALS_FILE = "admin.credentials"
_TOKEN_CACHE_MAX = 10_000


class NotAuthenticated(Exception):
    """Wrong username or password (the reason is not told apart, on purpose)."""


def user_subjects(username: str) -> str:
    return f"{SECRET_PREFIX}.identity.{subject_token(username)}.*"


@dataclass
class IdentityService:
    """Sign-in, tokens and users; ``token_owner`` answers the authentication middleware."""

    gateway: Gateway
    passwords: Passwords
    # token digest -> (identity generation it was read at, the token and its user, or None)
    _tokens: dict[str, tuple[int, tuple[TokenState, UserState] | None]] = field(
        default_factory=dict
    )
    throttle: LoginThrottle = field(init=False)

    def __post_init__(self) -> None:
        settings = self.gateway.settings
        # each worker process counts its own failures: its share keeps the limit overall
        workers = settings.gateway_workers
        self.throttle = LoginThrottle(
            per_user=worker_share(settings.login_failures_per_user, workers),
            per_address=worker_share(settings.login_failures_per_address, workers),
            window_s=settings.login_failure_window_s,
        )

    def token_owner(self, digest: str) -> tuple[TokenState, UserState] | None:
        """The token with this sha256 and its user, cached until users or tokens change.

        The cache key is the projection's identity generation, which moves after every
        committed change to users or tokens: a revocation is seen by the next request.
        """
        generation = self.gateway.generation("identity")
        hit = self._tokens.get(digest)
        if hit is not None and hit[0] == generation:
            return hit[1]
        with self.gateway.session() as s:
            found = views.token_by_digest(s, digest)
        if len(self._tokens) >= _TOKEN_CACHE_MAX:
            self._tokens.clear()
        self._tokens[digest] = (generation, found)
        return found

    # -- tokens --------------------------------------------------------------------------------
    async def login(
        self, username: str, password: str, correlation_id: str, *, address: str = ""
    ) -> LoginResponse:
        """A session token for a right password, unless ``throttle`` refuses the username or
        the client ``address`` (``TooManyFailures``) after too many failures."""
        async with self.throttle.turn(username, address):
            try:
                response = await self._login(username, password, correlation_id)
            except NotAuthenticated:
                self.throttle.failed(username, address)
                raise
            self.throttle.succeeded(username)
            return response

    async def _login(self, username: str, password: str, correlation_id: str) -> LoginResponse:
        """Verify the password, then append the session token guarded on the user's subjects,
        and only if the verified hash is still the user's and they are still enabled: a
        password change or a disable that lands while argon2 runs leaves no session behind."""
        with self.gateway.session() as s:
            user = views.get_user(s, username)
            stored = views.password_hash(s, username)
        known = stored if user is not None and not user.disabled else None
        ok = await self.passwords.verify(known, password)
        if not ok or user is None:
            raise NotAuthenticated("invalid username or password")
        token_id, secret, digest = self._new_token(correlation_id)
        stamp = self.gateway.stamp(username, correlation_id)
        expires_at = stamp.now + timedelta(seconds=self.gateway.settings.session_ttl_s)

        def decide() -> list[Event]:
            with self.gateway.session() as s:
                current = views.get_user(s, username)
                current_hash = views.password_hash(s, username)
            if current is None or current.disabled or current_hash != stored:
                raise NotAuthenticated("invalid username or password")
            return rules.issue_token(
                current,
                token_id=token_id,
                token_sha256=digest,
                label="login",
                kind="session",
                expires_at=expires_at,
                stamp=stamp,
            )

        await self.gateway.write_aggregate(user_subjects(username), decide)
        self._check_issued(token_id, digest)
        return LoginResponse(
            token=secret, expires_at=expires_at, username=user.username, role=user.role
        )

    async def create_token(self, who: Principal, label: str, correlation_id: str) -> TokenCreated:
        """Issue an API token; a keyed request's retry issues none (``AlreadyIssued``)."""
        token_id, secret, digest = self._new_token(correlation_id)
        stamp = self.gateway.stamp(who.username, correlation_id)
        with self.gateway.session() as s:
            user = views.get_user(s, who.username)
        events = rules.issue_token(
            user,
            token_id=token_id,
            token_sha256=digest,
            label=label,
            kind="api",
            expires_at=None,
            stamp=stamp,
        )
        await self.gateway.write(events)
        self._check_issued(token_id, digest)
        return TokenCreated(token_id=token_id, token=secret, label=label)

    def _new_token(self, correlation_id: str) -> tuple[str, str, str]:
        """A fresh secret under the token id the request's ``Idempotency-Key`` derives (a
        random one without a key); ``AlreadyIssued`` when the key's request issued it."""
        _, secret, digest = new_token()
        token_id = derived_id(correlation_id, "token", 16)
        if replayed(self.gateway, correlation_id):
            raise _already_issued(token_id)
        self._check_issued(token_id, digest)
        return token_id, secret, digest

    def _check_issued(self, token_id: str, digest: str) -> None:
        """``AlreadyIssued`` when the token ``token_id`` exists with another secret: a retry
        whose first attempt issued it (after the write: its event was dropped as a
        duplicate of the first's)."""
        with self.gateway.session() as s:
            token = views.get_token(s, token_id)
        if token is not None and token.token_sha256 != digest:
            raise _already_issued(token_id)

    async def revoke_token(self, who: Principal, token_id: str, correlation_id: str) -> None:
        if replayed(self.gateway, correlation_id):
            return
        with self.gateway.session() as s:
            token = views.get_token(s, token_id)
        events = rules.revoke_token(
            token,
            username=who.username,
            is_admin=who.role == "admin",
            stamp=self.gateway.stamp(who.username, correlation_id),
        )
        await self.gateway.write(events)

    def tokens(self, username: str) -> list[TokenView]:
        with self.gateway.session() as s:
            return views.list_tokens(s, username)

    # -- users ---------------------------------------------------------------------------------
    async def create_user(self, who: Principal, body: CreateUser, correlation_id: str) -> UserView:
        check_name(body.username, "username")
        rules.check_password(body.password)
        password_hash = await self.passwords.hash(body.password)
        stamp = self.gateway.stamp(who.username, correlation_id)

        def decide() -> list[Event]:
            # (after the projection reached the user's last event: a retry's first is in it)
            if replayed(self.gateway, correlation_id):
                return []
            with self.gateway.session() as s:
                existing = views.get_user(s, body.username)
            return rules.create_user(
                existing,
                username=body.username,
                role=body.role,
                password_hash=password_hash,
                stamp=stamp,
            )

        try:
            await self.gateway.write_aggregate(user_subjects(body.username), decide)
        except ConcurrencyConflict as err:
            raise Conflict(f"user {body.username!r} exists already") from err
        return self.user(body.username)

    async def update_user(
        self, who: Principal, username: str, body: UpdateUser, correlation_id: str
    ) -> UserView:
        password_hash = None
        if body.password is not None:
            rules.check_password(body.password)
            password_hash = await self.passwords.hash(body.password)
        stamp = self.gateway.stamp(who.username, correlation_id)

        def decide() -> list[Event]:
            if replayed(self.gateway, correlation_id):
                return []
            with self.gateway.session() as s:
                user = views.get_user(s, username)
                admins = views.count_active_admins(s)
                tokens = views.user_tokens(s, username)
            return rules.update_user(
                user,
                body,
                password_hash=password_hash,
                active_admins=admins,
                stamp=stamp,
                tokens=tokens,
                # changing your own password keeps the session you change it with
                keep_token_id=who.token_id if who.username == username else None,
            )

        await self.gateway.write_aggregate(user_subjects(username), decide)
        return self.user(username)

    def user(self, username: str) -> UserView:
        with self.gateway.session() as s:
            user = views.get_user(s, username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return views.user_view(user)

    def users(self) -> list[UserView]:
        with self.gateway.session() as s:
            return views.list_users(s)


def _already_issued(token_id: str) -> AlreadyIssued:
    return AlreadyIssued(
        f"token {token_id!r} was issued for this Idempotency-Key already; its secret is shown"
        f" once only: if the first answer was lost, revoke it (DELETE /auth/tokens/{token_id})"
        " and ask again with a fresh key"
    )


async def bootstrap_admin(identity: IdentityService) -> Path | None:
    """On a log with no user: create ``admin`` with a random password and an API token.

    The first event is appended with expected-last-subject-sequence 0 on the ``admin``
    aggregate, so of two gateways starting at once only one succeeds. The winner writes
    ``<home>/admin.credentials`` (mode 0600); ``./justw up`` shows it once.

    Returns:
        The credentials file, or None when nothing was bootstrapped.
    """
    gateway = identity.gateway
    with gateway.session() as s:
        existing = views.count_users(s)
    if existing:
        return None
    password = new_password()
    token_id, secret, digest = new_token()
    stamp = gateway.stamp("gateway", f"bootstrap-{uuid.uuid4().hex}")
    events = rules.bootstrap_admin(
        existing,
        password_hash=await identity.passwords.hash(password),
        token_id=token_id,
        token_sha256=digest,
        stamp=stamp,
    )
    try:
        appended = await append_guarded(
            gateway.bus, user_subjects(rules.BOOTSTRAP_ADMIN), events, 0
        )
    except ConcurrencyConflict:
        log.info("bootstrap_done_elsewhere")
        return None
    await gateway.settle(appended.seq)
    settings = gateway.settings
    text = (
        f"username={rules.BOOTSTRAP_ADMIN}\n"
        f"password={password}\n"
        f"token={secret}\n"
        f"url=http://{settings.gateway_host}:{settings.gateway_port}\n"
    )
    path = settings.home_path / CREDENTIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    # Only where the secrets are: stdout is the service's log file, which others may read.
    print(f"cvops admin created; credentials in {path} (mode 0600)", flush=True)
    log.info("admin_bootstrapped", credentials=str(path))
    return path
