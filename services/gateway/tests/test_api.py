"""The gateway's HTTP API on a real NATS: permission matrix, identity, uploads, SSE, errors."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from cvops.contracts import Stamp, decode
from cvops.contracts.identity import RoleChanged
from cvops.contracts.registry import DatasetRejected
from cvops.core import (
    IDENTITY_STREAM,
    ArtifactStore,
    Bus,
    dump_rows,
    rebuild_projection,
    sqlite_engine,
)
from cvops.gateway import projection as views
from cvops.gateway.identity.service import user_subjects
from cvops.testing.gateway import (
    PASSWORD,
    Platform,
    observed_statuses,
    undeclared_statuses,
)

RANK = {"viewer": 0, "engineer": 1, "admin": 2}
ROLES = [None, "viewer", "engineer", "admin"]
UPLOAD_OUTCOMES = {201: "validated", 202: "pending", 422: "rejected"}

Prepare = Callable[[httpx.AsyncClient, Platform, str | None], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    """One row of the permission matrix: a route and the least role that may call it."""

    method: str
    template: str  # as the app lists it
    needs: str | None  # None: public
    path: Callable[[Platform], str]
    json: Callable[[Platform], Any] | None = None
    form: str | None = None  # "model" or "dataset": a multipart upload
    prepare: Prepare | None = None  # per call: may override "path" and "headers"

    @property
    def id(self) -> str:
        return f"{self.method} {self.template}"


async def _own_token(client: httpx.AsyncClient, p: Platform, role: str | None) -> dict[str, Any]:
    if role is None:
        return {"path": "/auth/tokens/0123456789abcdef"}
    made = await client.post("/auth/tokens", json={"label": "doomed"}, headers=p.headers(role))
    return {"path": f"/auth/tokens/{made.json()['token_id']}"}


async def _fresh_session(
    client: httpx.AsyncClient, p: Platform, role: str | None
) -> dict[str, Any]:
    if role is None:
        return {}
    login = await client.post("/auth/login", json={"username": p.users[role], "password": PASSWORD})
    return {"headers": {"Authorization": f"Bearer {login.json()['token']}"}}


def _version(p: Platform) -> str:
    return f"/models/{p.model}/versions/1"


def _job_body(p: Platform) -> dict[str, Any]:
    return {"dataset": p.dataset, "arch": "simple-cnn", "budget": {"trials": 4}}


async def _own_job(client: httpx.AsyncClient, p: Platform, role: str | None) -> dict[str, Any]:
    """A job of the caller's own to cancel (a role that may not train gets the seeded one)."""
    if role not in ("engineer", "admin"):
        return {"path": f"/jobs/{p.job_id}/cancel"}
    made = await client.post("/jobs", json=_job_body(p), headers=p.headers(role))
    return {"path": f"/jobs/{made.json()['job_id']}/cancel"}


async def _fresh_deployment(
    client: httpx.AsyncClient, p: Platform, role: str | None
) -> dict[str, Any]:
    name = f"dep-{uuid.uuid4().hex[:8]}"
    made = await client.post(
        "/deployments",
        json={"model_name": p.model, "version": 1, "deployment": name},
        headers=p.headers("admin"),
    )
    assert made.status_code == 202, made.text
    return {"path": f"/deployments/{name}"}


ROUTES = [
    Route("GET", "/health/live", None, lambda p: "/health/live"),
    Route("GET", "/health/ready", None, lambda p: "/health/ready"),
    Route("GET", "/metrics", None, lambda p: "/metrics"),
    Route("GET", "/schema", None, lambda p: "/schema"),
    Route("GET", "/schema/openapi.json", None, lambda p: "/schema/openapi.json"),
    Route(
        "POST",
        "/auth/login",
        None,
        lambda p: "/auth/login",
        json=lambda p: {"username": p.users["viewer"], "password": PASSWORD},
    ),
    Route("POST", "/auth/logout", "viewer", lambda p: "/auth/logout", prepare=_fresh_session),
    Route("GET", "/auth/me", "viewer", lambda p: "/auth/me"),
    Route("POST", "/auth/tokens", "viewer", lambda p: "/auth/tokens", json=lambda p: {}),
    Route("GET", "/auth/tokens", "viewer", lambda p: "/auth/tokens"),
    Route("DELETE", "/auth/tokens/{token_id:str}", "viewer", lambda p: "", prepare=_own_token),
    Route(
        "POST",
        "/users",
        "admin",
        lambda p: "/users",
        json=lambda p: {"username": f"u-{uuid.uuid4().hex[:10]}", "password": PASSWORD},
    ),
    Route("GET", "/users", "admin", lambda p: "/users"),
    Route("GET", "/users/{username:str}", "admin", lambda p: f"/users/{p.users['viewer']}"),
    Route(
        "PATCH",
        "/users/{username:str}",
        "admin",
        lambda p: f"/users/{p.users['viewer']}",
        json=lambda p: {"role": "viewer"},
    ),
    Route("POST", "/models", "engineer", lambda p: "/models", form="model"),
    Route("GET", "/models", "viewer", lambda p: "/models"),
    Route("GET", "/models/{name:str}", "viewer", lambda p: f"/models/{p.model}"),
    Route("GET", "/models/{name:str}/versions", "viewer", lambda p: f"/models/{p.model}/versions"),
    Route("GET", "/models/{name:str}/versions/{version:int}", "viewer", _version),
    Route(
        "POST",
        "/models/{name:str}/versions/{version:int}/stage",
        "engineer",
        lambda p: f"{_version(p)}/stage",
        json=lambda p: {"stage": "staging"},
    ),
    Route(
        "GET",
        "/models/{name:str}/versions/{version:int}/artifact",
        "viewer",
        lambda p: f"{_version(p)}/artifact",
    ),
    Route("POST", "/datasets", "engineer", lambda p: "/datasets", form="dataset"),
    Route("GET", "/datasets", "viewer", lambda p: "/datasets"),
    Route("GET", "/datasets/{name:str}", "viewer", lambda p: f"/datasets/{p.dataset}"),
    Route("GET", "/uploads/{upload_id:str}", "viewer", lambda p: f"/uploads/{p.upload_id}"),
    Route(
        "GET",
        "/events/{correlation_id:str}",
        "viewer",
        lambda p: f"/events/seed-{p.tag}?follow=false",
    ),
    Route("POST", "/jobs", "engineer", lambda p: "/jobs", json=_job_body),
    Route("GET", "/jobs", "viewer", lambda p: "/jobs"),
    Route("GET", "/jobs/{job_id:str}", "viewer", lambda p: f"/jobs/{p.job_id}"),
    Route("POST", "/jobs/{job_id:str}/cancel", "engineer", lambda p: "", prepare=_own_job),
    Route(
        "POST",
        "/deployments",
        "engineer",
        lambda p: "/deployments",
        json=lambda p: {"model_name": p.model, "version": 1, "deployment": f"d-{uuid.uuid4().hex}"},
    ),
    Route("GET", "/deployments", "viewer", lambda p: "/deployments"),
    Route("GET", "/deployments/{name:str}", "viewer", lambda p: f"/deployments/{p.deployment}"),
    Route(
        "GET",
        "/deployments/{name:str}/package",
        "viewer",
        lambda p: f"/deployments/{p.deployment}/package",
    ),
    Route("DELETE", "/deployments/{name:str}", "engineer", lambda p: "", prepare=_fresh_deployment),
    Route(
        "POST",
        "/conversions",
        "engineer",
        lambda p: "/conversions",
        json=lambda p: {
            "model_name": p.model,
            "version": 1,
            "targets": ["onnx", "int8"],
            "dataset": p.dataset,
        },
    ),
    Route(
        "GET", "/conversions/{job_id:str}", "viewer", lambda p: f"/conversions/{p.conversion_id}"
    ),
    Route(
        "POST",
        "/benchmarks",
        "engineer",
        lambda p: "/benchmarks",
        json=lambda p: {"model_name": p.model, "version": 1, "p95_ms": 20},
    ),
    Route("GET", "/benchmarks/{job_id:str}", "viewer", lambda p: f"/benchmarks/{p.benchmark_id}"),
    Route(
        "GET",
        "/models/{name:str}/versions/{version:int}/artifacts",
        "viewer",
        lambda p: f"{_version(p)}/artifacts",
    ),
    Route(
        "GET",
        "/models/{name:str}/versions/{version:int}/report",
        "viewer",
        lambda p: f"{_version(p)}/report",
    ),
    *(
        Route(
            "GET",
            f"/models/{{name:str}}/versions/{{version:int}}/report.{kind}",
            "viewer",
            lambda p, kind=kind: f"{_version(p)}/report.{kind}",
        )
        for kind in ("html", "pdf", "json")
    ),
    Route(
        "GET",
        "/models/{name:str}/versions/{version:int}/report/charts/{chart:str}",
        "viewer",
        lambda p: f"{_version(p)}/report/charts/latency.png",
    ),
    Route("GET", "/system", "viewer", lambda p: "/system"),
]


def _upload_files(kind: str) -> dict[str, Any]:
    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    blob = os.urandom(2048)
    filename = "weights.onnx" if kind == "model" else "data.npz"
    return {"data": {"name": name}, "files": {"file": (filename, blob)}}


def test_every_route_of_the_app_is_in_the_permission_matrix(platform: Platform) -> None:
    served = {
        (method, route.path)
        for route in platform.gateway.app.routes
        for method in getattr(route, "methods", ())
        if method != "OPTIONS"
        and not (route.path.startswith("/schema/") and route.path != "/schema/openapi.json")
    }
    assert served == {(r.method, r.template) for r in ROUTES}


async def call_route(
    client: httpx.AsyncClient, p: Platform, route: Route, role: str | None
) -> httpx.Response:
    """One call of a matrix route as ``role`` (None: anonymous)."""
    call: dict[str, Any] = {"path": route.path(p), "headers": p.headers(role)}
    if route.prepare:
        call.update(await route.prepare(client, p, role))
    kwargs: dict[str, Any] = {"headers": call["headers"]}
    if route.json:
        kwargs["json"] = route.json(p)
    if route.form:
        kwargs.update(_upload_files(route.form))
    return await client.request(route.method, call["path"], **kwargs)


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r or "anonymous")
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
async def test_permission_matrix(platform: Platform, route: Route, role: str | None) -> None:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        response = await call_route(client, platform, route, role)

    allowed = route.needs is None or (role is not None and RANK[role] >= RANK[route.needs])
    if allowed and route.form:
        # authorized: the outcome is the registry's (or "pending" when it is not running)
        assert response.status_code in UPLOAD_OUTCOMES, response.text
        assert response.json()["status"] == UPLOAD_OUTCOMES[response.status_code]
    elif allowed:
        assert 200 <= response.status_code < 300, response.text
    else:
        expected = 401 if role is None else 403
        assert response.status_code == expected, response.text
        body = response.json()
        assert set(body) == {"error", "detail"}
        assert body["error"] == ("not_authenticated" if role is None else "forbidden")


async def test_login_gives_a_session_token_and_logout_revokes_it(platform: Platform) -> None:
    user = platform.users["engineer"]
    async with httpx.AsyncClient(base_url=platform.url) as client:
        wrong = await client.post("/auth/login", json={"username": user, "password": "nope-nope"})
        nobody = await client.post("/auth/login", json={"username": "ghost", "password": PASSWORD})
        assert wrong.status_code == nobody.status_code == 401
        assert wrong.json() == nobody.json()  # does not tell which of the two was wrong

        login = await client.post("/auth/login", json={"username": user, "password": PASSWORD})
        assert login.status_code == 200
        body = login.json()
        assert body["role"] == "engineer" and body["token_type"] == "bearer"
        assert datetime.fromisoformat(body["expires_at"]) > datetime.now(UTC)
        auth = {"Authorization": f"Bearer {body['token']}"}
        me = await client.get("/auth/me", headers=auth)
        assert me.json()["username"] == user
        assert (await client.post("/auth/logout", headers=auth)).status_code == 204
        assert (await client.get("/auth/me", headers=auth)).status_code == 401


async def test_api_token_is_shown_once_listed_without_secret_and_revocable(
    platform: Platform,
) -> None:
    viewer = platform.headers("viewer")
    async with httpx.AsyncClient(base_url=platform.url) as client:
        made = await client.post("/auth/tokens", json={"label": "ci"}, headers=viewer)
        assert made.status_code == 201
        token = made.json()
        auth = {"Authorization": f"Bearer {token['token']}"}
        assert (await client.get("/auth/me", headers=auth)).json()["role"] == "viewer"

        listed = (await client.get("/auth/tokens", headers=viewer)).json()
        mine = [t for t in listed if t["token_id"] == token["token_id"]]
        assert mine and mine[0]["label"] == "ci" and not mine[0]["revoked"]
        assert token["token"] not in str(listed)

        # someone else (not an admin) cannot revoke it, nor learn that it exists
        other = platform.headers("engineer")
        stolen = await client.delete(f"/auth/tokens/{token['token_id']}", headers=other)
        assert stolen.status_code == 404

        revoked = await client.delete(f"/auth/tokens/{token['token_id']}", headers=viewer)
        assert revoked.status_code == 204
        assert (await client.get("/auth/me", headers=auth)).status_code == 401
        listed = (await client.get("/auth/tokens", headers=viewer)).json()
        assert [t["revoked"] for t in listed if t["token_id"] == token["token_id"]] == [True]


async def test_a_client_reads_its_own_writes(platform: Platform) -> None:
    admin = platform.headers("admin")
    name = f"ryw-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=platform.url) as client:
        made = await client.post(
            "/users", json={"username": name, "password": PASSWORD, "role": "viewer"}, headers=admin
        )
        assert made.status_code == 201 and made.json()["role"] == "viewer"
        listed = await client.get("/users", headers=admin)
        assert name in [u["username"] for u in listed.json()]
        # the new user can sign in at once
        login = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
        assert login.status_code == 200
        changed = await client.patch(f"/users/{name}", json={"role": "engineer"}, headers=admin)
        assert changed.json()["role"] == "engineer"
        assert (await client.get(f"/users/{name}", headers=admin)).json()["role"] == "engineer"
        session = {"Authorization": f"Bearer {login.json()['token']}"}
        assert (await client.get("/auth/me", headers=session)).json()["role"] == "engineer"


async def test_creating_an_existing_user_is_a_conflict(platform: Platform) -> None:
    body = {"username": platform.users["viewer"], "password": PASSWORD}
    async with httpx.AsyncClient(base_url=platform.url) as client:
        again = await client.post("/users", json=body, headers=platform.headers("admin"))
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"


async def test_concurrent_role_changes_all_land_without_forking(
    platform: Platform, bus: Bus
) -> None:
    admin = platform.headers("admin")
    name = f"occ-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        await client.post("/users", json={"username": name, "password": PASSWORD}, headers=admin)
        # an event appended behind the gateway's back: its next write must retry, not fork
        stamp = Stamp(now=datetime.now(UTC), actor="t", correlation_id=uuid.uuid4().hex)
        await bus.publish(RoleChanged(**stamp.envelope("r"), username=name, role="engineer"))
        results = await asyncio.gather(
            *(
                client.patch(f"/users/{name}", json={"role": role}, headers=admin)
                for role in ("admin", "viewer", "engineer")
            )
        )
        assert all(r.status_code in (200, 409) for r in results)
        assert any(r.status_code == 200 for r in results)
        final = (await client.get(f"/users/{name}", headers=admin)).json()["role"]
    # the read model agrees with the last event of the user's history in the log
    last = await bus.js.get_last_msg(IDENTITY_STREAM, user_subjects(name))
    assert decode(last.data).role == final  # type: ignore[union-attr]


async def test_disabled_user_cannot_sign_in_until_enabled(platform: Platform) -> None:
    admin = platform.headers("admin")
    name = f"dis-{uuid.uuid4().hex[:8]}"
    creds = {"username": name, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=platform.url) as client:
        await client.post("/users", json=creds, headers=admin)
        token = (await client.post("/auth/login", json=creds)).json()["token"]
        off = await client.patch(f"/users/{name}", json={"disabled": True}, headers=admin)
        assert off.json()["disabled"] is True
        auth = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/auth/me", headers=auth)).status_code == 401
        assert (await client.post("/auth/login", json=creds)).status_code == 401
        await client.patch(f"/users/{name}", json={"disabled": False}, headers=admin)
        assert (await client.post("/auth/login", json=creds)).status_code == 200
        new_password = {"password": "another-long-password"}
        await client.patch(f"/users/{name}", json=new_password, headers=admin)
        assert (await client.post("/auth/login", json=creds)).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "json", "status", "error"),
    [
        ("GET", "/no/such/route", None, 404, "not_found"),
        ("GET", "/models/no-such-model", None, 404, "not_found"),
        ("DELETE", "/models", None, 405, "method_not_allowed"),
        ("POST", "/users", {"username": 5}, 422, "invalid"),
        ("POST", "/users", {"username": "../etc", "password": PASSWORD}, 422, "invalid"),
        ("POST", "/users", {"username": "shorty", "password": "x"}, 422, "invalid"),
        ("POST", "/users", {"username": "r", "password": PASSWORD, "role": "god"}, 422, "invalid"),
        ("POST", "/models/x/versions/1/stage", {"stage": "live"}, 422, "invalid"),
        ("GET", "/models/x/versions/notanint", None, 404, "not_found"),
        ("POST", "/models", None, 400, "bad_request"),
    ],
)
async def test_every_error_has_one_shape(
    platform: Platform, method: str, path: str, json: Any, status: int, error: str
) -> None:
    async with httpx.AsyncClient(base_url=platform.url) as client:
        response = await client.request(method, path, json=json, headers=platform.headers("admin"))
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == error
    assert "Traceback" not in response.text


async def test_oversize_upload_is_refused_and_nothing_is_stored(
    platform: Platform, bus: Bus
) -> None:
    blob = os.urandom(platform.settings.max_upload_bytes + 100_000)
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        response = await client.post(
            "/models",
            data={"name": "too-big"},
            files={"file": ("big.onnx", blob)},
            headers=platform.headers("engineer"),
        )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    digest = sha256(blob)
    assert not await ArtifactStore(bus).exists(digest)
    assert list((platform.settings.home_path / "spool").glob("*")) == []


@pytest.mark.parametrize(
    ("fields", "with_file", "reason"),
    [
        ({}, True, "missing form field 'name'"),
        ({"name": "../escape"}, True, "invalid name"),
        ({"name": "ok-name", "input_shape": "three,by,three"}, True, "input_shape"),
        ({"name": "ok-name", "num_classes": "0"}, True, "num_classes"),
        ({"name": "ok-name"}, False, "missing file"),
    ],
)
async def test_bad_upload_fields_are_refused_before_anything_is_stored(
    platform: Platform, bus: Bus, fields: dict[str, str], with_file: bool, reason: str
) -> None:
    blob = os.urandom(4096)
    files = {"file": ("m.onnx", blob)} if with_file else {"other": ("x", b"x")}
    async with httpx.AsyncClient(base_url=platform.url) as client:
        response = await client.post(
            "/models", data=fields, files=files, headers=platform.headers("engineer")
        )
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "invalid" and reason in response.json()["detail"]
    assert not await ArtifactStore(bus).exists(sha256(blob))


async def test_upload_without_a_verdict_is_pending_and_followable(
    platform: Platform, bus: Bus
) -> None:
    blob = os.urandom(10_000)
    async with httpx.AsyncClient(base_url=platform.url) as client:
        response = await client.post(
            "/datasets",
            data={"name": f"pend-{uuid.uuid4().hex[:6]}", "seed": "7", "description": "d"},
            files={"file": ("data.zip", blob)},
            headers=platform.headers("engineer"),
        )
        assert response.status_code == 202
        result = response.json()
        assert result["status"] == "pending" and result["kind"] == "dataset"
        assert result["correlation_id"] == response.headers["x-correlation-id"]
        shown = await client.get(
            f"/uploads/{result['upload_id']}", headers=platform.headers("viewer")
        )
        assert shown.json()["status"] == "pending"
        events = await read_sse(
            client, f"/events/{result['correlation_id']}?follow=false", platform.headers("viewer")
        )
    assert [e["event"] for e in events] == ["registry.dataset_upload_received.v1"]
    received = msgspec.json.decode(events[0]["data"])
    assert received["seed"] == 7 and received["artifact"]["media_type"] == "application/zip"
    assert await ArtifactStore(bus).exists(sha256(blob))


async def test_stage_changes_are_published_by_the_gateway(platform: Platform) -> None:
    path = f"/models/{platform.model}/versions/1"
    engineer = platform.headers("engineer")
    async with httpx.AsyncClient(base_url=platform.url) as client:
        moved = await client.post(f"{path}/stage", json={"stage": "production"}, headers=engineer)
        assert moved.status_code == 200 and moved.json()["stage"] == "production"
        shown = await client.get(path, headers=platform.headers("viewer"))
        assert shown.json()["stage"] == "production"
        feed = await read_sse(
            client, f"/events/{moved.headers['x-correlation-id']}?follow=false", engineer
        )
        assert [e["event"] for e in feed] == ["registry.model_stage_changed.v1"]
        same = await client.post(f"{path}/stage", json={"stage": "production"}, headers=engineer)
        assert same.status_code == 200
        quiet = await read_sse(
            client, f"/events/{same.headers['x-correlation-id']}?follow=false", engineer
        )
        assert quiet == []
        missing = await client.post(
            f"/models/{platform.model}/versions/99/stage",
            json={"stage": "staging"},
            headers=engineer,
        )
        assert missing.status_code == 404


async def test_model_reads_and_artifact_download(platform: Platform) -> None:
    viewer = platform.headers("viewer")
    async with httpx.AsyncClient(base_url=platform.url) as client:
        listed = (await client.get("/models", headers=viewer)).json()
        assert platform.model in [m["name"] for m in listed]
        model = (await client.get(f"/models/{platform.model}", headers=viewer)).json()
        assert model["owner"] == platform.users["admin"] and model["latest_version"] == 1
        assert [v["version"] for v in model["versions"]] == [1]
        assert model["versions"][0]["created_by"] == platform.users["admin"]
        blob = await client.get(f"/models/{platform.model}/versions/1/artifact", headers=viewer)
        assert blob.content == platform.model_bytes
        assert 'filename="seed.onnx"' in blob.headers["content-disposition"]
        data = (await client.get(f"/datasets/{platform.dataset}", headers=viewer)).json()
        assert data["classes"] == ["a", "b"] and data["splits"]["train"] == 6


async def test_sse_replays_follows_live_and_resumes_after_last_event_id(
    platform: Platform, bus: Bus
) -> None:
    viewer = platform.headers("viewer")
    admin = platform.headers("admin")

    def rejected(stamp: Stamp, key: str) -> DatasetRejected:
        upload = f"sse-{uuid.uuid4().hex[:8]}"
        return DatasetRejected(
            **stamp.envelope(key), upload_id=upload, dataset_name="d", reason=key
        )

    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        made = await client.post(
            "/users",
            json={"username": f"sse-{uuid.uuid4().hex[:6]}", "password": PASSWORD},
            headers=admin,
        )
        cid = made.headers["x-correlation-id"]
        # identity's events (password and token hashes) are in their own stream: no feed
        assert await read_sse(client, f"/events/{cid}?follow=false", viewer) == []
        replay_cid = f"replay-{uuid.uuid4().hex}"
        stamp = Stamp(now=datetime.now(UTC), actor="t", correlation_id=replay_cid)
        await bus.publish(rejected(stamp, "once"))
        replay: list[dict[str, str]] = []
        for _ in range(100):  # until the gateway's projection has it
            replay = await read_sse(client, f"/events/{replay_cid}?follow=false", viewer)
            if replay:
                break
            await asyncio.sleep(0.05)
        assert [e["event"] for e in replay] == ["registry.dataset_rejected.v1"]
        assert msgspec.json.decode(replay[0]["data"])["reason"] == "once"

        live_cid = f"live-{uuid.uuid4().hex}"
        stamp = Stamp(now=datetime.now(UTC), actor="t", correlation_id=live_cid)
        seen: list[dict[str, str]] = []

        async def follow() -> None:
            async with client.stream("GET", f"/events/{live_cid}", headers=viewer) as stream:
                async for message in sse_messages(stream):
                    seen.append(message)
                    if len(seen) == 2:
                        return

        follower = asyncio.create_task(follow())
        await asyncio.sleep(0.3)  # subscribed before the events exist
        for key in ("one", "two"):
            await bus.publish(rejected(stamp, key))
        await asyncio.wait_for(follower, 10)
        assert [m["event"] for m in seen] == ["registry.dataset_rejected.v1"] * 2
        first, second = (int(m["id"]) for m in seen)
        assert first < second

        resumed = await read_sse(
            client, f"/events/{live_cid}?follow=false", {**viewer, "Last-Event-ID": str(first)}
        )
        assert [int(m["id"]) for m in resumed] == [second]


async def test_health_and_metrics(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url) as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert checks["nats_connected"] is True and checks["projection_lag"] >= 0
        await client.get("/models", headers=platform.headers("viewer"))
        metrics = (await client.get("/metrics")).text
    assert 'cvops_gateway_requests_total{method="GET",route="/models",status="200"}' in metrics
    assert "cvops_gateway_projection_lag " in metrics
    assert 'cvops_gateway_request_duration_seconds_bucket{le="0.1",method="GET"' in metrics


async def test_rebuilt_projection_has_identical_rows(
    platform: Platform, bus: Bus, tmp_path: Path
) -> None:
    service = platform.gateway.service
    last = await bus.last_seq()
    for _ in range(200):
        if service.runner.position >= last:
            break
        await asyncio.sleep(0.05)
    live = sqlite_engine(views.db_path(platform.settings))
    before = dump_rows(live, views.metadata)
    live.dispose()
    target = tmp_path / "gateway.sqlite"
    applied = await rebuild_projection(bus, views.GatewayProjection(), target)
    assert applied >= last // 2  # everything the gateway knows, from sequence 1
    rebuilt = sqlite_engine(target)
    assert dump_rows(rebuilt, views.metadata) == before
    rebuilt.dispose()


async def test_the_document_declares_every_status_the_route_tests_observe(
    platform: Platform,
) -> None:
    """Run last in this module: what the matrix gets for every role (anonymous too), and
    every status the gateway answered the tests above, is declared for its operation in
    /schema/openapi.json (which clients are generated from)."""
    observed: dict[tuple[str, str], set[int]] = {}
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        for route in ROUTES:
            for role in ROLES:
                response = await call_route(client, platform, route, role)
                observed.setdefault((route.method, route.template), set()).add(response.status_code)
        document = (await client.get("/schema/openapi.json")).json()
    assert observed[("POST", "/users")] >= {201, 401, 403}
    for key, statuses in observed_statuses(platform.gateway).items():
        observed.setdefault(key, set()).update(statuses)
    assert undeclared_statuses(document, observed) == []


# -- helpers ---------------------------------------------------------------------------


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


async def sse_messages(response: httpx.Response):
    """Parse a text/event-stream into dicts of its fields (comments skipped)."""
    message: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if message:
                yield message
            message = {}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        message[key] = value.removeprefix(" ")


async def read_sse(
    client: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> list[dict[str, str]]:
    async with client.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [m async for m in sse_messages(response)]
