"""Pages from Jinja templates: the layout's context (who is signed in, what they may do, the
form token, the flash message), redirects with a flash, and every failure as a page.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.datastructures import Cookie, State
from litestar.exceptions import HTTPException, NotAuthorizedException
from litestar.response import Redirect
from litestar.types import ExceptionHandlersMap

from cvops.contracts.identity import ROLE_PERMISSIONS, Permission
from cvops.core import get_logger
from cvops.gateway.auth import Principal
from cvops.gateway.errors import EXCEPTION_HANDLERS
from cvops.gateway.web.session import COOKIE_PATH, CookiePolicy, WebSession

log = get_logger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
FLASH_COOKIE = "cvops_flash"
HTML = "text/html"  # Litestar adds "; charset=utf-8"
NOTHING = "\u2013"  # an en dash where a number is unknown
# The pages load scripts, styles and frames from the gateway only, never inline code.
WEB_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'self'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": WEB_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Flash(msgspec.Struct, frozen=True):
    """A message for the next page: ``ok`` (it worked) or ``error`` (why it did not)."""

    kind: str
    text: str


def _encode_flash(flash: Flash) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(flash)).decode()


def _decode_flash(value: str | None) -> Flash | None:
    if not value:
        return None
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(value.encode()), type=Flash)
    except (ValueError, msgspec.DecodeError):
        return None


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _percent(value: float | None) -> str:
    return f"{value * 100:.1f} %" if value is not None else NOTHING


def _ms(value: float | None) -> str:
    return f"{value:.2f} ms" if value is not None else NOTHING


def _size(value: int | None) -> str:
    if value is None:
        return NOTHING
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _path(value: object) -> str:
    """A name as one path segment (model and data set names may hold any character)."""
    return quote(str(value), safe="")


@dataclass
class Pages:
    """Renders the web UI's pages; ``htmx``: whether the scripts are installed."""

    htmx: bool
    cookies: CookiePolicy

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self.env.filters.update(when=_when, percent=_percent, ms=_ms, size=_size, path=_path)

    def fragment(self, template: str, **context: Any) -> str:
        """A part of a page (what a live update swaps in)."""
        return self.env.get_template(template).render(**context)

    def render(
        self,
        request: Request[Any, Any, State],
        template: str,
        *,
        status: int = 200,
        **context: Any,
    ) -> Response[str]:
        """A whole page: the layout's context plus ``context``; the flash is shown once."""
        user = request.scope.get("user")
        principal = user if isinstance(user, Principal) else None
        auth = request.scope.get("auth")
        granted = ROLE_PERMISSIONS[principal.role] if principal else frozenset()
        flash = _decode_flash(request.cookies.get(FLASH_COOKIE))
        html = self.env.get_template(template).render(
            user=principal,
            may={p.value: p in granted for p in Permission},
            csrf=auth.csrf_token if isinstance(auth, WebSession) else "",
            flash=flash,
            htmx=self.htmx,
            path=request.url.path,
            **context,
        )
        cookies = [self.cookies.cleared(FLASH_COOKIE, request.url.scheme)] if flash else []
        return Response(
            html, status_code=status, media_type=HTML, cookies=cookies, headers=SECURITY_HEADERS
        )

    def redirect(
        self, request: Request[Any, Any, State], to: str, flash: Flash | None = None
    ) -> Redirect:
        """303 to ``to`` (a GET after a POST), carrying ``flash`` to the page it shows."""
        cookies: list[Cookie] = []
        if flash is not None:
            cookies.append(
                Cookie(
                    key=FLASH_COOKIE,
                    value=_encode_flash(flash),
                    max_age=60,
                    path=COOKIE_PATH,
                    httponly=True,
                    samesite="strict",
                    secure=self.cookies.is_secure(request.url.scheme),
                )
            )
        return Redirect(to, status_code=303, cookies=cookies, headers=SECURITY_HEADERS)


def ok(text: str) -> Flash:
    return Flash("ok", text)


def error(text: str) -> Flash:
    return Flash("error", text)


def refusal_of(request: Request[Any, Any, State], exc: Exception) -> tuple[int, str]:
    """The status and message the API would answer ``exc`` with (its one mapping, reused)."""
    for kind in type(exc).__mro__:
        handler: Callable[[Request[Any, Any, State], Any], Response[Any]] | None = (
            EXCEPTION_HANDLERS.get(kind)  # type: ignore[assignment]
        )
        if handler is not None:
            response = handler(request, exc)
            detail = getattr(response.content, "detail", None)
            if isinstance(detail, dict):
                detail = detail.get("message", detail)
            return response.status_code or 500, str(detail or "")
    return 500, "internal error"


def _page_of_failure(request: Request[Any, Any, State], exc: Exception) -> Response[Any]:
    pages: Pages = request.app.state.pages
    if isinstance(exc, NotAuthorizedException):
        # signed out, expired or revoked: sign in again, then come back here
        back = request.url.path if request.method == "GET" else "/ui/"
        flash = (
            None if exc.detail == "not signed in" else error(f"please sign in again ({exc.detail})")
        )
        return pages.redirect(request, f"/ui/login?next={quote(back)}", flash)
    status, message = refusal_of(request, exc)
    return pages.render(request, "error.html", status=status, status_code=status, message=message)


WEB_EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _page_of_failure,
    Exception: _page_of_failure,
}
