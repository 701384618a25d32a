"""The web UI as its own Litestar app under ``/ui/``: cookie sessions instead of bearer
tokens, pages instead of the one JSON error shape, and out of the API's OpenAPI document.

``with_web_ui`` puts it in front of the API's ASGI handler (inside the correlation id and
the request metrics); its pages reach the contexts' services in the API app's state.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.static_files import create_static_files_router
from litestar.types import ASGIApp, Receive, Scope, Send

from cvops.gateway.web.account import AccountController, root
from cvops.gateway.web.assets import asset_directories
from cvops.gateway.web.catalog import DatasetPages, ModelPages, UploadPages
from cvops.gateway.web.live import LiveFeed
from cvops.gateway.web.render import WEB_EXCEPTION_HANDLERS, Pages
from cvops.gateway.web.session import OPEN_PATHS, CookiePolicy, SessionCookieAuthentication
from cvops.gateway.web.work import BenchmarkPages, ConversionPages, DeploymentPages, JobPages

WEB_PATH = "/ui"
STATIC = Path(__file__).parent / "static"
# Each context's service, by the name page handlers take it as (keys of the API app's state).
SERVICES = ("identity", "catalog", "training", "conversion", "benchmark", "deployment", "reports")


def _service(api_state: State, key: str) -> Provide:
    def service() -> Any:
        return api_state[key]

    return Provide(service, sync_to_thread=False)


def create_web_app(api_state: State, *, secure_cookie: bool | None = None) -> Litestar:
    """The web UI's app.

    Args:
        api_state: the API app's state, where its lifespan puts each context's service.
        secure_cookie: the cookies' Secure flag (None: set exactly on HTTPS requests, so a
            plain-HTTP loopback gateway still signs in).

    Returns:
        A Litestar app serving ``/ui/...`` (and ``/``, which leads to it).
    """
    pages = Pages(htmx=False, cookies=CookiePolicy(secure=secure_cookie))
    handlers: list[Any] = [
        root,
        AccountController,
        ModelPages,
        DatasetPages,
        UploadPages,
        JobPages,
        ConversionPages,
        BenchmarkPages,
        DeploymentPages,
        create_static_files_router(path=f"{WEB_PATH}/static", directories=[STATIC]),
    ]
    scripts = asset_directories()
    if scripts is not None:
        pages.htmx = True
        folders: list[PathLike[str] | Path | str] = list(scripts)
        handlers.append(create_static_files_router(path=f"{WEB_PATH}/assets", directories=folders))

    def live() -> LiveFeed:
        return LiveFeed(api_state.gateway, api_state.feed)

    dependencies = {key: _service(api_state, key) for key in SERVICES}
    dependencies["pages"] = Provide(lambda: pages, sync_to_thread=False)
    dependencies["live"] = Provide(live, sync_to_thread=False)
    return Litestar(
        route_handlers=handlers,
        dependencies=dependencies,
        exception_handlers=WEB_EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(SessionCookieAuthentication, exclude=OPEN_PATHS)],
        state=State({"api": api_state, "pages": pages}),
        openapi_config=None,
        debug=False,
    )


def is_web_path(path: str) -> bool:
    """Whether a request is the web UI's: ``/ui``, below it, or the root ``/``."""
    return path == "/" or path == WEB_PATH or path.startswith(f"{WEB_PATH}/")


def with_web_ui(api: ASGIApp, web: Litestar) -> ASGIApp:
    """Send the web UI's requests to ``web``, every other one to ``api``."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_web_path(scope["path"]):
            await web(scope, receive, send)  # type: ignore[arg-type]
        else:
            await api(scope, receive, send)

    return dispatch
