"""The whole platform as a user meets it, across every service.

`up` (the launcher `./justw up` runs) starts the embedded NATS and every service on free
loopback ports with a temporary home; the router supervises a real tritonserver. Through the
SDK only, the bootstrapped admin uploads a data set, trains one tiny run, converts the model
(ONNX, INT8), benchmarks it on onnxruntime-cpu, deploys it and infers through the router with
tritonclient, where the answer must be the one the model's ONNX gives in this process.

Then the services stop and every SQLite projection is hashed table by table. Each is thrown
away and rebuilt from the log: by `cvops projections rebuild <service>` where the service
declares a rebuild entry point, else by its service replaying the log into the empty file as it
starts. Every table must hash the same, and the restarted platform must show the user what it
showed before and serve the same answer. `down` leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from cvops.client import Client
from cvops.client.rebuild import projection_entry_points
from cvops.client.sdk import CvopsError
from cvops.contracts.api import (
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    ModelVersionView,
    ReportView,
)
from cvops.core import Bus, local
from cvops.core.settings import Settings, load_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
# the projection files of the services, relative to the home
PROJECTIONS = {
    *(Path(f"{s}.sqlite") for s in ("registry", "gateway", "trainer", "converter", "benchmarker")),
    Path("inference-router") / "router.sqlite",
    # identity, from its own stream (the services that hold it)
    Path("gateway-identity.sqlite"),
    Path("inference-router") / "identity.sqlite",
}
DEPLOYMENT = "pipeline"
MODEL = "pipeline-cnn"
DATASET = "pipeline-blobs"
CLASSES = 4
IMAGES = 160
# every service `up` starts: those installed (the reporter does not exist yet)
SERVICES = tuple(s for s in local.SERVICES if local.installed(s))


# -- the platform, started the way `./justw up` starts it -----------------------------------


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(home: Path) -> dict[str, str]:
    """This process's environment without CVOPS_*, every port free, a fresh home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVOPS_")}
    names = [f for f in Settings.__struct_fields__ if f.endswith("_port")]
    env.update(
        {f"CVOPS_{n.upper()}": str(p) for n, p in zip(names, _free_ports(len(names)), strict=True)}
    )
    env["CVOPS_HOME"] = str(home)
    env["CVOPS_TORCH_THREADS"] = "1"  # one torch thread trains fastest on a shared host
    return env


def _run(env: dict[str, str], *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def _wait(
    what: str, probe: Callable[[], T | None], timeout: float, diagnose: Callable[[], str]
) -> T:
    """Poll ``probe`` until it returns something other than None."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s\n{diagnose()}")
        time.sleep(0.5)


# -- what the user brings --------------------------------------------------------------------


def _dataset(path: Path, n: int = IMAGES, hw: int = 16, seed: int = 0) -> Path:
    """A learnable .npz data set: each class a smooth template plus noise (RGB, uint8)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((CLASSES, 4, 4, 3))
    templates = coarse.repeat(hw // 4, axis=1).repeat(hw // 4, axis=2)
    y = np.arange(n) % CLASSES
    rng.shuffle(y)
    x = 0.7 * templates[y] + 0.3 * rng.random((n, hw, hw, 3))
    np.savez(
        path,
        x=(x * 255).round().astype(np.uint8),
        y=y.astype(np.int64),
        classes=np.asarray([f"blob_{i}" for i in range(CLASSES)]),
    )
    return path


def _images(path: Path, version: ModelVersionView, count: int) -> np.ndarray:
    """The first ``count`` images of the data set as the model takes them (NCHW, normalised)."""
    with np.load(path) as z:
        x = z["x"][:count].astype(np.float32) / 255.0
    norm = version.lineage.hyperparameters["normalization"]
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def _infer(port: int, token: str | None, x: np.ndarray, version: ModelVersionView) -> np.ndarray:
    (inp,), (out,) = version.inputs, version.outputs
    client = triton_http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
    try:
        tensor = triton_http.InferInput(inp.name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        headers = {"Authorization": f"Bearer {token}"} if token else None
        result = client.infer(DEPLOYMENT, [tensor], headers=headers)
        logits = result.as_numpy(out.name)
    finally:
        client.close()
    assert logits is not None
    return logits


# -- projections -----------------------------------------------------------------------------

Snapshot = dict[str, dict[str, list[str]]]
"""Per projection file (relative to the home), per table: every row as canonical JSON."""

# The runner's position in the log, not a row of the projection: compared on its own terms.
CHECKPOINT = "projection_checkpoint"


def _projection_files(home: Path) -> list[Path]:
    return sorted(p.relative_to(home) for p in home.rglob("*.sqlite"))


def _table_rows(db: Path) -> dict[str, list[str]]:
    """Every row of every table of one SQLite file, each as canonical JSON, sorted."""
    assert db.exists(), db
    out: dict[str, list[str]] = {}
    con = sqlite3.connect(db)
    try:
        tables = [
            r[0]
            for r in con.execute(
                "select name from sqlite_master where type = 'table' "
                "and name not like 'sqlite_%' order by name"
            )
        ]
        for table in tables:
            cursor = con.execute(f'select * from "{table}"')
            columns = [c[0] for c in cursor.description]
            out[table] = sorted(
                json.dumps(dict(zip(columns, row, strict=True)), sort_keys=True, default=repr)
                for row in cursor
            )
    finally:
        con.close()
    return out


def _snapshot(home: Path, files: list[Path]) -> Snapshot:
    return {str(rel): _table_rows(home / rel) for rel in files}


def _digests(snapshot: Snapshot) -> dict[str, dict[str, str]]:
    """sha256 of each table's rows (the checkpoint left out), per projection file."""
    return {
        rel: {
            table: hashlib.sha256("\n".join(rows).encode()).hexdigest()
            for table, rows in tables.items()
            if table != CHECKPOINT
        }
        for rel, tables in snapshot.items()
    }


def _checkpoints(snapshot: Snapshot) -> dict[str, int]:
    out = {}
    for rel, tables in snapshot.items():
        (row,) = tables[CHECKPOINT]
        out[rel] = int(json.loads(row)["seq"])
    return out


def _differences(before: Snapshot, after: Snapshot) -> str:
    lines = []
    for rel in sorted(set(before) | set(after)):
        old_tables, new_tables = before.get(rel, {}), after.get(rel, {})
        for table in sorted(set(old_tables) | set(new_tables)):
            old, new = set(old_tables.get(table, [])), set(new_tables.get(table, []))
            if old != new:
                lines.append(f"{rel} {table}:")
                lines += [f"  - {r}" for r in sorted(old - new)[:3]]
                lines += [f"  + {r}" for r in sorted(new - old)[:3]]
    return "\n".join(lines)


def _delete_db(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)


def _assert_same_projections(before: Snapshot, after: Snapshot) -> None:
    """Every row of every table equal; checkpoints where a replay of the log puts them.

    The service folds only its own subjects, so its checkpoint is the last event of those;
    `cvops projections rebuild` replays every subject, so a rebuilt file's checkpoint is the
    last event of the stream. Either way it is not past the end of the log, which the
    gateway's checkpoint marks (it folds every subject).
    """
    assert _digests(after) == _digests(before), _differences(before, after)
    old, new = _checkpoints(before), _checkpoints(after)
    end = old["gateway.sqlite"]
    assert max(old.values()) == end and new["gateway.sqlite"] == end, (old, new)
    for rel in new:
        assert old[rel] <= new[rel] <= end, (rel, old, new)


# -- the scenario ----------------------------------------------------------------------------


@dataclass
class Platform:
    """What `up` started under one temporary home, and every pid seen so far."""

    env: dict[str, str]
    layout: local.Layout
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    def launcher(self, *args: str, timeout: float = 300) -> str:
        """``python -m cvops.core.local ARGS`` (what ``./justw up``/``down`` run); its stdout."""
        done = _run(self.env, "-m", "cvops.core.local", *args, timeout=timeout)
        assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
        self.record()
        return done.stdout

    def record(self) -> dict[str, int]:
        """The pid files of NATS, the services and the router's tritonserver, remembered."""
        names = (local.NATS, *local.SERVICES, local.TRITON)
        now = {n: p for n in names if (p := local.recorded_pid(self.layout, n)) is not None}
        self.pids.update({f"{n}:{p}": p for n, p in now.items()})
        return now

    def alive(self) -> list[str]:
        """Every pid seen that still runs, and every process still running for this home
        (tritonserver's python stubs and anything else a service started included)."""
        recorded = [k for k, pid in self.pids.items() if local.process_alive(pid)]
        return recorded + [f"{pid} {cmd}" for pid, cmd in _processes_of(self.layout.home).items()]

    def logs(self, *names: str, lines: int = 30) -> str:
        paths = [self.layout.log_file(n) for n in names or (local.NATS, *local.SERVICES)]
        if not names or "inference-router" in names:
            paths.append(self.layout.home / "inference-router" / "triton" / "tritonserver.log")
        parts = []
        for path in paths:
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop_everything(self) -> None:
        """`down`, then SIGKILL whatever still runs for this home."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            _run(self.env, "-m", "cvops.core.local", "down", timeout=120)
        for pid in _processes_of(self.layout.home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _processes_of(home: Path) -> dict[int, str]:
    """Live processes started for ``home`` (``CVOPS_HOME`` in their environment, which the
    launcher hands to NATS and every service, and they to their children): pid -> command."""
    marker = f"CVOPS_HOME={home}".encode()
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if state not in ("Z", "X"):  # a zombie has exited; only its parent's wait is missing
            found[int(proc.name)] = command.strip()
    return found


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    home = (tmp_path / "home").resolve()  # as the launcher hands it on
    running = Platform(_env(home), local.Layout(home))
    try:
        yield running
    finally:
        running.stop_everything()


def _settled(report: ReportView, settings: Settings) -> bool:
    """The report shows the deployment and reflects the whole log but its own event."""

    async def last_seq() -> int:
        bus = await Bus.connect(settings, name="pipeline-test", user="reporter")  # a reader
        try:
            return await bus.last_seq()
        finally:
            await bus.close()

    return bool(report.deployments) and report.last_seq + 1 >= asyncio.run(last_seq())


def _report(client: Client) -> ReportView | None:
    """The model version's newest report (None: none yet)."""
    try:
        return client.report(MODEL, 1)
    except CvopsError as err:
        if err.status == 404:
            return None
        raise


def _views(client: Client, job: str, conversion: str, benchmark: str) -> tuple[object, ...]:
    """What a user reads back about everything the scenario did."""
    return (
        client.show_job(job),
        client.show_conversion(conversion),
        client.show_benchmark(benchmark),
        client.list_engine_artifacts(MODEL, 1),
        client.show_deployment(DEPLOYMENT),
        client.show_model(MODEL),
        client.list_datasets(),
        client.list_users(),
    )


def _ended(status: str) -> bool:
    return status in ("completed", "failed", "cancelled")


def test_upload_train_convert_benchmark_deploy_infer_then_rebuild_every_projection(
    platform: Platform, tmp_path: Path
) -> None:
    settings, home = platform.settings, platform.layout.home
    t0 = time.monotonic()

    out = platform.launcher("up")
    assert "nats: started" in out and "admin credentials" in out, out
    started = platform.record()
    assert set(started) >= {local.NATS, *SERVICES}, out
    assert set(started.values()) <= set(_processes_of(home)), (started, _processes_of(home))

    # -- as the bootstrapped admin, through the SDK only ----------------------------------
    creds = dict(line.split("=", 1) for line in (home / local.CREDENTIALS).read_text().splitlines())
    gateway = f"http://127.0.0.1:{settings.gateway_port}"
    everything = platform.logs
    router = partial(platform.logs, "inference-router")
    with Client(gateway, timeout=60) as client:
        session = client.login(creds["username"], creds["password"])
        assert session.role == "admin" and client.me().username == "admin"

        data = _dataset(tmp_path / "blobs.npz")
        upload = client.upload_dataset(data, DATASET, description="pipeline test")
        upload = _wait(  # 201 with the verdict, or 202 while the registry is still busy
            "the registry's verdict on the data set",
            lambda: u if (u := client.show_upload(upload.upload_id)).status != "pending" else None,
            180,
            everything,
        )
        assert upload.status == "validated" and upload.version == 1, upload
        dataset = client.show_dataset(DATASET)
        assert dataset.classes == [f"blob_{i}" for i in range(CLASSES)]
        assert dataset.num_images == IMAGES and dataset.images.channels == 3

        # the smallest job the API takes: one run, one epoch of three batches
        job = client.create_job(
            CreateJob(
                dataset=DATASET,
                arch="simple-cnn",
                job_type="single",
                epochs=1,
                max_batches_per_epoch=3,
                hyperparameters={"depth": 1, "width": 0.25, "batch_size": 32, "augment": 0.0},
                model_name=MODEL,
                device="cpu",
            )
        )
        trained = _wait(
            "training",
            lambda: j if _ended((j := client.show_job(job.job_id)).status) else None,
            240,
            everything,
        )
        assert trained.status == "completed", (trained.reason, everything())
        assert trained.trials_done == trained.trials_total == 1
        trained = _wait(
            "the registry's verdict on the trained model",
            lambda: (
                j
                if (j := client.show_job(job.job_id)).models
                and all(m.status != "pending" for m in j.models)
                else None
            ),
            120,
            everything,
        )
        (registered,) = trained.models
        assert registered.status == "validated", registered
        assert (registered.model_name, registered.version) == (MODEL, 1)
        version = client.show_version(MODEL, 1)
        assert version.lineage.job_id == job.job_id and version.lineage.dataset == DATASET
        assert _feed(client, job.correlation_id).count("training.completed") == 1

        # ONNX and INT8 behind a gate any tiny model passes: the path is under test here
        conversion = client.convert(
            CreateConversion(
                model_name=MODEL, version=1, targets=["onnx", "int8"], max_accuracy_drop=100.0
            )
        )
        converted = _wait(
            "conversion",
            lambda: c if _ended((c := client.show_conversion(conversion.job_id)).status) else None,
            180,
            everything,
        )
        assert converted.status == "completed", (converted.reason, everything())
        assert {t.target: t.status for t in converted.targets} == {
            "onnx": "produced",
            "int8": "produced",
        }, converted.targets
        engines = client.list_engine_artifacts(MODEL, 1)
        assert {(e.target, e.precision) for e in engines} == {("onnx", "fp32"), ("int8", "int8")}

        benchmark = client.benchmark(
            CreateBenchmark(
                model_name=MODEL,
                version=1,
                engines=["onnxruntime-cpu"],
                batch_sizes=[1],
                concurrency=[1],
                time_cap_s=0.5,
                min_requests=5,
                max_accuracy_drop=100.0,
                conversion_job=conversion.job_id,
            )
        )
        measured = _wait(
            "benchmark",
            lambda: b if _ended((b := client.show_benchmark(benchmark.job_id)).status) else None,
            180,
            everything,
        )
        assert measured.status == "completed", (measured.reason, everything())
        cells = {(r.engine, r.precision, r.batch_size, r.concurrency): r for r in measured.rows}
        assert set(cells) == {
            ("onnxruntime-cpu", "fp32", 1, 1),
            ("onnxruntime-cpu", "int8", 1, 1),
        }, measured.rows
        for row in cells.values():
            assert row.error is None and row.requests >= 1 and row.p95_ms, row
        assert measured.recommendation is not None
        assert measured.recommendation.pick in measured.rows

        # the benchmark's pick in one command: its engine, precision, artifact and batcher
        requested = client.deploy(
            CreateDeployment(model_name=MODEL, version=1, deployment=DEPLOYMENT, recommended=True)
        )
        pick = measured.recommendation.pick
        assert pick is not None
        assert (requested.engine, requested.precision, requested.benchmark_id) == (
            pick.engine,
            pick.precision,
            benchmark.job_id,
        )
        assert requested.artifact_target == pick.artifact
        deployed = _wait(
            "deployment",
            lambda: (
                d
                if (d := client.show_deployment(DEPLOYMENT)).status in ("ready", "failed")
                else None
            ),
            180,
            router,
        )
        assert deployed.status == "ready", (deployed.reason, router())
        assert deployed.serving_version == 1 and not deployed.public
        assert "deployment.ready" in _feed(client, requested.correlation_id)
        check = deployed.checks["primary"]  # what is served is what was measured
        assert check.passed and check.n_images > 0, check

        # -- inference through the router, against the same ONNX in this process ----------
        onnx_file = client.download_artifact(MODEL, 1, tmp_path)
        x = _images(data, version, 4)
        (inp,) = version.inputs
        reference = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        expected = reference.run(None, {inp.name: x})[0]
        with pytest.raises(InferenceServerException) as refused:
            _infer(settings.router_http_port, None, x, version)  # not public: a token is needed
        assert refused.value.status() == "401", refused.value
        # the benchmark measured batch 1 only: its batcher serves requests of one image
        batcher = measured.recommendation.batcher
        assert batcher is not None and deployed.max_batch_size == batcher.max_batch_size
        served = _served(settings.router_http_port, session.token, x, version)
        assert served is not None
        assert served.shape == (4, CLASSES)
        if pick.precision == "fp32":
            assert served.argmax(axis=1).tolist() == expected.argmax(axis=1).tolist()
            np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-5)
        else:  # the INT8 engine: within its record of the source's outputs
            bound = check.recorded_max_abs_error * 1.5 + 1e-3
            assert float(np.max(np.abs(served - expected))) <= bound

        # -- the reporter's one report of the lineage, from the data set to the deployment --
        # (and the reporter idle: the log ends with its report, so nothing lands after the stop)
        report = _wait(
            "the report of the deployed version, last in the log",
            lambda: r if (r := _report(client)) is not None and _settled(r, settings) else None,
            120,
            partial(platform.logs, "reporter"),
        )
        assert report.deployments == [DEPLOYMENT] and report.training_job == job.job_id
        assert report.benchmark_jobs == [benchmark.job_id]
        assert {"training", "conversion", "benchmark", "deployment"} <= set(report.sections)
        html = client.download_report(MODEL, 1, "html", tmp_path)
        assert deployed.artifact_sha256 and deployed.artifact_sha256 in Path(html).read_text()

        seen = _views(client, job.job_id, conversion.job_id, benchmark.job_id)
        _assert_monitored(client, settings, gateway)
    took_pipeline = time.monotonic() - t0

    # -- stop, hash, throw every projection away, rebuild from the log, compare -----------
    assert local.TRITON in platform.record()
    platform.launcher("down", timeout=120)
    assert not (left := platform.alive()), left

    files = _projection_files(home)
    assert set(files) >= PROJECTIONS, files
    before = _snapshot(home, files)
    for rel in files:
        _delete_db(home / rel)

    platform.launcher("up", "--services", "none")  # NATS only: the log
    by_cli = []
    for service in sorted(projection_entry_points()):  # what `cvops projections rebuild` knows
        rebuilt = _run(
            platform.env, "-m", "cvops.client", "projections", "rebuild", service, timeout=180
        )
        assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
        done = re.search(r"projection (.+): \d+ events applied", rebuilt.stdout)
        assert done, rebuilt.stdout
        by_cli.append(Path(done.group(1)).resolve().relative_to(home))
    assert set(by_cli) <= set(files), by_cli
    _assert_same_projections(_pick(before, by_cli), _snapshot(home, by_cli))

    # Everything again, each service on its rebuilt file, or replaying the log into an empty
    # one as it starts where it declares no rebuild. The user reads and is served as before.
    out = platform.launcher("up")
    assert "admin credentials" not in out, out
    with Client(gateway, session.token, timeout=60) as client:
        assert client.me().username == "admin"  # the session outlived the rebuild
        assert _views(client, job.job_id, conversion.job_id, benchmark.job_id) == seen
    again = _wait(
        "the restarted router serving the deployment",
        lambda: _served(settings.router_http_port, session.token, x, version),
        180,
        router,
    )
    np.testing.assert_array_equal(again, served)
    assert local.TRITON in platform.record()

    platform.launcher("down", timeout=120)
    assert not (left := platform.alive()), left
    assert not list(platform.layout.run.glob("*.pid"))
    _assert_same_projections(before, _snapshot(home, files))
    # every service worked within its NATS permissions (a refused request is logged there)
    nats_log = platform.layout.log_file(local.NATS).read_text(errors="replace")
    assert "Violation" not in nats_log, [ln for ln in nats_log.splitlines() if "Violation" in ln]
    print(f"pipeline {took_pipeline:.0f} s, whole test {time.monotonic() - t0:.0f} s")


def _pick(snapshot: Snapshot, files: list[Path]) -> Snapshot:
    return {str(rel): snapshot[str(rel)] for rel in files}


# -- monitoring: every service's /metrics and GET /system --------------------------------------

# the durable work consumers of each service (cvops_consumer_pending_messages)
WORK_CONSUMERS = {
    "registry": {"registry-validate"},
    "trainer": {"trainer-jobs", "trainer-trials"},
    "converter": {"converter-jobs"},
    "benchmarker": {"benchmarker-jobs"},
    "inference-router": {"inference-router-deploy"},
}
# the jobs each one ended in the scenario: (kind, outcome) -> how many
JOBS_ENDED = {
    "trainer": {("training", "completed"): 1, ("trial", "completed"): 1},
    "converter": {("conversion", "completed"): 1},
    "benchmarker": {("benchmark", "completed"): 1},
    "inference-router": {("deployment", "completed"): 1},
}


def _metrics_url(service: str, settings: Settings, gateway: str) -> str:
    if service == "gateway":
        return f"{gateway}/metrics"
    if service == "inference-router":
        return f"http://127.0.0.1:{settings.router_metrics_port}/metrics"
    return f"http://127.0.0.1:{settings.metrics_port(service)}/metrics"


def _samples(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A scrape parsed as Prometheus parses it: sample name -> (labels, value) of each."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def _assert_monitored(client: Client, settings: Settings, gateway: str) -> None:
    """Every service says it runs (GET /system, from the presence bucket its NATS user may
    write) and serves the shared metrics: events handled, pending work, projection lag, the
    jobs it ended, GPUs (none here: said so)."""
    system = client.system()
    running = {s.name: s for s in system.services if s.instances}
    assert set(running) >= set(SERVICES), system.services
    for name in SERVICES:
        (instance,) = running[name].instances
        assert instance.version == "0.1.0" and instance.projections, instance
        assert {c.durable for c in instance.consumers} == WORK_CONSUMERS.get(name, set())
    assert [s.last_seq for s in system.streams if s.name == "CVOPS_EVENTS"] != [0]
    for name in SERVICES:
        samples = _samples(_metrics_url(name, settings, gateway))
        handled = sum(v for _, v in samples.get("cvops_events_handled_total", []))
        assert handled > 0, (name, sorted(samples))
        assert samples.get("cvops_projection_lag_events"), name
        assert all(v >= 0 for _, v in samples["cvops_projection_lag_events"])
        pending = {labels["consumer"]: v for labels, v in samples.get(
            "cvops_consumer_pending_messages", [])}  # fmt: skip
        assert set(pending) >= WORK_CONSUMERS.get(name, set()), (name, pending)
        assert all(v >= 0 for v in pending.values())
        ended = {
            (labels["kind"], labels["outcome"]): v
            for labels, v in samples.get("cvops_jobs_total", [])
        }
        for key, n in JOBS_ENDED.get(name, {}).items():
            assert ended.get(key) == n, (name, ended)
        if name == "reporter":  # one report per new result: at least the one read above
            assert ended.get(("report", "completed"), 0) >= 1, ended
        assert samples["cvops_gpu_metrics_available"][0][1] in (0, 1)
        assert samples["cvops_gpus"][0][1] >= 0


def _feed(client: Client, correlation_id: str) -> list[str]:
    """The names of the events of one request or job so far (the feed, not followed)."""
    return [t.rsplit(".v", 1)[0] for _, t, _ in client.events(correlation_id, follow=False)]


def _served(port: int, token: str, x: np.ndarray, version: ModelVersionView) -> np.ndarray | None:
    """The deployment's outputs for ``x``, one image a request (None: not served yet)."""
    try:
        return np.concatenate([_infer(port, token, x[i : i + 1], version) for i in range(len(x))])
    except (InferenceServerException, OSError):
        return None
