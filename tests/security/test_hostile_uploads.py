"""Hostile files uploaded through the gateway, judged by the real registry process: each is
refused with a 422 and the registry's reason, its code never runs, and nothing of it stays —
no bytes in the object store, no model or data set in the gateway's lists.

The same builders are judged in-process by ``services/registry/tests`` (the inspectors'
reasons); a raw pickle, junk bytes and a zip slip through the gateway are in
``services/gateway/tests/test_uploads_with_registry.py``. This module sends the rest of the
issue's list end to end: torch.save, TorchScript and ``.pt2`` archives carrying code, an ONNX
file pointing at a server file, an absolute path, a symbolic link, a zip bomb, a PNG bomb
and an npz of pickled objects.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cvops.core import ArtifactStore, Bus
from cvops.testing import registry as samples
from cvops.testing.core import start_service
from cvops.testing.gateway_process import GatewayProcess
from cvops.testing.registry import artifact_gone

pytestmark = pytest.mark.slow

Build = Callable[[Path], bytes]  # given a marker path (created only if the payload runs)

MODELS: list[tuple[str, str, Build, str]] = [
    ("torch-save", "ckpt.pt", samples.torch_save_checkpoint, "torch.save"),
    ("torchscript-code", "model.pt", samples.torchscript_with_pickle, "would import"),
    ("pt2-shape-code", "model.pt2", samples.exported_program_with_code, "shape expression"),
    ("pt2-pickled-weight", "model.pt2", samples.exported_program_with_pickled_weight, "pickle"),
    (
        "pt2-compiled-code",
        "model.pt2",
        lambda _m: samples.exported_program_with_compiled_code(),
        "aotinductor",
    ),
    (
        "onnx-reads-server-file",
        "model.onnx",
        lambda _m: samples.onnx_with_external_tensor("../../../../../../etc/passwd"),
        "external data",
    ),
]
DATASETS: list[tuple[str, str, Build, str]] = [
    ("absolute-path", "data.zip", lambda _m: samples.absolute_path_zip(), "unsafe path"),
    ("symlink", "data.zip", lambda _m: samples.symlink_zip(), "symbolic link"),
    ("zip-bomb", "data.zip", lambda _m: samples.zip_bomb(), "compression ratio"),
    ("png-bomb", "data.zip", lambda _m: samples.decompression_bomb_zip(), "decompression bomb"),
    ("pickled-objects", "data.npz", samples.object_array_npz, "object arrays are refused"),
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway that waits for verdicts, and the registry process beside it."""
    home = tmp_path_factory.mktemp("hostile-uploads")
    gateway = GatewayProcess(home, upload_verdict_timeout_s=120, max_upload_bytes=8 * 1024**2)
    registry: subprocess.Popen[bytes] | None = None
    try:
        gateway.start().add_users()
        assert gateway.settings is not None
        settings = msgspec.structs.replace(
            gateway.settings, home=str(home / "registry"), registry_metrics_port=0
        )
        registry = start_service("cvops.registry", settings, home / "registry.log")
        yield gateway
    finally:
        if registry is not None:
            registry.terminate()
            try:
                registry.wait(30)
            except subprocess.TimeoutExpired:
                registry.kill()
                registry.wait(10)
        gateway.stop()


def refused_and_gone(
    live: GatewayProcess, kind: str, filename: str, blob: bytes, reason: str
) -> None:
    """Upload ``blob``; it must be rejected for ``reason`` and leave nothing behind."""
    name = f"hostile-{uuid.uuid4().hex[:8]}"
    with live.client() as client:
        response = client.post(
            f"/{kind}s",
            data={"name": name},
            files={"file": (filename, blob)},
            headers=live.headers("engineer"),
            timeout=180,
        )
        assert response.status_code == 422, response.text
        result = response.json()
        assert result["status"] == "rejected" and reason in result["reason"], result
        viewer = live.headers("viewer")
        assert client.get(f"/{kind}s/{name}", headers=viewer).status_code == 404
        listed = client.get(f"/{kind}s", headers=viewer).json()
        assert name not in [item["name"] for item in listed]
        upload = client.get(f"/uploads/{result['upload_id']}", headers=viewer).json()
        assert upload["status"] == "rejected"

    async def bytes_gone() -> bool:
        bus = await Bus.connect(live.settings, name="security-test")  # type: ignore[arg-type]
        try:
            return await artifact_gone(ArtifactStore(bus), hashlib.sha256(blob).hexdigest())
        finally:
            await bus.close()

    assert asyncio.run(bytes_gone()), "the refused bytes are still in the object store"


@pytest.mark.parametrize(
    ("filename", "build", "reason"), [m[1:] for m in MODELS], ids=[m[0] for m in MODELS]
)
def test_a_model_carrying_code_is_refused_never_run_and_not_kept(
    live: GatewayProcess, tmp_path: Path, filename: str, build: Build, reason: str
) -> None:
    marker = tmp_path / "pwned"
    refused_and_gone(live, "model", filename, build(marker), reason)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("filename", "build", "reason"), [d[1:] for d in DATASETS], ids=[d[0] for d in DATASETS]
)
def test_a_hostile_dataset_is_refused_and_not_kept(
    live: GatewayProcess, tmp_path: Path, filename: str, build: Build, reason: str
) -> None:
    marker = tmp_path / "pwned"
    refused_and_gone(live, "dataset", filename, build(marker), reason)
    assert not marker.exists()


def test_nothing_hostile_was_registered(live: GatewayProcess) -> None:
    """After every refusal above, no model and no data set of this gateway's came from them."""
    with live.client() as client:
        viewer = live.headers("viewer")
        models = client.get("/models", headers=viewer).json()
        datasets = client.get("/datasets", headers=viewer).json()
    assert [m["name"] for m in models if m["name"].startswith("hostile-")] == []
    assert [d["name"] for d in datasets if d["name"].startswith("hostile-")] == []


# -- numbers beyond 64 bits in JSON bodies that name a real model and data set -----------------

TOO_BIG = (2**64, -(2**64), 2**63)


@pytest.fixture(scope="module")
def catalog(live: GatewayProcess) -> dict[str, str]:
    """A validated model (version 1) and data set, so a request naming them gets past the
    lookups to the numbers."""
    names = {"model": f"real-{uuid.uuid4().hex[:6]}", "dataset": f"real-{uuid.uuid4().hex[:6]}"}
    with live.client() as client:
        for kind, filename, blob in (
            ("model", "tiny.onnx", samples.onnx_model()),
            ("dataset", "data.npz", samples.dataset_npz()),
        ):
            made = client.post(
                f"/{kind}s",
                data={"name": names[kind]},
                files={"file": (filename, blob)},
                headers=live.headers("engineer"),
                timeout=180,
            )
            assert made.status_code == 201, made.text
    return names


def base_bodies(model: str, dataset: str) -> dict[tuple[str, str], dict[str, Any]]:
    """A body each JSON route would accept (or refuse for a reason other than a number)."""
    return {
        ("POST", "/jobs"): {"dataset": dataset, "arch": "simple-cnn", "budget": {"trials": 2}},
        ("POST", "/deployments"): {"model_name": model, "version": 1},
        ("POST", "/conversions"): {
            "model_name": model,
            "version": 1,
            "targets": ["onnx"],
            "dataset": dataset,
        },
        ("POST", "/benchmarks"): {"model_name": model, "version": 1},
    }


def integer_paths(schema: dict[str, Any], document: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Where a body of ``schema`` holds integers: property paths (an index 0 for arrays)."""
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    for alternative in schema.get("oneOf", schema.get("anyOf", [])):
        found = integer_paths(alternative, document)
        if found:
            return found
    if schema.get("type") == "integer":
        return [()]
    if schema.get("type") == "array":
        return [(0, *p) for p in integer_paths(schema.get("items", {}), document)]
    paths: list[tuple[Any, ...]] = []
    for name, prop in (schema.get("properties") or {}).items():
        paths.extend((name, *p) for p in integer_paths(prop, document))
    return paths


def with_number(body: dict[str, Any], path: tuple[Any, ...], number: int) -> dict[str, Any]:
    """A copy of ``body`` with ``number`` at ``path`` (missing objects and lists made; in a
    list, the number is its one element)."""
    copy = json.loads(json.dumps(body))
    here: Any = copy
    for key, after in itertools.pairwise(path):
        if isinstance(key, int):
            if not here:
                here.append([] if isinstance(after, int) else {})
            here = here[0]
        else:
            if not isinstance(here.get(key), (dict, list)):
                here[key] = [] if isinstance(after, int) else {}
            here = here[key]
    if isinstance(path[-1], int):
        here[:] = [number]
    else:
        here[path[-1]] = number
    return copy


def test_numbers_beyond_64_bits_in_any_json_field_are_refused_and_not_stored(
    live: GatewayProcess, catalog: dict[str, str]
) -> None:
    """Every integer field of every JSON body the document describes (read from it), set
    beyond what storage holds, on a request that names a real model and data set: a 4xx, and
    no event appended for it (an event with such a number would stop every projection)."""
    bodies = base_bodies(catalog["model"], catalog["dataset"])
    with live.client() as client:
        document = client.get("/schema/openapi.json").json()
        checked = 0
        for (method, path), body in bodies.items():
            operation = document["paths"][path][method.lower()]
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            fields = integer_paths(schema, document)
            assert fields, (method, path)
            for field_path in fields:
                for number in TOO_BIG:
                    sent = with_number(body, field_path, number)
                    response = client.request(
                        method, path, json=sent, headers=live.headers("admin")
                    )
                    where = f"{method} {path} {field_path}={number}"
                    assert 400 <= response.status_code < 500, f"{where}: {response.text[:300]}"
                    assert set(response.json()) == {"error", "detail"}, where
                    correlation_id = response.headers["x-correlation-id"]
                    feed = client.get(
                        f"/events/{correlation_id}",
                        params={"follow": "false"},
                        headers=live.headers("viewer"),
                    )
                    assert "event:" not in feed.text, f"{where} appended: {feed.text[:300]}"
                    checked += 1
        health = client.get("/health/ready")
    assert checked >= 3 * 25
    assert health.status_code == 200, health.text  # no projection stuck on a number
