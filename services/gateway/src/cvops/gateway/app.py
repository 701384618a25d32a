"""Wiring only: settings, bus, projection runner, each context's service, the Litestar app."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from argon2 import PasswordHasher
from litestar import Litestar
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, ControllerRouterHandler, Message, Receive, Scope, Send

from cvops.core import ArtifactStore, Bus, ProjectionRunner, Settings, get_logger
from cvops.gateway import projection
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
from cvops.gateway.identity.routes import AuthController, UsersController
from cvops.gateway.identity.service import IdentityService, bootstrap_admin
from cvops.gateway.metrics import GatewayMetrics
from cvops.gateway.openapi import document_routes, schema_router
from cvops.gateway.reports import ReportsController, ReportService
from cvops.gateway.training.routes import JobsController
from cvops.gateway.training.service import TrainingService

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
]


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
        runner = ProjectionRunner(bus, projection.projection, projection.db_path(settings))
        follow = asyncio.create_task(runner.run(), name="gateway-projection")
        gateway = Gateway(settings=settings, bus=bus, runner=runner, metrics=metrics)
        identity = IdentityService(gateway, Passwords(password_hasher))
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
        try:
            gateway.caught_up = await runner.catch_up(CATCH_UP_TIMEOUT_S)
            if gateway.caught_up:
                await bootstrap_admin(identity)
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
