"""Reports: the newest report of each model version, as the reporter announced it.

The fold is ``cvops.core.reports``' (the reporter keeps the same table); here: the view of a
report, its files streamed from the object store (HTML, PDF, JSON, one PNG per chart) and the
routes under ``/models/{name}/versions/{version}/report``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import nats.js.errors
from litestar import Controller, get
from litestar.openapi import ResponseSpec
from litestar.response import Stream
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Event
from cvops.contracts.api import ReportView
from cvops.contracts.identity import Permission
from cvops.contracts.reporting import ReportGenerated
from cvops.core import ArtifactStore
from cvops.core.reports import Reports
from cvops.domain.checks import fits_int64
from cvops.gateway.auth import allow
from cvops.gateway.catalog.service import Download
from cvops.gateway.core import Fold, Gateway, metadata, provide
from cvops.gateway.errors import NotFound
from cvops.gateway.openapi import refusals
from cvops.gateway.reads import CACHED

# The report is self-contained (Vega, Vega-Lite and vega-embed inline, images as data URIs):
# nothing may load from anywhere. Vega compiles its expressions with Function(), hence
# 'unsafe-eval' (without it the page shows its tables but no chart).
REPORT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'unsafe-inline'; img-src data:"
)

ReportFileKind = Literal["html", "pdf", "json"]

# kind -> (media type, file name suffix, Content-Disposition type)
_FILES: dict[str, tuple[str, str, str]] = {
    "html": ("text/html; charset=utf-8", "report.html", "inline"),
    "pdf": ("application/pdf", "report.pdf", "inline"),
    "json": ("application/json", "report.json", "attachment"),
}
CHART_MEDIA_TYPE = "image/png"

# -- projection --------------------------------------------------------------------------------

# The newest report.generated of each version (by the log it reflects, ``last_seq``).
REPORTS = Reports(metadata)


def fold_report(session: Session, event: Event, seq: int, at: str) -> None:
    """A version's newest report (``cvops.core.reports``: the highest ``last_seq`` stands)."""
    REPORTS.apply(session, event, seq)


# Event context -> this context's fold of it.
FOLDS: dict[str, Fold] = {"report": fold_report}


def report_path(model_name: str, version: int) -> str:
    """The gateway path of a version's report view; its files are beside it."""
    return f"/models/{quote(model_name, safe='')}/versions/{version}/report"


def report_view(event: ReportGenerated) -> ReportView:
    path = report_path(event.model_name, event.version)
    return ReportView(
        model_name=event.model_name,
        version=event.version,
        generated_at=event.occurred_at,
        last_seq=event.last_seq,
        html=f"{path}.html",
        pdf=f"{path}.pdf",
        data=f"{path}.json",
        sections=list(event.sections),
        missing=list(event.missing),
        charts=list(event.charts),
        chart_files={name: f"{path}/charts/{quote(name, safe='')}.png" for name in event.charts},
        training_job=event.training_job,
        conversion_jobs=list(event.conversion_jobs),
        benchmark_jobs=list(event.benchmark_jobs),
        deployments=list(event.deployments),
    )


# -- use cases ---------------------------------------------------------------------------------


@dataclass
class ReportFile(Download):
    """A report file to stream back, with the media type it is served as."""

    media_type: str = "application/octet-stream"
    disposition: str = "attachment"


@dataclass
class ReportService:
    """Reads of the reports the reporter announced; the object store holds their files."""

    gateway: Gateway
    artifacts: ArtifactStore

    def latest(self, name: str, version: int) -> ReportGenerated:
        """The newest report of ``name:version`` (NotFound: none yet)."""
        found = None
        if fits_int64(version):  # a number no projection can hold names no version
            with self.gateway.session() as s:
                found = REPORTS.latest(s, name, version)
        if found is None:
            raise NotFound(f"no report yet for {name}:{version}")
        return found

    def report(self, name: str, version: int) -> ReportView:
        return report_view(self.latest(name, version))

    async def file(self, name: str, version: int, kind: ReportFileKind) -> ReportFile:
        """The HTML, PDF or JSON of the newest report, if the object store still has it."""
        report = self.latest(name, version)
        ref = {"html": report.html, "pdf": report.pdf, "json": report.data}[kind]
        # a page stored in parts (its shared JavaScript once for every report) goes out whole
        parts = list(report.html_parts) if kind == "html" else []
        media_type, suffix, disposition = _FILES[kind]
        filename = f"{name}-v{version}-{suffix}"
        return await self._stream(ref, filename, media_type, disposition, parts or [ref])

    async def chart(self, name: str, version: int, chart: str) -> ReportFile:
        """One chart of the newest report as PNG (``chart`` is ``<name>.png``)."""
        report = self.latest(name, version)
        ref = report.charts.get(chart.removesuffix(".png")) if chart.endswith(".png") else None
        if ref is None:
            known = ", ".join(f"{c}.png" for c in report.charts) or "none"
            raise NotFound(f"the report of {name}:{version} has no chart {chart!r} ({known})")
        filename = f"{name}-v{version}-{chart}"
        return await self._stream(ref, filename, CHART_MEDIA_TYPE, "inline", [ref])

    async def _stream(
        self,
        ref: ArtifactRef,
        filename: str,
        media_type: str,
        disposition: str,
        stored: list[ArtifactRef],
    ) -> ReportFile:
        """``ref`` (its size and digest go in the headers), streamed as the blobs ``stored``
        one after the other. Every blob is fetched, checked and its first chunk read before
        this returns, so a failure is an error status, never a 200 whose body stops short."""
        gone = NotFound(f"{filename} is no longer in the object store")
        for blob in stored:
            if not await self.artifacts.exists(blob.sha256):
                raise gone
        spool = self.gateway.settings.home_path / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        blobs = [self.artifacts.iter_chunks(part.sha256, spool) for part in stored]
        try:
            firsts = [await anext(chunks, b"") for chunks in blobs]
        except (nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError) as err:
            for chunks in blobs:
                await chunks.aclose()
            raise gone from err
        return ReportFile(
            artifact=ref,
            filename=filename,
            chunks=_joined(firsts, blobs),
            media_type=media_type,
            disposition=disposition,
        )


async def _joined(
    firsts: list[bytes], blobs: list[AsyncGenerator[bytes, None]]
) -> AsyncIterator[bytes]:
    """Each blob's first chunk (read already), then the rest of it, blob after blob."""
    for first, rest in zip(firsts, blobs, strict=True):
        if first:
            yield first
        async for chunk in rest:
            yield chunk


# -- routes ------------------------------------------------------------------------------------


def report_file_response(found: ReportFile, **headers: str) -> Stream:
    """A report file streamed back, with its name, size and digest (and ``headers``)."""
    ref = found.artifact
    filename = quote(found.filename, safe="")
    return Stream(
        found.chunks,
        media_type=found.media_type,
        headers={
            "Content-Disposition": f"{found.disposition}; filename*=UTF-8''{filename}",
            "Content-Length": str(ref.size),
            "X-Content-Sha256": ref.sha256,
            "X-Content-Type-Options": "nosniff",
            **headers,
        },
    )


def _bytes(media_type: str, description: str) -> ResponseSpec:
    return ResponseSpec(
        bytes, generate_examples=False, media_type=media_type, description=description
    )


_NO_FILE = refusals(404)[404]


class ReportsController(Controller):
    path = "/models/{name:str}/versions/{version:int}"
    tags = ["reports"]
    guards = [allow(Permission.READ)]
    dependencies = provide("reports")

    @get("/report", responses=refusals(404), **CACHED)
    async def show_report(self, name: str, version: int, service: ReportService) -> ReportView:
        """The newest report of a model version: its sections, what the missing ones wait
        for, its charts, its lineage and the paths of its files.

        Returns:
            the report; 404 when the reporter has not announced one for the version yet.
        """
        return service.report(name, version)

    @get(
        "/report.html",
        responses={
            200: _bytes(
                "text/html",
                "The report as one self-contained page (served inline, under a "
                "Content-Security-Policy that lets nothing load from anywhere)",
            ),
            404: _NO_FILE,
        },
    )
    async def report_html(self, name: str, version: int, service: ReportService) -> Stream:
        """The report as one self-contained HTML page (works offline), streamed."""
        found = await service.file(name, version, "html")
        return report_file_response(found, **{"Content-Security-Policy": REPORT_CSP})

    @get(
        "/report.pdf",
        responses={200: _bytes("application/pdf", "The report as a PDF"), 404: _NO_FILE},
    )
    async def report_pdf(self, name: str, version: int, service: ReportService) -> Stream:
        """The report's sections and charts as one PDF, streamed."""
        return report_file_response(await service.file(name, version, "pdf"))

    @get(
        "/report.json",
        responses={
            200: _bytes("application/json", "Every section, table and chart's data as JSON"),
            404: _NO_FILE,
        },
    )
    async def report_json(self, name: str, version: int, service: ReportService) -> Stream:
        """The report's data as JSON (sections, tables, the data behind every chart)."""
        return report_file_response(await service.file(name, version, "json"))

    @get(
        "/report/charts/{chart:str}",
        responses={200: _bytes(CHART_MEDIA_TYPE, "One chart of the report"), 404: _NO_FILE},
    )
    async def report_chart(
        self, name: str, version: int, chart: str, service: ReportService
    ) -> Stream:
        """One chart of the report as PNG: ``chart`` is ``<name>.png`` (names in the view).

        Returns:
            the PNG; 404 for a chart the report does not have.
        """
        return report_file_response(await service.chart(name, version, chart))
