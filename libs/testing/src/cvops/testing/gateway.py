"""Run the real gateway in-process for tests: uvicorn in a thread on a loopback port.

Used by the gateway's tests and by cross-service scenarios; cheap argon2 parameters.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import uvicorn
from argon2 import PasswordHasher
from litestar import Litestar

from cvops.core import Settings
from cvops.gateway.app import create_app
from cvops.gateway.core import Gateway
from cvops.gateway.openapi import is_viewer_page

# argon2 with the cheapest parameters: the tests check behaviour, not hash strength
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
PASSWORD = "correct-horse-battery"  # every test user's password


class RunningGateway:
    """``create_app(settings)`` served by uvicorn on a loopback port in its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.settings = msgspec.structs.replace(settings, gateway_port=port)
        self.url = f"http://127.0.0.1:{port}"
        self.app: Litestar = create_app(self.settings, password_hasher=FAST_HASHER)
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve(sockets=[self.sock])

    @property
    def service(self) -> Gateway:
        """What every context's service shares: settings, bus, projection runner, metrics."""
        return self.app.state.gateway  # type: ignore[no-any-return]

    def start(self) -> RunningGateway:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Shut down as on SIGTERM: open event feeds end, then uvicorn stops."""
        service = getattr(self.app.state, "gateway", None)
        if self.loop is not None and service is not None:
            self.loop.call_soon_threadsafe(service.stopping.set)
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@dataclass
class Platform:
    """A running gateway and what its log was seeded with."""

    gateway: RunningGateway
    tag: str
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer token
    users: dict[str, str] = field(default_factory=dict)  # role -> username
    model: str = ""
    model_bytes: bytes = b""
    dataset: str = ""
    upload_id: str = ""
    job_id: str = ""  # a training job by the admin
    deployment: str = ""  # a ready deployment of ``model`` v1
    conversion_id: str = ""  # a conversion of ``model`` v1 that produced ONNX
    benchmark_id: str = ""  # a benchmark of ``model`` v1 with one row
    password: str = PASSWORD

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def settings(self) -> Settings:
        return self.gateway.settings

    def headers(self, role: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}


def observed_statuses(gateway: RunningGateway) -> dict[tuple[str, str], set[int]]:
    """Every status the gateway has answered, by (method, route template): what the tests that
    used it observed, read from its own request counter (``cvops_gateway_requests_total``)."""
    observed: dict[tuple[str, str], set[int]] = {}
    for metric in gateway.service.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "cvops_gateway_requests_total" and sample.value > 0:
                key = (sample.labels["method"], sample.labels["route"])
                observed.setdefault(key, set()).add(int(sample.labels["status"]))
    return observed


def undeclared_statuses(
    document: Mapping[str, Any], observed: Mapping[tuple[str, str], Iterable[int]]
) -> list[str]:
    """The observed statuses an OpenAPI document does not declare for their operation.

    ``observed`` maps (method, route template) to statuses; a template may carry Litestar's
    parameter types (``/jobs/{job_id:str}``). One line per gap, like ``GET /jobs/{job_id}:
    404`` or ``GET /x: not in the document``. Not held to the document: requests no route
    matched, 405 (a method the route does not have), server failures (5xx) and the pages
    under /schema that render the document for people.
    """
    gaps: list[str] = []
    for (method, template), statuses in sorted(observed.items()):
        path = re.sub(r":[^}]*}", "}", template)
        checked = {status for status in statuses if status < 500 and status != 405}
        if not checked or path == "unmatched" or method == "OPTIONS" or is_viewer_page(path):
            continue
        operation = document.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None:
            gaps.append(f"{method} {path}: not in the document")
            continue
        declared = {int(status) for status in operation.get("responses", {})}
        gaps.extend(f"{method} {path}: {status}" for status in sorted(checked - declared))
    return gaps
