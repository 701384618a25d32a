"""Test and benchmark helpers: tiny ONNX CNNs, free ports, a router child process, and the
events that register and deploy a model (real events, real object store).

torch is imported only by ``build_cnn_onnx``; the router itself never needs it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import numpy as np

from cvops.contracts import Event, Lineage, Stamp, TensorSpec, decode, subject_token
from cvops.contracts.deployment import Canary, DeploymentRequested, DeploymentRetireRequested
from cvops.contracts.identity import TokenIssued, UserCreated
from cvops.contracts.registry import ModelVersionAdded
from cvops.core import STREAM, ArtifactStore, Bus, Settings
from cvops.testing.core import start_service


def build_cnn_onnx(
    path: Path, *, size: int = 32, channels: int = 3, classes: int = 10, seed: int = 0
) -> Path:
    """Export a small random-weight CNN (dynamic batch) to one self-contained ONNX file."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    stride = 2 if size > 64 else 1
    model = nn.Sequential(
        nn.Conv2d(channels, 16, 3, stride=stride, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, classes),
    )
    return export_onnx(model, path, size=size, channels=channels)


def export_onnx(model: Any, path: Path, *, size: int, channels: int = 3) -> Path:
    """torch 2.13's dynamo exporter with a dynamic batch; a sidecar ``.onnx.data`` is
    folded back in so the artifact is one file."""
    import onnx
    import torch

    model = model.eval()
    example = torch.randn(2, channels, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with tempfile.TemporaryDirectory() as tmp:
        exported = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        raw = Path(tmp) / "model.onnx"
        assert exported is not None
        exported.save(str(raw))
        proto = onnx.load(str(raw))  # pulls a sidecar .onnx.data back in
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path), save_as_external_data=False)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def router_settings(base: Settings, home: Path) -> Settings:
    """``base`` with a fresh home and free ports for the router and its tritonserver."""
    import msgspec

    ports = [free_port() for _ in range(6)]
    return msgspec.structs.replace(
        base,
        home=str(home),
        router_http_port=ports[0],
        router_grpc_port=ports[1],
        router_metrics_port=ports[2],
        triton_http_port=ports[3],
        triton_grpc_port=ports[4],
        triton_metrics_port=ports[5],
        log_json=True,
    )


class RouterProcess:
    """``python -m cvops.inference_router`` as a child; stopped by its pid."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed = False  # set when SIGTERM did not stop it in time

    @property
    def http(self) -> str:
        return f"127.0.0.1:{self.settings.router_http_port}"

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.settings.router_grpc_port}"

    @property
    def metrics(self) -> str:
        return f"127.0.0.1:{self.settings.router_metrics_port}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.settings.triton_http_port}"

    @property
    def triton_grpc(self) -> str:
        return f"127.0.0.1:{self.settings.triton_grpc_port}"

    def start(self, timeout: float = 90.0) -> RouterProcess:
        self.proc = start_service("cvops.inference_router", self.settings, self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited: {self.log_tail()}")
            if self.get("/v2/health/ready")[0] == 200:
                return self
            time.sleep(0.1)
        raise RuntimeError(f"router not ready in {timeout}s: {self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def get(self, path: str, timeout: float = 5.0, token: str | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return http_call("GET", f"http://{self.http}{path}", headers=headers, timeout=timeout)

    def status(self, token: str | None = None) -> dict[str, Any]:
        """``/v1/status`` (without a token: public deployments only)."""
        code, body = self.get("/v1/status", token=token)
        assert code == 200, body
        return json.loads(body)

    def triton_pid(self) -> int | None:
        for inst in self.status()["instances"]:
            if inst.get("pid"):
                return int(inst["pid"])
        return None

    def wait_model_ready(self, name: str, version: int | None = None, timeout: float = 60) -> None:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version else "") + "/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.get(path)[0] == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} not ready in {timeout}s: {self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (the router stops its tritonserver), SIGKILL what is left."""
        if self.proc is None or self.proc.poll() is not None:
            return
        triton = None
        try:
            triton = self.triton_pid()
        except (AssertionError, OSError, ValueError, KeyError):
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.killed = True
        if triton is not None:
            try:
                os.killpg(triton, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def http_call(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


# -- events -----------------------------------------------------------------------------


def stamp(actor: str = "admin") -> Stamp:
    return Stamp(now=datetime.now(UTC), actor=actor, correlation_id=f"test-{uuid.uuid4()}")


async def ensure_user(bus: Bus, username: str, role: str = "admin") -> None:
    await bus.publish(
        UserCreated(
            **stamp(username).envelope(f"user/{username}"),
            username=username,
            role=role,  # type: ignore[arg-type]
            password_hash="not-a-real-hash",
        )
    )


async def issue_token(
    bus: Bus, username: str, secret: str, *, expires_at: str | None = None
) -> str:
    """Publish ``identity.token_issued`` for ``secret``; returns the token id."""
    import hashlib

    token_id = uuid.uuid4().hex[:12]
    await bus.publish(
        TokenIssued(
            **stamp(username).envelope(f"token/{token_id}"),
            username=username,
            token_id=token_id,
            token_sha256=hashlib.sha256(secret.encode()).hexdigest(),
            kind="session" if expires_at else "api",
            expires_at=expires_at,
        )
    )
    return token_id


async def add_model_version(
    bus: Bus,
    model_name: str,
    version: int,
    onnx_path: Path,
    *,
    hyperparameters: dict[str, Any] | None = None,
    inputs: list[TensorSpec] | None = None,
    outputs: list[TensorSpec] | None = None,
) -> int:
    """Store the file in the object store and publish ``registry.model_version_added``."""
    from cvops.inference_router.repository import onnx_io

    ref = await ArtifactStore(bus).put_file(onnx_path, filename=onnx_path.name)
    if inputs is None or outputs is None:
        inputs, outputs = onnx_io(onnx_path)
    published = await bus.publish(
        ModelVersionAdded(
            **stamp("registry").envelope(f"version/{model_name}/{version}/{ref.sha256}"),
            model_name=model_name,
            version=version,
            upload_id=uuid.uuid4().hex,
            artifact=ref,
            format="onnx",
            inputs=inputs,
            outputs=outputs,
            parameter_count=0,
            lineage=Lineage(hyperparameters=hyperparameters or {}),
        )
    )
    return published.seq


async def request_deployment(
    bus: Bus,
    deployment: str,
    model_name: str,
    version: int,
    *,
    actor: str = "admin",
    canary: tuple[int, float] | Canary | None = None,
    public: bool = True,
    **fields: Any,
) -> DeploymentRequested:
    """Publish ``deployment.requested`` (``fields``: engine, precision, served, batching)."""
    if isinstance(canary, tuple):
        canary = Canary(model_version=canary[0], weight_percent=canary[1])
    event = DeploymentRequested(
        **stamp(actor).envelope(f"deploy/{deployment}/{version}"),
        deployment=deployment,
        model_name=model_name,
        version=version,
        canary=canary,
        public=public,
        **fields,
    )
    await bus.publish(event)
    return event


async def request_retirement(bus: Bus, deployment: str, actor: str = "admin") -> None:
    await bus.publish(
        DeploymentRetireRequested(
            **stamp(actor).envelope(f"retire/{deployment}"), deployment=deployment
        )
    )


# -- reading the log, loading the router ---------------------------------------------


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a sync fixture."""
    return asyncio.run(coro)


async def wait_event(
    bus: Bus, deployment: str, name: str, after: int = 0, timeout: float = 30
) -> Event:
    """The newest ``deployment.<name>`` event of a deployment with a sequence > ``after``."""
    return await _first_of(bus, deployment, (name,), after, timeout)


async def wait_outcome(bus: Bus, deployment: str, after: int, timeout: float = 60) -> Event:
    """The first ``deployment.ready`` or ``deployment.failed`` of a deployment after ``after``."""
    return await _first_of(bus, deployment, ("ready", "failed"), after, timeout)


async def _first_of(
    bus: Bus, deployment: str, names: tuple[str, ...], after: int, timeout: float
) -> Event:
    token = subject_token(f"deployment-{deployment}")
    subjects = [f"cvops.evt.deployment.{token}.{n}" for n in names]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for subject in subjects:
            seq = await bus.last_subject_seq(subject)
            if seq > after:
                msg = await bus.js.get_msg(STREAM, seq)
                event = decode(msg.data or b"")
                assert isinstance(event, Event)
                return event
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no {' or '.join(subjects)} after seq {after}")


def binary_request(x: np.ndarray, name: str = "input") -> tuple[bytes, dict[str, str]]:
    """A KServe binary-tensor request body (what tritonclient sends)."""
    import tritonclient.http as triton_http

    inp = triton_http.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    out = triton_http.InferRequestedOutput("logits", binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body([inp], [out])
    headers = {"Content-Type": "application/octet-stream"}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    return body, headers


def served_version(body: bytes, header_length: str | None) -> str:
    head = body[: int(header_length)] if header_length else body
    return str(json.loads(head)["model_version"])


@dataclass
class Outcomes:
    """What a load run saw: status codes (or error kinds), versions, latencies."""

    codes: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.codes.values())


async def hammer(
    url: str,
    body: bytes,
    headers: dict[str, str],
    stop: asyncio.Event,
    outcomes: Outcomes,
    *,
    concurrency: int = 4,
    timeout_s: float = 10.0,
) -> None:
    """Send requests until ``stop``; every one must end within ``timeout_s``."""

    async def worker(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            start = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    data = await resp.read()
                    outcomes.codes[str(resp.status)] += 1
                    if resp.status == 200:
                        length = resp.headers.get("Inference-Header-Content-Length")
                        outcomes.versions[served_version(data, length)] += 1
                    elif resp.status == 503:
                        assert resp.headers.get("Retry-After"), "a 503 must say when to retry"
            except TimeoutError:
                outcomes.codes["timeout"] += 1
            except aiohttp.ClientError as err:
                outcomes.codes[type(err).__name__] += 1
            outcomes.slowest_s = max(outcomes.slowest_s, time.perf_counter() - start)

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


# -- a module's setup: users, a model, a public and a private deployment ----------------


class Names:
    """A module's users, model and deployments (unique per module: the NATS is shared)."""

    def __init__(self, tag: str) -> None:
        self.admin = f"admin-{tag}"
        self.viewer = f"viewer-{tag}"
        self.model = f"cnn-{tag}"
        self.public = f"digits-{tag}"
        self.private = f"private-{tag}"
        self.unknown = f"never-deployed-{tag}"


def deploy_public_and_private(
    router: RouterProcess,
    settings: Settings,
    names: Names,
    models: list[Path],
    token: str,
    wait_private_ready: Callable[[RouterProcess, str, str], None],
    hyperparameters: dict[str, Any] | None = None,
    **batching: Any,
) -> RouterProcess:
    """``models`` registered as versions 1, 2...; version 1 deployed public and not public;
    ``token`` an API token of a viewer."""

    async def given() -> None:
        bus = await Bus.connect(settings, name="test-setup")
        try:
            await ensure_user(bus, names.admin, "admin")
            await ensure_user(bus, names.viewer, "viewer")
            for version, path in enumerate(models, start=1):
                await add_model_version(
                    bus, names.model, version, path, hyperparameters=hyperparameters
                )
            await issue_token(bus, names.viewer, token)
            for name, public in ((names.public, True), (names.private, False)):
                await request_deployment(
                    bus, name, names.model, 1, actor=names.admin, public=public, **batching
                )
        finally:
            await bus.close()

    run(given())
    router.wait_model_ready(names.public)
    wait_private_ready(router, names.private, token)
    return router
