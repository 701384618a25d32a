"""Wiring only: settings, bus, projection runner, each context's service, the Litestar app."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator

from argon2 import PasswordHasher
from litestar import Litestar
from litestar.config.response_cache import ResponseCacheConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import (
    ASGIApp,
    ControllerRouterHandler,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from cvops.core import ArtifactStore, Bus, ProjectionRunner, Settings, get_logger
from cvops.core.presence import Presence
from cvops.core.projection import quarantine_path
from cvops.gateway import idempotency, projection
from cvops.gateway.auth import PUBLIC_PATHS, BearerAuthentication, Passwords
from cvops.gateway.benchmark import BenchmarksController, BenchmarkService
from cvops.gateway.catalog.routes import DatasetsController, ModelsController, UploadsController
from cvops.gateway.catalog.service import CatalogService
from cvops.gateway.conversion import ConversionsController, ConversionService
from cvops.gateway.core import Gateway
from cvops.gateway.deployment import DeploymentsController, DeploymentService
from cvops.gateway.errors import EXCEPTION_HANDLERS
from cvops.gateway.feed import EventsController, FeedService
from cvops.gateway.health import HealthController, HealthService
from cvops.gateway.identity import projection as identity_projection
from cvops.gateway.identity.routes import AuthController, UsersController
from cvops.gateway.identity.service import IdentityService, bootstrap_admin
from cvops.gateway.metrics import GatewayMetrics
from cvops.gateway.openapi import document_routes, schema_router
from cvops.gateway.reads import STORE, ReadCache, with_fresh_not_found
from cvops.gateway.reports import ReportsController, ReportService
from cvops.gateway.system import SystemController, SystemService
from cvops.gateway.training.routes import JobsController
from cvops.gateway.training.service import TrainingService
from cvops.gateway.web import create_web_app, with_web_ui
from cvops.gateway.workers import Worker

log = get_logger(__name__)

CATCH_UP_TIMEOUT_S = 600.0

# Every route; each controller reaches its context's service as ``app.state.<context>``.
CONTROLLERS: list[ControllerRouterHandler] = [
    AuthController,
    UsersController,
    ModelsController,
    DatasetsController,
    JobsController,
    DeploymentsController,
    ConversionsController,
    BenchmarksController,
    ReportsController,
    EventsController,
    UploadsController,
    HealthController,
    SystemController,
]


def create_app(
    settings: Settings,
    *,
    password_hasher: PasswordHasher | None = None,
    worker: Worker | None = None,
) -> Litestar:
    """The gateway app; NATS, the projection and the bootstrap start with its lifespan.

    Args:
        settings: where NATS, the home directory and the limits are.
        password_hasher: argon2 parameters (tests pass cheap ones).
        worker: which worker process this is (default: the only one); it names the
            projection files, and only worker 0 bootstraps.

    Returns:
        A Litestar ASGI app (serve it with uvicorn).
    """
    metrics = GatewayMetrics()
    worker = worker or Worker()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        bus = await Bus.connect(settings, name="gateway")
        # each worker its own files; `cvops projections skip gateway` (worker 0's quarantine
        # file) holds for all of them
        main_file = projection.db_path(settings)
        identity_file = identity_projection.db_path(settings)
        runner = ProjectionRunner(
            bus,
            projection.projection,
            worker.file(main_file),
            quarantine=quarantine_path(main_file),
        )
        identity_runner = ProjectionRunner(
            bus,
            identity_projection.projection,
            worker.file(identity_file),
            stream=identity_projection.STREAM,
            quarantine=quarantine_path(identity_file),
        )
        follow = asyncio.create_task(runner.run(), name="gateway-projection")
        follow_identity = asyncio.create_task(identity_runner.run(), name="identity-projection")
        gateway = Gateway(
            settings=settings,
            bus=bus,
            runner=runner,
            metrics=metrics,
            identity_runner=identity_runner,
        )
        # identity reads and writes its own projection (its events are in their own stream)
        identity = IdentityService(
            dataclasses.replace(gateway, runner=identity_runner), Passwords(password_hasher)
        )
        app.state.gateway = gateway
        app.state.identity = identity
        artifacts = ArtifactStore(bus)
        app.state.catalog = CatalogService(gateway, artifacts)
        app.state.training = TrainingService(gateway)
        app.state.deployment = DeploymentService(gateway)
        app.state.conversion = ConversionService(gateway)
        app.state.benchmark = BenchmarkService(gateway)
        app.state.reports = ReportService(gateway, artifacts)
        app.state.feed = FeedService(gateway)
        app.state.health = HealthService(gateway)
        app.state.system = SystemService(gateway)
        presence = Presence(
            bus, "gateway", health=lambda: None if gateway.caught_up else "catching up"
        )
        present = asyncio.create_task(presence.run(), name="presence")
        try:
            caught_up = await asyncio.gather(
                runner.catch_up(CATCH_UP_TIMEOUT_S), identity_runner.catch_up(CATCH_UP_TIMEOUT_S)
            )
            gateway.caught_up = all(caught_up)
            if not gateway.caught_up:
                log.warning("projection_not_caught_up", position=runner.position)
            elif worker.index == 0:
                await bootstrap_admin(identity)
            worker.bootstrap_done()
            # the others answer only once worker 0 has written the admin's credentials file
            if not await worker.wait_bootstrap(CATCH_UP_TIMEOUT_S):
                log.warning("bootstrap_not_seen", worker=worker.index)
            log.info("gateway_started", position=runner.position, worker=worker.index)
            yield
        finally:
            presence.stop()
            await present
            runner.stop()
            identity_runner.stop()
            await follow
            await follow_identity
            await bus.close()
            runner.engine.dispose()
            identity_runner.engine.dispose()

    app = Litestar(
        route_handlers=CONTROLLERS,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[DefineMiddleware(BearerAuthentication, exclude=PUBLIC_PATHS)],
        lifespan=[lifespan],
        stores={STORE: ReadCache()},
        response_cache_config=ResponseCacheConfig(store=STORE),
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
    web = create_web_app(app.state)  # the web UI under /ui/ (its own app, out of /schema)
    app.asgi_handler = with_correlation_id(
        metrics.middleware(with_fresh_not_found(with_web_ui(app.asgi_handler, web), app.state))
    )
    return app


def with_correlation_id(app: ASGIApp) -> ASGIApp:
    """Give every request an id (events it appends carry it) and return it as a header.

    A write's ``Idempotency-Key`` and the running sha256 of its body go into the request's
    state: ``core.correlation_id`` derives the id of such a request from them, and the header
    says the id it ended with.
    """

    async def correlated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["correlation_id"] = uuid.uuid4().hex
        key = _idempotency_key(scope)
        body = hashlib.sha256()
        if key is not None:
            state[idempotency.STATE_KEY] = key
            state[idempotency.STATE_BODY] = body

        async def receive_hashed() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.request":
                body.update(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", str(state["correlation_id"]).encode()))
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
            await send(message)

        await app(scope, receive if key is None else receive_hashed, send_with_id)

    return correlated


def _idempotency_key(scope: Scope) -> str | None:
    """The ``Idempotency-Key`` header of a write (None for reads and writes without one)."""
    if scope.get("method") not in idempotency.WRITE_METHODS:
        return None
    for name, value in scope.get("headers", []):
        if name == b"idempotency-key":
            return bytes(value).decode("latin-1")
    return None
