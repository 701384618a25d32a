"""Serving converted artifacts on real NATS and a real tritonserver: every precision this host
runs (ONNX FP32/FP16/INT8, OpenVINO IR) answers as the artifact does in-process over HTTP and
gRPC, the served-output check refuses a tampered artifact, and a canary of another engine of
the same version splits the traffic by weight."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from cvops.contracts import ArtifactRef
from cvops.contracts.conversion import ParityNumbers
from cvops.contracts.deployment import (
    Canary,
    DeploymentFailed,
    DeploymentReady,
    ServedArtifact,
)
from cvops.core import ArtifactStore, Bus, Settings
from cvops.domain.deployment import CANARY_SLOT
from cvops.engines import Artifact, convert
from cvops.testing import router as t
from cvops.testing.router import (
    Outcomes,
    binary_request,
    hammer,
    http_call,
    run,
    wait_outcome,
)

PROBE = 16


@dataclass(frozen=True)
class Built:
    """A converted artifact on disk, how to run it in-process, and its record."""

    engine: str
    precision: str
    served: ServedArtifact
    path: Path


def _run_in_process(engine: str, path: Path, x: np.ndarray) -> np.ndarray:
    if engine == "openvino-cpu":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.asarray(compiled(x)[compiled.outputs[0]])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _parity(outputs: np.ndarray, reference: np.ndarray) -> ParityNumbers:
    diff = np.abs(outputs - reference)
    return ParityNumbers(
        n_images=len(reference),
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        max_rel_error=float((diff / (np.abs(reference) + 1e-6)).max()),
        top1_agreement=float(np.mean(outputs.argmax(1) == reference.argmax(1))),
        reference="onnxruntime-cpu",
    )


async def _store(bus: Bus, path: Path) -> ArtifactRef:
    return await ArtifactStore(bus).put_file(path, filename=path.name)


@pytest.fixture(scope="module")
def built(
    router: t.RouterProcess, base_settings: Settings, onnx_models: dict[str, Path], tag: str
) -> Iterator[dict[str, Built]]:
    """Model ``art-<tag>`` version 1 registered; its ONNX, FP16, INT8 and OpenVINO artifacts
    made with cvops.engines and stored, each with the parity record of the probe."""
    work = Path(base_settings.home) / "artifacts"
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(PROBE, 3, 32, 32)).astype(np.float32)
    source = onnx_models["v1"]
    reference = _run_in_process("onnxruntime-cpu", source, inputs)
    probe_path = work / "probe.npz"
    work.mkdir(parents=True, exist_ok=True)
    np.savez(probe_path, inputs=inputs, reference=reference)
    calibration = rng.normal(size=(32, 3, 32, 32)).astype(np.float32)
    made = {
        ("onnxruntime-cpu", "fp16"): convert(source, "fp16", work / "fp16"),
        ("onnxruntime-cpu", "int8"): convert(source, "int8", work / "int8", calibration),
        ("openvino-cpu", "fp32"): convert(source, "openvino", work / "openvino"),
        ("tampered", "int8"): convert(onnx_models["v2"], "int8", work / "v2-int8", calibration),
    }

    async def given() -> dict[str, Built]:
        bus = await Bus.connect(base_settings, name="test-artifacts")
        try:
            await t.ensure_user(bus, f"admin-{tag}", "admin")
            await t.add_model_version(bus, f"art-{tag}", 1, source)
            probe = await _store(bus, probe_path)
            out: dict[str, Built] = {}
            for (engine, precision), artifact in made.items():
                assert isinstance(artifact, Artifact), artifact
                path = Path(artifact.path)
                files = [Path(f) for f in artifact.files if Path(f) != path]
                outputs = _run_in_process(
                    "onnxruntime-cpu" if engine == "tampered" else engine, path, inputs
                )
                served = ServedArtifact(
                    target=artifact.target,
                    format=artifact.format,
                    precision=precision,
                    artifact=await _store(bus, path),
                    companions=[await _store(bus, f) for f in files],
                    conversion_job=f"job-{tag}",
                    parity=_parity(outputs, reference),
                    probe=probe,
                )
                out[f"{engine}/{precision}"] = Built(engine, precision, served, path)
            return out
        finally:
            await bus.close()

    yield run(given())


async def _deploy(bus: Bus, name: str, tag: str, built: Built | None, **fields: object) -> object:
    first = await bus.last_seq()
    spec: dict[str, object] = {}
    if built is not None:
        spec = {"engine": built.engine, "precision": built.precision, "served": built.served}
    await t.request_deployment(
        bus, name, f"art-{tag}", 1, actor=f"admin-{tag}", public=True, **spec, **fields
    )
    return await wait_outcome(bus, name, first)


@pytest.mark.parametrize(
    "arm",
    [
        pytest.param(
            "onnxruntime-cpu/fp16",
            marks=pytest.mark.skipif(
                not os.environ.get("CVOPS_SLOW_TESTS"),
                reason="ONNX Runtime's FP16 on CPU serves in ~20 s here; set CVOPS_SLOW_TESTS=1",
            ),
        ),
        "onnxruntime-cpu/int8",
        "openvino-cpu/fp32",
    ],
)
async def test_each_precision_serves_the_artifact_over_http_and_grpc(
    router: t.RouterProcess, built: dict[str, Built], bus: Bus, tag: str, arm: str
) -> None:
    b = built[arm]
    name = f"art-{tag}-{arm.replace('/', '-')}"
    ready = await _deploy(bus, name, tag, b)
    assert isinstance(ready, DeploymentReady), ready
    assert ready.served == b.served and ready.precision == b.precision
    check = ready.checks["primary"]
    assert check.passed and check.n_images == PROBE, check
    router.wait_model_ready(name)
    x = np.random.default_rng(7).normal(size=(2, 3, 32, 32)).astype(np.float32)
    expected = _run_in_process(b.engine, b.path, x)
    tolerance = 1e-4 if b.precision == "fp32" else 2e-3
    with triton_http.InferenceServerClient(router.http) as client:
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(name, [tensor]).as_numpy("logits")
    np.testing.assert_allclose(got, expected, atol=tolerance, rtol=tolerance)
    with triton_grpc.InferenceServerClient(router.grpc) as client:
        tensor = triton_grpc.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(name, [tensor]).as_numpy("logits")
    np.testing.assert_allclose(got, expected, atol=tolerance, rtol=tolerance)


async def test_the_int8_engine_is_not_the_fp32_file(
    router: t.RouterProcess,
    built: dict[str, Built],
    bus: Bus,
    tag: str,
    onnx_models: dict[str, Path],
) -> None:
    """What an INT8 deployment returns differs from the FP32 model's outputs (it really
    serves the quantized file), by no more than its parity record allows."""
    b = built["onnxruntime-cpu/int8"]
    name = f"art-{tag}-int8-only"
    assert isinstance(await _deploy(bus, name, tag, b), DeploymentReady)
    router.wait_model_ready(name)  # the router routes it once its projection has the event
    x = np.random.default_rng(3).normal(size=(4, 3, 32, 32)).astype(np.float32)
    fp32 = _run_in_process("onnxruntime-cpu", onnx_models["v1"], x)
    body, headers = binary_request(x)
    status, _ = http_call("POST", f"http://{router.http}/v2/models/{name}/infer", body, headers)
    assert status == 200
    with triton_http.InferenceServerClient(router.http) as client:
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(name, [tensor]).as_numpy("logits")
    assert not np.allclose(got, fp32, atol=1e-6)
    np.testing.assert_allclose(got, _run_in_process("onnxruntime-cpu", b.path, x), atol=2e-3)


async def test_the_serving_check_refuses_a_tampered_artifact(
    router: t.RouterProcess, built: dict[str, Built], bus: Bus, tag: str
) -> None:
    """An artifact whose outputs are not those its record was measured on (other weights
    under the INT8 record and probe of version 1) fails with the numbers, and nothing of
    it is served."""
    good = built["onnxruntime-cpu/int8"].served
    swapped = built["tampered/int8"].served
    tampered = ServedArtifact(
        target="int8",
        format="onnx",
        precision="int8",
        artifact=swapped.artifact,
        conversion_job=good.conversion_job,
        parity=good.parity,
        probe=good.probe,
    )
    name = f"art-{tag}-tampered"
    first = await bus.last_seq()
    await t.request_deployment(
        bus,
        name,
        f"art-{tag}",
        1,
        actor=f"admin-{tag}",
        engine="onnxruntime-cpu",
        precision="int8",
        served=tampered,
    )
    failed = await wait_outcome(bus, name, first)
    assert isinstance(failed, DeploymentFailed)
    assert "differs from what was measured" in failed.reason, failed.reason
    assert "max abs error" in failed.reason or "top-1 agreement" in failed.reason
    status, _ = http_call("GET", f"http://{router.http}/v2/models/{name}/ready")
    assert status in (401, 404)
    index = json.loads(router.get("/v1/status")[1])
    assert not any(name in json.dumps(i.get("loaded", {})) for i in index["instances"])


async def test_a_canary_of_the_int8_engine_beside_fp32_splits_by_weight(
    router: t.RouterProcess, built: dict[str, Built], bus: Bus, tag: str
) -> None:
    b = built["onnxruntime-cpu/int8"]
    name = f"art-{tag}-canary"
    canary = Canary(
        model_version=1, weight_percent=25.0, engine=b.engine, precision="int8", served=b.served
    )
    ready = await _deploy(bus, name, tag, None, canary=canary)
    assert isinstance(ready, DeploymentReady), ready
    assert set(ready.checks) == {"canary"} and ready.checks["canary"].passed
    router.wait_model_ready(name, CANARY_SLOT + 1)
    x = np.ones((1, 3, 32, 32), np.float32)
    seen: Counter[str] = Counter()
    with triton_http.InferenceServerClient(router.http) as client:
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        for _ in range(800):
            seen[client.infer(name, [tensor]).get_response()["model_version"]] += 1
    assert set(seen) == {"1", str(CANARY_SLOT + 1)}, seen
    assert abs(seen[str(CANARY_SLOT + 1)] / 800 - 0.25) <= 0.06, seen
    status, _ = http_call("GET", f"http://{router.http}/v2/models/{name}/versions/1/ready")
    assert status == 200


async def test_a_rolling_update_from_fp32_to_int8_of_one_version_fails_no_request(
    router: t.RouterProcess, built: dict[str, Built], bus: Bus, tag: str
) -> None:
    """The same Triton version changes its artifact (FP32 file -> INT8 engine) under load:
    Triton swaps it on reload, no request fails, and the INT8 outputs serve afterwards."""
    name = f"art-{tag}-roll"
    assert isinstance(await _deploy(bus, name, tag, None), DeploymentReady)
    router.wait_model_ready(name)
    x = np.random.default_rng(11).normal(size=(1, 3, 32, 32)).astype(np.float32)
    body, headers = binary_request(x)
    stop = asyncio.Event()
    outcomes = Outcomes()
    url = f"http://{router.http}/v2/models/{name}/infer"
    load = asyncio.create_task(hammer(url, body, headers, stop, outcomes, concurrency=4))
    await asyncio.sleep(0.5)
    b = built["onnxruntime-cpu/int8"]
    ready = await _deploy(bus, name, tag, b)
    assert isinstance(ready, DeploymentReady) and ready.precision == "int8", ready
    await asyncio.sleep(0.5)
    stop.set()
    await load
    assert set(outcomes.codes) == {"200"} and outcomes.total > 20, outcomes.codes
    with triton_http.InferenceServerClient(router.http) as client:
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(name, [tensor]).as_numpy("logits")
    np.testing.assert_allclose(got, _run_in_process(b.engine, b.path, x), atol=2e-3)
