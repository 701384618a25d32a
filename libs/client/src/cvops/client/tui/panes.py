"""The tabs of the main screen: a table of records each, from the gateway, and the screen
that opens on Enter. Loads run in worker threads; the UI thread only draws their results."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, cast

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input, TabbedContent, TabPane
from textual.worker import get_current_worker

from cvops.client import views
from cvops.client.sdk import CvopsError
from cvops.client.tui import screens
from cvops.client.tui.latency import Latency, RouterMetrics, Scrape, latency
from cvops.client.tui.widgets import RecordTable, StateLine
from cvops.contracts.api import BenchmarkView, DeploymentView

if TYPE_CHECKING:
    from cvops.client.tui.session import Session, SessionHost


Rows = tuple[Table, list[str], list[tuple[str, list[Text]]]]
"""A views table, the key of each row, and extra columns (header, cells) to append."""


class RecordPane(TabPane):
    """A tab listing one kind of record; Enter opens the one under the cursor."""

    title: ClassVar[str]
    pane_id: ClassVar[str]
    noun: ClassVar[tuple[str, str]]
    refresh_every_s: ClassVar[float | None] = None

    def __init__(self, key: str) -> None:
        super().__init__(f"{key} {self.title}", id=self.pane_id)  # the label shows its key
        self.loaded_once = False

    @property
    def host(self) -> SessionHost:
        return cast("SessionHost", self.app)

    def compose(self) -> ComposeResult:
        yield StateLine(classes="state")
        yield RecordTable()

    def on_mount(self) -> None:
        if self.refresh_every_s is not None:
            self.set_interval(self.refresh_every_s, self._refresh_if_shown)

    def _refresh_if_shown(self) -> None:
        tabs = self.app.query_one(TabbedContent)
        if self.loaded_once and tabs.active == self.id and self.screen is self.app.screen:
            self._load()

    def activate(self) -> None:
        """The tab was chosen: load it the first time, and put the keyboard on its table."""
        if not self.loaded_once:
            self.load()
        self.query_one(RecordTable).focus()

    def load(self) -> None:
        self.query_one(StateLine).busy(self.noun[1])
        self._load()

    @work(thread=True, exclusive=True, group="load")
    def _load(self) -> None:
        worker = get_current_worker()
        try:
            rows = self.fetch(self.host.session)
        except CvopsError as err:
            if not worker.is_cancelled:
                self.app.call_from_thread(self.failed, err)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self.loaded, *rows)

    def fetch(self, session: Session) -> Rows:
        """The table to show (runs in a worker thread)."""
        raise NotImplementedError

    def opened(self, key: str) -> Screen[None] | None:
        """The screen of one record."""
        return None

    def loaded(self, table: Table, keys: list[str], extra: list[tuple[str, list[Text]]]) -> None:
        self.loaded_once = True
        records = self.query_one(RecordTable)
        records.show(table, keys, extra)
        singular, plural = self.noun
        if keys:
            count = f"{len(keys)} {singular if len(keys) == 1 else plural}"
            self.query_one(StateLine).note(f"{count} · Enter opens one · r refreshes")
        else:
            self.query_one(StateLine).note(f"no {plural} yet")

    def failed(self, err: CvopsError) -> None:
        message = self.host.session.problem(err)
        if err.status == 401:
            self.host.signed_out(message)
        self.query_one(StateLine).problem(message)

    def on_data_table_row_selected(self, event: RecordTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        screen = self.opened(key) if key is not None else None
        if screen is not None:
            self.app.push_screen(screen)


class ModelsPane(RecordPane):
    title, pane_id, noun = "Models", "models", ("model", "models")

    def fetch(self, session: Session) -> Rows:
        found = session.client.list_models()
        return views.models_table(found), [m.name for m in found], []

    def opened(self, key: str) -> Screen[None]:
        return screens.ModelScreen(key)


class DatasetsPane(RecordPane):
    title, pane_id, noun = "Data sets", "datasets", ("data set", "data sets")

    def fetch(self, session: Session) -> Rows:
        found = session.client.list_datasets()
        return views.datasets_table(found), [d.name for d in found], []

    def opened(self, key: str) -> Screen[None]:
        return screens.DatasetScreen(key)


class JobsPane(RecordPane):
    title, pane_id, noun = "Jobs", "jobs", ("training job", "training jobs")
    refresh_every_s = 5.0

    def fetch(self, session: Session) -> Rows:
        found = session.client.list_jobs()
        return views.jobs_table(found), [j.job_id for j in found], []

    def opened(self, key: str) -> Screen[None]:
        return screens.JobScreen(key)


def benchmarks_table(found: list[tuple[BenchmarkView, str]]) -> Table:
    """Benchmarks and where each was seen (a deployment, a report, opened by id)."""
    table = Table(header_style="bold")
    for column in ("BENCHMARK", "MODEL", "STATUS", "HOST", "ROWS", "PICK", "SEEN IN"):
        table.add_column(column, no_wrap=True)
    for bench, seen in found:
        rec = bench.recommendation
        if rec is None:
            pick = "-"
        elif rec.pick is None:
            pick = "nothing meets the SLA"
        else:
            p = rec.pick
            pick = f"{p.engine} {p.precision} batch {p.batch_size} x{p.concurrency}"
        cells = (
            bench.job_id,
            f"{bench.model_name}:{bench.version}",
            bench.status,
            bench.host or "-",
            str(len(bench.rows)),
            pick,
            seen,
        )
        table.add_row(*(Text(c) for c in cells))
    return table


class BenchmarksPane(RecordPane):
    """The gateway lists no benchmarks: this tab gathers the ones deployments and reports
    name, and any opened by id (``o`` puts the cursor in the id field)."""

    title, pane_id, noun = "Benchmarks", "benchmarks", ("benchmark", "benchmarks")
    BINDINGS = [Binding("o", "ask_id", "Open by id")]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="benchmark id, then Enter", id="benchmark-id")
        yield from super().compose()

    def action_ask_id(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        job_id = event.value.strip()
        event.input.value = ""
        self.query_one(RecordTable).focus()  # where the keyboard is when the screen closes
        if job_id:
            self.app.push_screen(screens.BenchmarkScreen(job_id))

    def fetch(self, session: Session) -> Rows:
        client = session.client
        seen: dict[str, str] = {}
        for d in client.list_deployments():
            if d.benchmark_id:
                seen.setdefault(d.benchmark_id, f"deployment {d.deployment}")
        for model in client.list_models():
            if model.latest_version is None:
                continue
            try:
                report = client.report(model.name, model.latest_version)
            except CvopsError as err:
                if err.status == 404:  # no report yet
                    continue
                raise
            for job_id in report.benchmark_jobs:
                seen.setdefault(job_id, f"report {model.name}:{model.latest_version}")
        for job_id in session.opened_benchmarks:
            seen.setdefault(job_id, "opened here")
        found = [(client.show_benchmark(job_id), where) for job_id, where in seen.items()]
        return benchmarks_table(found), list(seen), []

    def opened(self, key: str) -> Screen[None]:
        return screens.BenchmarkScreen(key)


def latency_cells(
    deployments: list[DeploymentView], numbers: dict[str, Latency | None]
) -> list[tuple[str, list[Text]]]:
    """The P50, P95 and REQ/S columns of the deployments table."""
    p50, p95, rate = [], [], []
    for d in deployments:
        n = numbers.get(d.deployment)
        p50.append(Text(views.ms(n.p50_ms) if n else "-"))
        p95.append(Text(views.ms(n.p95_ms) if n else "-"))
        per_second = n.per_second if n else None
        rate.append(Text("-" if per_second is None else f"{per_second:,.1f}"))
    return [("P50 MS", p50), ("P95 MS", p95), ("REQ/S", rate)]


class DeploymentsPane(RecordPane):
    """Deployments with their status, and the latency the router measured since last look."""

    title, pane_id, noun = "Deployments", "deployments", ("deployment", "deployments")
    refresh_every_s = 5.0

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.previous: Scrape | None = None

    def fetch(self, session: Session) -> Rows:
        found = session.client.list_deployments()
        numbers: dict[str, Latency | None] = {}
        url = session.connection.router_metrics_url
        if url is not None:
            metrics = RouterMetrics(url, session.connection.transport)
            try:
                now = metrics.scrape(time.monotonic())
            except CvopsError:
                now = None  # the table still shows the gateway's view; the screen says why
            finally:
                metrics.close()
            if now is not None:
                numbers = {d.deployment: latency(d.deployment, now, self.previous) for d in found}
                self.previous = now
        table = views.deployments_table(found)
        return table, [d.deployment for d in found], latency_cells(found, numbers)

    def opened(self, key: str) -> Screen[None]:
        return screens.DeploymentScreen(key)


class UsersPane(RecordPane):
    """Every user: only for roles that manage users (the tab is hidden from the others)."""

    title, pane_id, noun = "Users", "users", ("user", "users")

    def fetch(self, session: Session) -> Rows:
        found = session.client.list_users()
        return views.users_table(found), [u.username for u in found], []

    def opened(self, key: str) -> Screen[None]:
        return screens.UserScreen(key)


PANES: tuple[type[RecordPane], ...] = (
    ModelsPane,
    DatasetsPane,
    JobsPane,
    BenchmarksPane,
    DeploymentsPane,
    UsersPane,
)
