"""The web UI over HTTP (no browser): sign-in and its cookie, CSRF, role checks on every
action, pages for each role, live parts over SSE, and that the API is unchanged beside it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from litestar.datastructures import State
from litestar.testing import TestClient
from structlog.testing import capture_logs

from cvops.gateway.web import create_web_app
from cvops.gateway.web.assets import ASSETS_ENV, asset_directories
from cvops.gateway.web.render import WEB_CSP
from cvops.testing.gateway import Platform

CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form token"
    return found.group(1)


def sign_in(platform: Platform, role: str) -> httpx.Client:
    """A client signed in through the login form as the platform's ``role`` user."""
    client = httpx.Client(base_url=platform.url, timeout=30)
    page = client.get("/ui/login")
    assert page.status_code == 200
    done = client.post(
        "/ui/login",
        data={
            "username": platform.users[role],
            "password": platform.password,
            "csrf_token": csrf_of(page.text),
            "next": "/ui/models",
        },
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/ui/models"
    return client


@pytest.fixture(scope="module")
def engineer(platform: Platform) -> Iterator[httpx.Client]:
    client = sign_in(platform, "engineer")
    yield client
    client.close()


@pytest.fixture(scope="module")
def viewer(platform: Platform) -> Iterator[httpx.Client]:
    client = sign_in(platform, "viewer")
    yield client
    client.close()


def main_pages(p: Platform) -> list[str]:
    version = f"/ui/models/{p.model}/versions/1"
    return [
        "/ui/models",
        f"/ui/models/{p.model}",
        version,
        f"{version}/report",
        "/ui/datasets",
        f"/ui/datasets/{p.dataset}",
        "/ui/jobs",
        f"/ui/jobs/{p.job_id}",
        "/ui/conversions",
        f"/ui/conversions/{p.conversion_id}",
        "/ui/benchmarks",
        f"/ui/benchmarks/{p.benchmark_id}",
        "/ui/deployments",
        f"/ui/deployments/{p.deployment}",
    ]


def form_page_token(client: httpx.Client, path: str = "/ui/models") -> str:
    return csrf_of(client.get(path).text)


# -- signing in --------------------------------------------------------------------------------


def test_signed_out_pages_lead_to_the_sign_in_form_and_back(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        assert client.get("/").headers["location"] == "/ui/"
        page = client.get(f"/ui/jobs/{platform.job_id}")
        assert page.status_code == 303
        assert page.headers["location"] == f"/ui/login?next=/ui/jobs/{platform.job_id}"
        form = client.get(page.headers["location"])
        assert 'value="/ui/jobs/' in form.text
        assert "Sign in" in form.text


def test_sign_in_keeps_the_session_in_an_httponly_strict_cookie(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        page = client.get("/ui/login")
        done = client.post(
            "/ui/login",
            data={
                "username": platform.users["viewer"],
                "password": platform.password,
                "csrf_token": csrf_of(page.text),
                "next": "https://evil.example/",
            },
        )
        assert done.status_code == 303
        assert done.headers["location"] == "/ui/models"  # never off to another site
        cookie = next(
            c for c in done.headers.get_list("set-cookie") if c.startswith("cvops_session=")
        )
        assert "HttpOnly" in cookie
        assert "samesite=strict" in cookie.lower()
        assert "Path=/ui" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
        models = client.get("/ui/models")
        assert models.status_code == 200
        assert platform.users["viewer"] in models.text
        assert "Signed in as" in models.text  # the flash, shown once
        assert "Signed in as" not in client.get("/ui/models").text


def test_a_wrong_password_shows_the_form_again_with_the_reason(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        page = client.get("/ui/login")
        wrong = client.post(
            "/ui/login",
            data={
                "username": platform.users["viewer"],
                "password": "not-the-password",
                "csrf_token": csrf_of(page.text),
            },
        )
        assert wrong.status_code == 401
        assert wrong.headers["content-type"].startswith("text/html")
        assert "Wrong username or password." in wrong.text
        assert "cvops_session" not in client.cookies


def test_sign_in_without_the_forms_token_is_refused(platform: Platform) -> None:
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        client.get("/ui/login")
        refused = client.post(
            "/ui/login",
            data={"username": platform.users["viewer"], "password": platform.password},
        )
        assert refused.status_code == 403
        assert "CSRF token" in refused.text
        assert "cvops_session" not in client.cookies


def test_signing_out_revokes_the_session(platform: Platform) -> None:
    client = sign_in(platform, "viewer")
    secret = client.cookies["cvops_session"]
    out = client.post("/ui/logout", data={"csrf_token": form_page_token(client)})
    client.close()
    assert out.status_code == 303
    assert out.headers["location"] == "/ui/login"
    with httpx.Client(base_url=platform.url, timeout=30) as stale:
        stale.cookies.set("cvops_session", secret, path="/ui")
        assert stale.get("/ui/models").status_code == 303  # back to the sign-in form
    # the session token was a real token: the API refuses it too now
    assert (
        httpx.get(
            f"{platform.url}/models", headers={"Authorization": f"Bearer {secret}"}
        ).status_code
        == 401
    )


# -- pages -------------------------------------------------------------------------------------


def test_every_main_page_renders_for_a_viewer_under_the_pages_policy(
    platform: Platform, viewer: httpx.Client
) -> None:
    for path in main_pages(platform):
        page = viewer.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == WEB_CSP
        assert "<script>" not in page.text and " on" + "click=" not in page.text
        assert 'href="/ui/static/cvops.css"' in page.text


def test_pages_show_the_projections_rows(platform: Platform, viewer: httpx.Client) -> None:
    assert platform.model in viewer.get("/ui/models").text
    assert platform.dataset in viewer.get("/ui/datasets").text
    assert platform.job_id in viewer.get("/ui/jobs").text
    assert platform.job_id in viewer.get("/ui/jobs?status=requested").text
    assert platform.job_id not in viewer.get("/ui/jobs?status=completed").text
    assert platform.conversion_id in viewer.get("/ui/conversions").text
    assert platform.benchmark_id in viewer.get("/ui/benchmarks").text
    assert platform.deployment in viewer.get("/ui/deployments").text
    version = viewer.get(f"/ui/models/{platform.model}/versions/1").text
    assert platform.conversion_id in version  # the ONNX engine it produced
    assert "1.5" in viewer.get(f"/ui/benchmarks/{platform.benchmark_id}").text  # p95 1.50 ms


def test_an_unknown_thing_is_a_404_page_not_json(viewer: httpx.Client) -> None:
    for path in ("/ui/models/no-such-model", "/ui/jobs/job-nope", "/ui/nothing-here"):
        page = viewer.get(path)
        assert page.status_code == 404, path
        assert page.headers["content-type"].startswith("text/html")
        assert "Not found" in page.text


def test_the_report_page_frames_the_report_under_its_own_policy(
    platform: Platform, viewer: httpx.Client
) -> None:
    base = f"/ui/models/{platform.model}/versions/1"
    page = viewer.get(f"{base}/report").text
    assert f'src="{base}/report.html" sandbox="allow-scripts"' in page
    html = viewer.get(f"{base}/report.html")
    assert html.status_code == 200
    assert html.content == b"<!DOCTYPE html><p>seeded report</p>"
    policy = html.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'")
    assert "sandbox allow-scripts" in policy  # an origin of its own, even opened alone
    assert viewer.get(f"{base}/report.pdf").content.startswith(b"%PDF")
    assert viewer.get(f"{base}/report/charts/latency.png").content.startswith(b"\x89PNG")
    assert viewer.get(f"{base}/report.exe").status_code == 404
    download = viewer.get(f"{base}/artifact")
    assert download.content == platform.model_bytes


def test_a_viewer_sees_no_action_forms(platform: Platform, viewer: httpx.Client) -> None:
    for path in main_pages(platform):
        html = viewer.get(path).text
        actions = re.findall(r'<form method="post" action="([^"]+)"', html)
        assert actions == ["/ui/logout"], (path, actions)


def test_an_engineer_sees_the_actions_of_their_role(
    platform: Platform, engineer: httpx.Client
) -> None:
    def actions(path: str) -> list[str]:
        html = engineer.get(path).text
        return re.findall(r'<form method="post" action="([^"]+)"', html)

    version = f"/ui/models/{platform.model}/versions/1"
    assert actions(version) == [
        "/ui/logout",
        f"{version}/stage",
        "/ui/conversions",
        "/ui/benchmarks",
        "/ui/deployments",
    ]
    assert actions("/ui/models") == ["/ui/logout", "/ui/models"]
    assert actions("/ui/jobs") == ["/ui/logout", "/ui/jobs"]
    assert actions(f"/ui/datasets/{platform.dataset}") == ["/ui/logout", "/ui/jobs"]
    assert actions(f"/ui/deployments/{platform.deployment}") == [
        "/ui/logout",
        f"/ui/deployments/{platform.deployment}/retire",
    ]


# -- actions -----------------------------------------------------------------------------------


def action_forms(p: Platform) -> list[tuple[str, dict[str, str]]]:
    """Every action of the web UI with a valid body."""
    version = f"/ui/models/{p.model}/versions/1"
    model = {"model_name": p.model, "version": "1"}
    return [
        (f"{version}/stage", {"stage": "staging"}),
        ("/ui/conversions", {**model, "targets": "onnx"}),
        ("/ui/benchmarks", model),
        ("/ui/deployments", {**model, "deployment": f"forged-{p.tag}"}),
        (f"/ui/deployments/{p.deployment}/retire", {}),
        ("/ui/jobs", {"dataset": p.dataset, "arch": "simple-cnn"}),
        (f"/ui/jobs/{p.job_id}/cancel", {}),
    ]


def test_a_viewers_forged_actions_are_refused_with_403(
    platform: Platform, viewer: httpx.Client
) -> None:
    token = form_page_token(viewer)
    for path, body in action_forms(platform):
        refused = viewer.post(path, data={**body, "csrf_token": token})
        assert refused.status_code == 403, path
        assert "Not allowed" in refused.text and "viewer" in refused.text
    upload = viewer.post(
        "/ui/models",
        data={"name": "forged", "csrf_token": token},
        files={"file": ("m.onnx", b"bytes")},
    )
    assert upload.status_code == 403
    deployments = viewer.get("/ui/deployments").text
    assert f"forged-{platform.tag}" not in deployments


def test_actions_without_the_sessions_token_are_refused(
    platform: Platform, engineer: httpx.Client
) -> None:
    for path, body in action_forms(platform):
        for token in ({}, {"csrf_token": "0" * 64}):
            refused = engineer.post(path, data={**body, **token})
            assert refused.status_code == 403, path
            assert "CSRF token" in refused.text
    other = sign_in(platform, "viewer")
    viewers_token = form_page_token(other)
    other.close()
    refused = engineer.post("/ui/conversions", data={"csrf_token": viewers_token})
    assert refused.status_code == 403  # a token is bound to its own session


def test_an_upload_without_the_token_stores_nothing(
    platform: Platform, engineer: httpx.Client
) -> None:
    name = f"nocsrf-{uuid.uuid4().hex[:6]}"
    for fields in ({"name": name}, {"csrf_token": "f" * 64, "name": name}):
        refused = engineer.post("/ui/models", data=fields, files={"file": ("m.onnx", b"x" * 99)})
        assert refused.status_code == 403
        assert "CSRF token" in refused.text
    with httpx.Client(base_url=platform.url, headers=platform.headers("admin")) as api:
        assert api.get(f"/models/{name}").status_code == 404


def test_an_engineer_deploys_a_version_and_sees_the_request(
    platform: Platform, engineer: httpx.Client
) -> None:
    name = f"web-dep-{uuid.uuid4().hex[:6]}"
    done = engineer.post(
        "/ui/deployments",
        data={
            "model_name": platform.model,
            "version": "1",
            "deployment": name,
            "csrf_token": form_page_token(engineer),
        },
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/deployments/{name}"
    page = engineer.get(done.headers["location"])
    assert f"Deployment {name} requested." in page.text
    assert "requested" in page.text
    with httpx.Client(base_url=platform.url, headers=platform.headers("admin")) as api:
        shown = api.get(f"/deployments/{name}").json()
    assert shown["requested_by"] == platform.users["engineer"]


def test_a_refused_action_is_shown_on_the_page_it_came_from(
    platform: Platform, engineer: httpx.Client
) -> None:
    back = f"/ui/models/{platform.model}/versions/1"
    refused = engineer.post(
        "/ui/conversions",
        data={
            "model_name": platform.model,
            "version": "1",
            "targets": "no-such-target",
            "back": back,
            "csrf_token": form_page_token(engineer),
        },
    )
    assert refused.status_code == 303
    assert refused.headers["location"] == back
    page = engineer.get(back).text
    assert "Conversion refused:" in page
    assert 'class="flash flash-error"' in page


def test_an_upload_leads_to_its_verdict(platform: Platform, engineer: httpx.Client) -> None:
    name = f"web-up-{uuid.uuid4().hex[:6]}"
    done = engineer.post(
        "/ui/models",
        data={"csrf_token": form_page_token(engineer), "name": name},
        files={"file": ("m.onnx", b"onnx bytes")},
    )
    assert done.status_code == 303
    # no registry runs here: the verdict times out, the page follows the upload live
    assert done.headers["location"].startswith("/ui/uploads/")
    page = engineer.get(done.headers["location"])
    assert "has not decided yet" in page.text
    assert "sse-connect=" in page.text


# -- live parts --------------------------------------------------------------------------------


def test_a_jobs_live_part_is_sent_over_sse(platform: Platform, viewer: httpx.Client) -> None:
    page = viewer.get(f"/ui/jobs/{platform.job_id}").text
    live = re.search(r'sse-connect="([^"]+)"', page)
    assert live, "a running job's page follows it live"
    url = live.group(1).replace("&amp;", "&")
    with viewer.stream("GET", url) as feed:
        assert feed.headers["content-type"].startswith("text/event-stream")
        lines = []
        for line in feed.iter_lines():
            lines.append(line)
            if line == "" and any(s.startswith("data:") for s in lines):
                break
    assert "event: update" in lines
    assert any('id="progress"' in s for s in lines)


def test_an_ended_deployment_is_not_followed(platform: Platform, viewer: httpx.Client) -> None:
    page = viewer.get(f"/ui/deployments/{platform.deployment}").text
    assert "ready" in page
    assert "sse-connect" not in page


# -- beside the API ----------------------------------------------------------------------------


def test_the_api_answers_json_and_its_document_has_no_pages(
    platform: Platform, viewer: httpx.Client
) -> None:
    with httpx.Client(base_url=platform.url, timeout=30) as api:
        assert api.get("/models").json()["error"] == "not_authenticated"
        document = api.get("/schema/openapi.json").json()
    assert not [path for path in document["paths"] if path.startswith("/ui")]
    # the session cookie is the web UI's only: it is not sent to, nor taken by, the API
    assert viewer.get(f"{platform.url}/models").status_code == 401


def test_without_the_scripts_installed_the_pages_render_and_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ASSETS_ENV, str(tmp_path / "node_modules"))
    with capture_logs() as logged:
        web = create_web_app(State())
    assert [e["missing"] for e in logged if e["event"] == "web_assets_missing"] == [
        ["htmx.min.js", "sse.min.js"]
    ]
    with TestClient(web) as client:
        page = client.get("/ui/login")
        assert page.status_code == 200
        assert "<script" not in page.text
        assert "live updates off (scripts not installed)" in page.text
        assert client.get("/ui/assets/htmx.min.js").status_code == 404


def test_with_the_scripts_installed_the_pages_load_them() -> None:
    assert asset_directories() is not None, "run ./justw (npm ci in services/gateway/web-assets)"
    with TestClient(create_web_app(State())) as client:
        page = client.get("/ui/login").text
        assert '<script src="/ui/assets/htmx.min.js" defer></script>' in page
        script = client.get("/ui/assets/sse.min.js")
        assert script.status_code == 200
        assert "htmx.defineExtension" in script.text
