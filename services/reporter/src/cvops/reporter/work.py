"""The reporter's work: rebuild the report of every model version a new result touched.

Driven by the projection runner's progress: each time the projection moves, the versions in
``report_due`` past their newest report are rebuilt (after a short debounce, so a burst of
results makes one report), rendered, stored in the object store and announced with
``report.generated``. A report's event id is derived from the version and the sequence it
reflects, so two instances that build the same report publish it once.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np
from PIL import Image
from prometheus_client import Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.reporting import ReportGenerated
from cvops.core import ArtifactStore, Bus, ProjectionRunner, Settings
from cvops.core.logging import get_logger
from cvops.core.metrics import record_job
from cvops.core.projection import checkpoint_table
from cvops.domain.catalog import DatasetVersionState
from cvops.reporter import projection as p
from cvops.reporter.content import (
    LiveMetrics,
    LiveNumbers,
    Report,
    ReportInputs,
    Thumbnail,
    build_report,
)
from cvops.reporter.render import Rendered, javascript_bundle, render

log = get_logger(__name__)

DEBOUNCE_S = 0.2  # results that land together make one report
LIVE_TIMEOUT_S = 1.0
MAX_THUMBNAILS = 16
LIVE_PHASES = ("ready", "degraded")

GENERATED = Counter("cvops_reports_generated", "Reports rebuilt and published")
SECONDS = Histogram(
    "cvops_report_build_seconds",
    "Time to read, render, store and publish one report",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)


def load_inputs(session: Session, model_name: str, version: int) -> ReportInputs:
    """Every folded state a version's report shows, read in one transaction, with the
    sequence up to which they reflect the log."""
    last_seq = session.execute(
        select(checkpoint_table.c.seq).where(checkpoint_table.c.name == p.projection.name)
    ).scalar_one_or_none()
    model = p.catalog.model_version(session, model_name, version)
    training = None
    dataset: DatasetVersionState | None = None
    if model is not None and model.lineage.job_id:
        training = p.trainings.get(session, model.lineage.job_id)
    dataset_name = model.lineage.dataset if model is not None else None
    if training is not None and training.plan is not None:
        dataset_name = training.plan.dataset
    if dataset_name:
        versions = p.catalog.dataset_versions(session).get(dataset_name, [])
        wanted = training.plan.dataset_version if training and training.plan else None
        chosen = [d for d in versions if d.version == wanted] or versions[-1:]
        dataset = chosen[0] if chosen else None
    conversions = p.conversions.states(session, model_name=model_name, version=version)
    benchmarks = p.benchmarks.states(session, model_name=model_name, version=version)
    deployments = [
        d for d in p.deployments.states(session) if (model_name, version) in p.served_versions(d)
    ]
    return ReportInputs(
        model_name=model_name,
        version=version,
        last_seq=int(last_seq or 0),
        model=model,
        dataset=dataset,
        training=training,
        conversions=conversions,
        benchmarks=benchmarks,
        deployments=deployments,
    )


def thumbnails_of(npz_path: Path, limit: int = MAX_THUMBNAILS) -> list[Thumbnail]:
    """Sample images of a canonical data set (``x`` uint8 NHWC, ``y``, ``classes``): the first
    images of each class in turn, as small PNGs."""
    with np.load(npz_path, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
        classes = [str(c) for c in npz["classes"]] if "classes" in npz.files else []
    per_class: dict[int, list[int]] = {}
    for i, label in enumerate(y.tolist()):
        per_class.setdefault(int(label), []).append(i)
    order: list[int] = []
    for rank in range(limit):
        for label in sorted(per_class):
            if rank < len(per_class[label]) and len(order) < limit:
                order.append(per_class[label][rank])
    out = []
    for i in order:
        img = np.asarray(x[i])
        if img.ndim == 3 and img.shape[-1] == 1:
            img = img[..., 0]
        buf = io.BytesIO()
        Image.fromarray(img.astype(np.uint8)).save(buf, format="PNG")
        label = int(y[i])
        out.append(
            Thumbnail(
                label=classes[label] if label < len(classes) else str(label), png=buf.getvalue()
            )
        )
    return out


def live_numbers(
    text: str, deployments: list[str], previous: dict[str, tuple[float, float]], now: float
) -> list[LiveNumbers]:
    """Requests, errors, mean and p95 latency per deployment from the router's Prometheus
    text; a rate where an earlier sample (``previous``: name -> (time, requests)) exists."""
    wanted = set(deployments)
    requests: dict[str, float] = dict.fromkeys(wanted, 0.0)
    errors: dict[str, float] = dict.fromkeys(wanted, 0.0)
    sums: dict[str, float] = dict.fromkeys(wanted, 0.0)
    counts: dict[str, float] = dict.fromkeys(wanted, 0.0)
    buckets: dict[str, dict[float, float]] = {d: {} for d in wanted}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            model = s.labels.get("model")
            if model not in wanted:
                continue
            if s.name == "cvops_router_requests_total":
                requests[model] += s.value
                if not str(s.labels.get("code", "")).startswith("2"):
                    errors[model] += s.value
            elif s.name == "cvops_router_request_duration_seconds_sum":
                sums[model] += s.value
            elif s.name == "cvops_router_request_duration_seconds_count":
                counts[model] += s.value
            elif s.name == "cvops_router_request_duration_seconds_bucket":
                le = float(s.labels["le"])
                buckets[model][le] = buckets[model].get(le, 0.0) + s.value
    out = []
    for d in sorted(wanted):
        n = counts[d]
        p95 = None
        if n > 0:
            p95 = next((le * 1000 for le, c in sorted(buckets[d].items()) if c >= 0.95 * n), None)
        rate = None
        if d in previous and now > previous[d][0]:
            rate = max(0.0, (requests[d] - previous[d][1]) / (now - previous[d][0]))
        out.append(
            LiveNumbers(
                deployment=d,
                requests=requests[d],
                errors=errors[d],
                mean_ms=sums[d] / n * 1000 if n else None,
                p95_ms=p95 if p95 is None or p95 != float("inf") else None,
                rate_rps=rate,
            )
        )
    return out


class Reporter:
    """Rebuilds due reports as the projection moves; one instance or many (same ids)."""

    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        runner: ProjectionRunner,
        *,
        debounce_s: float = DEBOUNCE_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.runner = runner
        self.store = ArtifactStore(bus)
        self.debounce_s = debounce_s
        self.clock = clock
        self.spool = settings.home_path / "reporter"
        # last_seq of the reports this process published, until the projection has them
        self._published: dict[tuple[str, int], int] = {}
        self._failed: dict[tuple[str, int], int] = {}  # due_seq at which its report failed
        self._thumbs: dict[str, list[Thumbnail]] = {}
        self._live_previous: dict[str, tuple[float, float]] = {}
        self._stopping = asyncio.Event()

    @property
    def metrics_url(self) -> str:
        return f"http://{self.settings.router_host}:{self.settings.router_metrics_port}/metrics"

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Rebuild due reports until ``stop()``, one at a time and the newest result first, so
        a fresh result is reported within seconds even behind a backlog (a first start on a
        long log); a report that fails stays due and is tried again once it has a newer
        result."""
        await asyncio.to_thread(javascript_bundle)  # built once, before the first report
        seen = -1
        while not self._stopping.is_set():
            await self.runner.wait_for(seen + 1, timeout=0.5)
            due = await asyncio.to_thread(self._due)
            if not due:
                seen = self.runner.position
                continue
            if due[0].due_seq > seen:  # fresh results: let those that arrive together land
                await asyncio.sleep(self.debounce_s)
                due = await asyncio.to_thread(self._due) or due
            seen = self.runner.position
            item = due[0]
            started = time.perf_counter()
            try:
                await self.regenerate(item)
            except Exception:
                record_job("report", "failed", time.perf_counter() - started)
                self._failed[(item.model_name, item.version)] = item.due_seq
                log.exception("report_failed", model=item.model_name, version=item.version)

    def _due(self) -> list[p.Due]:
        with Session(self.runner.engine) as s:
            due = p.due_reports(s)
        return [
            d
            for d in due
            if self._published.get((d.model_name, d.version), -1) < d.due_seq
            and self._failed.get((d.model_name, d.version), -1) < d.due_seq
        ]

    async def regenerate(self, due: p.Due) -> ReportGenerated:
        """Rebuild, store and announce the report of one version."""
        started = time.perf_counter()
        with Session(self.runner.engine) as s, s.begin():
            inputs = load_inputs(s, due.model_name, due.version)
        inputs = await self._with_outside_facts(inputs)
        report = build_report(inputs)
        rendering = time.perf_counter()
        rendered = await asyncio.to_thread(render, report)
        render_s = time.perf_counter() - rendering
        event = await self._publish(report, rendered, due)
        self._published[(due.model_name, due.version)] = report.last_seq
        elapsed = time.perf_counter() - started
        SECONDS.observe(elapsed)
        record_job("report", "completed", elapsed)
        GENERATED.inc()
        log.info(
            "report_generated",
            model=due.model_name,
            version=due.version,
            last_seq=report.last_seq,
            cause=due.cause,
            seconds=round(elapsed, 3),
            render_s=round(render_s, 3),
            missing=[m.section for m in report.missing],
        )
        return event

    async def _with_outside_facts(self, inputs: ReportInputs) -> ReportInputs:
        """Add what the log does not hold: sample images of the data set (from the object
        store) and the router's live numbers for what is deployed."""
        thumbs: list[Thumbnail] = []
        if inputs.dataset is not None:
            try:
                thumbs = await self._thumbnails(inputs.dataset)
            except Exception as err:  # a report without samples beats no report
                log.warning(
                    "report_samples_unavailable", dataset=inputs.dataset.name, error=str(err)
                )
        live = None
        serving = [d.deployment for d in inputs.deployments if d.phase in LIVE_PHASES]
        if serving:
            live = await self._live(serving)
        return msgspec.structs.replace(inputs, thumbnails=thumbs, live=live)

    async def _thumbnails(self, ds: DatasetVersionState) -> list[Thumbnail]:
        sha = ds.canonical.sha256
        if sha not in self._thumbs:
            path = self.spool / f"{sha}.npz"
            await self.store.get_file(sha, path)
            try:
                self._thumbs[sha] = await asyncio.to_thread(thumbnails_of, path)
            finally:
                path.unlink(missing_ok=True)
        return self._thumbs[sha]

    async def _live(self, deployments: list[str]) -> LiveMetrics:
        url = self.metrics_url

        def scrape() -> str:
            with urllib.request.urlopen(url, timeout=LIVE_TIMEOUT_S) as resp:
                return str(resp.read().decode())

        try:
            text = await asyncio.to_thread(scrape)
        except Exception as err:
            return LiveMetrics(source=url, error=f"{type(err).__name__}: {err}")
        now = time.time()
        numbers = live_numbers(text, deployments, self._live_previous, now)
        for n in numbers:
            self._live_previous[n.deployment] = (now, n.requests)
        return LiveMetrics(source=url, numbers=numbers)

    async def _put(self, data: bytes, media_type: str, filename: str) -> ArtifactRef:
        return await self.store.put_bytes(data, media_type=media_type, filename=filename)

    async def _publish(self, report: Report, rendered: Rendered, due: p.Due) -> ReportGenerated:
        stem = f"{report.model_name}-v{report.version}-report"
        names = sorted(rendered.pngs)
        parts = rendered.html_parts()
        # one object-store write each, all at once (each waits for its fsync); the page's
        # shared JavaScript is a no-op after the first report
        pdf, data, *stored = await asyncio.gather(
            self._put(rendered.pdf, "application/pdf", f"{stem}.pdf"),
            self._put(rendered.data, "application/json", f"{stem}.json"),
            *(self._put(rendered.pngs[n], "image/png", f"{stem}-{n}.png") for n in names),
            *(self._put(part, "text/html", f"{stem}.html.part{i}") for i, part in enumerate(parts)),
        )
        pngs, html_parts = stored[: len(names)], stored[len(names) :]
        charts = dict(zip(names, pngs, strict=True))
        html = ArtifactRef(
            sha256=hashlib.sha256(rendered.html).hexdigest(),
            size=len(rendered.html),
            media_type="text/html",
            filename=f"{stem}.html",
        )
        stamp = Stamp(
            now=self.clock(),
            actor="reporter",
            correlation_id=due.correlation_id,
            causation_id=uuid.UUID(due.causation_id),
        )
        event = ReportGenerated(
            **stamp.envelope(f"report/{report.key}/{report.last_seq}"),
            model_name=report.model_name,
            version=report.version,
            html=html,
            html_parts=html_parts,
            pdf=pdf,
            data=data,
            charts=charts,
            sections=report.present,
            missing=report.missing,
            last_seq=report.last_seq,
            training_job=report.training_job,
            conversion_jobs=report.conversion_jobs,
            benchmark_jobs=report.benchmark_jobs,
            deployments=report.deployments,
        )
        await self.bus.publish(event)
        return event
