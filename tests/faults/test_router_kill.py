"""kill -9 of ``python -m cvops.inference_router`` under load (HTTP inference from 4 clients),
on a NATS of the test's own. While it is gone requests fail fast (connection refused, never
a hang); its tritonserver dies with it (PR_SET_PDEATHSIG, no orphan holding the ports); the
restarted router serves the deployment again from its projection; no event id is in the
log twice, the deployment is still one deployment, and the router's projection rebuilt from
the log equals the live one.

The kill -9 of the tritonserver under load is services/inference-router/tests/
test_resilience.py's."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cvops.contracts.deployment import DeploymentReady, DeploymentRequested
from cvops.core import Bus
from cvops.core.natsd import pid_alive
from cvops.inference_router import projection as router_projection
from cvops.testing import router as t
from cvops.testing.faults import (
    KillableNats,
    read_log,
    rebuilt_equals_live,
    repeated_ids,
    wait_checkpoint,
)
from cvops.testing.router import Outcomes, binary_request, hammer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

REQUEST_TIMEOUT_S = 10.0
DOWN = {"ClientConnectorError", "ServerDisconnectedError", "ClientOSError", "503"}


async def test_router_killed_under_load_fails_fast_and_serves_again_after_restart(
    nats: KillableNats, fault_bus: Bus, tmp_path: Path
) -> None:
    settings = t.router_settings(nats.settings(tmp_path / "base"), tmp_path / "router")
    router = t.RouterProcess(settings, tmp_path / "router.log")
    model = t.build_cnn_onnx(tmp_path / "v1.onnx", size=32, seed=1)
    await t.ensure_user(fault_bus, "admin-faults", "engineer")
    await t.add_model_version(fault_bus, "cnn-faults", 1, model)
    await t.request_deployment(
        fault_bus, "faults", "cnn-faults", 1, actor="admin-faults", public=True
    )
    body, headers = binary_request(np.ones((1, 3, 32, 32), np.float32))
    url = f"http://{router.http}/v2/models/faults/infer"
    stop = asyncio.Event()
    load = Outcomes()
    t0 = time.monotonic()
    try:
        await asyncio.to_thread(router.start)
        await asyncio.to_thread(router.wait_model_ready, "faults")
        loader = asyncio.create_task(
            hammer(url, body, headers, stop, load, concurrency=4, timeout_s=REQUEST_TIMEOUT_S)
        )
        await asyncio.sleep(1.0)
        served_before = load.codes["200"]
        assert served_before > 0, (load.codes, router.log_tail())
        triton = router.triton_pid()
        assert router.proc is not None and triton is not None
        os.kill(router.proc.pid, signal.SIGKILL)
        router.proc.wait(10)
        killed_at = time.monotonic() - t0
        deadline = time.monotonic() + 30
        while pid_alive(triton):  # it follows its router (PR_SET_PDEATHSIG)
            assert time.monotonic() < deadline, "tritonserver outlived its router"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # the load meets a dead port
        failed_while_down = sum(n for code, n in load.codes.items() if code != "200")
        await asyncio.to_thread(router.start)
        await asyncio.to_thread(router.wait_model_ready, "faults", None, 60)
        back_at = time.monotonic() - t0
        served_mid = load.codes["200"]
        await asyncio.sleep(1.0)
        stop.set()
        await loader
        p = router_projection
        db = p.db_path(settings)
        await wait_checkpoint(db, p.projection.name, p.SUBJECTS, fault_bus)
    finally:
        stop.set()
        router.stop()
    assert not router.killed, router.log_tail()
    assert set(load.codes) <= {"200", *DOWN}, load.codes
    assert failed_while_down > 0, "the kill went unnoticed"
    assert load.codes["200"] > served_mid, "nothing served after the restart"
    assert load.slowest_s < REQUEST_TIMEOUT_S  # fails fast, never hangs
    log = await read_log(fault_bus)
    assert not repeated_ids(log), repeated_ids(log)
    kinds = Counter(e.tag() for _, e in log if e.tag().startswith("deployment."))
    assert sum(isinstance(e, DeploymentRequested) for _, e in log) == 1
    assert any(isinstance(e, DeploymentReady) for _, e in log)
    live, rebuilt = await rebuilt_equals_live(fault_bus, p.projection, db, p.SUBJECTS, tmp_path)
    assert rebuilt == live
    print(
        f"\nFAULT router kill -9 under load (4 HTTP clients) at {killed_at:.1f} s, serving "
        f"again at {back_at:.1f} s; requests {dict(load.codes)}, slowest "
        f"{load.slowest_s:.2f} s; deployment events {dict(kinds)}; duplicate ids 0; "
        f"rebuild equal; total {time.monotonic() - t0:.1f} s"
    )
