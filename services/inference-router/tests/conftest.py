"""Router test fixtures: tiny ONNX CNNs (built once), one router + tritonserver per module."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cvops.core import Settings, load_settings
from cvops.testing.core import NatsServer
from cvops.testing.router import Names, RouterProcess, build_cnn_onnx, http_call, router_settings


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
def base_settings(
    nats_server: NatsServer, data_plane: str, engine_threads: int
) -> Iterator[Settings]:
    home = Path(tempfile.mkdtemp(prefix="cvops-router-"))
    try:
        base = load_settings(
            {},
            nats_url=nats_server.url,
            home=str(home),
            log_json=True,
            router_data_plane=data_plane,
            router_engine_threads=engine_threads,
        )
        yield router_settings(base, home / "home")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def data_plane() -> str:
    """Who answers the router's HTTP port: nginx where it is installed (a module overrides
    this to run its tests on both)."""
    return "auto"


@pytest.fixture(scope="module")
def engine_threads() -> int:
    """The router's ``router_engine_threads`` (0: the runtime's choice; a module may set it)."""
    return 0


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


@pytest.fixture(scope="session")
def wait_private_ready() -> Callable[[RouterProcess, str, str], None]:
    """Wait until a non-public deployment is ready: its ``/ready`` needs the bearer token."""

    def wait(router: RouterProcess, name: str, token: str, timeout: float = 60) -> None:
        url = f"http://{router.http}/v2/models/{name}/ready"
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if http_call("GET", url, headers=headers)[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} not ready in {timeout}s: {router.log_tail()}")

    return wait


@pytest.fixture(scope="module")
def names(tag: str) -> Names:
    return Names(tag)
