"""Signing in and out of the web UI: the identity context's login and token revocation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Redirect

from cvops.gateway.auth import AuthRequest
from cvops.gateway.core import correlation_id
from cvops.gateway.identity.service import IdentityService, NotAuthenticated
from cvops.gateway.identity.throttle import TooManyFailures
from cvops.gateway.web.forms import FormFields, checked_form
from cvops.gateway.web.render import Pages, ok
from cvops.gateway.web.session import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    WebSession,
    check_csrf,
    new_login_csrf,
)

HOME = "/ui/models"


def safe_next(target: str) -> str:
    """Where to go after signing in: a page of the web UI, never another site."""
    if target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return HOME


def _login_page(
    request: Request[Any, Any, State], pages: Pages, *, status: int = 200, message: str = ""
) -> Response[str]:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_login_csrf()
    response = pages.render(
        request,
        "login.html",
        status=status,
        login_csrf=token,
        next=safe_next(request.query_params.get("next", HOME)),
        message=message,
    )
    response.set_cookie(pages.cookies.login_csrf(token, request.url.scheme))
    return response


class AccountController(Controller):
    path = "/ui"

    @get("/login")
    async def login_page(self, request: Request[Any, Any, State], pages: Pages) -> Response[str]:
        """The sign-in form."""
        return _login_page(request, pages)

    @post("/login", status_code=303)
    async def login(
        self, request: Request[Any, Any, State], pages: Pages, identity: IdentityService
    ) -> Response[Any]:
        """Check the password (the identity context's login) and keep its session token in
        the session cookie; wrong credentials show the form again with the reason."""
        form = await request.form()
        fields = FormFields([(k, v) for k, v in form.multi_items() if isinstance(v, str)])
        check_csrf(fields.text(CSRF_FIELD), request.cookies.get(LOGIN_CSRF_COOKIE, ""))
        address = request.client.host if request.client else ""
        try:
            session = await identity.login(
                fields.text("username"),
                form.get("password") or "",
                correlation_id(request),
                address=address,
            )
        except NotAuthenticated:
            return _login_page(request, pages, status=401, message="Wrong username or password.")
        except TooManyFailures as err:
            response = _login_page(request, pages, status=429, message=f"{str(err).capitalize()}.")
            response.headers["Retry-After"] = str(err.retry_after_s)
            return response
        scheme = request.url.scheme
        redirect = pages.redirect(
            request, safe_next(fields.text("next")), ok(f"Signed in as {session.username}.")
        )
        redirect.set_cookie(
            pages.cookies.session(session.token, session.expires_at, scheme, datetime.now(UTC))
        )
        redirect.set_cookie(pages.cookies.cleared(LOGIN_CSRF_COOKIE, scheme))
        return redirect

    @post("/logout", status_code=303)
    async def logout(
        self, request: AuthRequest, pages: Pages, identity: IdentityService
    ) -> Redirect:
        """Revoke this session's token and forget the cookie."""
        await checked_form(request)
        auth = request.scope["auth"]
        assert isinstance(auth, WebSession)
        await identity.revoke_token(request.user, auth.token_id, correlation_id(request))
        redirect = pages.redirect(request, "/ui/login", ok("Signed out."))
        redirect.set_cookie(pages.cookies.cleared(SESSION_COOKIE, request.url.scheme))
        return redirect

    @get("/", name="web_home")
    async def home(self) -> Redirect:
        return Redirect(HOME, status_code=303)


@get("/", include_in_schema=False)
async def root() -> Redirect:
    """The gateway's root: browsers land on the web UI."""
    return Redirect("/ui/", status_code=303)
