"""nginx's routing rule (dataplane.js) against the router's own (proxy.py, handlers.py):
a real nginx on the state files the router writes, with an upstream that answers each
request with the path nginx sent it to."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pytest
import requests

from cvops.core import load_settings
from cvops.domain.identity import TokenState, UserState
from cvops.inference_router import handlers
from cvops.inference_router.dataplane import (
    DataPlaneUnavailable,
    NginxDataPlane,
    find_nginx,
    group_name,
    token_entry,
)
from cvops.inference_router.metrics import RouterMetrics
from cvops.inference_router.routing import Instance, Pool

SECRET = "cvops_dataplane_test_token"


def _nginx_or_skip() -> object:
    try:
        return find_nginx(load_settings({}))
    except DataPlaneUnavailable as err:
        if os.environ.get("CI"):
            raise  # CI installs it (deploy/system-packages.sh): missing there is a failure
        pytest.skip(str(err))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Echo(BaseHTTPRequestHandler):
    """Triton's stand-in: answers 200 with the path it was asked (model and version)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps(
            {"path": self.path, "authorization": self.headers.get("Authorization")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Plane:
    def __init__(self, plane: NginxDataPlane, url: str, state: Path) -> None:
        self.plane = plane
        self.url = url
        self.state = state

    def write(self, kind: str, name: str, value: dict[str, object]) -> None:
        (self.state / kind / name).write_text(json.dumps(value))

    def infer(self, model: str, **headers: str) -> requests.Response:
        return requests.post(f"{self.url}/v2/models/{model}/infer", data=b"{}", headers=headers)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    nginx = _nginx_or_skip()
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    triton = Instance(
        name="echo", http=f"127.0.0.1:{echo.server_port}", grpc="", metrics="", up=True
    )
    port = _free_port()
    workdir = tmp_path_factory.mktemp("nginx")
    data_plane = NginxDataPlane(
        nginx,  # type: ignore[arg-type]
        workdir=workdir,
        host="127.0.0.1",
        port=port,
        internal=f"127.0.0.1:{_free_port()}",
        max_body=1024,
        pool=Pool([triton]),
        metrics=RouterMetrics(),
    )
    loop = asyncio.new_event_loop()
    data_plane.prepare()
    loop.run_until_complete(data_plane.launch())
    try:
        yield Plane(data_plane, f"http://127.0.0.1:{port}", workdir / "state")
    finally:
        loop.run_until_complete(data_plane.stop())
        loop.close()
        echo.shutdown()


def _route(plane: Plane, name: str, **fields: object) -> None:
    group = group_name(plane.plane.pool.instances)
    entry: dict[str, object] = {
        "public": False,
        "routable": True,
        "versions": [1],
        "primary": 1,
        "canary": None,
        "weight_bp": 0,
        "groups": {"1": group},
    }
    entry.update(fields)
    plane.write("routes", name, entry)


def _token(plane: Plane, secret: str, **changes: object) -> None:
    import hashlib

    digest = hashlib.sha256(secret.encode()).hexdigest()
    token = TokenState(
        token_id="t1",
        username="ann",
        token_sha256=digest,
        kind="api",
        created_at=datetime.now(UTC),
    )
    user = UserState(username="ann", role="viewer", created_at=datetime.now(UTC))
    disabled = bool(changes.pop("disabled", False))
    token = msgspec.structs.replace(token, **changes)
    if disabled:
        user = msgspec.structs.replace(user, disabled=True)
    plane.write("tokens", digest, token_entry(token, user))


def test_a_public_model_is_sent_to_its_version_without_the_callers_secrets(plane: Plane) -> None:
    _route(plane, "pub", public=True)
    r = plane.infer("pub", Authorization="Bearer anything", **{"X-Request-Key": "k"})
    assert r.status_code == 200
    assert r.json() == {"path": "/v2/models/pub/versions/1/infer", "authorization": None}


def test_a_private_model_needs_a_live_token_with_the_routers_messages(plane: Plane) -> None:
    _route(plane, "priv")
    _token(plane, SECRET)
    _token(plane, "revoked-secret", revoked=True)
    _token(plane, "old-secret", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    _token(plane, "later-secret", expires_at=datetime.now(UTC) + timedelta(hours=1))
    _token(plane, "disabled-secret", disabled=True)
    cases = {
        None: "model 'priv' needs a bearer token",
        "Basic abc": "the Authorization header must be 'Bearer <token>'",
        "Bearer nope": "unknown token",
        "Bearer revoked-secret": "token revoked",
        "Bearer old-secret": "token expired",
        "Bearer disabled-secret": "user disabled",
    }
    for authorization, message in cases.items():
        r = plane.infer("priv", **({"Authorization": authorization} if authorization else {}))
        assert (r.status_code, r.json()) == (401, {"error": message}), authorization
        assert r.headers["WWW-Authenticate"] == "Bearer"
    for secret in (SECRET, "later-secret"):
        assert plane.infer("priv", Authorization=f"Bearer {secret}").status_code == 200
    # an unknown name is refused like a private one without a token, 404 with one
    assert plane.infer("ghost").status_code == 401
    r = plane.infer("ghost", Authorization=f"Bearer {SECRET}")
    assert (r.status_code, r.json()["error"]) == (
        404,
        "Request for unknown model: 'ghost' is not found",
    )
    # not a deployment name: no file is read for it
    assert plane.infer(".routes", Authorization=f"Bearer {SECRET}").status_code == 404


def test_pinned_versions_and_a_version_no_instance_serves(plane: Plane) -> None:
    _route(plane, "pin", public=True, versions=[1, 2])
    url = f"{plane.url}/v2/models/pin/versions"
    assert requests.post(f"{url}/1/infer").json()["path"] == "/v2/models/pin/versions/1/infer"
    r = requests.post(f"{url}/2/infer")  # served on paper, by no instance now
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"
    r = requests.post(f"{url}/7/infer")
    assert (r.status_code, r.json()["error"]) == (
        404,
        "Request for unknown model: 'pin' version 7 is not served",
    )
    r = requests.post(f"{url}/x/infer")
    assert (r.status_code, r.json()["error"]) == (400, "invalid model version 'x'")


def test_the_canary_split_is_the_routers_key_for_key(plane: Plane) -> None:
    group = group_name(plane.plane.pool.instances)
    _route(
        plane,
        "can",
        public=True,
        versions=[1, 2],
        canary=2,
        weight_bp=3000,
        groups={"1": group, "2": group},
    )
    keys = [f"user-{i}" for i in range(200)]
    for key in keys:
        path = plane.infer("can", **{"X-Request-Key": key}).json()["path"]
        expected = 2 if handlers.sticky_bucket(key) < 3000 else 1
        assert path == f"/v2/models/can/versions/{expected}/infer", key
    random = [plane.infer("can").json()["path"].split("/")[5] for _ in range(400)]
    assert 0.2 < random.count("2") / len(random) < 0.4


def test_each_infer_request_is_counted_in_the_routers_metrics(plane: Plane) -> None:
    _route(plane, "counted", public=True)
    for _ in range(3):
        assert plane.infer("counted").status_code == 200
    assert plane.infer("counted-not").status_code == 401

    async def settle() -> None:
        await asyncio.sleep(0.6)  # nginx flushes its log every 200 ms

    asyncio.run(settle())
    plane.plane._read_access_log()
    requests_total = plane.plane.metrics.requests
    assert requests_total.labels("counted", "1", "http", "200")._value.get() == 3
    assert requests_total.labels("counted-not", "-", "http", "401")._value.get() == 1


def test_a_body_over_the_limit_is_413_in_the_routers_shape(plane: Plane) -> None:
    _route(plane, "big", public=True)
    r = requests.post(f"{plane.url}/v2/models/big/infer", data=b"x" * 4096)
    assert (r.status_code, r.json()) == (413, {"error": "request body larger than 1024 bytes"})
