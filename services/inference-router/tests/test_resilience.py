"""Faults on a real tritonserver: kill -9 under load, and a router restart.

Requests sent while Triton is gone either succeed or get a retryable 503 (HTTP) /
UNAVAILABLE (gRPC) quickly; none hangs. The router restarts Triton and loads the
deployments again; a restarted router reloads its deployments from its projection.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_grpc_aio
from tritonclient.utils import InferenceServerException

from cvops.contracts.deployment import DeploymentDegraded, DeploymentReady
from cvops.core import Bus, Settings, local
from cvops.testing import router as t
from cvops.testing.router import Outcomes, binary_request, hammer, run, wait_event

REQUEST_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def deployment(
    router: t.RouterProcess, base_settings: Settings, tag: str, onnx_models: dict[str, Path]
) -> str:
    name, admin = f"resilient-{tag}", f"admin-{tag}"

    async def given() -> None:
        bus = await Bus.connect(base_settings, name="test-setup")
        try:
            await t.ensure_user(bus, admin, "engineer")
            await t.add_model_version(bus, f"cnn-{tag}", 1, onnx_models["v1"])
            await t.request_deployment(bus, name, f"cnn-{tag}", 1, actor=admin, public=True)
        finally:
            await bus.close()

    run(given())
    router.wait_model_ready(name)
    return name


@pytest.mark.faults  # a kill -9 scenario: ./justw faults (tests/faults/README.md)
async def test_kill_9_of_tritonserver_under_load_fails_fast_and_recovers(
    router: t.RouterProcess, deployment: str, bus: Bus
) -> None:
    x = np.ones((1, 3, 32, 32), np.float32)
    body, headers = binary_request(x)
    url = f"http://{router.http}/v2/models/{deployment}/infer"
    stop = asyncio.Event()
    http = Outcomes()
    grpc_codes: dict[str, int] = {}
    load = asyncio.create_task(
        hammer(url, body, headers, stop, http, concurrency=4, timeout_s=REQUEST_TIMEOUT_S)
    )
    grpc_load = asyncio.create_task(_grpc_load(router.grpc, deployment, x, stop, grpc_codes))
    await asyncio.sleep(0.5)
    first = await bus.last_seq()
    pid = router.triton_pid()
    assert pid is not None
    assert _status_row(router).pid == pid  # what `./justw status` lists
    os.kill(pid, signal.SIGKILL)

    degraded = await wait_event(bus, deployment, "degraded", after=first)
    assert isinstance(degraded, DeploymentDegraded)
    ready = await wait_event(bus, deployment, "ready", after=first)
    assert isinstance(ready, DeploymentReady)

    def recovered() -> bool:
        return (
            router.triton_pid() not in (None, pid)
            and router.get(f"/v2/models/{deployment}/ready")[0] == 200
        )

    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(recovered):
        assert time.monotonic() < deadline, router.log_tail()
        await asyncio.sleep(0.1)
    before = http.codes["200"]
    await asyncio.sleep(1.0)  # keep loading the restarted server
    stop.set()
    await asyncio.gather(load, grpc_load)

    assert set(http.codes) <= {"200", "503"}, http.codes
    assert http.codes["503"] > 0, "the kill went unnoticed"
    assert http.codes["200"] > before, "no success after the restart"
    assert http.slowest_s < REQUEST_TIMEOUT_S
    assert set(grpc_codes) <= {"OK", "StatusCode.UNAVAILABLE"}, grpc_codes
    assert grpc_codes.get("OK", 0) > 0
    assert router.status()["instances"][0]["restarts"] == 1
    row = _status_row(router)
    assert (row.pid, row.healthy) == (router.triton_pid(), True), row


def _status_row(router: t.RouterProcess) -> local.Row:
    """The launcher's status row of the supervised tritonserver."""
    s = router.settings
    rows = {r.process: r for r in local.status_rows(s, local.Layout.of(s))}
    row = rows[local.TRITON]
    assert row.ports == (s.triton_http_port, s.triton_grpc_port, s.triton_metrics_port), row
    return row


async def _grpc_load(
    address: str, model: str, x: np.ndarray, stop: asyncio.Event, codes: dict[str, int]
) -> None:
    client = triton_grpc_aio.InferenceServerClient(address)
    try:
        while not stop.is_set():
            inp = triton_grpc_aio.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            try:
                await client.infer(model, [inp], client_timeout=REQUEST_TIMEOUT_S)
                key = "OK"
            except InferenceServerException as err:
                key = str(err.status())
                if key == "StatusCode.UNAVAILABLE":
                    await asyncio.sleep(0.01)
            codes[key] = codes.get(key, 0) + 1
    finally:
        await client.close()


def test_restarted_router_reloads_its_deployments(router: t.RouterProcess, deployment: str) -> None:
    router.stop()
    assert not router.killed
    router.start()
    router.wait_model_ready(deployment, timeout=30)
    body, headers = binary_request(np.ones((2, 3, 32, 32), np.float32))
    url = f"http://{router.http}/v2/models/{deployment}/infer"
    assert t.http_call("POST", url, body, headers)[0] == 200
