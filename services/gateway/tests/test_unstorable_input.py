"""Input no projection can store, or no parser can read, is refused with a 4xx: never a
500, never a traceback, and never an event in the log."""

from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import httpx
import pytest

from cvops.core import ArtifactStore, Bus
from cvops.core.projection import Stuck
from cvops.gateway.health import HealthService
from cvops.gateway.metrics import GatewayMetrics
from cvops.testing.gateway import Platform

TOO_BIG = 2**63  # one past SQLite's INTEGER
DEEP = 1_000


def _nested(depth: int) -> bytes:
    return b'{"username": ' + b"[" * depth + b"]" * depth + b', "password": "x"}'


async def test_a_dataset_seed_beyond_64_bits_is_refused_and_nothing_is_stored(
    platform: Platform, bus: Bus
) -> None:
    blob = os.urandom(2048)
    before = await bus.last_seq()
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        response = await client.post(
            "/datasets",
            data={"name": "p", "seed": str(TOO_BIG)},
            files={"file": ("d.npz", blob)},
            headers=platform.headers("engineer"),
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid" and body["detail"].startswith("seed must be")
    assert str(TOO_BIG) in body["detail"]
    assert not await ArtifactStore(bus).exists(hashlib.sha256(blob).hexdigest())
    assert await bus.last_seq() == before


async def test_a_model_upload_with_a_shape_beyond_64_bits_is_refused(
    platform: Platform, bus: Bus
) -> None:
    blob = os.urandom(2048)
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        response = await client.post(
            "/models",
            data={"name": "shape", "input_shape": f"3,{TOO_BIG},8"},
            files={"file": ("m.onnx", blob)},
            headers=platform.headers("engineer"),
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith("input_shape[1] must be")
    assert not await ArtifactStore(bus).exists(hashlib.sha256(blob).hexdigest())


@pytest.mark.parametrize(
    ("method", "suffix", "json"),
    [
        ("GET", "", None),
        ("GET", "/artifacts", None),
        ("GET", "/artifact", None),
        ("POST", "/stage", {"stage": "staging"}),
    ],
)
async def test_a_version_number_beyond_64_bits_is_not_found(
    platform: Platform, method: str, suffix: str, json: object
) -> None:
    path = f"/models/{platform.model}/versions/99999999999999999999{suffix}"
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        response = await client.request(method, path, json=json, headers=platform.headers("admin"))
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(("path", "role"), [("/auth/login", None), ("/users", "admin")])
async def test_json_nested_too_deep_is_a_bad_request_without_a_traceback(
    platform: Platform, path: str, role: str | None, capfd: pytest.CaptureFixture[str]
) -> None:
    headers = {"Content-Type": "application/json", **platform.headers(role)}
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as client:
        for depth in (DEEP, 100 * DEEP):
            response = await client.post(path, content=_nested(depth), headers=headers)
            assert response.status_code == 400, response.text
            assert response.json() == {
                "error": "bad_request",
                "detail": "the JSON body is nested too deeply",
            }
    out, err = capfd.readouterr()
    assert "request_failed" not in out + err and "Traceback" not in out + err


class _Bus:
    nc = SimpleNamespace(is_connected=True)

    async def last_seq(self) -> int:
        return 41


async def test_a_stuck_projection_makes_the_gateway_not_ready_and_says_where() -> None:
    stuck = Stuck(seq=41, type="registry.dataset_upload_received.v1", reason="OverflowError")
    runner = SimpleNamespace(position=40, stuck=stuck)
    identity = SimpleNamespace(position=3, stuck=None)
    gateway = SimpleNamespace(
        bus=_Bus(),
        runner=runner,
        identity_runner=identity,
        caught_up=True,
        metrics=GatewayMetrics(),
    )
    health = await HealthService(gateway).readiness()  # type: ignore[arg-type]
    assert health.status == "down"
    assert health.checks["projection_stuck"] == {
        "seq": 41,
        "type": "registry.dataset_upload_received.v1",
        "reason": "OverflowError",
        "resolve": stuck.hint("gateway"),
    }
    runner.stuck = None
    assert (await HealthService(gateway).readiness()).status == "ok"  # type: ignore[arg-type]
    # identity's own projection stuck: not ready either, and it says which file
    identity.stuck = Stuck(seq=3, type="identity.user_created.v1", reason="OverflowError")
    health = await HealthService(gateway).readiness()  # type: ignore[arg-type]
    assert health.status == "down"
    assert health.checks["identity_projection_stuck"]["resolve"] == identity.stuck.hint(  # type: ignore[index]
        "gateway-identity"
    )
    text = (await HealthService(gateway).metrics_text()).decode()  # type: ignore[arg-type]
    assert "cvops_projection_stuck" in text
