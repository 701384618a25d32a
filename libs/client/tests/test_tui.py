"""`cvops tui` against the stand-in gateway, driven by Textual's pilot: tabs, records, the live
job view, deployments' latency, roles, and what it says when it cannot show anything."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import DataTable, RichLog, Sparkline, Static, TabbedContent

from cvops.client.cli import CliState, cli
from cvops.client.sdk import Client
from cvops.client.tui import Connection, CvopsApp
from cvops.client.tui.panes import BenchmarksPane, DeploymentsPane, JobsPane, RecordPane
from cvops.client.tui.screens import (
    BenchmarkScreen,
    DeploymentScreen,
    JobScreen,
    ModelScreen,
    VersionScreen,
)
from cvops.client.tui.widgets import RecordTable, StateLine
from cvops.contracts.api import Budget, CreateBenchmark, CreateDeployment, CreateJob
from cvops.testing.client import ADMIN_PASSWORD, FakeGateway

GATEWAY = "http://gateway.test"
ROUTER = "http://router.test:8002"
SIZE = (120, 40)


def router_metrics(buckets: dict[str, int], ok: int, failed: int) -> str:
    """The router's Prometheus text for deployment "resnet": latency buckets (cumulative,
    ``le`` in seconds) and requests answered 200 or 503."""
    lines = [
        f'cvops_router_request_duration_seconds_bucket{{model="resnet",version="1",'
        f'protocol="http",le="{le}"}} {count}'
        for le, count in buckets.items()
    ]
    lines += [
        f'cvops_router_requests_total{{model="resnet",version="1",protocol="http",'
        f'code="{code}"}} {count}'
        for code, count in (("200", ok), ("503", failed))
    ]
    return "\n".join(["# TYPE cvops_router_request_duration_seconds histogram", *lines])


# 100 requests so far: half within 2 ms, 90 within 5 ms, all within 10 ms; 2 failed.
FIRST_LOOK = router_metrics({"0.001": 0, "0.002": 50, "0.005": 90, "0.01": 100, "+Inf": 100}, 98, 2)
# 100 more, all between 2 and 5 ms, 2 of them failed.
LATER_LOOK = router_metrics(
    {"0.001": 0, "0.002": 50, "0.005": 190, "0.01": 200, "+Inf": 200}, 196, 4
)

# 100 more again, all between 1 and 2 ms.
THIRD_LOOK = router_metrics(
    {"0.001": 0, "0.002": 150, "0.005": 290, "0.01": 300, "+Inf": 300}, 296, 4
)


class World:
    """The stand-in gateway seeded with a model, a data set, a finished GA job, a benchmark,
    a deployment of its pick and three users; the router's metrics beside it."""

    def __init__(self, tmp_path: Path) -> None:
        self.gateway = FakeGateway()
        self.router_up = True
        self.router_metrics = FIRST_LOOK
        self.transport = httpx.MockTransport(self.handle)
        self.gateway.users["alice"] = {"password": "pw", "role": "engineer", "disabled": False}
        self.gateway.users["vera"] = {"password": "pw", "role": "viewer", "disabled": False}
        admin = Client(GATEWAY, self.gateway.token_for("admin"), transport=self.transport)
        self.gateway.add_model("resnet", versions=2)
        archive = tmp_path / "shapes.zip"
        archive.write_bytes(b"zip" * 10)
        admin.upload_dataset(archive, "shapes")
        budget = Budget(population=3, generations=2)
        self.job_id = admin.create_job(
            CreateJob(dataset="shapes", arch="simple-cnn", budget=budget)
        ).job_id
        cells = CreateBenchmark(model_name="resnet", version=1, batch_sizes=[1, 8], concurrency=[1])
        self.benchmark_id = admin.benchmark(cells).job_id
        admin.deploy(
            CreateDeployment(model_name="resnet", version=1, from_benchmark=self.benchmark_id)
        )
        self.gateway.requests.clear()

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "router.test":
            if not self.router_up:
                raise httpx.ConnectError("connection refused", request=request)
            return httpx.Response(200, text=self.router_metrics)
        return self.gateway.handle(request)

    def app(self, username: str | None = "admin", token: str | None = None) -> CvopsApp:
        if token is None and username is not None:
            token = self.gateway.token_for(username)
        return CvopsApp(
            Connection(
                url=GATEWAY,
                token=token,
                username=username,
                router_metrics_url=ROUTER,
                transport=self.transport,
            )
        )

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.gateway.requests]


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Timestamps are shown in the local zone: make it UTC, so screens do not vary by host."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(autouse=True)
def no_periodic_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Screens refresh by key only, unless a test says otherwise: what a snapshot shows must
    not depend on how long the machine took to get there."""
    for view in (JobsPane, DeploymentsPane, DeploymentScreen):
        monkeypatch.setattr(view, "refresh_every_s", 3600.0)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def settle(pilot: Pilot[None]) -> None:
    """Until the workers the last keys started are done and their results drawn."""
    for _ in range(3):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def until(pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 5) -> None:
    """Let the app run until ``condition`` holds (periodic work), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await pilot.pause(0.05)


def text_of(static: Static) -> str:
    """What a Static shows, as plain text at the app's width."""
    console = Console(width=SIZE[0], record=True, file=None, color_system=None)
    with console.capture() as captured:
        console.print(static.content)
    return captured.get()


def rows(table: RecordTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def state(app: CvopsApp) -> str:
    return str(app.screen.query_one(StateLine).content)


# -- tabs and records --------------------------------------------------------------------------


async def test_models_tab_opens_a_model_then_a_version_and_escape_goes_back(world: World) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        models = app.query_one("#models", RecordPane).query_one(RecordTable)
        assert rows(models) == [["resnet", "v2", "2", "admin", "2026-01-02 03:04"]]

        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, ModelScreen)
        versions = app.screen.query_one(RecordTable)
        assert [r[0] for r in rows(versions)] == ["v1", "v2"]

        await pilot.press("j", "enter")
        await settle(pilot)
        assert isinstance(app.screen, VersionScreen) and app.screen.version == 2
        shown = text_of(app.screen.query_one("#content", Static))
        assert "resnet:2" in shown and "no engines converted yet" in shown
        assert "no report yet" in shown

        await pilot.press("escape", "escape")
        assert not isinstance(app.screen, ModelScreen | VersionScreen)
        assert app.query_one(TabbedContent).active == "models"


async def test_number_keys_choose_tabs_r_refreshes_and_question_mark_lists_the_keys(
    world: World,
) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        datasets = app.query_one("#datasets", RecordPane).query_one(RecordTable)
        assert rows(datasets)[0][:3] == ["shapes", "v1", "2"]
        await pilot.press("3")
        await settle(pilot)
        jobs = app.query_one("#jobs", RecordPane).query_one(RecordTable)
        assert rows(jobs)[0][:3] == [world.job_id, "completed", "search"]
        assert world.paths().count("GET /datasets") == 1

        await pilot.press("2", "r")
        await settle(pilot)
        assert world.paths().count("GET /datasets") == 2

        await pilot.press("question_mark")
        assert app.screen.query("HelpPanel")
        await pilot.press("question_mark")
        assert not app.screen.query("HelpPanel")


async def test_job_screen_follows_the_feed_to_the_end_and_draws_the_pareto_front(
    world: World,
) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, JobScreen)
        job = world.gateway.jobs[world.job_id]
        assert f"GET /events/{job.correlation_id}" in world.paths()
        assert screen.tracker.status == "completed"
        log = "\n".join(line.text for line in screen.query_one(RichLog).lines)
        assert "generation 1/2: 3 trials" in log and "job completed" in log
        chart = text_of(screen.query_one("#front", Static))
        assert "Pareto front" in chart
        assert chart.count("●") == len(job.front) + 1  # each front member, and the legend's
        assert "job completed" in state(app)
        bars = text_of(screen.query_one("#bars", Static))
        assert "generation 2/2" in bars and "3/3" in bars


async def test_benchmark_opened_by_id_shows_its_charts_and_joins_the_tab(world: World) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await settle(pilot)
        pane = app.query_one("#benchmarks", BenchmarksPane)
        listed = rows(pane.query_one(RecordTable))
        assert [r[0] for r in listed] == [world.benchmark_id]
        assert listed[0][-1] == "deployment resnet"  # found through the deployment of its pick

        await pilot.press("o", *"nope", "enter")
        await settle(pilot)
        assert isinstance(app.screen, BenchmarkScreen)
        assert "not_found" in state(app)
        await pilot.press("escape")
        await pilot.press("o", *world.benchmark_id, "enter")
        await settle(pilot)
        shown = text_of(app.screen.query_one("#content", Static))
        assert "p95 latency (ms)" in shown and "throughput (images/s)" in shown
        assert "onnxruntime-cpu fp32 b1 x1" in shown


async def test_deployment_shows_its_health_and_the_latency_the_router_measured(
    world: World,
) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        table = app.query_one("#deployments", RecordPane).query_one(RecordTable)
        row = rows(table)[0]
        assert row[:3] == ["resnet", "resnet:1", "ready"]
        assert row[-3:] == ["2.00", "7.50", "-"]  # p50, p95; no rate before a second look

        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DeploymentScreen)
        health = text_of(app.screen.query_one("#content", Static))
        assert "ready" in health and "local" in health and world.benchmark_id in health
        line = text_of(app.screen.query_one("#latency", Static))
        assert "p50 2.00 ms, p95 7.50 ms, 100 requests" in line and "2.0% errors" in line

        world.router_up = False
        await pilot.press("r")
        await settle(pilot)
        line = text_of(app.screen.query_one("#latency", Static))
        assert f"cannot reach the inference router's metrics at {ROUTER}" not in state(app)
        assert f"the inference router's metrics at {ROUTER}" in line
        assert "ready" in text_of(app.screen.query_one("#content", Static))


async def test_deployment_screen_looks_again_every_few_seconds_and_plots_the_window_p95(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(DeploymentScreen, "refresh_every_s", 0.2)
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, DeploymentScreen)
        world.router_metrics = LATER_LOOK
        await until(pilot, lambda: len(screen.p95) == 1)
        line = text_of(screen.query_one("#latency", Static))
        assert "live latency (last " in line and "req/s" in line and "2.0% errors" in line
        assert screen.p95 == [pytest.approx(4.85)]  # the 100 new requests took 2-5 ms
        assert not screen.query_one(Sparkline).display  # one point is no line yet

        world.router_metrics = THIRD_LOOK
        await until(pilot, lambda: len(screen.p95) == 2)
        assert screen.p95[1] == pytest.approx(1.95)  # 100 more, all within 1-2 ms
        assert screen.query_one(Sparkline).display
        assert world.paths().count("GET /deployments/resnet") >= 3


# -- roles and error states --------------------------------------------------------------------


async def test_admins_see_users_and_viewers_get_no_admin_screen(world: World) -> None:
    admin = world.app("admin")
    async with admin.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        users = admin.query_one("#users", RecordPane).query_one(RecordTable)
        assert [r[:2] for r in rows(users)] == [
            ["admin", "admin"],
            ["alice", "engineer"],
            ["vera", "viewer"],
        ]

    world.gateway.requests.clear()
    viewer = world.app("vera")
    async with viewer.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        assert viewer.query_one(TabbedContent).active == "models"
        assert not viewer.query_one(TabbedContent).get_tab("users").display
        assert "GET /users" not in world.paths()
        assert "signed in as vera (viewer)" in str(viewer.query_one("#who", StateLine).content)


async def test_without_a_token_it_says_to_log_in_and_asks_nothing(world: World) -> None:
    app = world.app(username=None, token=None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        problem = str(app.query_one("#problem", Static).content)
        assert problem.startswith(f"not logged in to {GATEWAY}: run `cvops login`")
        assert not app.query_one(TabbedContent).display
        await pilot.press("3")
        assert world.paths() == []


async def test_a_rejected_token_says_it_expired_or_was_revoked(world: World) -> None:
    app = world.app(token="revoked-token")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        problem = str(app.query_one("#problem", Static).content)
        assert "does not accept the stored token (expired or revoked)" in problem
        assert "run `cvops login`" in problem
        assert world.paths() == ["GET /auth/me"]


async def test_an_unreachable_gateway_is_named_and_r_tries_again(world: World) -> None:
    down = True

    def handle(request: httpx.Request) -> httpx.Response:
        if down:
            raise httpx.ConnectError("connection refused", request=request)
        return world.handle(request)

    token = world.gateway.token_for("admin")
    app = CvopsApp(Connection(url=GATEWAY, token=token, transport=httpx.MockTransport(handle)))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        problem = str(app.query_one("#problem", Static).content)
        assert problem.startswith(f"cannot reach the gateway at {GATEWAY}")
        assert "(r retries)" in problem

        down = False
        await pilot.press("r")
        await settle(pilot)
        assert not app.query_one("#problem", Static).display
        assert rows(app.query_one("#models", RecordPane).query_one(RecordTable))[0][0] == "resnet"


async def test_q_quits_and_cuts_the_live_feeds(world: World) -> None:
    app = world.app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        client, transport = app.session.feed_client()
        await pilot.press("q")
        assert transport.is_cut
        client.close()
    assert app.return_code == 0


def test_cvops_tui_runs_with_the_login_cvops_login_stored(
    world: World, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Connection] = []
    monkeypatch.setattr(CvopsApp, "run", lambda self: started.append(self.session.connection))

    def cvops(*args: str) -> None:
        result = CliRunner().invoke(
            cli, ["--url", GATEWAY, *args], obj=CliState(transport=world.transport)
        )
        assert result.exit_code == 0, result.output

    cvops("login", "--username", "admin", "--password", ADMIN_PASSWORD)
    cvops("tui", "--router-metrics", ROUTER)

    (connection,) = started
    assert connection.url == GATEWAY and connection.username == "admin"
    assert connection.token is not None and connection.token.startswith("session-admin")
    assert world.gateway.sessions[connection.token] == "admin"
    assert connection.router_metrics_url == ROUTER


# -- snapshots: what the screens look like at 120 x 40 -----------------------------------------

Snap = Callable[..., bool]


def keys(*pressed: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)
        # a table sizes its columns to rows that arrived in the last frame: on a busy machine
        # the screenshot could otherwise catch the header one frame behind its rows
        for table in pilot.app.screen.query(DataTable):
            table.refresh(layout=True)
        await pilot.pause(0.1)
        await pilot.app.workers.wait_for_complete()

    return run_before


def test_snapshot_live_job(world: World, snap_compare: Snap) -> None:
    assert snap_compare(world.app(), terminal_size=SIZE, run_before=keys("3", "enter"))


def test_snapshot_benchmark_charts(world: World, snap_compare: Snap) -> None:
    assert snap_compare(world.app(), terminal_size=SIZE, run_before=keys("4", "enter"))


def test_snapshot_deployment_health_and_latency(world: World, snap_compare: Snap) -> None:
    assert snap_compare(world.app(), terminal_size=SIZE, run_before=keys("5", "enter"))


def test_snapshot_not_logged_in(world: World, snap_compare: Snap) -> None:
    app = world.app(username=None, token=None)
    assert snap_compare(app, terminal_size=SIZE, run_before=keys())
