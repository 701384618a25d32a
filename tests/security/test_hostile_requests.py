"""Hostile requests (no file content involved): malformed multipart, oversize bodies sent
without a length, JSON nested 1,000 deep on every JSON route, path traversal in names, paths
and filenames, and huge headers. Each is refused with a 4xx and a reason in the one error
shape, and leaves nothing: no event under the request's correlation id, no spooled file, no
bytes in the object store. Never a 5xx, and the gateway serves on afterwards.

Already covered elsewhere (see README.md): an oversize upload with a Content-Length and bad
upload fields (``services/gateway/tests/test_api.py``), deep JSON on the sign-in and
``/users``, and numbers beyond 64 bits in upload fields and version paths
(``services/gateway/tests/test_unstorable_input.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from cvops.core import ArtifactStore, Bus
from cvops.testing.gateway_process import GatewayProcess

BOUNDARY = "cvops-boundary"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()
FILE = os.urandom(4096)  # the file part of the malformed forms: never stored
NAME = part("name", b"hostile-form")

# (id, Content-Type, body, what the detail says)
MALFORMED_FORMS = [
    ("no-boundary", "multipart/form-data", NAME + END, "boundary"),
    ("not-multipart", "application/json", b'{"name": "x"}', "multipart/form-data"),
    ("truncated", MULTIPART, NAME + part("file", FILE, "m.onnx")[:-40], "malformed"),
    ("garbage", MULTIPART, b"\x00\xff" * 2048, "malformed"),
    (
        "two-files",
        MULTIPART,
        NAME + part("file", FILE, "a.onnx") + part("file", FILE, "b.onnx") + END,
        "more than one",
    ),
    ("field-not-utf8", MULTIPART, part("name", b"\xff\xfe\xfd") + END, "UTF-8"),
    ("field-over-64-KiB", MULTIPART, part("name", b"n" * 70_000) + END, "longer than"),
    ("too-many-parts", MULTIPART, b"".join(part(f"f{i}", b"x") for i in range(40)) + END, ""),
    ("part-header-1-MiB", MULTIPART, part("n" * 2**20, b"x") + END, ""),
]


@pytest.fixture(scope="module")
def client(live: GatewayProcess) -> Iterator[httpx.Client]:
    with live.client() as c:
        yield c


def events_of(client: httpx.Client, live: GatewayProcess, response: httpx.Response) -> list[str]:
    """The event types appended under ``response``'s request (its correlation id)."""
    correlation_id = response.headers["x-correlation-id"]
    feed = client.get(
        f"/events/{correlation_id}", params={"follow": "false"}, headers=live.headers("viewer")
    )
    assert feed.status_code == 200, feed.text
    return [line[6:].strip() for line in feed.text.splitlines() if line.startswith("event:")]


def in_store(live: GatewayProcess, blob: bytes) -> bool:
    async def exists() -> bool:
        bus = await Bus.connect(live.settings, name="security-test")  # type: ignore[arg-type]
        try:
            return await ArtifactStore(bus).exists(hashlib.sha256(blob).hexdigest())
        finally:
            await bus.close()

    return asyncio.run(exists())


def spooled(live: GatewayProcess) -> list[str]:
    spool = live.settings.home_path / "spool"  # type: ignore[union-attr]
    return [p.name for p in spool.iterdir()] if spool.exists() else []


def refused(
    client: httpx.Client, live: GatewayProcess, response: httpx.Response, status: int
) -> dict[str, Any]:
    """``response`` is ``status`` in the one error shape, and its request left nothing."""
    assert response.status_code == status, response.text[:500]
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    assert events_of(client, live, response) == []
    assert spooled(live) == []
    return body


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [m[1:] for m in MALFORMED_FORMS],
    ids=[m[0] for m in MALFORMED_FORMS],
)
def test_a_malformed_upload_form_is_a_bad_request_and_stores_nothing(
    client: httpx.Client, live: GatewayProcess, content_type: str, body: bytes, says: str
) -> None:
    for kind in ("models", "datasets"):
        response = client.post(
            f"/{kind}",
            content=body,
            headers={**live.headers("engineer"), "Content-Type": content_type},
        )
        error = refused(client, live, response, 400)
        assert error["error"] == "bad_request" and says in error["detail"], error
    assert not in_store(live, FILE)


def test_an_oversize_upload_without_a_length_is_cut_off_and_stores_nothing(
    client: httpx.Client, live: GatewayProcess
) -> None:
    """Sent chunked (no Content-Length to refuse up front): stopped at the limit, 413."""
    limit = live.settings.max_upload_bytes  # type: ignore[union-attr]
    chunk = os.urandom(64 * 1024)

    def body() -> Iterator[bytes]:
        yield NAME + f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '.encode()
        yield b'filename="big.onnx"\r\n\r\n'
        for _ in range(limit // len(chunk) + 4):
            yield chunk
        yield b"\r\n" + END

    response = client.post(
        "/models", content=body(), headers={**live.headers("engineer"), "Content-Type": MULTIPART}
    )
    error = refused(client, live, response, 413)
    assert error["error"] == "too_large" and "nothing was stored" in error["detail"]


def test_an_oversize_json_body_is_refused_before_sign_in(
    client: httpx.Client, live: GatewayProcess
) -> None:
    """Anyone may call the sign-in: a body over the JSON limit (10 MB) is a 413 all the same."""
    body = b'{"username": "' + b"a" * 11_000_000 + b'", "password": "x"}'
    response = client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert refused(client, live, response, 413)["error"] == "too_large"


def json_operations(document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in (operation.get("requestBody") or {}).get("content", {})
    )


def test_json_nested_1000_deep_is_a_bad_request_on_every_json_route(
    client: httpx.Client, live: GatewayProcess
) -> None:
    """Every operation of the document that takes JSON (arrays and objects nested)."""
    operations = json_operations(client.get("/schema/openapi.json").json())
    assert len(operations) >= 8
    depth = 1000
    bodies = (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth)
    for method, path in operations:
        # any names (the body is read first); a version is a number or the route is not found
        url = path.replace("{version}", "1").replace("{", "").replace("}", "")
        for body in bodies:
            response = client.request(
                method,
                url,
                content=body,
                headers={**live.headers("admin"), "Content-Type": "application/json"},
            )
            error = refused(client, live, response, 400)
            assert error["detail"] == "the JSON body is nested too deeply", (method, path)


@pytest.mark.parametrize(
    ("method", "path", "json", "form", "name"),
    [
        ("POST", "/datasets", None, {"name": "../../etc"}, "../../etc"),
        ("POST", "/models", None, {"name": "..%2F..%2Fetc"}, "..%2F..%2Fetc"),
        (
            "POST",
            "/deployments",
            {"model_name": "m", "version": 1, "deployment": "../x"},
            None,
            "../x",
        ),
        ("POST", "/deployments", {"model_name": "../../m", "version": 1}, None, "../../m"),
        ("POST", "/jobs", {"dataset": "../d", "arch": "simple-cnn"}, None, "../d"),
        (
            "POST",
            "/jobs",
            {"dataset": "d", "arch": "simple-cnn", "model_name": "/etc/x"},
            None,
            "/etc/x",
        ),
        (
            "POST",
            "/users",
            {"username": "../..", "password": "long-enough-password"},
            None,
            "../..",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("/") else None,
)
def test_a_name_that_is_a_path_is_refused(
    client: httpx.Client,
    live: GatewayProcess,
    method: str,
    path: str,
    json: Any,
    form: dict[str, str] | None,
    name: str,
) -> None:
    files = {"file": ("x.bin", FILE)} if form else None
    response = client.request(
        method, path, json=json, data=form, files=files, headers=live.headers("admin")
    )
    error = refused(client, live, response, 422)
    assert error["error"] == "invalid" and name in str(error["detail"]), error
    assert not in_store(live, FILE)
    if path == "/users":  # identity's events are in a stream of their own, not in the feed
        users = client.get("/users", headers=live.headers("admin")).json()
        assert name not in [u["username"] for u in users]


@pytest.mark.parametrize(
    "path",
    [
        "/models/..%2F..%2Fetc%2Fpasswd",
        "/models/%2e%2e/versions/1/artifact",
        "/models/x/versions/1/report/charts/..%2F..%2F..%2Fetc%2Fpasswd",
        "/datasets/..%2F..%2Fetc",
        "/uploads/..%2F..%2Fetc%2Fpasswd",
        "/schema/..%2F..%2F..%2Fetc%2Fpasswd",
        "/schema/..%5C..%5Cwindows",
    ],
)
def test_a_path_that_climbs_out_finds_nothing(
    client: httpx.Client, live: GatewayProcess, path: str
) -> None:
    response = client.get(path, headers=live.headers("admin"))
    assert response.status_code == 404, response.text[:300]
    assert "root:" not in response.text and "[boot loader]" not in response.text
    if not path.startswith("/schema/"):  # the document's viewer pages answer in HTML
        assert response.json()["error"] == "not_found"


def test_a_path_in_an_upload_filename_keeps_only_its_last_part(
    client: httpx.Client, live: GatewayProcess
) -> None:
    """The one name a client gives that is not refused: it is cut to its last part, so the
    spool and the stored artifact never see the directories."""
    blob = os.urandom(1024)
    response = client.post(
        "/models",
        data={"name": "traversal-filename"},
        files={"file": ("../../../../../tmp/evil.onnx", blob)},
        headers=live.headers("engineer"),
    )
    assert response.status_code == 202, response.text  # pending: no registry runs here
    correlation_id = response.headers["x-correlation-id"]
    feed = client.get(
        f"/events/{correlation_id}", params={"follow": "false"}, headers=live.headers("viewer")
    )
    assert '\\"filename\\":\\"evil.onnx\\"' in feed.text or '"filename":"evil.onnx"' in feed.text
    assert "../" not in feed.text
    assert spooled(live) == []


@pytest.mark.parametrize(
    ("headers", "statuses"),
    [
        ({"X-Padding": "a" * 1_000_000}, {400, 401, 413, 431}),
        ({"Authorization": "Bearer " + "a" * 64_000}, {400, 401, 413, 431}),
        ({f"X-H{i}": "v" * 64 for i in range(2000)}, {400, 401, 413, 431}),
    ],
    ids=["one-1-MB-header", "64-KB-token", "2000-headers"],
)
def test_huge_headers_are_refused_and_the_gateway_serves_on(
    live: GatewayProcess, headers: dict[str, str], statuses: set[int]
) -> None:
    with live.client() as fresh:
        try:
            response = fresh.get("/auth/me", headers=headers)
        except httpx.RemoteProtocolError:
            response = None  # the server closed the connection: a refusal too
        if response is not None:
            assert response.status_code in statuses, response.text[:300]
            assert response.json()["error"], response.text[:300]
    with live.client() as after:
        assert after.get("/auth/me", headers=live.headers("viewer")).status_code == 200
        assert after.get("/health/ready").status_code == 200
