"""The web UI in a real browser: Debian's headless Chromium driven by Playwright's library.

An engineer signs in, visits every main page (each one screenshotted and checked), deploys
a model version and watches the deployment go ready live (an event on the log, swapped in
over SSE by HTMX); a viewer sees no action and a forged POST is refused; a POST without the
form's token is refused. No page may break its Content-Security-Policy.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Playwright, expect, sync_playwright

from cvops.contracts import Event, Stamp
from cvops.contracts.deployment import DeploymentReady
from cvops.contracts.training import TrainingFailed
from cvops.testing.gateway import Platform

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def playwright(platform: Platform) -> Iterator[Playwright]:
    """Playwright's driver (its event loop runs in this thread: the platform starts first)."""
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's chromium, headless; one per module."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: run deploy/system-packages.sh (CI does) to install "
            "Debian's chromium for the web UI's browser tests"
        )
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield launched
    launched.close()


class Session:
    """A signed-in browser context and its page, with the console errors it has logged."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))


def signed_in(browser: Browser, platform: Platform, role: str) -> Session:
    session = Session(browser.new_context(base_url=platform.url, viewport=VIEWPORT))  # type: ignore[arg-type]
    page = session.page
    page.goto("/ui/models")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("Username").fill(platform.users[role])
    page.get_by_label("Password").fill(platform.password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/models$"))
    expect(page.locator(".flash-ok")).to_contain_text("Signed in as")
    return session


@pytest.fixture(scope="module")
def engineer(browser: Browser, platform: Platform) -> Iterator[Session]:
    session = signed_in(browser, platform, "engineer")
    yield session
    session.context.close()


@pytest.fixture(scope="module")
def viewer(browser: Browser, platform: Platform) -> Iterator[Session]:
    session = signed_in(browser, platform, "viewer")
    yield session
    session.context.close()


def main_pages(p: Platform) -> dict[str, tuple[str, str]]:
    """name -> (path, text its heading shows)."""
    version = f"/ui/models/{p.model}/versions/1"
    return {
        "models": ("/ui/models", "Models"),
        "model": (f"/ui/models/{p.model}", p.model),
        "version": (version, p.model),
        "report": (f"{version}/report", "Report"),
        "datasets": ("/ui/datasets", "Data sets"),
        "dataset": (f"/ui/datasets/{p.dataset}", p.dataset),
        "jobs": ("/ui/jobs", "Training jobs"),
        "job": (f"/ui/jobs/{p.job_id}", p.job_id),
        "conversions": ("/ui/conversions", "Conversions"),
        "benchmarks": ("/ui/benchmarks", "Benchmarks"),
        "benchmark": (f"/ui/benchmarks/{p.benchmark_id}", p.benchmark_id),
        "deployments": ("/ui/deployments", "Deployments"),
        "deployment": (f"/ui/deployments/{p.deployment}", p.deployment),
    }


def check_screenshot(path: Path) -> None:
    """A real picture of the page: the viewport's size, and more than a blank fill."""
    with Image.open(path) as shot:
        assert shot.size == (VIEWPORT["width"], VIEWPORT["height"])
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 16, f"{path.name} is (nearly) one colour"
        # the dark top bar is drawn over a light page: text and chrome, not an empty canvas
        top, body = shot.convert("L").getpixel((5, 5)), shot.convert("L").getpixel((640, 700))
        assert isinstance(top, int) and isinstance(body, int) and top < 80 < body


def test_each_main_page_renders_and_is_screenshotted(
    engineer: Session, platform: Platform, tmp_path: Path
) -> None:
    page = engineer.page
    for name, (path, heading) in main_pages(platform).items():
        page.goto(path)
        expect(page.locator("h1")).to_contain_text(heading)
        expect(page.locator("header nav a.active")).to_have_count(1)
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot))
        check_screenshot(shot)
    assert engineer.errors == []


def test_the_report_is_framed_and_loads_with_the_session(
    engineer: Session, platform: Platform
) -> None:
    page = engineer.page
    page.goto(f"/ui/models/{platform.model}/versions/1/report")
    frame = page.frame_locator("iframe.report")
    expect(frame.locator("p")).to_have_text("seeded report")
    assert engineer.errors == []


def test_an_engineer_deploys_and_watches_it_go_ready_live(
    engineer: Session, platform: Platform
) -> None:
    page = engineer.page
    name = f"web-live-{uuid.uuid4().hex[:6]}"
    page.goto(f"/ui/models/{platform.model}/versions/1")
    page.locator("summary", has_text="Deploy").click()  # opens the form
    form = page.locator("#deploy-form")
    form.get_by_label("Deployment name").fill(name)
    form.get_by_role("button", name="Deploy").click()
    expect(page).to_have_url(re.compile(f"/ui/deployments/{name}$"))
    expect(page.locator(".flash-ok")).to_have_text(f"Deployment {name} requested.")
    expect(page.locator("#deployment .badge")).to_have_text("requested")
    expect(page.locator("[sse-connect]")).to_have_count(1)

    # the router's answer lands on the log: the open page shows it without a reload
    with httpx.Client(base_url=platform.url, headers=platform.headers("admin")) as api:
        correlation_id = api.get(f"/deployments/{name}").json()["correlation_id"]
    router_says_ready(platform, name, correlation_id)
    expect(page.locator("#deployment .badge")).to_have_text("ready", timeout=15_000)
    expect(page.locator("#deployment")).to_contain_text("web-host")
    assert engineer.errors == []


def router_says_ready(platform: Platform, name: str, correlation_id: str) -> None:
    """What the router appends when the deployment serves."""
    stamp = Stamp(now=datetime.now(UTC), actor="router", correlation_id=correlation_id)
    ready = DeploymentReady(
        **stamp.envelope(f"ready-{name}"),
        deployment=name,
        model_name=platform.model,
        version=1,
        instances=["web-host"],
    )
    publish(platform, ready)


def publish(platform: Platform, event: Event) -> None:
    """Append ``event`` on the gateway's own connection and loop (Playwright's loop holds
    this thread)."""
    loop = platform.gateway.loop
    assert loop is not None
    asyncio.run_coroutine_threadsafe(platform.gateway.service.bus.publish(event), loop).result(30)


def test_an_engineer_starts_training_and_follows_the_job_live(
    engineer: Session, platform: Platform
) -> None:
    page = engineer.page
    page.goto(f"/ui/datasets/{platform.dataset}")
    form = page.locator("#train-form")
    form.get_by_label("Kind").select_option("single")
    form.get_by_label("Epochs").fill("1")
    form.get_by_role("button", name="Train").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/job-[0-9a-f]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    expect(page.locator(".flash-ok")).to_have_text(f"Training job {job_id} requested.")
    expect(page.locator("#progress .badge").first).to_have_text("requested")

    # no trainer runs here: its refusal lands on the log and the open page shows it live
    with httpx.Client(base_url=platform.url, headers=platform.headers("admin")) as api:
        correlation_id = api.get(f"/jobs/{job_id}").json()["correlation_id"]
    stamp = Stamp(now=datetime.now(UTC), actor="trainer", correlation_id=correlation_id)
    publish(platform, TrainingFailed(**stamp.envelope(job_id), job_id=job_id, reason="no GPU"))
    expect(page.locator("#progress .badge").first).to_have_text("failed", timeout=15_000)
    expect(page.locator("#progress .error-detail")).to_have_text("no GPU")
    assert engineer.errors == []


def test_an_engineer_uploads_a_model_through_the_form(
    engineer: Session, platform: Platform, tmp_path: Path
) -> None:
    page = engineer.page
    name = f"web-upload-{uuid.uuid4().hex[:6]}"
    weights = tmp_path / "weights.onnx"
    weights.write_bytes(b"not really onnx, and no registry to say so")
    page.goto("/ui/models")
    page.locator("summary", has_text="Upload a model").click()
    page.get_by_label("Name").fill(name)
    page.locator("input[type=file]").set_input_files(str(weights))
    page.get_by_role("button", name="Upload").click()
    # no registry runs beside this gateway: the upload is received and waits for its verdict
    expect(page).to_have_url(re.compile(r"/ui/uploads/[0-9a-f]+$"))
    expect(page.locator(".flash-ok")).to_contain_text(f"Model {name} was received")
    expect(page.locator("#upload .badge")).to_have_text("pending")


def test_a_viewer_sees_no_actions_and_a_forged_post_is_refused(
    viewer: Session, platform: Platform
) -> None:
    page = viewer.page
    for path, _heading in main_pages(platform).values():
        page.goto(path)
        expect(page.locator("main form")).to_have_count(0)
        expect(page.locator("main button")).to_have_count(0)
        expect(page.get_by_role("button", name="Sign out")).to_have_count(1)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert token
    forged = page.request.post(
        "/ui/deployments",
        form={"model_name": platform.model, "version": "1", "csrf_token": token},
        max_redirects=0,
    )
    assert forged.status == 403
    assert "may not do this" in forged.text()
    assert viewer.errors == []


def test_a_post_without_the_forms_token_is_refused(engineer: Session, platform: Platform) -> None:
    refused = engineer.page.request.post(
        "/ui/deployments",
        form={"model_name": platform.model, "version": "1"},
        max_redirects=0,
    )
    assert refused.status == 403
    assert "CSRF token" in refused.text()


def test_signing_out_ends_the_session(browser: Browser, platform: Platform) -> None:
    session = signed_in(browser, platform, "viewer")
    try:
        page = session.page
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/ui/login$"))
        expect(page.locator(".flash-ok")).to_have_text("Signed out.")
        page.goto("/ui/jobs")
        expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/jobs$"))
    finally:
        session.context.close()
