"""Reporting events: one report per model version, regenerated as its results arrive.

A report lives on ``cvops.evt.report.<model>~3a<version>.generated`` (the aggregate is the
model version, ``<model>:<version>``). The reporter publishes ``report.generated`` each time
it has rebuilt a version's report from the log: the self-contained HTML, the PDF, the data
as JSON and one PNG per chart, all blobs in the object store, and which sections had
results and which are still missing.
"""

from __future__ import annotations

import msgspec

from cvops.contracts.common import ArtifactRef
from cvops.contracts.envelope import Event

# The sections of a report, in the order they appear.
REPORT_SECTIONS: tuple[str, ...] = (
    "dataset",
    "training",
    "conversion",
    "benchmark",
    "recommendation",
    "deployment",
)


class MissingSection(msgspec.Struct, frozen=True, kw_only=True):
    """A section without results yet, and what it waits for (``cvops convert ...``)."""

    section: str
    reason: str


class _ReportEvent(Event, frozen=True, kw_only=True):
    model_name: str
    version: int

    @property
    def aggregate_id(self) -> str:
        return f"{self.model_name}:{self.version}"


class ReportGenerated(_ReportEvent, tag="report.generated.v1"):
    """The report of ``model_name:version`` was rebuilt from the log up to ``last_seq``.

    ``html`` works offline (Vega's JavaScript is bundled in it, nothing comes from a
    network); when ``html_parts`` is set, the page is stored as those blobs, whose
    concatenation is ``html`` (its sha256 and size), so the JavaScript every page carries is
    stored once. ``pdf`` holds the same sections and charts, ``data`` is every number behind
    them as JSON, and ``charts`` maps each chart's name to its PNG. ``sections`` lists the
    sections with results; ``missing`` says what each other section still waits for.
    """

    html: ArtifactRef
    pdf: ArtifactRef
    data: ArtifactRef
    html_parts: list[ArtifactRef] = []
    charts: dict[str, ArtifactRef] = {}
    sections: list[str] = []
    missing: list[MissingSection] = []
    last_seq: int = 0  # the stream sequence up to which the report reflects the log
    training_job: str | None = None  # the lineage: the job that produced the version
    conversion_jobs: list[str] = []
    benchmark_jobs: list[str] = []
    deployments: list[str] = []


REPORTING_EVENTS = (ReportGenerated,)
