"""cvops past one machine, on loopback: a 3-node NATS cluster (stream replicas 3, the users
and permissions the launcher writes), the gateway, the registry and two trainer instances
(each its own home, projection file and metrics port); a genetic search whose trials spread
over both trainers while the node that leads the event stream is killed -9, and still ends
exactly once; then two tritonservers behind one router (``CVOPS_TRITON_URL`` lists both,
``CVOPS_TRITON_BACKEND=python``) serving the job's model, each answering part of the
requests sent to the router. docs/scale-out.md describes the shape this checks.

Every process is started here and stopped by its PID; every port is a free one on
127.0.0.1. It takes minutes: ``./justw faults`` runs it, ``./justw test`` does not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton_http

from cvops.client import Client
from cvops.contracts import Event
from cvops.contracts.api import CreateDeployment, CreateJob
from cvops.contracts.deployment import DeploymentReady
from cvops.contracts.training import (
    Budget,
    GenerationCompleted,
    GenerationStarted,
    ParamSpec,
    TrainingCompleted,
    TrainingFailed,
    TrialCompleted,
    TrialFailed,
    TrialPruned,
    TrialRequested,
    TrialStarted,
)
from cvops.core import STREAM, Bus
from cvops.gateway.identity.service import CREDENTIALS_FILE
from cvops.inference_router.triton import LocalTriton, server_environment
from cvops.testing import trainer as train
from cvops.testing.cluster import NatsCluster
from cvops.testing.faults import Service, read_log, repeated_ids, services
from cvops.testing.gateway_process import free_port
from cvops.testing.router import RouterProcess, http_call
from cvops.vision.data import make_synthetic_npz

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]

DATASET = "scale-blobs"
MODEL = "scale-cnn"
DEPLOYMENT = "scaled"
CLASSES = 4
REQUESTS = 24  # inferences sent through the router


def _wait(what: str, probe: Callable[[], Any], timeout: float, diagnose: Callable[[], str]) -> Any:
    """Poll ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while (value := probe()) is None:
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s\n{diagnose()}"
        time.sleep(0.5)
    return value


async def _events(bus: Bus) -> list[Event]:
    """The whole log, read again when a node's loss interrupts the read."""
    for attempt in range(10):
        try:
            return [e for _, e in await asyncio.wait_for(read_log(bus), 20)]
        except Exception:  # a consumer on the killed node; the cluster elects another
            if attempt == 9:
                raise
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


def _of_job(events: list[Event], job_id: str, kind: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind) and getattr(e, "job_id", None) == job_id]


class Tritons:
    """Two tritonservers on one model repository, started with the recipe the router's
    ``LocalTriton`` uses (its backend directory and environment), stopped by PID."""

    def __init__(self, root: Path, repository: Path, count: int = 2) -> None:
        self.repository = repository
        self.servers: list[LocalTriton] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(count):
            server = LocalTriton(
                repository=repository,
                workdir=root / f"triton-{i + 1}",
                http_port=free_port(),
                grpc_port=free_port(),
                metrics_port=free_port(),
            )
            # its python backend's shared-memory prefix is per process and generation:
            # a generation of its own keeps two servers started from one process apart
            server.generation = i + 1
            self.servers.append(server)

    @property
    def url(self) -> str:
        """``CVOPS_TRITON_URL``: each server as ``host:http:grpc:metrics``."""
        return ",".join(
            f"127.0.0.1:{s.http_port}:{s.grpc_port}:{s.metrics_port}" for s in self.servers
        )

    def start(self, timeout: float = 60) -> Tritons:
        self.repository.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            server.workdir.mkdir(parents=True, exist_ok=True)
            with open(server.log_path, "ab") as out:
                self.procs.append(
                    subprocess.Popen(
                        server.command(),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=server_environment(),
                        start_new_session=True,  # its group holds its python stubs
                    )
                )
        for server, proc in zip(self.servers, self.procs, strict=True):
            live = f"http://{server.http_url}/v2/health/live"
            deadline = time.monotonic() + timeout
            while http_call("GET", live)[0] != 200:
                assert proc.poll() is None, f"exit {proc.returncode}: {server.log_tail()}"
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
        return self

    def successes(self, deployment_models: Callable[[str], bool]) -> list[int]:
        """Per server: successful inferences of the models ``deployment_models`` accepts
        (Triton's own statistics, ``/v2/models/stats``)."""
        counts = []
        for server in self.servers:
            code, body = http_call("GET", f"http://{server.http_url}/v2/models/stats")
            assert code == 200, body
            stats = json.loads(body)["model_stats"]
            counts.append(
                sum(
                    int(s["inference_stats"]["success"]["count"])
                    for s in stats
                    if deployment_models(s["name"])
                )
            )
        return counts

    def stop(self) -> None:
        """SIGTERM each server by PID, SIGKILL its group (stubs included) after the grace."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait()
        shm = Path("/dev/shm")
        for server in self.servers:
            prefix = f"cvops{os.getpid()}g{server.generation}_"
            for leftover in shm.glob(f"{prefix}*") if shm.is_dir() else ():
                leftover.unlink(missing_ok=True)


async def test_trials_spread_over_two_trainers_a_node_dies_and_two_tritons_serve(
    tmp_path: Path,
) -> None:
    t0 = time.monotonic()
    cluster = NatsCluster(tmp_path / "cluster")
    trainer_env = {**train.TEST_ENV, "CVOPS_TRAINER_ACK_WAIT_S": "10"}
    gateway = Service(
        "cvops.gateway", cluster.settings("gateway", tmp_path / "gateway"),
        tmp_path / "gateway.log", {},
    )  # fmt: skip
    registry = Service(
        "cvops.registry", cluster.settings("registry", tmp_path / "registry"),
        tmp_path / "registry.log", {},
    )  # fmt: skip
    trainers = [
        Service(
            "cvops.trainer",
            cluster.settings("trainer", tmp_path / f"trainer-{i}"),
            tmp_path / f"trainer-{i}.log",
            trainer_env,
        )
        for i in (1, 2)
    ]
    tritons = Tritons(tmp_path, tmp_path / "models")
    router = RouterProcess(
        cluster.settings(
            "inference-router", tmp_path / "router", triton_url=tritons.url,
            triton_model_repository=str(tritons.repository), triton_backend="python",
        ),
        tmp_path / "router.log",
    )  # fmt: skip

    def logs() -> str:
        parts = [f"--- {s.log.name}\n{s.tail(2500)}" for s in (gateway, registry, *trainers)]
        return "\n".join(parts)

    try:
        cluster.start()
        with services(gateway, registry, *trainers):
            for service in (gateway, registry, *trainers):
                service.start()
            assert gateway.settings.stream_replicas == 3
            url = f"http://127.0.0.1:{gateway.settings.gateway_port}"
            _wait(
                "the gateway ready",
                lambda: True if http_call("GET", f"{url}/health/ready")[0] == 200 else None,
                120,
                logs,
            )
            creds_file = gateway.settings.home_path / CREDENTIALS_FILE
            creds = dict(
                line.split("=", 1) for line in creds_file.read_text().splitlines() if "=" in line
            )
            # the test reads the log as the reporter: a service user that appends nothing here
            bus = await Bus.connect(cluster.settings("reporter", tmp_path / "reader"), name="t")
            client = Client(url, token=creds["token"], timeout=60)
            try:
                info = await bus.js.stream_info(STREAM)
                assert info.config.num_replicas == 3
                assert info.cluster is not None and len(info.cluster.replicas or []) == 2

                # -- a genetic search through the gateway, its trials on both trainers -------
                blobs = make_synthetic_npz(tmp_path / "blobs.npz", n=160, classes=CLASSES)
                upload = await asyncio.to_thread(client.upload_dataset, blobs, DATASET)
                upload = await asyncio.to_thread(
                    _wait,
                    "the registry's verdict on the data set",
                    lambda: (
                        u
                        if (u := client.show_upload(upload.upload_id)).status != "pending"
                        else None
                    ),
                    180,
                    logs,
                )
                assert upload.status == "validated", upload
                job = await asyncio.to_thread(
                    client.create_job,
                    CreateJob(
                        dataset=DATASET, arch="simple-cnn", job_type="search",
                        budget=Budget(population=4, generations=2), epochs=1,
                        max_batches_per_epoch=3,
                        hyperparameters={"depth": 1, "batch_size": 32, "augment": 0.0},
                        search_space={
                            "width": ParamSpec(kind="float", low=0.25, high=0.5),
                            "lr": ParamSpec(kind="log_float", low=0.01, high=0.2),
                        },
                        model_name=MODEL, device="cpu", register_limit=1, seed=1,
                    ),
                )  # fmt: skip

                # kill -9 the stream's leader once generation 0 runs and a trial is done
                deadline = time.monotonic() + 240
                while True:
                    events = await _events(bus)
                    done = _of_job(events, job.job_id, TrialCompleted)
                    if _of_job(events, job.job_id, GenerationStarted) and done:
                        break
                    assert time.monotonic() < deadline, logs()
                    await asyncio.sleep(0.5)
                assert not _of_job(events, job.job_id, TrainingCompleted)
                trials_before = len(done)
                info = await bus.js.stream_info(STREAM)
                assert info.cluster is not None and info.cluster.leader
                victim = cluster.node(info.cluster.leader)
                cluster.kill9(victim)
                killed_at = time.monotonic() - t0

                deadline = time.monotonic() + 400
                while True:
                    events = await _events(bus)
                    ended = _of_job(events, job.job_id, TrainingCompleted)
                    ended += _of_job(events, job.job_id, TrainingFailed)
                    if ended:
                        break
                    for service in (gateway, registry, *trainers):
                        assert service.alive(), service.tail()
                    assert time.monotonic() < deadline, logs()
                    await asyncio.sleep(1)
                finished_at = time.monotonic() - t0
                after = await bus.js.stream_info(STREAM)
                assert after.cluster is not None and after.cluster.leader != victim.name

                # the registry's verdict on the job's model (the gateway's view of the job)
                view = await asyncio.to_thread(
                    _wait,
                    "the registered model",
                    lambda: (
                        j
                        if (j := client.show_job(job.job_id)).models
                        and all(m.status != "pending" for m in j.models)
                        else None
                    ),
                    120,
                    logs,
                )
                assert view.status == "completed", (view.reason, logs())
                assert [m.status for m in view.models] == ["validated"], view.models
                await asyncio.sleep(1.5)  # anything still in flight lands before the count
                events = await _events(bus)
                assert not repeated_ids([(0, e) for e in events])

                # exactly once: one end of the job, each trial requested once and ended once
                assert [type(e) for e in ended] == [TrainingCompleted], ended
                assert len(_of_job(events, job.job_id, TrainingCompleted)) == 1
                assert not _of_job(events, job.job_id, TrainingFailed)
                generations = _of_job(events, job.job_id, GenerationCompleted)
                assert sorted(g.generation for g in generations) == [0, 1]
                requested = Counter(e.trial_id for e in _of_job(events, job.job_id, TrialRequested))
                assert len(requested) == 8 and set(requested.values()) == {1}, requested
                outcomes = Counter(
                    e.trial_id
                    for kind in (TrialCompleted, TrialFailed, TrialPruned)
                    for e in _of_job(events, job.job_id, kind)
                )
                assert set(outcomes) == set(requested) and set(outcomes.values()) == {1}

                # which instance ran each trial: both did
                host = socket.gethostname()
                workers = {
                    f"{host}:{t.proc.pid}": f"trainer-{i}"
                    for i, t in enumerate(trainers, 1)
                    if t.proc is not None
                }
                ran = Counter(
                    workers.get(e.worker, e.worker)
                    for e in _of_job(events, job.job_id, TrialCompleted)
                )
                assert set(ran) == set(workers.values()), ran
                takes = Counter(
                    workers.get(e.worker, e.worker)
                    for e in _of_job(events, job.job_id, TrialStarted)
                )
                assert set(takes) == set(workers.values()), takes

                # the killed node comes back on its store and catches up
                cluster.start_node(victim)
                cluster.wait_healthy(cluster.nodes)
                deadline = time.monotonic() + 30
                while True:
                    back = await bus.js.stream_info(STREAM)
                    assert back.cluster is not None
                    replicas = {r.name: r for r in back.cluster.replicas or []}
                    if len(replicas) == 2 and all(r.current for r in replicas.values()):
                        break
                    assert time.monotonic() < deadline, replicas
                    await asyncio.sleep(0.5)

                # -- two tritonservers behind one router --------------------------------------
                tritons.start()
                router.start()
                _wait(
                    "both tritonservers up in the router",
                    lambda: (
                        True
                        if sum(i.get("up", False) for i in router.status()["instances"]) == 2
                        else None
                    ),
                    60,
                    router.log_tail,
                )
                asked = await bus.last_seq()
                deployed = await asyncio.to_thread(
                    client.deploy,
                    CreateDeployment(
                        model_name=MODEL, version=1, deployment=DEPLOYMENT, public=True
                    ),
                )
                assert deployed.deployment == DEPLOYMENT
                ready = await asyncio.to_thread(
                    _wait,
                    "the deployment ready",
                    lambda: (
                        d
                        if (d := client.show_deployment(DEPLOYMENT)).status in ("ready", "failed")
                        else None
                    ),
                    180,
                    router.log_tail,
                )
                assert ready.status == "ready", (ready, router.log_tail())
                readies = [
                    e
                    for e in (await _events(bus))[asked:]
                    if isinstance(e, DeploymentReady) and e.deployment == DEPLOYMENT
                ]
                assert readies and sorted(readies[-1].instances) == sorted(
                    i["name"] for i in router.status()["instances"]
                ), (readies, router.status())
                assert len(readies[-1].instances) == 2

                version = await asyncio.to_thread(client.show_version, MODEL, 1)
                (inp,), (out,) = version.inputs, version.outputs
                shape = [1, *(int(d) for d in inp.shape[1:])]
                x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
                before = tritons.successes(lambda name: not name.startswith("_"))
                infer = triton_http.InferenceServerClient(router.http, network_timeout=60)
                try:
                    first = None
                    for _ in range(REQUESTS):
                        tensor = triton_http.InferInput(inp.name, shape, "FP32")
                        tensor.set_data_from_numpy(x)
                        result = infer.infer(DEPLOYMENT, [tensor])
                        logits = result.as_numpy(out.name)
                        assert logits is not None and logits.shape == (1, CLASSES)
                        first = logits if first is None else first
                        np.testing.assert_allclose(logits, first, rtol=1e-5, atol=1e-5)
                finally:
                    infer.close()
                served = [
                    a - b
                    for a, b in zip(
                        tritons.successes(lambda name: not name.startswith("_")), before,
                        strict=True,
                    )
                ]  # fmt: skip
                assert sum(served) == REQUESTS and all(n > 0 for n in served), served
                code, metrics = http_call("GET", f"http://{router.metrics}/metrics")
                assert code == 200
                for server in tritons.servers:
                    assert f"127.0.0.1:{server.http_port}".encode() in metrics
            finally:
                client.close()
                await bus.close()
                router.stop()
                tritons.stop()
    finally:
        cluster.stop()
    print(
        f"\nFAULT scale-out, 3 NATS nodes R3; job {job.job_id}: {len(requested)} trials, "
        f"completed per trainer {dict(ran)}, taken per trainer {dict(takes)}; stream leader "
        f"{victim.name} killed -9 at {killed_at:.1f} s after {trials_before} trial(s), new "
        f"leader {after.cluster.leader}, job completed once at {finished_at:.1f} s; node "
        f"back and current; {REQUESTS} inferences through the router: per tritonserver "
        f"{served}; total {time.monotonic() - t0:.1f} s"
    )
