"""HTTP routes of the gateway (Litestar controllers). Thin: parse, guard, call the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import NotAuthorizedException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import (
    OpenAPIMediaType,
    OpenAPIType,
    RequestBody,
    Schema,
)
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cvops.contracts.api import (
    BenchmarkView,
    ConversionView,
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    CreateToken,
    CreateUser,
    DatasetView,
    DeploymentView,
    EngineArtifactView,
    ErrorBody,
    Health,
    JobCreated,
    JobStatus,
    JobSummary,
    JobView,
    LoginRequest,
    LoginResponse,
    ModelVersionView,
    ModelView,
    StageChange,
    TokenCreated,
    TokenView,
    UpdateUser,
    UploadResult,
    UserView,
)
from cvops.gateway import projection as views
from cvops.gateway.auth import Permission, Principal, allow
from cvops.gateway.handlers import Invalid, NotFound
from cvops.gateway.openapi import GatewayOperation, refusal, refusals
from cvops.gateway.service import GatewayService, NotAuthenticated
from cvops.gateway.uploads import UploadForm, read_form

UPLOAD_STATUS = {"validated": 201, "rejected": 422, "pending": 202}
READY_MAX_LAG = 1000

read = allow(Permission.READ)
own_tokens = allow(Permission.OWN_TOKENS)
write = allow(Permission.WRITE)
train = allow(Permission.TRAIN)
convert = allow(Permission.CONVERT)
deploy = allow(Permission.DEPLOY)
manage_users = allow(Permission.MANAGE_USERS)

AuthRequest = Request[Principal, Any, State]


def provide_service(state: State) -> GatewayService:
    return state.gateway  # type: ignore[no-any-return]


DEPENDENCIES = {"service": Provide(provide_service, sync_to_thread=False)}


def _multipart(fields: dict[str, Schema]) -> RequestBody:
    """OpenAPI body of a streamed upload (the handler reads the stream itself)."""
    file = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
    form = Schema(
        type=OpenAPIType.OBJECT,
        properties={"name": Schema(type=OpenAPIType.STRING), "file": file, **fields},
        required=["name", "file"],
    )
    return RequestBody(
        content={"multipart/form-data": OpenAPIMediaType(schema=form)}, required=True
    )


_TEXT = Schema(type=OpenAPIType.STRING)
_INT = Schema(type=OpenAPIType.INTEGER)


@dataclass
class ModelUploadOperation(GatewayOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = _multipart(
            {
                "architecture": _TEXT,
                "num_classes": _INT,
                "input_shape": Schema(type=OpenAPIType.STRING, examples=["3,32,32"]),
                "description": _TEXT,
            }
        )


@dataclass
class DatasetUploadOperation(GatewayOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = _multipart({"description": _TEXT, "seed": _INT})


# What an upload answers besides 201 validated: the registry's verdict or the form's faults.
_VERDICT_OR_REFUSAL: Any = UploadResult | ErrorBody
UPLOAD_RESPONSES = {
    202: ResponseSpec(
        UploadResult,
        generate_examples=False,
        description="Pending: the registry gave no verdict in time; follow /events/{id}",
    ),
    422: ResponseSpec(
        _VERDICT_OR_REFUSAL,
        generate_examples=False,
        description=(
            "Rejected by the registry (an upload result with the reason), or a form field is "
            "invalid (the one error shape)"
        ),
    ),
    400: refusal(400, "The body is not a well-formed multipart/form-data form"),
    413: refusal(413, "The file is over the upload limit (max_upload_bytes); nothing was stored"),
}
ARTIFACT_BYTES = ResponseSpec(
    bytes,
    generate_examples=False,
    media_type="application/octet-stream",
    description=(
        "The file, streamed; Content-Type is the one recorded at upload, X-Content-Sha256 its "
        "digest"
    ),
)
EVENT_STREAM = ResponseSpec(
    str,
    generate_examples=False,
    media_type="text/event-stream",
    description=(
        "Server-Sent Events: per message `event:` the event type, `data:` the event JSON, "
        "`id:` its stream sequence; comment lines are keep-alives"
    ),
)
NOT_READY = ResponseSpec(
    Health,
    generate_examples=False,
    description="Not ready: the same body, with the failing checks",
)


def correlation_id(request: Request[Any, Any, Any]) -> str:
    """The id of this request, which every event it appends carries (header X-Correlation-Id)."""
    return str(request.scope["state"]["correlation_id"])


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post(
        "/login",
        status_code=200,
        responses={401: refusal(401, "Wrong username or password, or the user is disabled")},
    )
    async def login(
        self, request: Request[Any, Any, State], data: LoginRequest, service: GatewayService
    ) -> LoginResponse:
        """Exchange a username and password for a session token.

        Returns:
            The bearer token (valid for ``session_ttl_s``), the user and their role.
        """
        try:
            return await service.login(data.username, data.password, correlation_id(request))
        except NotAuthenticated as err:
            raise NotAuthorizedException(str(err)) from err

    @post("/logout", status_code=204, guards=[own_tokens])
    async def logout(self, request: AuthRequest, service: GatewayService) -> None:
        """Revoke the token this request was made with."""
        await service.revoke_token(request.user, request.user.token_id, correlation_id(request))

    @get("/me", guards=[own_tokens])
    async def me(self, request: AuthRequest, service: GatewayService) -> UserView:
        """The calling user."""
        return service.user(request.user.username)

    @post("/tokens", status_code=201, guards=[own_tokens])
    async def create_token(
        self, request: AuthRequest, data: CreateToken, service: GatewayService
    ) -> TokenCreated:
        """Issue an API token for yourself.

        Returns:
            The token, shown this once; only its sha256 is kept.
        """
        return await service.create_token(request.user, data.label, correlation_id(request))

    @get("/tokens", guards=[own_tokens])
    async def list_tokens(self, request: AuthRequest, service: GatewayService) -> list[TokenView]:
        """Your API tokens (never their secrets)."""
        with service.runner.session() as s:
            return views.list_tokens(s, request.user.username)

    @delete("/tokens/{token_id:str}", status_code=204, guards=[own_tokens], responses=refusals(404))
    async def revoke_token(
        self, request: AuthRequest, token_id: str, service: GatewayService
    ) -> None:
        """Revoke one of your tokens (admins: anyone's)."""
        await service.revoke_token(request.user, token_id, correlation_id(request))


class UsersController(Controller):
    path = "/users"
    tags = ["users"]
    guards = [manage_users]

    @post("/", status_code=201, responses=refusals(409, 422))
    async def create_user(
        self, request: AuthRequest, data: CreateUser, service: GatewayService
    ) -> UserView:
        """Create a user (409 if the name is taken)."""
        return await service.create_user(request.user, data, correlation_id(request))

    @get("/")
    async def list_users(self, service: GatewayService) -> list[UserView]:
        """Every user."""
        with service.runner.session() as s:
            return views.list_users(s)

    @get("/{username:str}", responses=refusals(404))
    async def show_user(self, username: str, service: GatewayService) -> UserView:
        """One user."""
        return service.user(username)

    @patch("/{username:str}", responses=refusals(404, 409, 422))
    async def update_user(
        self, request: AuthRequest, username: str, data: UpdateUser, service: GatewayService
    ) -> UserView:
        """Change a user's role or password, or disable/enable them."""
        return await service.update_user(request.user, username, data, correlation_id(request))


async def _form(request: Request[Any, Any, Any], service: GatewayService) -> UploadForm:
    return await read_form(
        request.headers.get("content-type", ""),
        request.stream(),
        file_field="file",
        limit=service.settings.max_upload_bytes,
        spool_dir=service.settings.home_path / "spool",
    )


class ModelsController(Controller):
    path = "/models"
    tags = ["models"]
    guards = [read]

    @post(
        "/",
        guards=[write],
        request_max_body_size=None,
        operation_class=ModelUploadOperation,
        responses=UPLOAD_RESPONSES,
    )
    async def upload_model(
        self, request: AuthRequest, service: GatewayService
    ) -> Response[UploadResult]:
        """Upload a model file (multipart/form-data, streamed to the object store).

        Form fields: ``name``, ``file``, optional ``architecture``, ``num_classes``,
        ``input_shape`` (like ``3,32,32``) and ``description``.

        Returns:
            201 validated (with the new version), 422 rejected (with the reason), or 202
            pending when the registry gave no verdict in time (follow ``/events/{id}``).
        """
        form = await _form(request, service)
        try:
            result = await service.upload_model(request.user, form, correlation_id(request))
        finally:
            form.discard()
        return Response(result, status_code=UPLOAD_STATUS[result.status])

    @get("/")
    async def list_models(self, service: GatewayService) -> list[ModelView]:
        """Every model with at least one version."""
        with service.runner.session() as s:
            return views.list_models(s)

    @get("/{name:str}", responses=refusals(404))
    async def show_model(self, name: str, service: GatewayService) -> ModelView:
        """A model with all its versions."""
        with service.runner.session() as s:
            model = views.get_model(s, name)
        if model is None:
            raise NotFound(f"no model {name!r}")
        return model

    @get("/{name:str}/versions", responses=refusals(404))
    async def list_versions(self, name: str, service: GatewayService) -> list[ModelVersionView]:
        """The versions of a model, oldest first."""
        with service.runner.session() as s:
            versions = views.list_versions(s, name)
        if not versions:
            raise NotFound(f"no model {name!r}")
        return versions

    @get("/{name:str}/versions/{version:int}", responses=refusals(404))
    async def show_version(
        self, name: str, version: int, service: GatewayService
    ) -> ModelVersionView:
        """One model version: format, inputs, outputs, stage, lineage."""
        with service.runner.session() as s:
            found = views.get_version(s, name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found

    @post(
        "/{name:str}/versions/{version:int}/stage",
        status_code=200,
        guards=[write],
        responses=refusals(404, 409, 422),
    )
    async def change_stage(
        self,
        request: AuthRequest,
        name: str,
        version: int,
        data: StageChange,
        service: GatewayService,
    ) -> ModelVersionView:
        """Move a version to none, staging, production or archived."""
        return await service.change_stage(
            request.user, name, version, data.stage, correlation_id(request)
        )

    @get("/{name:str}/versions/{version:int}/artifacts", responses=refusals(404))
    async def engine_artifacts(
        self, name: str, version: int, service: GatewayService
    ) -> list[EngineArtifactView]:
        """The engines converted from a version (ONNX, FP16, INT8, OpenVINO...), with parity."""
        with service.runner.session() as s:
            found = views.get_version(s, name, version)
            artifacts = views.list_engine_artifacts(s, name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return artifacts

    @get(
        "/{name:str}/versions/{version:int}/artifact",
        responses={200: ARTIFACT_BYTES, **refusals(404)},
    )
    async def download(self, name: str, version: int, service: GatewayService) -> Stream:
        """The version's file, streamed."""
        with service.runner.session() as s:
            found = views.get_version(s, name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        ref = found.artifact
        if not await service.artifacts.exists(ref.sha256):
            raise NotFound("the artifact is no longer in the object store")
        filename = ref.filename or f"{name}-v{version}"
        return Stream(
            service.artifacts.iter_chunks(ref.sha256, service.settings.home_path / "spool"),
            media_type=ref.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Content-Length": str(ref.size),
                "X-Content-Sha256": ref.sha256,
            },
        )


class DatasetsController(Controller):
    path = "/datasets"
    tags = ["datasets"]
    guards = [read]

    @post(
        "/",
        guards=[write],
        request_max_body_size=None,
        operation_class=DatasetUploadOperation,
        responses=UPLOAD_RESPONSES,
    )
    async def upload_dataset(
        self, request: AuthRequest, service: GatewayService
    ) -> Response[UploadResult]:
        """Upload a data set (multipart: ``name``, ``file``, ``description``, ``seed``).

        The file is a zip in ImageFolder layout or an ``.npz`` with ``x`` and ``y``.

        Returns:
            201 validated, 422 rejected (with the reason) or 202 pending.
        """
        form = await _form(request, service)
        try:
            result = await service.upload_dataset(request.user, form, correlation_id(request))
        finally:
            form.discard()
        return Response(result, status_code=UPLOAD_STATUS[result.status])

    @get("/")
    async def list_datasets(self, service: GatewayService) -> list[DatasetView]:
        """The latest validated version of every data set."""
        with service.runner.session() as s:
            return views.list_datasets(s)

    @get("/{name:str}", responses=refusals(404))
    async def show_dataset(self, name: str, service: GatewayService) -> DatasetView:
        """A data set's latest version: classes, counts, image sizes, splits."""
        with service.runner.session() as s:
            found = views.get_dataset(s, name)
        if found is None:
            raise NotFound(f"no data set {name!r}")
        return found


class JobsController(Controller):
    path = "/jobs"
    tags = ["training"]
    guards = [read]

    @post("/", status_code=201, guards=[train], responses=refusals(422, 429))
    async def create_job(
        self, request: AuthRequest, data: CreateJob, service: GatewayService
    ) -> JobCreated:
        """Start a training job: a genetic search (``search``) or one plain run (``single``).

        The request is checked here as far as it can be without model code (ranges, budget,
        objectives, the data set, GPU quotas for ``device`` ``cuda``); the trainer checks the
        rest and answers ``training.failed`` with the reason.

        Returns:
            201 with the job id and the correlation id whose ``/events/{id}`` feed shows the
            job's progress; 422 with the reason; 429 past a GPU quota.
        """
        return await service.create_job(request.user, data, correlation_id(request))

    @get("/", responses=refusals(422))
    async def list_jobs(
        self, service: GatewayService, status: JobStatus | None = None
    ) -> list[JobSummary]:
        """Training jobs, newest first (``?status=running`` to filter)."""
        with service.runner.session() as s:
            return views.list_jobs(s, status)

    @get("/{job_id:str}", responses=refusals(404))
    async def show_job(self, job_id: str, service: GatewayService) -> JobView:
        """A job: status, request, plan, generations, trials with metrics, front, models."""
        return service.job(job_id)

    @post(
        "/{job_id:str}/cancel", status_code=202, guards=[train], responses=refusals(403, 404, 409)
    )
    async def cancel_job(
        self, request: AuthRequest, job_id: str, service: GatewayService
    ) -> JobView:
        """Ask the trainer to stop a job (your own; admins: anyone's).

        Returns:
            202 with the job (``cancel_requested``); 409 when it has ended already.
        """
        return await service.cancel_job(request.user, job_id, correlation_id(request))


class DeploymentsController(Controller):
    path = "/deployments"
    tags = ["deployments"]
    guards = [read]

    @post("/", status_code=202, guards=[deploy], responses=refusals(404, 422))
    async def create_deployment(
        self, request: AuthRequest, data: CreateDeployment, service: GatewayService
    ) -> DeploymentView:
        """Serve a model version behind Triton (a new deployment, or a rolling update).

        Returns:
            202 with the deployment in ``requested``; the router answers ready or failed on
            the ``/events/{correlation_id}`` feed. 404 for an unknown model version.
        """
        return await service.deploy(request.user, data, correlation_id(request))

    @get("/")
    async def list_deployments(self, service: GatewayService) -> list[DeploymentView]:
        """Every deployment, retired ones included."""
        with service.runner.session() as s:
            return views.list_deployments(s)

    @get("/{name:str}", responses=refusals(404))
    async def show_deployment(self, name: str, service: GatewayService) -> DeploymentView:
        """One deployment: its spec, status and the version it serves."""
        return service.deployment(name)

    @delete("/{name:str}", status_code=202, guards=[deploy], responses=refusals(404, 409))
    async def retire_deployment(
        self, request: AuthRequest, name: str, service: GatewayService
    ) -> DeploymentView:
        """Retire (undeploy) a deployment; the router answers ``deployment.retired``."""
        return await service.retire(request.user, name, correlation_id(request))


class ConversionsController(Controller):
    path = "/"
    tags = ["conversions"]
    guards = [read]

    @post("/conversions", status_code=201, guards=[convert], responses=refusals(404, 422))
    async def create_conversion(
        self, request: AuthRequest, data: CreateConversion, service: GatewayService
    ) -> JobCreated:
        """Convert a model version to engines, each held to the accuracy gate.

        Returns:
            201 with the job id; follow ``/events/{correlation_id}`` for each target's result.
        """
        return await service.convert(request.user, data, correlation_id(request))

    @get("/conversions/{job_id:str}", responses=refusals(404))
    async def show_conversion(self, job_id: str, service: GatewayService) -> ConversionView:
        """A conversion: each target produced (with parity), rejected (why) or unavailable."""
        with service.runner.session() as s:
            found = views.get_conversion(s, job_id)
        if found is None:
            raise NotFound(f"no conversion {job_id!r}")
        return found

    @post("/benchmarks", status_code=201, guards=[convert], responses=refusals(404, 422))
    async def create_benchmark(
        self, request: AuthRequest, data: CreateBenchmark, service: GatewayService
    ) -> JobCreated:
        """Benchmark every engine of a model version and recommend one under the SLA."""
        return await service.benchmark(request.user, data, correlation_id(request))

    @get("/benchmarks/{job_id:str}", responses=refusals(404))
    async def show_benchmark(self, job_id: str, service: GatewayService) -> BenchmarkView:
        """A benchmark: the measured rows and the recommendation."""
        with service.runner.session() as s:
            found = views.get_benchmark(s, job_id)
        if found is None:
            raise NotFound(f"no benchmark {job_id!r}")
        return found


class EventsController(Controller):
    path = "/"
    tags = ["events"]
    guards = [read]

    @get("/uploads/{upload_id:str}", responses=refusals(404))
    async def show_upload(self, upload_id: str, service: GatewayService) -> UploadResult:
        """The state of an upload (pending until the registry's verdict)."""
        return service.upload(upload_id)

    @get("/events/{correlation_id:str}", responses={200: EVENT_STREAM, **refusals(422)})
    async def events(
        self,
        correlation_id: str,
        service: GatewayService,
        follow: bool = True,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        """Server-Sent Events: every event of a request or job, replayed, then live.

        Each message has ``event:`` the event type, ``data:`` the event JSON and ``id:`` its
        stream sequence; reconnect with ``Last-Event-ID`` to resume. ``follow=false`` ends
        the stream after the replay.
        """
        try:
            after = int(last_event_id) if last_event_id else 0
        except ValueError as err:
            raise Invalid("Last-Event-ID must be a stream sequence number") from err

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            async for item in service.correlated(correlation_id, after, follow=follow):
                if item is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                else:
                    yield ServerSentEventMessage(id=item.seq, event=item.type, data=item.body)

        return ServerSentEvent(messages())


class HealthController(Controller):
    path = "/"
    tags = ["health"]

    @get("/health/live")
    async def live(self) -> Health:
        """The process answers."""
        return Health(status="ok")

    @get("/health/ready", responses={503: NOT_READY})
    async def ready(self, service: GatewayService) -> Response[Health]:
        """Ready when NATS is connected and the projection has caught up with the log.

        Returns:
            200 with the checks, or 503 with the same body when not ready.
        """
        connected = service.bus.nc.is_connected
        lag = await service.projection_lag() if connected else None
        ok = connected and service.caught_up and lag is not None and lag <= READY_MAX_LAG
        body = Health(
            status="ok" if ok else "down",
            checks={
                "nats_connected": connected,
                "caught_up": service.caught_up,
                "projection_position": service.runner.position,
                "projection_lag": lag,
            },
        )
        return Response(body, status_code=200 if ok else 503)

    @get("/metrics", media_type=CONTENT_TYPE_LATEST)
    async def metrics(self, service: GatewayService) -> Response[bytes]:
        """Prometheus text format."""
        if service.bus.nc.is_connected:
            await service.projection_lag()
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


CONTROLLERS = [
    AuthController,
    UsersController,
    ModelsController,
    DatasetsController,
    JobsController,
    DeploymentsController,
    ConversionsController,
    EventsController,
    HealthController,
]
