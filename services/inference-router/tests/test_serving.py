"""The router on real NATS and a real tritonserver: deploy, infer (HTTP, gRPC, predict),
bad input, tokens, metrics, canary split, rolling update, refused artifacts, retirement."""

from __future__ import annotations

import asyncio
import io
import json
import queue
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from PIL import Image
from tritonclient.utils import InferenceServerException

from cvops.contracts.deployment import DeploymentFailed, DeploymentReady, DeploymentRetired
from cvops.core import Bus, Settings, load_settings
from cvops.core.model_repository import deployment_entry
from cvops.inference_router.dataplane import DataPlaneUnavailable, find_nginx
from cvops.inference_router.repository import onnx_io, parse_config
from cvops.testing import router as t
from cvops.testing.router import (
    Names,
    Outcomes,
    binary_request,
    deploy_public_and_private,
    hammer,
    wait_event,
)

CLASSES = [f"class-{i}" for i in range(10)]


@pytest.fixture(scope="module", params=["auto", "python"])
def data_plane(request: pytest.FixtureRequest) -> str:
    """Every test here on nginx (where installed) and on the router's own listener."""
    return str(request.param)


@pytest.fixture(scope="module")
def engine_threads() -> int:
    """Every engine here runs on one thread: the router's setting reaches each deployment."""
    return 1


@pytest.fixture(scope="module")
def token(tag: str) -> str:
    """The viewer's API token (a secret of its own per run: one digest, one token)."""
    return f"cvops_test_secret_{tag}"


@pytest.fixture(scope="module")
def tag(data_plane: str) -> str:
    """Names of their own for each data plane's run (the NATS log is shared)."""
    return f"{data_plane[:2]}{uuid.uuid4().hex[:6]}"


def test_the_data_plane_is_the_one_asked_for(deployed: t.RouterProcess, data_plane: str) -> None:
    try:
        find_nginx(load_settings({}))
        expected = "nginx" if data_plane == "auto" else "python"
    except DataPlaneUnavailable:
        expected = "python"
    assert deployed.status()["data_plane"]["kind"] == expected


HYPER = {"classes": CLASSES, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture(scope="module")
def deployed(
    token: str,
    router: t.RouterProcess,
    base_settings: Settings,
    names: Names,
    onnx_models: dict[str, Path],
    wait_private_ready: Callable[[t.RouterProcess, str, str], None],
) -> t.RouterProcess:
    """Model versions 1 and 2 registered; v1 deployed public and private."""
    models = [onnx_models["v1"], onnx_models["v2"]]
    return deploy_public_and_private(
        router, base_settings, names, models, token, wait_private_ready, HYPER,
        max_queue_delay_us=200,
    )  # fmt: skip


def reference(model: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]


def test_http_and_grpc_outputs_equal_in_process_onnxruntime(
    deployed: t.RouterProcess, names: Names, onnx_models: dict[str, Path]
) -> None:
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    expected = reference(onnx_models["v1"], x)

    http = triton_http.InferenceServerClient(deployed.http)
    try:
        assert http.is_server_live() and http.is_server_ready()
        assert http.is_model_ready(names.public)
        meta = http.get_model_metadata(names.public)
        assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32]
        assert http.get_model_config(names.public)["max_batch_size"] == 8
        for binary in (True, False):
            inp = triton_http.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            result = http.infer(names.public, [inp])
            np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
    finally:
        http.close()

    g = triton_grpc.InferenceServerClient(deployed.grpc)
    try:
        assert g.is_server_live() and g.is_server_ready() and g.is_model_ready(names.public)
        assert g.get_model_metadata(names.public).name == names.public
        inp = triton_grpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = g.infer(names.public, [inp], model_version="1")
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
        assert result.get_response().model_version == "1"
    finally:
        g.close()


def test_the_model_bundles_example_client_gets_a_top_class(
    deployed: t.RouterProcess, names: Names, onnx_models: dict[str, Path], tmp_path: Path
) -> None:
    """``client.py`` of ``cvops package`` (tritonclient.http, a random input of the config's
    shape and datatype) answers over KServe v2 as the bundle's README says."""
    package = pytest.importorskip("cvops.gateway.package")
    entry = deployment_entry(
        names.public, _Batcher(), ["onnxruntime-cpu"], [1], onnx_io(onnx_models["v1"]), native=True
    )
    client = tmp_path / "client.py"
    client.write_text(package.example_client(names.public, 1, entry))
    host = deployed.http.removeprefix("http://")
    done = subprocess.run(
        [sys.executable, str(client), "--url", host], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"{names.public} version 1: top class \d \(score -?[0-9.]+\)\n", done.stdout
    )


class _Batcher:
    engine, precision = "onnxruntime-cpu", "fp32"
    max_batch_size, preferred_batch_sizes, max_queue_delay_us, instance_count = 8, [4, 8], 200, 1


def test_grpc_streaming_infer_routes_each_request(
    token: str, deployed: t.RouterProcess, names: Names, onnx_models: dict[str, Path]
) -> None:
    x = np.random.default_rng(3).random((2, 3, 32, 32), dtype=np.float32)
    expected = reference(onnx_models["v1"], x)
    answers: queue.Queue[object] = queue.Queue()
    g = triton_grpc.InferenceServerClient(deployed.grpc)
    try:
        g.start_stream(
            callback=lambda result, error: answers.put(error or result),
            headers={"authorization": f"Bearer {token}"},  # "nope" is 401 without one
        )
        for model in (names.public, "nope"):
            inp = triton_grpc.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            g.async_stream_infer(model, [inp], request_id=model)
        got = [answers.get(timeout=10), answers.get(timeout=10)]
        g.stop_stream()
    finally:
        g.close()
    results = [r for r in got if not isinstance(r, InferenceServerException)]
    errors = [r for r in got if isinstance(r, InferenceServerException)]
    assert len(results) == 1 and len(errors) == 1
    np.testing.assert_allclose(results[0].as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
    assert "unknown model" in errors[0].message()


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "needle"),
    [
        ("image", [1, 3, 32, 32], "FP32", "unexpected inference input 'image'"),
        ("input", [1, 3, 16, 16], "FP32", "unexpected shape for input 'input'"),
        ("input", [1, 3, 32, 32], "INT32", "inference input 'input' data-type is 'INT32'"),
    ],
)
def test_wrong_tensor_name_shape_or_dtype_is_400_with_tritons_message(
    deployed: t.RouterProcess, names: Names, name: str, shape: list[int], dtype: str, needle: str
) -> None:
    x = np.zeros(shape, dtype=np.float32 if dtype == "FP32" else np.int32)
    http = triton_http.InferenceServerClient(deployed.http)
    try:
        inp = triton_http.InferInput(name, shape, dtype)
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as err:
            http.infer(names.public, [inp])
        assert err.value.status() == "400"
        assert needle in err.value.message()
    finally:
        http.close()
    g = triton_grpc.InferenceServerClient(deployed.grpc)
    try:
        inp = triton_grpc.InferInput(name, shape, dtype)
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as err:
            g.infer(names.public, [inp])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert needle in err.value.message()
    finally:
        g.close()


def test_unknown_model_is_404_over_http_and_not_found_over_grpc(
    token: str, deployed: t.RouterProcess
) -> None:
    body, headers = binary_request(np.zeros((1, 3, 32, 32), np.float32))
    auth = {"Authorization": f"Bearer {token}"}  # without one, any non-public name is 401
    url = f"http://{deployed.http}/v2/models/nope"
    code, answer = t.http_call("POST", f"{url}/infer", body, {**headers, **auth})
    assert code == 404
    assert "unknown model" in json.loads(answer)["error"]
    assert t.http_call("GET", url, headers=auth)[0] == 404
    g = triton_grpc.InferenceServerClient(deployed.grpc)
    try:
        inp = triton_grpc.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
        with pytest.raises(InferenceServerException) as err:
            g.infer("nope", [inp], headers={"authorization": f"Bearer {token}"})
        assert err.value.status() == "StatusCode.NOT_FOUND"
    finally:
        g.close()


def test_private_deployment_needs_a_valid_bearer_token(
    token: str, deployed: t.RouterProcess, names: Names
) -> None:
    x = np.ones((1, 3, 32, 32), np.float32)
    body, headers = binary_request(x)
    url = f"http://{deployed.http}/v2/models/{names.private}/infer"
    assert t.http_call("POST", url, body, headers)[0] == 401
    bad = {**headers, "Authorization": "Bearer not-a-token"}
    assert t.http_call("POST", url, body, bad)[0] == 401
    good = {**headers, "Authorization": f"Bearer {token}"}
    assert t.http_call("POST", url, body, good)[0] == 200

    g = triton_grpc.InferenceServerClient(deployed.grpc)
    try:
        inp = triton_grpc.InferInput("input", [1, 3, 32, 32], "FP32")
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as err:
            g.infer(names.private, [inp])
        assert err.value.status() == "StatusCode.UNAUTHENTICATED"
        ok = g.infer(names.private, [inp], headers={"authorization": f"Bearer {token}"})
        assert ok.as_numpy("logits").shape == (1, 10)
    finally:
        g.close()


async def test_revoked_and_expired_tokens_are_refused(
    deployed: t.RouterProcess, names: Names, bus: Bus
) -> None:
    from cvops.contracts.identity import TokenRevoked

    body, headers = binary_request(np.ones((1, 3, 32, 32), np.float32))
    url = f"http://{deployed.http}/v2/models/{names.private}/infer"
    run = uuid.uuid4().hex[:8]  # the module runs twice (both data planes) on one log
    expired = f"cvops_expired_session_{run}"
    await t.issue_token(bus, names.viewer, expired, expires_at="2001-01-01T00:00:00+00:00")
    revoked = f"cvops_soon_revoked_{run}"
    token_id = await t.issue_token(bus, names.viewer, revoked)
    auth = {**headers, "Authorization": f"Bearer {revoked}"}
    assert await _eventually(lambda: t.http_call("POST", url, body, auth)[0] == 200)
    await bus.publish(
        TokenRevoked(
            **t.stamp(names.viewer).envelope("revoke"), username=names.viewer, token_id=token_id
        )
    )
    assert await _eventually(lambda: t.http_call("POST", url, body, auth)[0] == 401)
    old = {**headers, "Authorization": f"Bearer {expired}"}
    code, answer = t.http_call("POST", url, body, old)
    assert code == 401 and "expired" in json.loads(answer)["error"]


def test_predict_returns_top_k_labels_of_an_image(
    deployed: t.RouterProcess, names: Names, onnx_models: dict[str, Path]
) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    url = f"http://{deployed.http}/v1/predict/{names.public}?k=3"
    code, answer = t.http_call("POST", url, png.getvalue(), {"Content-Type": "image/png"})
    assert code == 200, answer
    result = json.loads(answer)
    assert result["version"] == 1 and len(result["predictions"]) == 3
    resized = Image.fromarray(pixels).resize((32, 32), Image.Resampling.BILINEAR)
    x = (np.asarray(resized, np.float32) / 255.0 - 0.5) / 0.25
    logits = reference(onnx_models["v1"], x.transpose(2, 0, 1)[None].astype(np.float32))[0]
    best = int(np.argmax(logits))
    assert result["predictions"][0]["index"] == best
    assert result["predictions"][0]["label"] == CLASSES[best]

    boundary = "cvops-test-boundary"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    code, answer = t.http_call("POST", url, form, ctype)
    assert code == 200 and json.loads(answer)["predictions"] == result["predictions"]

    code, answer = t.http_call("POST", url, b"definitely not a png", {})
    assert code == 400
    assert json.loads(answer)["error"] == "not_an_image"


def test_metrics_port_serves_router_and_triton_numbers(
    deployed: t.RouterProcess, names: Names
) -> None:
    body, headers = binary_request(np.ones((1, 3, 32, 32), np.float32))
    url = f"http://{deployed.http}/v2/models/{names.public}/infer"
    assert t.http_call("POST", url, body, headers)[0] == 200
    code, text = t.http_call("GET", f"http://{deployed.metrics}/metrics")
    assert code == 200
    metrics = text.decode()
    assert f'cvops_router_requests_total{{code="200",model="{names.public}"' in metrics
    assert "cvops_router_request_duration_seconds_bucket" in metrics
    assert f'cvops_triton_batch_size_bucket{{le="1",model="{names.public}"' in metrics
    assert "cvops_triton_queue_seconds_total" in metrics
    assert 'nv_inference_request_success{triton_instance="local"' in metrics


async def test_canary_split_is_within_5_percent_over_2000_requests(
    deployed: t.RouterProcess, names: Names, bus: Bus
) -> None:
    first = await bus.last_seq()
    await t.request_deployment(
        bus, names.public, names.model, 1, actor=names.admin, canary=(2, 20.0)
    )
    ready = await wait_event(bus, names.public, "ready", after=first)
    assert isinstance(ready, DeploymentReady) and ready.canary is not None
    deployed.wait_model_ready(names.public, 2)
    body, headers = binary_request(np.ones((1, 3, 32, 32), np.float32))
    url = f"http://{deployed.http}/v2/models/{names.public}/infer"

    async def split(keyed: bool) -> Counter[str]:
        import aiohttp

        seen: Counter[str] = Counter()
        sem = asyncio.Semaphore(8)
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> None:
                h = {**headers, "X-Request-Key": f"user-{i}"} if keyed else headers
                async with sem, session.post(url, data=body, headers=h) as resp:
                    data = await resp.read()
                    assert resp.status == 200
                    length = resp.headers["Inference-Header-Content-Length"]
                    seen[json.loads(data[: int(length)])["model_version"]] += 1

            await asyncio.gather(*(one(i) for i in range(2000)))
        return seen

    for keyed in (False, True):
        seen = await split(keyed)
        assert sum(seen.values()) == 2000
        assert abs(seen["2"] / 2000 - 0.20) <= 0.05, seen
    # sticky: one key always lands on the same version
    sticky = {**headers, "X-Request-Key": "the-same-user"}
    stop = asyncio.Event()
    outcomes = Outcomes()
    load = asyncio.create_task(hammer(url, body, sticky, stop, outcomes, concurrency=2))
    await asyncio.sleep(0.3)
    stop.set()
    await load
    assert set(outcomes.codes) == {"200"} and len(outcomes.versions) == 1, outcomes


async def test_rolling_update_under_load_fails_no_request(
    deployed: t.RouterProcess, names: Names, bus: Bus
) -> None:
    body, headers = binary_request(np.ones((1, 3, 32, 32), np.float32))
    url = f"http://{deployed.http}/v2/models/{names.public}/infer"
    stop = asyncio.Event()
    outcomes = Outcomes()
    load = asyncio.create_task(hammer(url, body, headers, stop, outcomes, concurrency=6))
    await asyncio.sleep(0.5)
    first = await bus.last_seq()
    await t.request_deployment(
        bus,
        names.public,
        names.model,
        2,
        actor=names.admin,
        max_queue_delay_us=300,
        preferred_batch_sizes=[4, 8],
    )
    await wait_event(bus, names.public, "ready", after=first)

    def only_v2() -> bool:
        loaded = deployed.status()["instances"][0]["loaded"]
        return loaded.get(names.public) == [2]

    assert await _eventually(only_v2, timeout=30)
    await asyncio.sleep(0.5)
    stop.set()
    await load
    assert set(outcomes.codes) == {"200"}, outcomes.codes
    assert outcomes.versions["2"] > 0 and outcomes.versions["1"] > 0
    assert outcomes.total > 50


async def test_corrupt_onnx_fails_with_tritons_message_and_old_version_keeps_serving(
    deployed: t.RouterProcess, names: Names, bus: Bus, onnx_models: dict[str, Path]
) -> None:
    v1 = deployed.status()
    specs = _signature(names)
    await t.add_model_version(bus, names.model, 3, onnx_models["corrupt"], **specs)
    broken = f"broken-{names.model}"
    first = await bus.last_seq()
    await t.request_deployment(bus, broken, names.model, 3, actor=names.admin)
    failed = await wait_event(bus, broken, "failed", after=first)
    assert isinstance(failed, DeploymentFailed)
    assert "load failed for model" in failed.reason
    assert "Protobuf parsing failed" in failed.reason or "INVALID_PROTOBUF" in failed.reason
    assert deployed.get(f"/v2/models/{broken}/ready")[0] == 404

    # a rolling update to the corrupt version is refused; the serving version stays
    first = await bus.last_seq()
    await t.request_deployment(bus, names.public, names.model, 3, actor=names.admin)
    failed = await wait_event(bus, names.public, "failed", after=first)
    assert "Protobuf parsing failed" in failed.reason or "INVALID_PROTOBUF" in failed.reason
    body, headers = binary_request(np.ones((1, 3, 32, 32), np.float32))
    url = f"http://{deployed.http}/v2/models/{names.public}/infer"
    assert t.http_call("POST", url, body, headers)[0] == 200
    assert v1["instances"][0]["loaded"][names.public] == [2]
    assert deployed.status()["instances"][0]["loaded"][names.public] == [2]

    # a viewer may not deploy
    first = await bus.last_seq()
    await t.request_deployment(bus, f"v-{names.model}", names.model, 1, actor=names.viewer)
    refused = await wait_event(bus, f"v-{names.model}", "failed", after=first)
    assert refused.reason.startswith("forbidden")


def test_generated_config_pbtxt_parses_as_tritons_model_config(
    deployed: t.RouterProcess, names: Names
) -> None:
    path = Path(deployed.settings.home) / "inference-router" / "models" / names.public
    config = parse_config((path / "config.pbtxt").read_text())
    assert config.name == names.public and config.backend == "python"
    assert list(config.version_policy.specific.versions) == [2]
    assert config.dynamic_batching.max_queue_delay_microseconds == 300
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.parameters["INTRA_OP_THREADS"].string_value == "1"  # router_engine_threads
    assert (path / "2" / "model.py").exists() and (path / "2" / "model.onnx").exists()
    assert not (path / "1").exists()


async def test_retired_deployment_answers_404(
    token: str, deployed: t.RouterProcess, names: Names, bus: Bus
) -> None:
    first = await bus.last_seq()
    await t.request_retirement(bus, names.private, actor=names.admin)
    retired = await wait_event(bus, names.private, "retired", after=first)
    assert isinstance(retired, DeploymentRetired)
    ready = f"http://{deployed.http}/v2/models/{names.private}/ready"
    auth = {"Authorization": f"Bearer {token}"}
    assert await _eventually(lambda: t.http_call("GET", ready, headers=auth)[0] == 404)
    assert names.private not in deployed.status(token)["instances"][0]["loaded"]


def _signature(names: Names) -> dict[str, object]:
    from cvops.contracts import TensorSpec

    return {
        "inputs": [TensorSpec(name="input", shape=[-1, 3, 32, 32], dtype="FP32")],
        "outputs": [TensorSpec(name="logits", shape=[-1, 10], dtype="FP32")],
    }


async def _eventually(predicate, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(predicate):
            return True
        await asyncio.sleep(0.05)
    return False
