"""The platform's load mix for locust: readers, small uploads, job submissions, event-feed
watchers and inference through the router, each a user class with ~1 s think time.

``bench/load/run.py`` (``./justw load``) runs it headless against a running ``./justw up``;
it also runs alone::

    locust -f bench/load/locustfile.py --headless -u 100 -r 20 -t 2m \\
        --host http://127.0.0.1:8080 --cvops-router http://127.0.0.1:8000 --csv out/load

Before the first user starts (``test_start``), the setup signs in with the admin's token
(``--cvops-token`` or ``--cvops-credentials``, default ``$CVOPS_HOME/admin.credentials``),
makes a viewer and an engineer with API tokens, uploads a tiny ONNX model and a tiny data set,
submits one probe job and, with ``--cvops-router``, deploys the model and waits until the
router serves it. None of it is counted in the statistics.

What a job submission is: a ``single`` training run whose fixed hyperparameter the trainer does
not know. The gateway checks what it can (the data set exists), appends
``training.requested`` and waits for its projection (the full write path, 201); the trainer
refuses it in its plan step (``training.failed``, no model built), so 1,000 users never start
1,000 trainings.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import httpx
from locust import FastHttpUser, between, events, task
from locust.env import Environment
from locust.stats import StatsEntry

# user class -> default weight (share of the users); ``--cvops-mix`` overrides
DEFAULT_MIX = {"reader": 84, "inference": 10, "watcher": 5, "engineer": 1}
MODEL_NAMES = 4  # uploads rotate over this many model names (versions pile up per name)
SETUP_TIMEOUT_S = 180.0
# request name -> the class of request it is counted under in the summary (``--cvops-summary``)
GROUPS = {
    **dict.fromkeys(
        [
            "/models",
            "/models/{name}",
            "/datasets",
            "/datasets/{name}",
            "/jobs",
            "/jobs/{id}",
            "/deployments",
            "/deployments/{name}",
        ],
        "reads",
    ),
    "POST /models": "uploads",
    "POST /datasets": "uploads",
    "POST /jobs": "job submissions",
    "GET /events/{id}": "event feeds",
    "POST /v2/models/{m}/infer": "inference",
}


# -- payloads -----------------------------------------------------------------------------------


def tiny_onnx_model() -> bytes:
    """A 4→3 linear classifier (Gemm) as ONNX bytes, built by hand: a few hundred bytes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_npz_dataset(per_class: int = 20) -> bytes:
    """A two-class data set of 8x8 RGB images as upload-style npz bytes (``x``, ``y``)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(2 * per_class, 8, 8, 3), dtype=np.uint8)
    y = np.repeat(np.arange(2, dtype=np.int64), per_class)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:  # np.savez's layout, written deterministically
        for name, array in (("x", x), ("y", y)):
            buf = io.BytesIO()
            np.save(buf, array)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", (2026, 1, 1, 0, 0, 0)), buf.getvalue())
    return out.getvalue()


def multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body (FastHttpUser has no ``files=``) and its content type."""
    boundary = uuid.uuid4().hex
    parts = []
    for key, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
        parts.append(f"{head}{value}\r\n".encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def probe_job(dataset: str) -> dict[str, Any]:
    """A job the gateway accepts and the trainer refuses at once (an unknown hyperparameter)."""
    return {
        "dataset": dataset,
        "arch": "simple-cnn",
        "job_type": "single",
        "hyperparameters": {"load_probe": 1},
        "device": "cpu",
    }


# -- setup --------------------------------------------------------------------------------------


@dataclass
class Fixture:
    """What the setup made, shared by every user of this process."""

    gateway: str = ""
    router: str = ""
    tokens: dict[str, str] = field(default_factory=dict)  # role -> bearer token
    models: list[str] = field(default_factory=list)
    dataset: str = ""
    deployment: str = ""
    # jobs and their correlation ids: the probe job, then every job an engineer submits
    jobs: list[str] = field(default_factory=list)
    correlations: list[str] = field(default_factory=list)
    model_bytes: bytes = b""
    dataset_bytes: bytes = b""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def add_job(self, job_id: str, correlation_id: str) -> None:
        with self.lock:
            self.jobs.append(job_id)
            self.correlations.append(correlation_id)
            if len(self.jobs) > 1000:  # readers pick among the recent ones
                del self.jobs[:500], self.correlations[:500]


FIXTURE = Fixture()


def read_credentials(path: Path) -> dict[str, str]:
    """``key=value`` lines of ``admin.credentials``."""
    pairs = (line.partition("=") for line in path.read_text().splitlines())
    return {k.strip(): v.strip() for k, sep, v in pairs if sep}


def admin_token(options: Any) -> str:
    if options.cvops_token:
        return str(options.cvops_token)
    home = Path(os.environ.get("CVOPS_HOME", ".cvops"))
    path = (
        Path(options.cvops_credentials) if options.cvops_credentials else home / "admin.credentials"
    )
    if not path.exists():
        raise SystemExit(f"{path} not found: start the platform (./justw up) or pass --cvops-token")
    return read_credentials(path)["token"]


def _check(resp: httpx.Response, *ok: int) -> httpx.Response:
    if resp.status_code not in ok:
        raise RuntimeError(
            f"setup: {resp.request.method} {resp.request.url.path} answered "
            f"{resp.status_code}: {resp.text[:300]}"
        )
    return resp


def _wait(what: str, done: Any, timeout: float = SETUP_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = done()
        if found:
            return found
        if time.monotonic() > deadline:
            raise RuntimeError(f"setup: {what} not seen within {timeout:.0f} s")
        time.sleep(0.25)


def make_users(c: httpx.Client, admin: dict[str, str], tag: str) -> dict[str, str]:
    """A viewer and an engineer (made by the admin), each with an API token."""
    tokens = {}
    password = f"load-{uuid.uuid4().hex}"
    for role in ("viewer", "engineer"):
        username = f"load-{role}-{tag}"
        body = {"username": username, "password": password, "role": role}
        _check(c.post("/users", json=body, headers=admin), 201)
        login = _check(
            c.post("/auth/login", json={"username": username, "password": password}), 200
        )
        session = {"Authorization": f"Bearer {login.json()['token']}"}
        made = _check(c.post("/auth/tokens", json={"label": "load"}, headers=session), 201)
        tokens[role] = made.json()["token"]
    return tokens


def upload(c: httpx.Client, kind: str, name: str, content: bytes, headers: dict[str, str]) -> int:
    """Upload a model or data set; its version once the registry validated it (0: pending)."""
    route = "/models/" if kind == "model" else "/datasets/"
    filename = "tiny.onnx" if kind == "model" else "tiny.npz"
    resp = _check(
        c.post(
            route,
            headers=headers,
            data={"name": name, "description": "bench/load"},
            files={"file": (filename, content, "application/octet-stream")},
        ),
        201,
        202,
    )
    body = resp.json()
    return int(body.get("version") or 0) if body.get("status") == "validated" else 0


def deploy(c: httpx.Client, router: str, model: str, version: int, engineer: dict[str, str]) -> str:
    """Deploy ``model:version`` as ``load-<model>`` and wait until the router answers for it."""
    name = model.removesuffix("-0")
    body = {"model_name": model, "version": version, "deployment": name}
    _check(c.post("/deployments/", json=body, headers=engineer), 202)

    def ready() -> bool:
        state = _check(c.get(f"/deployments/{name}", headers=engineer), 200).json()
        if state["status"] == "failed":
            raise RuntimeError(f"setup: deployment {name} failed: {state.get('reason')}")
        return bool(state["status"] == "ready" and state.get("serving_version") == version)

    _wait(f"deployment {name} ready", ready)
    with httpx.Client(base_url=router, timeout=30, headers=engineer) as r:
        _wait(
            f"router serving {name}", lambda: r.get(f"/v2/models/{name}/ready").status_code == 200
        )
    return name


def run_setup(environment: Environment) -> None:
    """Make users and tokens, the model, the data set, a probe job and the deployment."""
    options = environment.parsed_options
    assert options is not None, "run through locust's command line"
    fx = FIXTURE
    fx.gateway = str(environment.host).rstrip("/")
    fx.router = (options.cvops_router or "").rstrip("/")
    fx.model_bytes, fx.dataset_bytes = tiny_onnx_model(), tiny_npz_dataset()
    admin = {"Authorization": f"Bearer {admin_token(options)}"}
    tag = uuid.uuid4().hex[:6]
    with httpx.Client(base_url=fx.gateway, timeout=60) as c:
        fx.tokens = make_users(c, admin, tag)
        engineer = fx.headers("engineer")
        fx.models = [f"load-tiny-{i}" for i in range(MODEL_NAMES)]
        version = upload(c, "model", fx.models[0], fx.model_bytes, engineer)
        fx.dataset = "load-tiny-data"
        upload(c, "dataset", fx.dataset, fx.dataset_bytes, engineer)
        job = c.post("/jobs/", json=probe_job(fx.dataset), headers=engineer)
        if job.status_code == 201:  # 422 while the data set is pending (no registry runs)
            fx.add_job(job.json()["job_id"], job.json()["correlation_id"])
        if fx.router:
            if not version:
                raise RuntimeError("setup: the model upload was not validated; cannot deploy it")
            fx.deployment = deploy(c, fx.router, fx.models[0], version, engineer)


def parse_mix(text: str) -> dict[str, int]:
    """``reader=84,inference=10,...`` -> weights (classes left out get 0)."""
    mix = dict.fromkeys(DEFAULT_MIX, 0)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, weight = part.partition("=")
        if name not in mix:
            raise SystemExit(f"unknown user class {name!r} in --cvops-mix; known: {', '.join(mix)}")
        mix[name] = int(weight)
    return mix


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    mix = ",".join(f"{k}={v}" for k, v in DEFAULT_MIX.items())
    parser.add_argument(
        "--cvops-mix", default=mix, env_var="CVOPS_LOAD_MIX", help=f"user class weights ({mix})"
    )
    parser.add_argument(
        "--cvops-router",
        default="",
        env_var="CVOPS_LOAD_ROUTER",
        help="the inference router's KServe HTTP URL (none: no inference users)",
    )
    parser.add_argument(
        "--cvops-token", default="", env_var="CVOPS_LOAD_TOKEN", help="an admin's bearer token"
    )
    parser.add_argument(
        "--cvops-credentials",
        default="",
        help="admin.credentials file (default $CVOPS_HOME/admin.credentials)",
    )
    parser.add_argument(
        "--cvops-hold", type=float, default=30.0, help="seconds a watcher holds an event feed open"
    )
    parser.add_argument(
        "--cvops-think",
        type=float,
        default=1.0,
        help="mean think time in seconds (uniform in 0.5x..1.5x)",
    )
    parser.add_argument(
        "--cvops-summary", default="", help="write counts and percentiles per request class here"
    )


@events.init.add_listener
def _weights(environment: Environment, **_kw: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    mix = parse_mix(options.cvops_mix)
    if not options.cvops_router:
        mix["inference"] = 0
    think = options.cvops_think
    for cls in environment.user_classes:
        cls.weight = mix.get(getattr(cls, "mix_name", ""), 0)
        cls.wait_time = between(0.5 * think, 1.5 * think)
    environment.user_classes = [c for c in environment.user_classes if c.weight > 0]


@events.test_start.add_listener
def _setup(environment: Environment, **_kw: Any) -> None:
    run_setup(environment)


_groups: dict[str, StatsEntry] = {}


@events.request.add_listener
def _count_group(
    request_type: str,
    name: str,
    response_time: float,
    response_length: int,
    exception: BaseException | None = None,
    **_kw: Any,
) -> None:
    """Each request also counts under its class, so one p99 covers all reads."""
    group = GROUPS.get(f"{request_type} {name}") or GROUPS.get(name)
    if group is None or not _groups:
        return
    entry = _groups[group]
    entry.log(round(response_time), response_length or 0)  # whole ms, as locust buckets them
    if exception is not None:
        entry.log_error(exception if isinstance(exception, Exception) else str(exception))


@events.test_start.add_listener
def _start_groups(environment: Environment, **_kw: Any) -> None:
    for group in dict.fromkeys(GROUPS.values()):
        _groups[group] = StatsEntry(environment.stats, group, "", use_response_times_cache=False)


@events.quitting.add_listener
def _write_summary(environment: Environment, **_kw: Any) -> None:
    """``--cvops-summary``: per class of request its count, failures, rate and percentiles."""
    path = environment.parsed_options.cvops_summary if environment.parsed_options else ""
    if not path or not _groups:
        return
    rows = {}
    for group, e in _groups.items():
        if not e.num_requests:
            continue
        elapsed = (
            max(e.last_request_timestamp - e.start_time, 1e-9) if e.last_request_timestamp else 0
        )
        rows[group] = {
            "requests": e.num_requests,
            "failures": e.num_failures,
            "per_s": e.num_requests / elapsed if elapsed else 0.0,
            **{f"p{q}_ms": e.get_response_time_percentile(q / 100) for q in (50, 95, 99)},
            "max_ms": e.max_response_time,
        }
    errors = [
        {"name": err.name, "method": err.method, "error": str(err.error), "count": err.occurrences}
        for err in environment.stats.errors.values()
    ]
    Path(path).write_text(json.dumps({"groups": rows, "errors": errors}, indent=2))


# -- users --------------------------------------------------------------------------------------


class CvopsUser(FastHttpUser):
    """Shared by the classes: the role whose token it sends, its expected statuses."""

    abstract = True
    mix_name = ""
    role = "viewer"
    wait_time = between(0.5, 1.5)
    network_timeout = 60.0
    connection_timeout = 60.0

    def get(self, path: str, name: str) -> None:
        with self.client.get(
            path, headers=FIXTURE.headers(self.role), name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:200] if resp.text else ''}")


class Reader(CvopsUser):
    """Lists and details of models, data sets, jobs and deployments (a viewer)."""

    mix_name = "reader"

    @task(3)
    def list_models(self) -> None:
        self.get("/models/", "/models")

    @task(2)
    def show_model(self) -> None:
        self.get(f"/models/{FIXTURE.models[0]}", "/models/{name}")

    @task(2)
    def list_datasets(self) -> None:
        self.get("/datasets/", "/datasets")

    @task(2)
    def show_dataset(self) -> None:
        self.get(f"/datasets/{FIXTURE.dataset}", "/datasets/{name}")

    @task(2)
    def list_jobs(self) -> None:
        self.get("/jobs/", "/jobs")

    @task(2)
    def show_job(self) -> None:
        if FIXTURE.jobs:
            self.get(f"/jobs/{random.choice(FIXTURE.jobs)}", "/jobs/{id}")

    @task(1)
    def list_deployments(self) -> None:
        self.get("/deployments/", "/deployments")

    @task(1)
    def show_deployment(self) -> None:
        if FIXTURE.deployment:
            self.get(f"/deployments/{FIXTURE.deployment}", "/deployments/{name}")


_names = itertools.count()


class Engineer(CvopsUser):
    """Small model and data-set uploads and job submissions, between looks at its jobs."""

    mix_name = "engineer"
    role = "engineer"

    def upload(self, kind: str, name: str, content: bytes) -> None:
        route = "/models/" if kind == "model" else "/datasets/"
        body, content_type = multipart(
            {"name": name, "description": "bench/load"},
            f"tiny.{'onnx' if kind == 'model' else 'npz'}",
            content,
        )
        headers = {**FIXTURE.headers(self.role), "Content-Type": content_type}
        with (
            self.client.post(
                route,
                data=body,  # type: ignore[arg-type]  # bytes are sent as they are
                headers=headers,
                name=route[:-1],
                catch_response=True,
            ) as resp
        ):
            # 201 validated; 202 pending when the registry answers later (or none runs)
            if resp.status_code not in (201, 202):
                resp.failure(f"{resp.status_code}: {resp.text[:200] if resp.text else ''}")

    @task(1)
    def upload_model(self) -> None:
        self.upload("model", FIXTURE.models[next(_names) % MODEL_NAMES], FIXTURE.model_bytes)

    @task(1)
    def upload_dataset(self) -> None:
        self.upload("dataset", FIXTURE.dataset, FIXTURE.dataset_bytes)

    @task(1)
    def submit_job(self) -> None:
        with self.client.post(
            "/jobs/",
            json=probe_job(FIXTURE.dataset),
            name="/jobs",
            headers=FIXTURE.headers(self.role),
            catch_response=True,
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"{resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return
            body = json.loads(resp.content)
            FIXTURE.add_job(body["job_id"], body["correlation_id"])

    @task(7)
    def show_job(self) -> None:
        if FIXTURE.jobs:
            self.get(f"/jobs/{FIXTURE.jobs[-1]}", "/jobs/{id}")


class Watcher(CvopsUser):
    """Holds a job's event feed (SSE) open for ``--cvops-hold`` s, then reconnects.

    Counted as ``/events/{id}`` (type GET): its time is to the response's headers; a feed that fails
    or ends before the hold is over is a failure.
    """

    mix_name = "watcher"

    @task
    def watch(self) -> None:
        if not FIXTURE.correlations:
            return
        hold = self.environment.parsed_options.cvops_hold
        path = f"/events/{random.choice(FIXTURE.correlations)}"
        with self.client.get(
            path,
            headers=FIXTURE.headers(self.role),
            stream=True,
            name="/events/{id}",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            try:
                if not resp.stream.read(1):
                    resp.failure("the feed ended at once")
                    return
                with gevent.Timeout(hold, False):
                    for _chunk in self._chunks(resp.stream):
                        pass
                    resp.failure("the feed ended before the hold was over")
                    return
            except Exception as err:  # counted, never raised: the user keeps watching
                resp.failure(f"{type(err).__name__}: {err}")
                return
            resp.success()

    @staticmethod
    def _chunks(stream: Any) -> Iterator[bytes]:
        while chunk := stream.read(4096):
            yield chunk


class Inference(CvopsUser):
    """KServe v2 HTTP JSON inference (what tritonclient sends) through the router."""

    mix_name = "inference"
    role = "engineer"

    @task
    def infer(self) -> None:
        x = [random.random() for _ in range(4)]
        body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]}
        with self.client.post(
            f"{FIXTURE.router}/v2/models/{FIXTURE.deployment}/infer",
            json=body,
            headers=FIXTURE.headers(self.role),
            name="/v2/models/{m}/infer",
            catch_response=True,
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {resp.text[:200] if resp.text else ''}")
            elif len(json.loads(resp.content)["outputs"][0]["data"]) != 3:
                resp.failure("not 3 logits")
