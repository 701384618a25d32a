"""Router test fixtures: tiny ONNX CNNs (built once), one router + tritonserver per module."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cvops.core import Settings, load_settings
from cvops.testing.core import NatsServer
from cvops.testing.router import RouterProcess, build_cnn_onnx, router_settings


@pytest.fixture(scope="session")
def onnx_models() -> Iterator[dict[str, Path]]:
    """Two 32x32 CNNs that differ in weights (versions 1 and 2) and a corrupt file."""
    root = Path(tempfile.mkdtemp(prefix="cvops-router-models-"))
    try:
        models = {
            "v1": build_cnn_onnx(root / "v1.onnx", size=32, seed=1),
            "v2": build_cnn_onnx(root / "v2.onnx", size=32, seed=2),
        }
        corrupt = root / "corrupt.onnx"
        corrupt.write_bytes(b"\x08\x07 this is not an ONNX protobuf" * 10)
        models["corrupt"] = corrupt
        yield models
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def base_settings(nats_server: NatsServer) -> Iterator[Settings]:
    home = Path(tempfile.mkdtemp(prefix="cvops-router-"))
    try:
        base = load_settings({}, nats_url=nats_server.url, home=str(home), log_json=True)
        yield router_settings(base, home / "home")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def tag() -> str:
    """Names unique to a module: the session's NATS is shared by every test."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def router(base_settings: Settings) -> Iterator[RouterProcess]:
    proc = RouterProcess(base_settings, Path(base_settings.home) / "router.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
    assert not proc.killed, f"the router did not stop on SIGTERM: {proc.log_tail()}"
