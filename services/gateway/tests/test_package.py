"""The model bundle of a deployment (``GET /deployments/{name}/package``, ``cvops package``) on
a real NATS: the same bytes twice, sums that verify, the config the router's generator writes
for the NGC image's native backend, the served artifact by its sha256, the refusals.

The registry's, converter's and router's parts are played by hand: the artifacts go into the
object store and their events onto the log, as those services would publish them.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import re
import tarfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from cvops.client.bundle import verify_bundle
from cvops.client.cli import CliState, cli
from cvops.contracts import ArtifactRef, Event, Stamp, TensorSpec
from cvops.contracts.deployment import (
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    ServedArtifact,
)
from cvops.contracts.registry import ModelRegistered, ModelUploadReceived, ModelVersionAdded
from cvops.core import ArtifactStore, Bus
from cvops.core.model_repository import TRITON_IMAGE, config_pbtxt, deployment_entry
from cvops.core.natsd import start_nats, stop_process
from cvops.testing.gateway import Platform

ROOT = Path(__file__).resolve().parents[3]
BATCHER = {
    "max_batch_size": 16,
    "preferred_batch_sizes": [4, 8],
    "max_queue_delay_us": 250,
    "instance_count": 2,
}


@pytest.fixture(scope="module")
def platform(
    platform_factory: Callable[..., Platform], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A gateway on a NATS of its own: the ready deployments this module makes up (no router
    ever loaded them) must not reach the routers other modules run on the session's NATS."""
    store = tmp_path_factory.mktemp("package-nats")
    proc, port = start_nats(store, port=-1, sync_always=True, log_file=store / "nats.log")
    try:
        running = platform_factory(f"nats://127.0.0.1:{port}", tmp_path_factory.mktemp("gw"))
        try:
            yield running
        finally:
            running.gateway.stop()
    finally:
        stop_process(proc)


def tiny_onnx() -> bytes:
    """x [N,3,8,8] -> global average pool -> y [N,3]: a real graph the router can read."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["y"]),
        ],
        "tiny",
        [x],
        [y],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return bytes(model.SerializeToString())


async def publish(platform: Platform, bus: Bus, *events: Event) -> None:
    """Publish as a service would, then wait until the gateway's projection has it."""
    seq = 0
    for event in events:
        seq = (await bus.publish(event)).seq
    runner = platform.gateway.service.runner
    for _ in range(500):
        if runner.position >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the gateway projection did not reach {seq}")


async def served_deployment(
    platform: Platform,
    *,
    engine: str,
    precision: str,
    fmt: str,
    companions: dict[str, bytes] | None = None,
    ready: bool = True,
) -> tuple[str, ArtifactRef, bytes]:
    """A new model whose version 1 is a real ONNX file, and a deployment of ``engine`` at
    ``precision`` serving a produced artifact of format ``fmt`` (the ONNX bytes themselves
    for ONNX) with ``BATCHER``'s settings, ready (or failed)."""
    tag = uuid.uuid4().hex[:8]
    model, name = f"tiny-{tag}", f"pkg-{tag}"
    blob = tiny_onnx() if fmt == "onnx" else f"{fmt} artifact {tag}".encode()
    bus = await Bus.connect(platform.settings, name="package-test")
    try:
        store = ArtifactStore(bus)
        source = await store.put_bytes(tiny_onnx(), filename="tiny.onnx")
        artifact = await store.put_bytes(blob, filename=f"model.{fmt}")
        extra = [await store.put_bytes(b, filename=f) for f, b in (companions or {}).items()]
        now = datetime.now(UTC)
        admin = platform.users["admin"]
        stamp = Stamp(now=now, actor=admin, correlation_id=f"pkg-{tag}")
        by_service = Stamp(now=now, actor="inference-router", correlation_id=f"pkg-{tag}")
        served = ServedArtifact(
            target="int8" if precision == "int8" else fmt,
            format=fmt,
            precision=precision,
            artifact=artifact,
            companions=extra,
            conversion_job=f"conv-{tag}",
        )
        spec: dict[str, Any] = {
            "deployment": name,
            "model_name": model,
            "version": 1,
            "engine": engine,
            "precision": precision,
            "served": served,
            **BATCHER,
        }
        outcome: Event = (
            DeploymentReady(**by_service.envelope("ready"), **spec, instances=["local"])
            if ready
            else DeploymentFailed(
                **by_service.envelope("failed"),
                deployment=name,
                model_name=model,
                version=1,
                reason="Triton refused it",
            )
        )
        await publish(
            platform,
            bus,
            ModelUploadReceived(
                **stamp.envelope("up"), upload_id=f"up-{tag}", model_name=model, artifact=source
            ),
            ModelRegistered(**by_service.envelope("reg"), model_name=model, owner=admin),
            ModelVersionAdded(
                **by_service.envelope("v1"),
                model_name=model,
                version=1,
                upload_id=f"up-{tag}",
                artifact=source,
                format="onnx",
                inputs=[TensorSpec(name="x", shape=[-1, 3, 8, 8], dtype="float32")],
                outputs=[TensorSpec(name="y", shape=[-1, 3], dtype="float32")],
                parameter_count=0,
                opset=18,
            ),
            DeploymentRequested(**stamp.envelope("deploy"), **spec),
            outcome,
        )
    finally:
        await bus.close()
    return name, artifact, blob


def fetch(platform: Platform, name: str, role: str = "viewer") -> httpx.Response:
    return httpx.get(
        f"{platform.url}/deployments/{name}/package", headers=platform.headers(role), timeout=60
    )


def members(body: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def read(body: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        fh = tar.extractfile(name)
        assert fh is not None
        return fh.read()


def parse(text: str) -> mc.ModelConfig:
    config = mc.ModelConfig()
    text_format.Parse(text, config)  # an unknown field raises
    return config


def test_the_same_deployment_packages_to_the_same_bytes_and_its_sums_verify(
    platform: Platform, tmp_path: Path
) -> None:
    name = platform.deployment  # the seeded one: v1's own file on onnxruntime-cpu
    first, second = fetch(platform, name), fetch(platform, name)
    assert first.status_code == 200, first.text
    assert first.content == second.content
    body = first.content
    assert first.headers["content-type"] == "application/gzip"
    assert first.headers["x-content-sha256"] == hashlib.sha256(body).hexdigest()
    assert int(first.headers["content-length"]) == len(body)
    assert f'filename="{name}.tar.gz"' in first.headers["content-disposition"]
    # gzip header: no file name (FLG.FNAME unset), time 0
    assert body[:2] == b"\x1f\x8b" and not body[3] & 0x08 and body[4:8] == b"\0\0\0\0"
    assert gzip.decompress(body)  # one member, whole

    entries = members(body)
    names = list(entries)
    assert names == sorted(names) and names[0] == name
    for m in entries.values():
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "root", "root")
        assert m.mode == (0o755 if m.isdir() or m.name.endswith(".py") else 0o644)
    files = {n.removeprefix(f"{name}/") for n, m in entries.items() if m.isfile()}
    repo = f"model_repository/{name}"
    assert files == {
        "Dockerfile",
        "README.md",
        "SHA256SUMS",
        "client.py",
        f"{repo}/config.pbtxt",
        f"{repo}/1/model.onnx",
    }
    sums = read(body, f"{name}/SHA256SUMS").decode().splitlines()
    assert [line.split("  ")[1] for line in sums] == sorted(files - {"SHA256SUMS"})
    for line in sums:
        digest, path = line.split("  ")
        assert hashlib.sha256(read(body, f"{name}/{path}")).hexdigest() == digest

    served = read(body, f"{name}/{repo}/1/model.onnx")
    assert served == platform.model_bytes  # the version's own file, by its sha256
    view = httpx.get(
        f"{platform.url}/deployments/{name}", headers=platform.headers("viewer"), timeout=30
    ).json()
    assert view["serving_version"] == 1
    assert f"`{hashlib.sha256(served).hexdigest()}`" in read(body, f"{name}/README.md").decode()
    dockerfile = read(body, f"{name}/Dockerfile").decode()
    assert f"FROM {TRITON_IMAGE}\n" in dockerfile and "COPY model_repository /models" in dockerfile
    compile(read(body, f"{name}/client.py"), "client.py", "exec")  # the example is Python

    bundle = tmp_path / "bundle.tar.gz"
    bundle.write_bytes(body)
    assert verify_bundle(bundle) == sorted(files - {"SHA256SUMS"})


@pytest.mark.parametrize(
    ("engine", "precision", "fmt", "companions", "backend"),
    [
        ("onnxruntime-cpu", "int8", "onnx", {}, "onnxruntime"),
        ("openvino-cpu", "fp16", "openvino-ir", {"model.bin": b"weights"}, "openvino"),
        ("tensorrt", "fp16", "tensorrt-plan", {}, "tensorrt"),
    ],
)
async def test_the_bundle_serves_the_deployments_artifact_with_its_batcher_and_native_backend(
    platform: Platform,
    engine: str,
    precision: str,
    fmt: str,
    companions: dict[str, bytes],
    backend: str,
    tmp_path: Path,
) -> None:
    name, artifact, blob = await served_deployment(
        platform, engine=engine, precision=precision, fmt=fmt, companions=companions
    )
    async with httpx.AsyncClient(base_url=platform.url, timeout=60) as client:
        got = await client.get(f"/deployments/{name}/package", headers=platform.headers("viewer"))
    assert got.status_code == 200, got.text
    body = got.content
    repo = f"{name}/model_repository/{name}"
    model_file = {"onnx": "model.onnx", "openvino-ir": "model.xml", "tensorrt-plan": "model.plan"}
    served = read(body, f"{repo}/1/{model_file[fmt]}")
    assert served == blob and hashlib.sha256(served).hexdigest() == artifact.sha256
    for filename, data in companions.items():
        assert read(body, f"{repo}/1/{filename}") == data

    text = read(body, f"{repo}/config.pbtxt").decode()
    config = parse(text)
    assert config.name == name
    assert list(config.version_policy.specific.versions) == [1]
    assert config.max_batch_size == BATCHER["max_batch_size"]
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == BATCHER["preferred_batch_sizes"]
    assert batching.max_queue_delay_microseconds == BATCHER["max_queue_delay_us"]
    assert [g.count for g in config.instance_group] == [BATCHER["instance_count"]]
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [3, 8, 8])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("y", [3])]
    assert config.default_model_filename == model_file[fmt]
    if backend == "tensorrt":
        assert config.platform == "tensorrt_plan"
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    else:
        assert config.backend == backend
        assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU

    if fmt == "onnx":
        # what the router's generator writes for the NGC image from the file itself
        repository = pytest.importorskip("cvops.inference_router.repository")
        path = tmp_path / "model.onnx"
        onnx.save(onnx.load_from_string(served), path)
        io_specs = repository.onnx_io(path)

        class Spec:
            engine, precision = "onnxruntime-cpu", "int8"
            max_batch_size = BATCHER["max_batch_size"]
            preferred_batch_sizes = BATCHER["preferred_batch_sizes"]
            max_queue_delay_us = BATCHER["max_queue_delay_us"]
            instance_count = BATCHER["instance_count"]

        entry = deployment_entry(name, Spec(), [engine], [1], io_specs, native=True)
        assert text == config_pbtxt(entry)


async def test_unknown_and_unserved_deployments_are_refused_with_the_error_shape(
    platform: Platform,
) -> None:
    name, _, _ = await served_deployment(
        platform, engine="onnxruntime-cpu", precision="fp32", fmt="onnx", ready=False
    )
    async with httpx.AsyncClient(base_url=platform.url, timeout=60) as client:
        viewer = platform.headers("viewer")
        unknown = await client.get("/deployments/none-such/package", headers=viewer)
        failed = await client.get(f"/deployments/{name}/package", headers=viewer)
        anonymous = await client.get(f"/deployments/{platform.deployment}/package")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "detail": "no deployment 'none-such'"}
    assert failed.status_code == 409
    assert failed.json()["error"] == "conflict"
    assert "serves nothing" in failed.json()["detail"]
    assert anonymous.status_code == 401


def test_cvops_package_writes_a_verified_bundle(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CVOPS_CONFIG", str(tmp_path / "cfg" / "config.json"))
    monkeypatch.setenv("CVOPS_TOKEN", platform.tokens["viewer"])
    name = platform.deployment
    out = tmp_path / "out"
    out.mkdir()
    runner = CliRunner()
    result = runner.invoke(
        cli, ["--url", platform.url, "package", name, "-o", str(out)], obj=CliState()
    )
    assert result.exit_code == 0, result.output
    written = out / f"{name}.tar.gz"
    assert written.read_bytes() == fetch(platform, name).content
    assert f"wrote {written} (5 files match its SHA256SUMS)" in result.stdout
    assert [p.name for p in out.iterdir()] == [written.name]  # no .part left behind

    missing = runner.invoke(
        cli, ["--url", platform.url, "package", "none-such", "-o", str(out)], obj=CliState()
    )
    assert missing.exit_code == 1
    assert "not_found: no deployment 'none-such'" in missing.stderr


def test_bundles_and_the_compose_file_run_one_triton_image() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    images = re.findall(r"image:\s*(nvcr\.io/nvidia/tritonserver:\S+)", compose)
    assert images == [TRITON_IMAGE]
