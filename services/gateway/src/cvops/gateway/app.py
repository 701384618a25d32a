"""Wiring only: settings, bus, projection runner, first-start bootstrap, the Litestar app."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from argon2 import PasswordHasher
from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from cvops.core import (
    ArtifactStore,
    Bus,
    ConcurrencyConflict,
    ProjectionRunner,
    Settings,
    get_logger,
)
from cvops.gateway import handlers
from cvops.gateway import projection as views
from cvops.gateway.api import CONTROLLERS, DEPENDENCIES
from cvops.gateway.auth import (
    PUBLIC_PATHS,
    BearerAuthentication,
    Passwords,
    new_password,
    new_token,
)
from cvops.gateway.errors import EXCEPTION_HANDLERS
from cvops.gateway.metrics import GatewayMetrics
from cvops.gateway.openapi import document_routes, schema_router
from cvops.gateway.service import GatewayService

log = get_logger(__name__)

CREDENTIALS_FILE = "admin.credentials"
CATCH_UP_TIMEOUT_S = 600.0


def create_app(settings: Settings, *, password_hasher: PasswordHasher | None = None) -> Litestar:
    """The gateway app; NATS, the projection and the bootstrap start with its lifespan.

    Args:
        settings: where NATS, the home directory and the limits are.
        password_hasher: argon2 parameters (tests pass cheap ones).

    Returns:
        A Litestar ASGI app (serve it with uvicorn).
    """
    metrics = GatewayMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        bus = await Bus.connect(settings, name="gateway")
        runner = ProjectionRunner(bus, views.projection, views.db_path(settings))
        follow = asyncio.create_task(runner.run(), name="gateway-projection")
        service = GatewayService(
            settings=settings,
            bus=bus,
            runner=runner,
            artifacts=ArtifactStore(bus),
            passwords=Passwords(password_hasher),
            metrics=metrics,
        )
        app.state.gateway = service
        try:
            service.caught_up = await runner.catch_up(CATCH_UP_TIMEOUT_S)
            if service.caught_up:
                await bootstrap_admin(service)
            else:
                log.warning("projection_not_caught_up", position=runner.position)
            log.info("gateway_started", position=runner.position)
            yield
        finally:
            runner.stop()
            await follow
            await bus.close()
            runner.engine.dispose()

    app = Litestar(
        route_handlers=CONTROLLERS,
        dependencies=DEPENDENCIES,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(BearerAuthentication, exclude=PUBLIC_PATHS)],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="cvops gateway",
            version="0.1.0",
            openapi_router=schema_router(),
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="token")
                }
            ),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
    document_routes(app)
    # Outermost layers (around routing, so 404/405 are counted and carry the id too).
    app.asgi_handler = with_correlation_id(metrics.middleware(app.asgi_handler))
    return app


def with_correlation_id(app: ASGIApp) -> ASGIApp:
    """Give every request an id (events it appends carry it) and return it as a header."""

    async def correlated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        correlation_id = uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = correlation_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", correlation_id.encode()))
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
            await send(message)

        await app(scope, receive, send_with_id)

    return correlated


async def bootstrap_admin(service: GatewayService) -> Path | None:
    """On a log with no user: create ``admin`` with a random password and an API token.

    The first event is appended with expected-last-subject-sequence 0 on the ``admin``
    aggregate, so of two gateways starting at once only one succeeds. The winner writes
    ``<home>/admin.credentials`` (mode 0600); ``./justw up`` shows it once.

    Returns:
        The credentials file, or None when nothing was bootstrapped.
    """
    with service.runner.session() as s:
        existing = views.count_users(s)
    if existing:
        return None
    password = new_password()
    token_id, secret, digest = new_token()
    stamp = service.stamp("gateway", f"bootstrap-{uuid.uuid4().hex}")
    events = handlers.bootstrap_admin(
        existing,
        password_hash=await service.passwords.hash(password),
        token_id=token_id,
        token_sha256=digest,
        stamp=stamp,
    )
    try:
        seq = await service.append(events, expected=0)
    except ConcurrencyConflict:
        log.info("bootstrap_done_elsewhere")
        return None
    await service.settle(seq)
    settings = service.settings
    text = (
        f"username={handlers.BOOTSTRAP_ADMIN}\n"
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
