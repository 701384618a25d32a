"""Catalog routes: ``/models`` (uploads, versions, stages, files, engines), ``/datasets`` and
``/uploads/{id}`` (an upload's verdict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.response import Stream

from cvops.contracts.api import (
    DatasetView,
    EngineArtifactView,
    ErrorBody,
    ModelVersionView,
    ModelView,
    StageChange,
    UploadResult,
)
from cvops.contracts.identity import Permission
from cvops.gateway.auth import AuthRequest, allow
from cvops.gateway.catalog.service import CatalogService
from cvops.gateway.core import correlation_id, provide
from cvops.gateway.openapi import GatewayOperation, refusal, refusals
from cvops.gateway.reads import CACHED

UPLOAD_STATUS = {"validated": 201, "rejected": 422, "pending": 202}

read = allow(Permission.READ)
write = allow(Permission.WRITE)


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


class ModelsController(Controller):
    path = "/models"
    tags = ["models"]
    guards = [read]
    dependencies = provide("catalog")

    @post(
        "/",
        guards=[write],
        request_max_body_size=None,
        operation_class=ModelUploadOperation,
        responses=UPLOAD_RESPONSES,
    )
    async def upload_model(
        self, request: AuthRequest, service: CatalogService
    ) -> Response[UploadResult]:
        """Upload a model file (multipart/form-data, streamed to the object store).

        Form fields: ``name``, ``file``, optional ``architecture``, ``num_classes``,
        ``input_shape`` (like ``3,32,32``) and ``description``.

        Returns:
            201 validated (with the new version), 422 rejected (with the reason), or 202
            pending when the registry gave no verdict in time (follow ``/events/{id}``).
        """
        result = await service.upload_model(
            request.user,
            request.headers.get("content-type", ""),
            request.stream(),
            lambda form: correlation_id(request, fingerprint=form),
        )
        return Response(result, status_code=UPLOAD_STATUS[result.status])

    @get("/", **CACHED)
    async def list_models(self, service: CatalogService) -> list[ModelView]:
        """Every model with at least one version."""
        return service.models()

    @get("/{name:str}", responses=refusals(404), **CACHED)
    async def show_model(self, name: str, service: CatalogService) -> ModelView:
        """A model with all its versions."""
        return service.model(name)

    @get("/{name:str}/versions", responses=refusals(404), **CACHED)
    async def list_versions(self, name: str, service: CatalogService) -> list[ModelVersionView]:
        """The versions of a model, oldest first."""
        return service.versions(name)

    @get("/{name:str}/versions/{version:int}", responses=refusals(404), **CACHED)
    async def show_version(
        self, name: str, version: int, service: CatalogService
    ) -> ModelVersionView:
        """One model version: format, inputs, outputs, stage, lineage."""
        return service.version(name, version)

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
        service: CatalogService,
    ) -> ModelVersionView:
        """Move a version to none, staging, production or archived."""
        return await service.change_stage(
            request.user, name, version, data.stage, correlation_id(request)
        )

    @get("/{name:str}/versions/{version:int}/artifacts", responses=refusals(404), **CACHED)
    async def engine_artifacts(
        self, name: str, version: int, service: CatalogService
    ) -> list[EngineArtifactView]:
        """The engines converted from a version (ONNX, FP16, INT8, OpenVINO...), with parity."""
        return service.engine_artifacts(name, version)

    @get(
        "/{name:str}/versions/{version:int}/artifact",
        responses={200: ARTIFACT_BYTES, **refusals(404)},
    )
    async def download(self, name: str, version: int, service: CatalogService) -> Stream:
        """The version's file, streamed."""
        found = await service.download(name, version)
        ref = found.artifact
        return Stream(
            found.chunks,
            media_type=ref.media_type,
            headers={
                "Content-Disposition": f'attachment; filename="{found.filename}"',
                "Content-Length": str(ref.size),
                "X-Content-Sha256": ref.sha256,
            },
        )


class DatasetsController(Controller):
    path = "/datasets"
    tags = ["datasets"]
    guards = [read]
    dependencies = provide("catalog")

    @post(
        "/",
        guards=[write],
        request_max_body_size=None,
        operation_class=DatasetUploadOperation,
        responses=UPLOAD_RESPONSES,
    )
    async def upload_dataset(
        self, request: AuthRequest, service: CatalogService
    ) -> Response[UploadResult]:
        """Upload a data set (multipart: ``name``, ``file``, ``description``, ``seed``).

        The file is a zip in ImageFolder layout or an ``.npz`` with ``x`` and ``y``.

        Returns:
            201 validated, 422 rejected (with the reason) or 202 pending.
        """
        result = await service.upload_dataset(
            request.user,
            request.headers.get("content-type", ""),
            request.stream(),
            lambda form: correlation_id(request, fingerprint=form),
        )
        return Response(result, status_code=UPLOAD_STATUS[result.status])

    @get("/", **CACHED)
    async def list_datasets(self, service: CatalogService) -> list[DatasetView]:
        """The latest validated version of every data set."""
        return service.datasets()

    @get("/{name:str}", responses=refusals(404), **CACHED)
    async def show_dataset(self, name: str, service: CatalogService) -> DatasetView:
        """A data set's latest version: classes, counts, image sizes, splits."""
        return service.dataset(name)


class UploadsController(Controller):
    path = "/uploads"
    tags = ["events"]  # documented beside the event feed that also follows an upload
    guards = [read]
    dependencies = provide("catalog")

    @get("/{upload_id:str}", responses=refusals(404), **CACHED)
    async def show_upload(self, upload_id: str, service: CatalogService) -> UploadResult:
        """The state of an upload (pending until the registry's verdict)."""
        return service.upload(upload_id)
