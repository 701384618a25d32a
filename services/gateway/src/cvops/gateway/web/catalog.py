"""Catalog pages: models, their versions (with the actions on a version), data sets, uploads
and reports, read and written through the catalog's and the reports' use cases."""

from __future__ import annotations

from typing import Any, get_args
from urllib.parse import quote

from litestar import Controller, get, post
from litestar.response import Redirect, ServerSentEvent, Stream

from cvops.contracts.api import UploadResult
from cvops.contracts.conversion import CONVERSION_TARGETS
from cvops.contracts.deployment import PRECISIONS, SERVING_ENGINES
from cvops.contracts.identity import Permission
from cvops.contracts.registry import Stage
from cvops.contracts.training import ARCHITECTURES
from cvops.gateway.auth import AuthRequest, allow
from cvops.gateway.catalog.service import CatalogService
from cvops.gateway.core import correlation_id
from cvops.gateway.errors import NotFound, Refused
from cvops.gateway.reports import REPORT_CSP, ReportService, report_file_response
from cvops.gateway.uploads import FormError
from cvops.gateway.web.forms import checked_form, csrf_checked_stream
from cvops.gateway.web.live import LiveFeed
from cvops.gateway.web.render import Flash, Pages, error, ok
from cvops.gateway.web.session import WebSession

STAGES: tuple[str, ...] = get_args(Stage)
# The report's own policy, and sandboxed even when opened alone: its scripts (Vega) run in an
# origin of their own, never as the signed-in user's pages.
FRAMED_REPORT_CSP = f"{REPORT_CSP}; sandbox allow-scripts; frame-ancestors 'self'"


def model_page(name: str, version: int | None = None) -> str:
    base = f"/ui/models/{quote(name, safe='')}"
    return base if version is None else f"{base}/versions/{version}"


def upload_outcome(result: UploadResult) -> tuple[str, Flash]:
    """Where an upload's form leads, and what it says: the new version, or the reason."""
    kind = "Model" if result.kind == "model" else "Data set"
    if result.status == "validated":
        if result.kind == "model":
            where = model_page(result.name, result.version)
        else:
            where = f"/ui/datasets/{quote(result.name, safe='')}"
        return where, ok(f"{kind} {result.name} v{result.version} is registered.")
    if result.status == "rejected":
        listing = "/ui/models" if result.kind == "model" else "/ui/datasets"
        return listing, error(f"{kind} {result.name} was rejected: {result.reason}")
    return f"/ui/uploads/{result.upload_id}", ok(
        f"{kind} {result.name} was received; the registry has not decided yet."
    )


async def _upload(
    request: AuthRequest, pages: Pages, catalog: CatalogService, kind: str
) -> Redirect:
    auth = request.scope["auth"]
    assert isinstance(auth, WebSession)
    content_type = request.headers.get("content-type", "")
    listing = "/ui/models" if kind == "model" else "/ui/datasets"
    try:
        body = csrf_checked_stream(content_type, request.stream(), auth.csrf_token)
        upload = catalog.upload_model if kind == "model" else catalog.upload_dataset
        result = await upload(request.user, content_type, body, correlation_id(request))
    except (Refused, FormError) as err:
        return pages.redirect(request, listing, error(f"Upload refused: {err}"))
    where, flash = upload_outcome(result)
    return pages.redirect(request, where, flash)


class ModelPages(Controller):
    path = "/ui/models"
    guards = [allow(Permission.READ)]

    @get("/")
    async def models(self, request: AuthRequest, pages: Pages, catalog: CatalogService) -> Any:
        """Every model with its latest version; the upload form for engineers."""
        return pages.render(request, "models.html", models=catalog.models(), nav="models")

    @post("/", guards=[allow(Permission.WRITE)], request_max_body_size=None, status_code=303)
    async def upload_model(
        self, request: AuthRequest, pages: Pages, catalog: CatalogService
    ) -> Redirect:
        """Upload a model file (streamed to the catalog's upload use case)."""
        return await _upload(request, pages, catalog, "model")

    @get("/{name:str}")
    async def model(
        self, request: AuthRequest, name: str, pages: Pages, catalog: CatalogService
    ) -> Any:
        """A model and all its versions."""
        return pages.render(request, "model.html", model=catalog.model(name), nav="models")

    @get("/{name:str}/versions/{version:int}")
    async def version(
        self,
        request: AuthRequest,
        name: str,
        version: int,
        pages: Pages,
        catalog: CatalogService,
        reports: ReportService,
    ) -> Any:
        """One version: what it is, its engines, its report, and the actions on it."""
        found = catalog.version(name, version)
        try:
            report = reports.report(name, version)
        except NotFound:
            report = None
        return pages.render(
            request,
            "version.html",
            v=found,
            engines=catalog.engine_artifacts(name, version),
            report=report,
            datasets=catalog.datasets(),
            stages=STAGES,
            targets=CONVERSION_TARGETS,
            engine_names=SERVING_ENGINES,
            precisions=PRECISIONS,
            nav="models",
        )

    @post("/{name:str}/versions/{version:int}/stage", guards=[allow(Permission.WRITE)])
    async def change_stage(
        self, request: AuthRequest, name: str, version: int, pages: Pages, catalog: CatalogService
    ) -> Redirect:
        """Move a version to another stage."""
        fields = await checked_form(request)
        stage = fields.text("stage")
        try:
            await catalog.change_stage(request.user, name, version, stage, correlation_id(request))
        except Refused as err:
            return pages.redirect(request, model_page(name, version), error(str(err)))
        return pages.redirect(request, model_page(name, version), ok(f"Stage is now {stage}."))

    @get("/{name:str}/versions/{version:int}/artifact")
    async def download(self, name: str, version: int, catalog: CatalogService) -> Stream:
        """The version's file."""
        found = await catalog.download(name, version)
        filename = quote(found.filename, safe="")
        return Stream(
            found.chunks,
            media_type=found.artifact.media_type,
            headers={
                "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
                "Content-Length": str(found.artifact.size),
                "X-Content-Type-Options": "nosniff",
            },
        )

    @get("/{name:str}/versions/{version:int}/report")
    async def report(
        self, request: AuthRequest, name: str, version: int, pages: Pages, reports: ReportService
    ) -> Any:
        """The version's newest report: its sections, charts and lineage, the page itself."""
        return pages.render(
            request, "report.html", report=reports.report(name, version), nav="models"
        )

    @get("/{name:str}/versions/{version:int}/report.html")
    async def report_html(self, name: str, version: int, reports: ReportService) -> Stream:
        """The report as one self-contained page, under the report's own policy (the report
        page shows it in a sandboxed frame)."""
        found = await reports.file(name, version, "html")
        return report_file_response(found, **{"Content-Security-Policy": FRAMED_REPORT_CSP})

    @get("/{name:str}/versions/{version:int}/report.pdf")
    async def report_pdf(self, name: str, version: int, reports: ReportService) -> Stream:
        """The report as PDF."""
        return report_file_response(await reports.file(name, version, "pdf"))

    @get("/{name:str}/versions/{version:int}/report.json")
    async def report_json(self, name: str, version: int, reports: ReportService) -> Stream:
        """The report's data as JSON."""
        return report_file_response(await reports.file(name, version, "json"))

    @get("/{name:str}/versions/{version:int}/report/charts/{chart:str}")
    async def report_chart(
        self, name: str, version: int, chart: str, reports: ReportService
    ) -> Stream:
        """One chart of the report as PNG."""
        return report_file_response(await reports.chart(name, version, chart))


class DatasetPages(Controller):
    path = "/ui/datasets"
    guards = [allow(Permission.READ)]

    @get("/")
    async def datasets(self, request: AuthRequest, pages: Pages, catalog: CatalogService) -> Any:
        """Every data set's latest version; the upload form for engineers."""
        return pages.render(request, "datasets.html", datasets=catalog.datasets(), nav="datasets")

    @post("/", guards=[allow(Permission.WRITE)], request_max_body_size=None, status_code=303)
    async def upload_dataset(
        self, request: AuthRequest, pages: Pages, catalog: CatalogService
    ) -> Redirect:
        """Upload a data set (streamed to the catalog's upload use case)."""
        return await _upload(request, pages, catalog, "dataset")

    @get("/{name:str}")
    async def dataset(
        self, request: AuthRequest, name: str, pages: Pages, catalog: CatalogService
    ) -> Any:
        """A data set: classes, counts, splits; the training form for engineers."""
        return pages.render(
            request, "dataset.html", d=catalog.dataset(name), nav="datasets", archs=ARCHITECTURES
        )


class UploadPages(Controller):
    path = "/ui/uploads"
    guards = [allow(Permission.READ)]

    @get("/{upload_id:str}")
    async def upload(
        self,
        request: AuthRequest,
        upload_id: str,
        pages: Pages,
        catalog: CatalogService,
        live: LiveFeed,
    ) -> Any:
        """An upload waiting for the registry's verdict (live), or its verdict."""
        after = live.position()
        result = catalog.upload(upload_id)
        return pages.render(request, "upload.html", u=result, after=after, nav="models")

    @get("/{upload_id:str}/live")
    async def upload_live(
        self, upload_id: str, after: int, pages: Pages, catalog: CatalogService, live: LiveFeed
    ) -> ServerSentEvent:
        """The upload's status, sent again on each of its events until the verdict."""
        result = catalog.upload(upload_id)

        def render() -> tuple[str, bool]:
            now = catalog.upload(upload_id)
            return pages.fragment("_upload.html", u=now), now.status != "pending"

        return live.stream(result.correlation_id, after, render)
