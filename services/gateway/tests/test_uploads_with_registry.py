"""Uploads through the gateway with the real registry running (``python -m cvops.registry``):
verdicts come back as 201 validated / 422 rejected, and refused bytes leave nothing stored.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import subprocess
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest

from cvops.core import ArtifactStore, Bus
from cvops.testing.core import start_service
from cvops.testing.gateway import Platform, observed_statuses, undeclared_statuses
from cvops.testing.registry import artifact_gone

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("cvops.registry") is None, reason="cvops-registry is not installed"
)


@pytest.fixture(scope="module")
def platform(
    nats_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
    platform_factory: Callable[..., Platform],
) -> Iterator[Platform]:
    """A gateway that waits long enough for verdicts, and a registry subprocess beside it."""
    home = tmp_path_factory.mktemp("gateway-registry")
    running = platform_factory(
        nats_server.url, home, upload_verdict_timeout_s=120, max_upload_bytes=8 * 1024**2
    )
    registry_settings = msgspec.structs.replace(
        running.settings, home=str(home / "registry"), registry_metrics_port=0
    )
    registry = start_service("cvops.registry", registry_settings, home / "registry.log")
    try:
        yield running
    finally:
        running.gateway.stop()
        registry.terminate()
        try:
            registry.wait(30)
        except subprocess.TimeoutExpired:
            registry.kill()
            registry.wait(10)


def onnx_model(seed: int) -> bytes:
    """A tiny classifier (flatten + matmul, 3x8x8 -> 10) built with onnx.helper, no torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(seed).standard_normal((192, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def npz_dataset(images: int = 40) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    np.savez(
        buf,
        x=rng.integers(0, 255, (images, 8, 8, 3), dtype=np.uint8),
        y=np.arange(images) % 2,
    )
    return buf.getvalue()


class _RunsCode:
    """Unpickling this would create a file: proof that no user pickle was ever loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


async def upload(
    client: httpx.AsyncClient, p: Platform, kind: str, name: str, filename: str, blob: bytes
) -> httpx.Response:
    return await client.post(
        f"/{kind}s",
        data={"name": name},
        files={"file": (filename, blob)},
        headers=p.headers("engineer"),
    )


async def gone(store: ArtifactStore, blob: bytes) -> bool:
    return await artifact_gone(store, hashlib.sha256(blob).hexdigest())


async def test_valid_onnx_uploads_become_versions_one_and_two(platform: Platform) -> None:
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    first, second = onnx_model(1), onnx_model(2)
    async with httpx.AsyncClient(base_url=platform.url, timeout=180) as client:
        one = await upload(client, platform, "model", name, "tiny.onnx", first)
        assert one.status_code == 201, one.text
        assert one.json()["status"] == "validated" and one.json()["version"] == 1
        two = await upload(client, platform, "model", name, "tiny.onnx", second)
        assert two.status_code == 201 and two.json()["version"] == 2, two.text

        viewer = platform.headers("viewer")
        model = (await client.get(f"/models/{name}", headers=viewer)).json()
        assert model["latest_version"] == 2 and model["owner"] == platform.users["engineer"]
        v1 = model["versions"][0]
        assert v1["format"] == "onnx" and v1["inputs"][0]["name"] == "x"
        assert v1["parameter_count"] == 1920
        blob = await client.get(f"/models/{name}/versions/1/artifact", headers=viewer)
        assert blob.content == first


async def test_hostile_or_junk_models_are_rejected_and_not_kept(
    platform: Platform, bus: Bus, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    hostile = pickle.dumps(_RunsCode(marker))
    junk = os.urandom(5000)
    store = ArtifactStore(bus)
    async with httpx.AsyncClient(base_url=platform.url, timeout=180) as client:
        for filename, blob in (("model.pt", hostile), ("model.onnx", junk)):
            refused = await upload(client, platform, "model", "hostile", filename, blob)
            assert refused.status_code == 422, refused.text
            result = refused.json()
            assert result["status"] == "rejected" and result["reason"]
            assert await gone(store, blob)
        shown = await client.get("/models/hostile", headers=platform.headers("viewer"))
        assert shown.status_code == 404
    assert not marker.exists()


async def test_npz_dataset_is_validated_and_zip_slip_is_rejected(
    platform: Platform, bus: Bus
) -> None:
    name = f"dots-{uuid.uuid4().hex[:6]}"
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../evil/a.png", b"not really")
        zf.writestr("b/x.png", b"not really")
    async with httpx.AsyncClient(base_url=platform.url, timeout=180) as client:
        ok = await upload(client, platform, "dataset", name, "dots.npz", npz_dataset())
        assert ok.status_code == 201, ok.text
        shown = (await client.get(f"/datasets/{name}", headers=platform.headers("viewer"))).json()
        assert shown["num_images"] == 40 and len(shown["classes"]) == 2
        assert shown["owner"] == platform.users["engineer"]

        refused = await upload(client, platform, "dataset", name, "slip.zip", slip.getvalue())
        assert refused.status_code == 422 and refused.json()["reason"], refused.text
    assert await gone(ArtifactStore(bus), slip.getvalue())


async def test_the_document_declares_every_status_this_module_observed(
    platform: Platform,
) -> None:
    """Run last in this module: the registry's verdicts (201 validated, 422 rejected) and every
    other status the tests above got are declared in /schema/openapi.json."""
    async with httpx.AsyncClient(base_url=platform.url) as client:
        document = (await client.get("/schema/openapi.json")).json()
    assert undeclared_statuses(document, observed_statuses(platform.gateway)) == []
