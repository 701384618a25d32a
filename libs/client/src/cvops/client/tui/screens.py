"""The screen of one record: a model and its versions, a version, a data set, a user, a
benchmark with its charts, a deployment with its health and live latency, and a training job
followed live (generations, trials, the Pareto front as a chart).

Every SDK call runs in a worker thread; a live view follows its feed with a client of its own
that closing the screen cuts, so no thread outlives its screen for long.
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, RichLog, Sparkline, Static
from textual.worker import get_current_worker

from cvops.client import progress, views
from cvops.client.sdk import CvopsError
from cvops.client.tui.charts import Bar, Point, bars, scatter
from cvops.client.tui.feeds import CuttableTransport, FeedCut
from cvops.client.tui.latency import Latency, RouterMetrics, Scrape, latency
from cvops.client.tui.widgets import RecordTable, StateLine
from cvops.contracts.api import BenchmarkView, DeploymentView, JobView
from cvops.contracts.conversion import BenchmarkRow

if TYPE_CHECKING:
    from cvops.client.tui.session import Session, SessionHost


class DetailScreen(Screen[None]):
    """One record, fetched in a worker thread; Escape goes back, r fetches it again."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("r", "reload", "Refresh"),
    ]
    what: ClassVar[str] = "record"

    def __init__(self, title: str) -> None:
        super().__init__()
        self.sub_title = title

    @property
    def session(self) -> Session:
        return cast("SessionHost", self.app).session

    def compose(self) -> ComposeResult:
        yield Header()
        yield StateLine(id="state", classes="state")
        with VerticalScroll(id="body"):
            yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield Static(id="content")

    def on_mount(self) -> None:
        self.query_one("#body").focus()
        self.action_reload()

    def action_back(self) -> None:
        self.dismiss()

    def action_reload(self) -> None:
        self.query_one(StateLine).busy(self.what)
        self._load()

    @work(thread=True, exclusive=True, group="load")
    def _load(self) -> None:
        worker = get_current_worker()
        try:
            found = self.fetch(self.session)
        except CvopsError as err:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.failed, err)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self.loaded, found)

    def fetch(self, session: Session) -> Any:
        """What this screen shows (runs in a worker thread)."""
        raise NotImplementedError

    def loaded(self, found: Any) -> None:
        self.query_one("#content", Static).update(found)
        self.query_one(StateLine).note("Escape goes back · r refreshes")

    def failed(self, err: CvopsError) -> None:
        message = self.session.problem(err)
        self.query_one(StateLine).problem(message)
        if err.status == 401:
            cast("SessionHost", self.app).signed_out(message)


class ModelScreen(DetailScreen):
    """A model and its versions; Enter opens a version."""

    what = "model"

    def __init__(self, name: str) -> None:
        super().__init__(f"model {name}")
        self.model_name = name

    def body(self) -> ComposeResult:
        yield Static(id="content")
        yield RecordTable(id="versions")

    def fetch(self, session: Session) -> Any:
        model = session.client.show_model(self.model_name)
        versions = model.versions
        if not versions and model.latest_version is not None:
            versions = session.client.list_versions(self.model_name)
        return views.model_view(model, []), versions

    def loaded(self, found: Any) -> None:
        head, versions = found
        super().loaded(head)
        table = self.query_one(RecordTable)
        table.show(views.versions_table(versions), [str(v.version) for v in versions])
        table.focus()

    def on_data_table_row_selected(self, event: RecordTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.app.push_screen(VersionScreen(self.model_name, int(event.row_key.value)))


class VersionScreen(DetailScreen):
    """A model version: its file and lineage, the engines made from it, its report."""

    what = "model version"

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"model {name}:{version}")
        self.model_name, self.version = name, version

    def fetch(self, session: Session) -> RenderableType:
        client = session.client
        found = client.show_version(self.model_name, self.version)
        engines = client.list_engine_artifacts(self.model_name, self.version)
        parts: list[RenderableType] = [views.version_view(found), Text("")]
        if engines:
            parts.append(views.engine_artifacts_table(engines))
        else:
            parts.append(Text("no engines converted yet", style="dim"))
        try:
            report = client.report(self.model_name, self.version)
        except CvopsError as err:
            if err.status != 404:
                raise
            parts += [Text(""), Text("no report yet", style="dim")]
        else:
            parts += [Text(""), views.report_sections_table(report)]
        return Group(*parts)


class DatasetScreen(DetailScreen):
    what = "data set"

    def __init__(self, name: str) -> None:
        super().__init__(f"data set {name}")
        self.dataset = name

    def fetch(self, session: Session) -> RenderableType:
        return views.dataset_view(session.client.show_dataset(self.dataset))


class UserScreen(DetailScreen):
    what = "user"

    def __init__(self, username: str) -> None:
        super().__init__(f"user {username}")
        self.username = username

    def fetch(self, session: Session) -> RenderableType:
        user = session.client.show_user(self.username)
        return views.user_fields(user, session.connection.url)


def _cell(row: BenchmarkRow) -> str:
    return f"{row.engine} {row.precision} b{row.batch_size} x{row.concurrency}"


def benchmark_charts(bench: BenchmarkView) -> RenderableType:
    """p95 latency and throughput of each measured cell; the recommended one in green."""
    rec = bench.recommendation
    pick = rec.pick if rec is not None else None
    measured = [r for r in bench.rows if r.error is None]
    latency_bars = [Bar(_cell(r), r.p95_ms or 0.0, r == pick) for r in measured]
    throughput_bars = [Bar(_cell(r), r.throughput_ips or 0.0, r == pick) for r in measured]
    return Group(
        bars(latency_bars, title="p95 latency (ms)", value_format=views.ms),
        Text(""),
        bars(throughput_bars, title="throughput (images/s)", value_format=lambda v: f"{v:,.0f}"),
    )


class BenchmarkScreen(DetailScreen):
    """A benchmark's rows and recommendation, and its cells as bar charts."""

    what = "benchmark"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"benchmark {job_id}")
        self.job_id = job_id

    def fetch(self, session: Session) -> RenderableType:
        bench = session.client.show_benchmark(self.job_id)
        if self.job_id not in session.opened_benchmarks:
            session.opened_benchmarks.append(self.job_id)
        return Group(views.benchmark_view(bench), Text(""), benchmark_charts(bench))


def latency_line(found: Latency | None, url: str | None, problem: str | None) -> Text:
    """The deployment's serving numbers, or why there are none."""
    if url is None:
        return Text("live latency: no router metrics URL (cvops tui --router-metrics URL)")
    if problem is not None:
        return Text(f"live latency: {problem}", style="yellow")
    if found is None:
        return Text(f"live latency: no request served yet (router metrics at {url})", style="dim")
    window = (
        "since the router started" if found.window_s is None else f"last {found.window_s:.0f} s"
    )
    rate = "" if found.per_second is None else f", {found.per_second:,.1f} req/s"
    errors = "" if found.error_share is None else f", {found.error_share:.1%} errors"
    return Text(
        f"live latency ({window}): p50 {views.ms(found.p50_ms)} ms, "
        f"p95 {views.ms(found.p95_ms)} ms, {found.requests} requests{rate}{errors}"
    )


class DeploymentScreen(DetailScreen):
    """A deployment's spec and health (status, instances, serving checks), refreshed every few
    seconds, with the latency the router measures and its p95 over time."""

    what = "deployment"
    refresh_every_s: ClassVar[float] = 2.0
    history = 60

    def __init__(self, name: str) -> None:
        super().__init__(f"deployment {name}")
        self.deployment = name
        self.previous: Scrape | None = None
        self.p95: list[float] = []

    def body(self) -> ComposeResult:
        yield Static(id="content")
        yield Static(id="latency")
        yield Sparkline([], id="p95")

    def on_mount(self) -> None:
        super().on_mount()
        self.set_interval(self.refresh_every_s, self._load)

    def fetch(self, session: Session) -> Any:
        found = session.client.show_deployment(self.deployment)
        url = session.connection.router_metrics_url
        numbers, problem = None, None
        if url is not None:
            metrics = RouterMetrics(url, session.connection.transport)
            try:
                now = metrics.scrape(time.monotonic())
            except CvopsError as err:
                problem = err.message
            else:
                numbers = latency(self.deployment, now, self.previous)
                self.previous = now
            finally:
                metrics.close()
        return found, numbers, url, problem

    def loaded(self, found: Any) -> None:
        deployment, numbers, url, problem = cast(
            tuple[DeploymentView, Latency | None, str | None, str | None], found
        )
        super().loaded(views.deployment_view(deployment))
        self.query_one("#latency", Static).update(latency_line(numbers, url, problem))
        if numbers is not None and numbers.window_s is not None and numbers.p95_ms is not None:
            self.p95 = [*self.p95, numbers.p95_ms][-self.history :]
            sparkline = self.query_one(Sparkline)
            sparkline.data = self.p95
            sparkline.display = len(self.p95) > 1  # p95 over the last looks, once it is a line


def _progress() -> Progress:
    """Bars for the CLI's training tracker, drawn by Textual (no live display, no clock)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        console=Console(file=io.StringIO()),
        auto_refresh=False,
        get_time=lambda: 0.0,
    )


def pareto_chart(job: JobView) -> RenderableType:
    """Every measured trial by latency and accuracy; the Pareto front in green."""
    front = {t.trial_id for t in job.front}
    points = [
        Point(t.metrics.latency_ms, t.metrics.accuracy, t.trial_id in front)
        for t in job.trials
        if t.metrics is not None
    ]
    points += [
        Point(t.metrics.latency_ms, t.metrics.accuracy, True)
        for t in job.front
        if not any(v.trial_id == t.trial_id for v in job.trials)
    ]
    return scatter(
        points,
        x_label="latency (ms) →",
        y_label="accuracy ↑",
        legend=("Pareto front", "other trials"),
        x_format=views.ms,
        y_format=views.percent,
    )


_RESULTS = {
    "trial.completed",
    "trial.failed",
    "trial.pruned",
    "training.started",
    "training.generation_completed",
    *progress.TRAINING_ENDS,
}


class JobScreen(DetailScreen):
    """A training job, live: its feed drives the bars and milestone lines of the CLI's
    tracker; a result (a trial or generation ended) refetches the job for the chart and
    tables, at most once a second however fast results come."""

    what = "training job"
    fetch_every_s = 1.0

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id}")
        self.job_id = job_id
        self.bars = _progress()
        self.tracker = progress.TrainingProgress(self.bars, job_id)
        self.bars_changed = False
        self.job_changed = False
        self.feed: CuttableTransport | None = None

    def body(self) -> ComposeResult:
        yield Static(id="content")
        yield Static(id="bars")
        yield Static(id="front")
        yield RichLog(id="log", max_lines=500, wrap=True)
        yield Static(id="tables")

    def on_mount(self) -> None:
        self.query_one("#body").focus()
        self.query_one(StateLine).busy(self.what)
        self.set_interval(0.25, self._draw_bars)
        self.set_interval(self.fetch_every_s, self._refetch_if_changed)
        self._follow()

    def on_unmount(self) -> None:
        self.workers.cancel_group(self, "follow")
        if self.feed is not None:
            self.session.release(self.feed)

    def action_reload(self) -> None:
        self._load()

    def fetch(self, session: Session) -> JobView:
        return session.client.show_job(self.job_id)

    def loaded(self, found: Any) -> None:
        job = cast(JobView, found)
        rendered = views.job_view(job)  # the summary, then the generation/trial/front tables
        parts = list(rendered.renderables) if isinstance(rendered, Group) else [rendered]
        self.query_one("#content", Static).update(parts[0])
        self.query_one("#front", Static).update(pareto_chart(job))
        self.query_one("#tables", Static).update(Group(*parts[1:]))
        self._draw_bars()
        ended = job.status in ("completed", "failed", "cancelled")
        state = self.query_one(StateLine)
        state.note(f"job {job.status}" + ("" if ended else " · following its events live"))

    @work(thread=True, exclusive=True, group="follow")
    def _follow(self) -> None:
        worker = get_current_worker()
        session = self.session
        client, self.feed = session.feed_client()

        def post(callback: Any, *args: Any) -> None:
            if not worker.is_cancelled:
                self.app.call_from_thread(callback, *args)

        try:
            if worker.is_cancelled:
                return
            job = session.client.show_job(self.job_id)
            post(self.loaded, job)
            ended = progress.ends_with(progress.TRAINING_ENDS, "job_id", self.job_id)
            for _seq, event_type, data in client.follow(job.correlation_id, ended):
                if worker.is_cancelled:
                    return
                post(self.on_feed_event, event_type, data)
            post(self.action_reload)  # the job as it ended
        except FeedCut:
            return
        except CvopsError as err:
            post(self.failed, err)
        finally:
            session.release(self.feed)
            client.close()

    def on_feed_event(self, event_type: str, data: dict[str, Any]) -> None:
        line = self.tracker.update(event_type, data)
        self.bars_changed = True
        self.job_changed |= progress.event_name(event_type) in _RESULTS
        if line:
            self.query_one(RichLog).write(Text(line))

    def _refetch_if_changed(self) -> None:
        if self.job_changed:
            self.job_changed = False
            self._load()

    def _draw_bars(self) -> None:
        if self.bars_changed:
            self.bars_changed = False
            self.query_one("#bars", Static).update(self.bars.get_renderable())
