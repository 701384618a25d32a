"""Deployment files agree with the code: compose, Dockerfiles (CPU and GPU), Procfile, NATS
configs. The monitoring files have their own tests (``test_monitoring_files.py``), the
Kubernetes manifests too (``test_k8s_manifests.py``).

The services are the ones registered in ``cvops.core.services``: a service missing from (or
left over in) ``docker-compose.yml``, ``deploy/Procfile``, ``deploy/docker/`` or
``services/`` fails here. A service registered as ``planned`` (no ``services/<name>`` yet)
is held to its declarations only: its image cannot be built, and no test says it can.

Parsing only — no Docker engine is needed (``docker compose config`` is not run). The NATS
cluster example is checked by running it: three real nats-servers on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import tomllib
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
import nats.js.errors
import pytest
import yaml

from cvops.contracts import Stamp
from cvops.contracts.registry import DatasetRejected
from cvops.core import STREAM, Bus, load_settings, nats_auth
from cvops.core.natsd import nats_server_binary
from cvops.core.services import SERVICES, Service
from cvops.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DEFAULTS = Settings()
NAMES = [s.name for s in SERVICES]
BUILT = [pytest.param(s, id=s.name) for s in SERVICES if not s.planned]
PLANNED = [pytest.param(s, id=s.name) for s in SERVICES if s.planned]


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(ROOT / "docker-compose.yml")


def _dockerfile(compose: dict[str, Any], service: str) -> str:
    spec = compose["services"][service]
    assert spec["build"]["context"] == "."
    assert spec["build"]["dockerfile"] == f"deploy/docker/{service}.Dockerfile"
    assert spec["image"] == f"cvops/{service}"
    path = ROOT / spec["build"]["dockerfile"]
    assert path.is_file(), f"{service}: {path} missing"
    return path.read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions with continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def _members() -> dict[str, tuple[Path, list[str]]]:
    """Distribution name → (directory, dependency names) for every workspace member."""
    out = {}
    for pyproject in [ROOT / "contracts" / "pyproject.toml", *ROOT.glob("*/*/pyproject.toml")]:
        if ".venv" in pyproject.parts or not pyproject.is_file():
            continue
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        deps = [re.split(r"[ <>=!\[;]", d, maxsplit=1)[0] for d in project.get("dependencies", [])]
        out[project["name"]] = (pyproject.parent.relative_to(ROOT), deps)
    return out


def _closure(dist: str, members: dict[str, tuple[Path, list[str]]]) -> set[str]:
    """``dist`` and every workspace member it depends on, directly or not."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name in seen or name not in members:
            continue
        seen.add(name)
        todo.extend(members[name][1])
    return seen


def _exposed(steps: list[tuple[str, str]]) -> set[int]:
    return {int(p.split("/")[0]) for op, arg in steps if op == "EXPOSE" for p in arg.split()}


def test_the_workspace_services_are_the_registered_ones() -> None:
    members = {d.name for d in (ROOT / "services").iterdir() if (d / "pyproject.toml").is_file()}
    built = {s.name for s in SERVICES if not s.planned}
    assert members - built == set(), "a services/ member missing from cvops.core.services"
    assert built - members == set(), "registered, not planned, but services/<name> is missing"
    for spec in SERVICES:
        assert spec.source == f"services/{spec.name}"


def test_every_dockerfile_is_a_registered_service() -> None:
    files = {p.name.removesuffix(".Dockerfile") for p in (DEPLOY / "docker").glob("*.Dockerfile")}
    assert files == set(NAMES)


def test_compose_has_nats_triton_and_every_service(compose: dict[str, Any]) -> None:
    monitoring = {"prometheus", "grafana", "nats-exporter"}  # tests/test_monitoring_files.py
    assert set(compose["services"]) == {"nats", "tritonserver", *NAMES, *monitoring}


def _stages(steps: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """A multi-stage Dockerfile's stages, each from its FROM."""
    stages: list[list[tuple[str, str]]] = []
    for step in steps:
        if step[0] == "FROM":
            stages.append([])
        stages[-1].append(step)
    return stages


def _healthcheck(runtime: list[tuple[str, str]]) -> str:
    (check,) = [arg for op, arg in runtime if op == "HEALTHCHECK"]
    options, _, command = check.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "the probe uses python's urllib (no curl in the image)"
    return str(argv[2])


def _declared_image(
    steps: list[tuple[str, str]], spec: Service, runtime_base: str
) -> tuple[list[tuple[str, str]], str]:
    """What every image declares: a build stage that installs from the lock into a venv, and
    a runtime stage with only that venv, an unprivileged user, the service's command, ports
    and health probe. Returns the build stage's steps and its pip installs."""
    build, runtime = _stages(steps)
    assert build[0][0] == "FROM" and build[0][1].endswith(" AS build")
    assert build[0][1].startswith("python:3.11-slim")
    assert runtime[0] == ("FROM", runtime_base)
    (cmd,) = [arg for op, arg in runtime if op == "CMD"]
    assert json.loads(cmd) == ["python", "-m", spec.module]
    assert _exposed(runtime) == set(spec.port_numbers(DEFAULTS))
    # the runtime stage has no sources and no build tools: only what the build stage made
    for op, arg in runtime:
        if op == "COPY":
            assert arg.startswith("--from=build "), f"{spec.name}: runtime copies {arg!r}"
        assert not (op == "RUN" and "pip install" in arg), f"{spec.name}: pip in runtime"
    assert "--from=build /opt/venv /opt/venv" in [arg for op, arg in runtime if op == "COPY"]
    (user,) = [arg for op, arg in runtime if op == "USER"]
    assert user not in {"root", "0"}
    # the probe: the service's health path on its first port, overridable like the port
    probe = _healthcheck(runtime)
    field = spec.ports[0]
    assert f"os.environ.get('CVOPS_{field.upper()}', '{getattr(DEFAULTS, field)}')" in probe
    assert f"'{spec.health}'" in probe
    pip_runs = [arg for op, arg in build if op == "RUN" and "pip install" in arg]
    copied = {arg.split()[0].rstrip("/") for op, arg in build if op == "COPY"}
    assert "requirements.lock" in copied
    for run in pip_runs:  # the versions ./justw installs, not whatever is newest today
        assert "-c requirements.lock" in run, f"{spec.name}: {run!r} ignores the lock"
    return build, " ".join(pip_runs)


def _members_installed(spec: Service, build: list[tuple[str, str]], installs: str) -> bool:
    """Checks the build stage copies and installs every workspace member the service needs;
    returns whether one of them needs torch."""
    members = _members()
    dist = f"cvops-{spec.name}"
    assert members[dist][0] == Path(spec.source)
    closure = _closure(dist, members)
    needs_torch = any("torch" in members[m][1] for m in closure)
    copied = {arg.split()[0].rstrip("/") for op, arg in build if op == "COPY"}
    for d in {str(members[m][0]) for m in closure}:
        assert d in copied, f"{spec.name}: Dockerfile does not COPY {d}"
        assert f"./{d}" in installs.split(), f"{spec.name}: Dockerfile does not install {d}"
    return needs_torch


@pytest.mark.parametrize("spec", BUILT)
def test_each_service_image_runs_its_module(compose: dict[str, Any], spec: Service) -> None:
    steps = _instructions(_dockerfile(compose, spec.name))
    build, installs = _declared_image(steps, spec, "python:3.11-slim")
    needs_torch = _members_installed(spec, build, installs)
    # torch goes in alone first (a cached layer) exactly when a member in the image needs
    # it, and from PyTorch's CPU index: the CUDA build is the GPU images' business
    torch_runs = [
        arg for op, arg in build if op == "RUN" and "pip install" in arg and "torch" in arg.split()
    ]
    assert bool(torch_runs) == needs_torch
    for run in torch_runs:
        assert "--index-url https://download.pytorch.org/whl/cpu" in run


GPU_IMAGES = ["trainer", "converter", "benchmarker"]


def test_gpu_override_names_known_services(
    compose: dict[str, Any],
) -> None:
    """``compose.gpu.yml`` builds trainer, converter and benchmarker from their CUDA
    Dockerfiles (the only ones in ``deploy/docker/gpu/``) and gives them the GPUs."""
    files = {p.name.removesuffix(".Dockerfile") for p in (DEPLOY / "docker/gpu").glob("*")}
    assert files == set(GPU_IMAGES)
    gpu = _load(DEPLOY / "compose.gpu.yml")
    assert set(gpu["services"]) == set(GPU_IMAGES)
    for name in GPU_IMAGES:
        spec = gpu["services"][name]
        assert spec["build"] == {
            "context": ".",
            "dockerfile": f"deploy/docker/gpu/{name}.Dockerfile",
        }
        assert spec["image"] == f"cvops/{name}-gpu"
        (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


@pytest.mark.parametrize("name", GPU_IMAGES)
def test_each_gpu_image_is_its_cpu_image_on_cuda(name: str) -> None:
    spec = next(s for s in SERVICES if s.name == name)
    steps = _instructions((DEPLOY / "docker" / "gpu" / f"{name}.Dockerfile").read_text())
    runtime_base = next(arg for op, arg in reversed(steps) if op == "FROM")
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-[a-z-]+-ubuntu\d\d\.\d\d", runtime_base)
    build, installs = _declared_image(steps, spec, runtime_base)
    needs_torch = _members_installed(spec, build, installs)
    assert needs_torch
    # PyPI's torch (the CUDA build), not the CPU index; ONNX Runtime's GPU build, pinned
    assert "download.pytorch.org" not in installs
    assert re.search(r"onnxruntime-gpu==\d+\.\d+\.\d+", installs)
    assert "pip uninstall -y onnxruntime" in " ".join(arg for op, arg in build if op == "RUN")


def test_no_image_ships_the_test_support() -> None:
    """``libs/testing`` (cvops-testing) is installed for development only: no service needs
    it at runtime and no Dockerfile copies or installs it."""
    members = _members()
    assert members["cvops-testing"][0] == Path("libs/testing")
    for spec in SERVICES:
        if not spec.planned:
            assert "cvops-testing" not in _closure(f"cvops-{spec.name}", members), spec.name
    for dockerfile in sorted((DEPLOY / "docker").glob("*.Dockerfile")):
        assert "libs/testing" not in dockerfile.read_text(), dockerfile.name


@pytest.mark.parametrize("spec", PLANNED)
def test_a_planned_services_image_is_declared_but_cannot_be_built_yet(
    compose: dict[str, Any], spec: Service
) -> None:
    """Its Dockerfile copies ``services/<name>``, which does not exist: ``docker compose
    build`` fails for it until the service is written. Checked here: only what the files
    declare, and that the service is still missing (once it exists, drop ``planned`` so the
    test above holds its image to the member's real dependencies)."""
    steps = _instructions(_dockerfile(compose, spec.name))
    build, installs = _declared_image(steps, spec, "python:3.11-slim")
    copied = {arg.split()[0].rstrip("/") for op, arg in build if op == "COPY"}
    assert spec.source in copied and f"./{spec.source}" in installs.split()
    assert not (ROOT / spec.source).exists(), f"{spec.source} exists: it is no longer planned"


@pytest.mark.parametrize("service", NAMES)
def test_each_service_talks_to_the_nats_service(compose: dict[str, Any], service: str) -> None:
    env = compose["services"][service]["environment"]
    assert env["CVOPS_NATS_URL"] == f"nats://nats:{DEFAULTS.nats_port}"
    assert "nats" in compose["services"][service]["depends_on"]
    fields = {f"CVOPS_{f.upper()}" for f in Settings.__struct_fields__}
    assert set(env) <= fields, f"unknown settings: {set(env) - fields}"
    settings = load_settings({k: str(v) for k, v in env.items()})
    assert settings.metrics_host == "0.0.0.0"
    for key, value in env.items():  # any port written down is the default one
        if key.endswith("_PORT"):
            assert int(value) == getattr(DEFAULTS, key[6:].lower()), key


def _container_ports(spec: dict[str, Any]) -> set[int]:
    published = {int(str(p).rsplit(":", 1)[-1]) for p in spec.get("ports", [])}
    return published | {int(p) for p in spec.get("expose", [])}


def test_ports_are_the_settings_defaults(compose: dict[str, Any]) -> None:
    s = compose["services"]
    for spec in SERVICES:
        assert _container_ports(s[spec.name]) == set(spec.port_numbers(DEFAULTS)), spec.name
    assert _container_ports(s["nats"]) == {DEFAULTS.nats_port, DEFAULTS.nats_monitor_port}
    triton = " ".join(s["tritonserver"]["command"])
    assert f"--http-port={DEFAULTS.triton_http_port}" in triton
    assert f"--grpc-port={DEFAULTS.triton_grpc_port}" in triton
    assert f"--metrics-port={DEFAULTS.triton_metrics_port}" in triton
    for svc in (*NAMES, "nats"):
        for p in s[svc].get("ports", []):
            assert str(p).startswith("127.0.0.1:"), f"{svc} publishes {p} beyond loopback"


def test_nats_runs_jetstream_with_fsync_always(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    assert nats["image"].startswith("nats:2.12.")
    assert "-js" in nats["command"]
    conf_arg = nats["command"][nats["command"].index("-c") + 1]
    (mount,) = [v for v in nats["volumes"] if v.split(":")[1] == conf_arg]
    conf = (ROOT / mount.split(":")[0]).read_text()
    assert "sync_interval: always" in conf
    assert f":{DEFAULTS.nats_port}" in conf and f":{DEFAULTS.nats_monitor_port}" in conf
    check = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(DEPLOY / "nats" / "nats.conf")],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **_passwords()},
    )
    assert check.returncode == 0, check.stderr


def _passwords() -> dict[str, str]:
    """A password for every NATS user, as the compose file's .env holds them."""
    return {nats_auth.env_password_name(u): f"pw-{u}" for u in nats_auth.users()}


@pytest.mark.parametrize("conf", ["nats.conf", "cluster.conf"])
def test_the_nats_configs_carry_every_user_and_permission(conf: str) -> None:
    """Every deployment's NATS requires the users the launcher writes (the same block)."""
    text = (DEPLOY / "nats" / conf).read_text()
    assert text.endswith(nats_auth.deployment_block()), (
        f"deploy/nats/{conf} is stale: put `python -m cvops.core.nats_auth`'s output at its end"
    )


def test_compose_gives_nats_every_password_and_each_service_its_own(
    compose: dict[str, Any],
) -> None:
    env = compose["services"]["nats"]["environment"]
    assert set(env) == set(_passwords())
    for service in NAMES:
        service_env = compose["services"][service]["environment"]
        assert service_env["CVOPS_NATS_USER"] == service
        assert service in nats_auth.SERVICES
        var = nats_auth.env_password_name(service)
        assert service_env["CVOPS_NATS_PASSWORD"].startswith(f"${{{var}:?")


def test_triton_shares_its_model_repository_with_the_router(compose: dict[str, Any]) -> None:
    triton = compose["services"]["tritonserver"]
    router = compose["services"]["inference-router"]
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-control-mode=explicit" in triton["command"]
    repo = next(a.split("=", 1)[1] for a in triton["command"] if a.startswith("--model-repository"))
    (volume,) = [v.split(":")[0] for v in triton["volumes"] if v.split(":")[1] == repo]
    router_repo = router["environment"]["CVOPS_TRITON_MODEL_REPOSITORY"]
    assert f"{volume}:{router_repo}" in router["volumes"]
    assert volume in compose["volumes"]
    url = router["environment"]["CVOPS_TRITON_URL"]
    assert url == f"http://tritonserver:{DEFAULTS.triton_http_port}"


def test_every_volume_is_declared_and_every_mounted_file_exists(
    compose: dict[str, Any],
) -> None:
    """What ``docker compose config`` would refuse (no compose plugin is installed here): a
    named volume no one declared, a bind mount of a file the repository does not have."""
    for name, spec in compose["services"].items():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
        for dependency in spec.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on {dependency}"


def test_triton_has_a_gpu(compose: dict[str, Any]) -> None:
    (device,) = compose["services"]["tritonserver"]["deploy"]["resources"]["reservations"][
        "devices"
    ]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_nats_is_healthy_before_the_services_start(compose: dict[str, Any]) -> None:
    nats = compose["services"]["nats"]
    probe = " ".join(nats["healthcheck"]["test"])
    assert f"http://127.0.0.1:{DEFAULTS.nats_monitor_port}/healthz" in probe
    assert "nats-data:/data" in nats["volumes"]
    for service in NAMES:
        assert compose["services"][service]["depends_on"]["nats"]["condition"] == "service_healthy"


def test_procfile_runs_nats_and_every_service() -> None:
    lines = [
        line.split(":", 1)
        for line in (DEPLOY / "Procfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    procs = {name.strip(): cmd.strip() for name, cmd in lines}
    assert procs.pop("nats") == "python -m cvops.core.local nats"
    assert procs == {s.name: f"python -m {s.module}" for s in SERVICES}


def test_cluster_readme_asks_for_three_replicas() -> None:
    conf = (DEPLOY / "nats" / "cluster.conf").read_text()
    assert "sync_interval: always" in conf
    assert "CVOPS_STREAM_REPLICAS=3" in conf
    assert "CVOPS_STREAM_REPLICAS=3" in (DEPLOY / "README.md").read_text()


# -- the cluster example, for real ---------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_conf(conf: str, client: int, monitor: int, route: int, routes: list[int]) -> str:
    """The example with its hosts mapped to loopback ports (three nodes on one machine)."""
    conf = conf.replace("listen: 0.0.0.0:4250", f"listen: 127.0.0.1:{client}")
    conf = conf.replace("http: 0.0.0.0:8250", f"http: 127.0.0.1:{monitor}")
    conf = conf.replace("listen: 0.0.0.0:6250", f"listen: 127.0.0.1:{route}")
    for i, port in enumerate(routes, start=1):
        conf = conf.replace(f"nats-route://nats-{i}:6250", f"nats-route://127.0.0.1:{port}")
    return conf


def _healthy(monitor_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _event() -> DatasetRejected:
    stamp = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="t", correlation_id="cluster")
    name = f"u{uuid.uuid4().hex[:8]}"
    return DatasetRejected(**stamp.envelope(name), upload_id=name, dataset_name="d", reason="x")


async def _publish_until_acked(bus: Bus, event: DatasetRejected, attempts: int = 10) -> Any:
    """Publish, retrying while the stream has no leader (just created, or its node lost) or
    an ack was lost with its server: a re-publish of the same event is deduplicated."""
    for attempt in range(attempts):
        try:
            return await bus.publish(event)
        except (nats.errors.TimeoutError, TimeoutError, nats.js.errors.NoStreamResponseError):
            assert attempt < attempts - 1
            await asyncio.sleep(0.5)
    raise AssertionError("unreachable")


@pytest.mark.faults  # a kill -9 scenario: ./justw faults (tests/faults/README.md)
async def test_the_cluster_example_keeps_three_replicas_and_survives_a_node(
    tmp_path: Path,
) -> None:
    example = (DEPLOY / "nats" / "cluster.conf").read_text()
    ports = _free_ports(9)
    clients, monitors, routes = ports[0:3], ports[3:6], ports[6:9]
    procs: list[subprocess.Popen[bytes]] = []
    store = Path(tempfile.mkdtemp(prefix="cvops-cluster-", dir=tmp_path))
    try:
        for i in range(3):
            conf = store / f"n{i + 1}.conf"
            conf.write_text(_node_conf(example, clients[i], monitors[i], routes[i], routes))
            env = {
                "NATS_SERVER_NAME": f"nats-{i + 1}",
                "NATS_STORE_DIR": str(store / f"d{i}"),
                **_passwords(),
            }
            log = open(store / f"n{i + 1}.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [nats_server_binary(), "-c", str(conf)], env=env, stdout=log, stderr=log
                )
            )
        deadline = time.monotonic() + 30  # every node healthy: JetStream has a meta leader
        while not all(_healthy(m) for m in monitors):
            assert time.monotonic() < deadline, (store / "n1.log").read_text()[-2000:]
            time.sleep(0.1)
        settings = load_settings(
            {},
            nats_url=",".join(f"nats://127.0.0.1:{p}" for p in clients),
            stream_replicas=3,
            home=str(tmp_path / "home"),
            nats_user="registry",
            nats_password=_passwords()[nats_auth.env_password_name("registry")],
        )
        bus = await Bus.connect(settings, name="cluster-test")
        try:
            info = await bus.js.stream_info(STREAM)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2
            first = await _publish_until_acked(bus, _event())  # a new R3 stream elects first
            # lose the node this client talks to (or another, if that one leads the stream)
            url = bus.nc.connected_url
            victim = clients.index(url.port) if url and url.port in clients else 0
            if f"nats-{victim + 1}" == info.cluster.leader:
                victim = (victim + 1) % 3
            procs[victim].terminate()
            procs[victim].wait(10)
            ack = await _publish_until_acked(bus, _event())
            assert ack.seq == first.seq + 1
            assert await bus.last_seq() == first.seq + 1
        finally:
            await bus.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
