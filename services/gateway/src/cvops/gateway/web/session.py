"""Who is signed in to the web UI and whether a form is theirs.

The login form calls the identity context's login; the session token it returns is kept in
an HttpOnly, SameSite=Strict cookie (Secure when the request came over HTTPS, or as
configured) and checked on every request as the API checks a bearer token
(``auth.token_principal``). Every form POST carries a CSRF token: bound to the session
(an HMAC of its secret) once signed in, a double-submit cookie on the login form.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, State
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from cvops.gateway.auth import token_principal

SESSION_COOKIE = "cvops_session"
LOGIN_CSRF_COOKIE = "cvops_login_csrf"
CSRF_FIELD = "csrf_token"
COOKIE_PATH = "/ui"
# Paths served to anyone: the sign-in page and the files every page loads.
OPEN_PATHS = [r"^/ui/login$", r"^/ui/static/", r"^/ui/assets/", r"^/$"]


class CsrfRefused(PermissionDeniedException):
    """A form POST without the token of the page it came from (403)."""

    def __init__(self) -> None:
        super().__init__(
            "this form's CSRF token is missing or wrong: reload the page and send it again"
        )


@dataclass(frozen=True)
class WebSession:
    """The session behind a request: its secret (the cookie) and the token it names."""

    secret: str
    token_id: str

    @property
    def csrf_token(self) -> str:
        """The CSRF token of this session's forms (unknowable without the HttpOnly cookie)."""
        return session_csrf_token(self.secret)


def session_csrf_token(secret: str) -> str:
    return hmac.new(secret.encode(), b"cvops-web-form", hashlib.sha256).hexdigest()


def check_csrf(sent: str | None, expected: str) -> None:
    """Raise ``CsrfRefused`` unless ``sent`` is ``expected`` (compared in constant time)."""
    if not sent or not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused()


def new_login_csrf() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class CookiePolicy:
    """How the web UI's cookies are set; ``secure`` None: Secure exactly on HTTPS requests."""

    secure: bool | None = None

    def is_secure(self, scheme: str) -> bool:
        return scheme == "https" if self.secure is None else self.secure

    def session(self, secret: str, expires_at: datetime, scheme: str, now: datetime) -> Cookie:
        max_age = max(0, int((expires_at - now).total_seconds()))
        return self._cookie(SESSION_COOKIE, secret, max_age, scheme)

    def login_csrf(self, value: str, scheme: str) -> Cookie:
        return self._cookie(LOGIN_CSRF_COOKIE, value, 3600, scheme)

    def cleared(self, key: str, scheme: str) -> Cookie:
        return self._cookie(key, "", 0, scheme)

    def _cookie(self, key: str, value: str, max_age: int, scheme: str) -> Cookie:
        return Cookie(
            key=key,
            value=value,
            max_age=max_age,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=self.is_secure(scheme),
        )


class SessionCookieAuthentication(AbstractAuthenticationMiddleware):
    """Resolve the session cookie to the signed-in user; else ``NotAuthorizedException``
    (which the web UI answers with the sign-in page)."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:
        secret = connection.cookies.get(SESSION_COOKIE)
        if not secret:
            raise NotAuthorizedException("not signed in")
        api_state: State = connection.app.state.api
        principal, token = token_principal(api_state.identity, secret)
        return AuthenticationResult(
            user=principal, auth=WebSession(secret=secret, token_id=token.token_id)
        )
