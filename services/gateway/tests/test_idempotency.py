"""Writes are safe to retry: an ``Idempotency-Key`` makes a retried request happen once and
answer what the first did; with NATS down a write is refused at once, never buffered.

Real NATS and the real gateway: the module's gateway on the session's server, and one on a
server of its own that the last test stops and starts again on the same port and store.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cvops.contracts import decode
from cvops.core import STREAM, Bus, Settings
from cvops.core.natsd import start_nats, stop_process
from cvops.testing.gateway import PASSWORD, Platform


def job_body(p: Platform, **fields: Any) -> dict[str, Any]:
    return {"dataset": p.dataset, "arch": "simple-cnn", "budget": {"trials": 2}, **fields}


def keyed(p: Platform, role: str, key: str) -> dict[str, str]:
    return {**p.headers(role), "Idempotency-Key": key}


def new_key() -> str:
    return str(uuid.uuid4())


def jobs_of(client: httpx.Client, p: Platform) -> set[str]:
    listed = client.get("/jobs", headers=p.headers("viewer"))
    assert listed.status_code == 200, listed.text
    return {job["job_id"] for job in listed.json()}


def events_in_stream(settings: Settings, correlation_id: str) -> list[str]:
    """The types of the events in the stream that carry ``correlation_id`` (read from NATS,
    not from any projection)."""

    async def read() -> list[str]:
        bus = await Bus.connect(settings, name="test-reader")
        try:
            found = []
            for seq in range(1, await bus.last_seq(STREAM) + 1):
                event = decode((await bus.js.get_msg(STREAM, seq)).data)
                if getattr(event, "correlation_id", None) == correlation_id:
                    found.append(event.tag())
            return found
        finally:
            await bus.close()

    return asyncio.run(read())


@pytest.fixture
def client(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.url, timeout=30) as c:
        yield c


def test_a_retried_job_request_with_its_key_yields_one_job_and_the_same_answer(
    platform: Platform, client: httpx.Client
) -> None:
    key = new_key()
    headers = keyed(platform, "engineer", key)
    before = jobs_of(client, platform)
    first = client.post("/jobs", json=job_body(platform), headers=headers)
    retry = client.post("/jobs", json=job_body(platform), headers=headers)

    assert first.status_code == retry.status_code == 201, (first.text, retry.text)
    assert retry.json() == first.json()
    cid = first.json()["correlation_id"]
    assert first.headers["x-correlation-id"] == retry.headers["x-correlation-id"] == cid
    assert jobs_of(client, platform) - before == {first.json()["job_id"]}
    assert events_in_stream(platform.settings, cid) == ["training.requested.v1"]

    # keys are per user: another user's request with the same key is another request
    by_admin = client.post("/jobs", json=job_body(platform), headers=keyed(platform, "admin", key))
    assert by_admin.status_code == 201 and by_admin.json()["job_id"] != first.json()["job_id"]


def test_the_same_key_with_another_body_is_refused(
    platform: Platform, client: httpx.Client
) -> None:
    headers = keyed(platform, "engineer", new_key())
    first = client.post("/jobs", json=job_body(platform), headers=headers)
    assert first.status_code == 201, first.text
    before = jobs_of(client, platform)

    other = client.post("/jobs", json=job_body(platform, arch="resnet-mini"), headers=headers)
    assert other.status_code == 422, other.text
    assert other.json()["error"] == "invalid"
    assert "Idempotency-Key was used for another request" in other.json()["detail"]
    assert jobs_of(client, platform) == before


def test_a_malformed_key_is_refused(platform: Platform, client: httpx.Client) -> None:
    response = client.post(
        "/jobs", json=job_body(platform), headers=keyed(platform, "engineer", "x" * 256)
    )
    assert response.status_code == 422, response.text
    assert "Idempotency-Key must be" in response.json()["detail"]


def test_a_retried_token_request_issues_no_second_token(
    platform: Platform, client: httpx.Client
) -> None:
    headers = keyed(platform, "engineer", new_key())
    first = client.post("/auth/tokens", json={"label": "ci"}, headers=headers)
    assert first.status_code == 201, first.text
    token_id = first.json()["token_id"]

    retry = client.post("/auth/tokens", json={"label": "ci"}, headers=headers)
    assert retry.status_code == 409, retry.text
    assert token_id in retry.json()["detail"] and "revoke" in retry.json()["detail"]
    other_label = client.post("/auth/tokens", json={"label": "other"}, headers=headers)
    assert other_label.status_code == 422, other_label.text  # the key named another request

    listed = client.get("/auth/tokens", headers=platform.headers("engineer")).json()
    assert [t["token_id"] for t in listed if t["label"] in ("ci", "other")] == [token_id]
    works = client.get("/auth/me", headers={"Authorization": f"Bearer {first.json()['token']}"})
    assert works.status_code == 200


def test_a_retried_sign_in_issues_no_second_session(
    platform: Platform, client: httpx.Client
) -> None:
    key = new_key()
    credentials = {"username": platform.users["viewer"], "password": PASSWORD}
    first = client.post("/auth/login", json=credentials, headers={"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    retry = client.post("/auth/login", json=credentials, headers={"Idempotency-Key": key})
    assert retry.status_code == 409, retry.text
    assert "Idempotency-Key" in retry.json()["detail"]


def test_a_retried_user_creation_answers_the_user_instead_of_a_conflict(
    platform: Platform, client: httpx.Client
) -> None:
    headers = keyed(platform, "admin", new_key())
    body = {"username": f"u-{uuid.uuid4().hex[:8]}", "password": PASSWORD, "role": "viewer"}
    first = client.post("/users", json=body, headers=headers)
    retry = client.post("/users", json=body, headers=headers)
    assert first.status_code == retry.status_code == 201, (first.text, retry.text)
    assert retry.json() == first.json()
    other = client.post("/users", json={**body, "role": "engineer"}, headers=headers)
    assert other.status_code == 422, other.text


def test_a_retried_upload_answers_the_first_upload(
    platform: Platform, client: httpx.Client
) -> None:
    headers = keyed(platform, "engineer", new_key())
    name = f"idem-{uuid.uuid4().hex[:8]}"

    def upload(content: bytes) -> httpx.Response:
        # httpx draws a new multipart boundary for each request: the body's bytes differ
        return client.post(
            "/models",
            data={"name": name},
            files={"file": ("m.onnx", content, "application/octet-stream")},
            headers=headers,
        )

    first, retry = upload(b"model bytes"), upload(b"model bytes")
    assert first.status_code == retry.status_code == 202, (first.text, retry.text)  # no registry
    assert retry.json()["upload_id"] == first.json()["upload_id"]
    cid = first.json()["correlation_id"]
    assert events_in_stream(platform.settings, cid) == ["registry.model_upload_received.v1"]

    other_file = upload(b"other model bytes")
    assert other_file.status_code == 422, other_file.text


def test_every_write_documents_the_idempotency_key(
    platform: Platform, client: httpx.Client
) -> None:
    document = client.get("/schema/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
            writes = method in ("post", "put", "patch", "delete")
            assert ("Idempotency-Key" in headers) == writes, (method, path)
            if writes:
                assert "503" in operation["responses"], (method, path)


# -- NATS away -------------------------------------------------------------------------------


def _wait(condition: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_with_nats_down_a_write_is_refused_at_once_and_its_retry_lands_once(
    tmp_path: Path, platform_factory: Callable[..., Platform]
) -> None:
    store = tmp_path / "nats"
    proc, port = start_nats(store, port=-1, log_file=tmp_path / "nats.log")
    platform = None
    try:
        platform = platform_factory(f"nats://127.0.0.1:{port}", tmp_path / "home")
        nc = platform.gateway.service.bus.nc
        headers = keyed(platform, "engineer", new_key())
        with httpx.Client(base_url=platform.url, timeout=30) as client:
            stop_process(proc)
            _wait(lambda: not nc.is_connected, "the gateway to see NATS gone")

            started = time.monotonic()
            refused = client.post("/jobs", json=job_body(platform), headers=headers)
            assert refused.status_code == 503, refused.text
            assert "nothing was written" in refused.json()["detail"]
            assert time.monotonic() - started < 2  # refused at once, not after a timeout
            cid = refused.headers["x-correlation-id"]

            proc, _ = start_nats(store, port=port, log_file=tmp_path / "nats.log")
            _wait(lambda: nc.is_connected, "the gateway to reconnect")
            time.sleep(0.5)  # what a client would have buffered is flushed by now
            assert events_in_stream(platform.settings, cid) == []

            retried = client.post("/jobs", json=job_body(platform), headers=headers)
            assert retried.status_code == 201, retried.text
            assert retried.json()["correlation_id"] == cid
            again = client.post("/jobs", json=job_body(platform), headers=headers)
            assert again.json() == retried.json()
        assert events_in_stream(platform.settings, cid) == ["training.requested.v1"]
    finally:
        if platform is not None:
            platform.gateway.stop()
        stop_process(proc)
