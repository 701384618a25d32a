"""Identity routes: ``/auth`` (sign-in, the caller, their tokens) and ``/users`` (admins)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException

from cvops.contracts.api import (
    CreateToken,
    CreateUser,
    LoginRequest,
    LoginResponse,
    TokenCreated,
    TokenView,
    UpdateUser,
    UserView,
)
from cvops.contracts.identity import Permission
from cvops.gateway.auth import AuthRequest, allow
from cvops.gateway.core import correlation_id, provide
from cvops.gateway.idempotency import body_fingerprint
from cvops.gateway.identity.service import IdentityService, NotAuthenticated
from cvops.gateway.identity.throttle import TooManyFailures
from cvops.gateway.openapi import refusal, refusals

own_tokens = allow(Permission.OWN_TOKENS)
# left out of an Idempotency-Key's fingerprint (``body_fingerprint``)
SECRETS = ("password",)
ISSUED = (
    "A retry with the `Idempotency-Key` of a request that issued a token already: detail "
    "names the token (its secret is shown once only; revoke it if the first answer was lost)"
)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    dependencies = provide("identity")

    @post(
        "/login",
        status_code=200,
        responses={
            401: refusal(401, "Wrong username or password, or the user is disabled"),
            429: refusal(
                429,
                "Too many failed sign-ins for this username or from this address within "
                "`login_failure_window_s`; header `Retry-After`: seconds until the next try",
                detail="too many failed sign-ins; retry in 42 s",
            ),
            409: refusal(409, ISSUED),
        },
    )
    async def login(
        self, request: Request[Any, Any, State], data: LoginRequest, service: IdentityService
    ) -> LoginResponse:
        """Exchange a username and password for a session token.

        After ``login_failures_per_user`` failures for a username (existing or not), or
        ``login_failures_per_address`` from one client address, within
        ``login_failure_window_s``, answers 429 with ``Retry-After`` without checking the
        password.

        Returns:
            The bearer token (valid for ``session_ttl_s``), the user and their role.
        """
        address = request.client.host if request.client else ""
        try:
            # a sign-in's Idempotency-Key is the named user's (no one is signed in yet)
            correlation = correlation_id(
                request,
                username=data.username,
                fingerprint=body_fingerprint("POST", "/auth/login", data, secrets=SECRETS),
            )
            return await service.login(data.username, data.password, correlation, address=address)
        except NotAuthenticated as err:
            raise NotAuthorizedException(str(err)) from err
        except TooManyFailures as err:
            raise TooManyRequestsException(
                str(err), headers={"Retry-After": str(err.retry_after_s)}
            ) from err

    @post("/logout", status_code=204, guards=[own_tokens])
    async def logout(self, request: AuthRequest, service: IdentityService) -> None:
        """Revoke the token this request was made with."""
        await service.revoke_token(request.user, request.user.token_id, correlation_id(request))

    @get("/me", guards=[own_tokens])
    async def me(self, request: AuthRequest, service: IdentityService) -> UserView:
        """The calling user."""
        return service.user(request.user.username)

    @post("/tokens", status_code=201, guards=[own_tokens], responses={409: refusal(409, ISSUED)})
    async def create_token(
        self, request: AuthRequest, data: CreateToken, service: IdentityService
    ) -> TokenCreated:
        """Issue an API token for yourself.

        Returns:
            The token, shown this once; only its sha256 is kept.
        """
        return await service.create_token(request.user, data.label, correlation_id(request))

    @get("/tokens", guards=[own_tokens])
    async def list_tokens(self, request: AuthRequest, service: IdentityService) -> list[TokenView]:
        """Your API tokens (never their secrets)."""
        return service.tokens(request.user.username)

    @delete("/tokens/{token_id:str}", status_code=204, guards=[own_tokens], responses=refusals(404))
    async def revoke_token(
        self, request: AuthRequest, token_id: str, service: IdentityService
    ) -> None:
        """Revoke one of your tokens (admins: anyone's)."""
        await service.revoke_token(request.user, token_id, correlation_id(request))


class UsersController(Controller):
    path = "/users"
    tags = ["users"]
    guards = [allow(Permission.MANAGE_USERS)]
    dependencies = provide("identity")

    @post("/", status_code=201, responses=refusals(409, 422))
    async def create_user(
        self, request: AuthRequest, data: CreateUser, service: IdentityService
    ) -> UserView:
        """Create a user (409 if the name is taken)."""
        fingerprint = body_fingerprint("POST", "/users", data, secrets=SECRETS)
        correlation = correlation_id(request, fingerprint=fingerprint)
        return await service.create_user(request.user, data, correlation)

    @get("/")
    async def list_users(self, service: IdentityService) -> list[UserView]:
        """Every user."""
        return service.users()

    @get("/{username:str}", responses=refusals(404))
    async def show_user(self, username: str, service: IdentityService) -> UserView:
        """One user."""
        return service.user(username)

    @patch("/{username:str}", responses=refusals(404, 409, 422))
    async def update_user(
        self, request: AuthRequest, username: str, data: UpdateUser, service: IdentityService
    ) -> UserView:
        """Change a user's role or password, or disable/enable them."""
        fingerprint = body_fingerprint("PATCH", f"/users/{username}", data, secrets=SECRETS)
        correlation = correlation_id(request, fingerprint=fingerprint)
        return await service.update_user(request.user, username, data, correlation)
