"""The Kubernetes manifests (``deploy/k8s/``) agree with the code and with Kubernetes.

Every registered service (``cvops.core.services``) has a Deployment running the image its
Dockerfile builds, with readiness and liveness probes on its health endpoint and port, and
only ``CVOPS_*`` variables that are real ``Settings`` fields; the router has its Service and
autoscaler, Triton its GPU and the model repository it shares with the router. Every object
is checked against Kubernetes's own schemas (``kubernetes-validate``, offline, strict).

NATS is the NATS project's Helm chart: its values carry exactly the users and permissions of
``cvops.core.nats_auth``, and the server config they make is checked by a real nats-server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cvops.core import load_settings, nats_auth
from cvops.core.natsd import nats_server_binary
from cvops.core.services import SERVICES, Service
from cvops.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DEFAULTS = Settings()
SETTINGS_VARS = {f"CVOPS_{f.upper()}" for f in Settings.__struct_fields__}
# the Kubernetes release the manifests are checked against (kubernetes-validate's newest)
KUBERNETES = kubernetes_validate.latest_version()
NOT_MANIFESTS = {"kustomization.yaml", "nats-values.yaml", "nats-auth-values.yaml"}


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [d for name in kustomization["resources"] for d in _load_all(K8S / name)]


def _named(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port_number(container: dict[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def _env(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The container's environment: its ConfigMaps' data, then its own ``env``."""
    maps = _named(objects, "ConfigMap")
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - NOT_MANIFESTS
    assert set(kustomization["resources"]) == files
    images = {i["name"] for i in kustomization["images"]}
    assert images == {f"cvops/{s.name}" for s in SERVICES}


def test_every_object_is_valid_kubernetes(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {err.message} at {err.path}")


def test_every_registered_service_has_a_deployment(objects: list[dict[str, Any]]) -> None:
    deployments = _named(objects, "Deployment")
    assert set(deployments) == {s.name for s in SERVICES} | {"tritonserver"}
    compose = _compose()
    for spec in SERVICES:
        container = _container(deployments[spec.name])
        # the image the Dockerfile builds (the compose service's image)
        assert container["image"] == compose["services"][spec.name]["image"] == f"cvops/{spec.name}"
        assert {p["containerPort"] for p in container["ports"]} == set(spec.port_numbers(DEFAULTS))
        selector = deployments[spec.name]["spec"]["selector"]["matchLabels"]
        labels = deployments[spec.name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), spec.name


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_probes_ask_the_service_health_endpoint(
    objects: list[dict[str, Any]], spec: Service
) -> None:
    container = _container(_named(objects, "Deployment")[spec.name])
    first = spec.port_numbers(DEFAULTS)[0]
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == spec.health
    assert _port_number(container, ready["port"]) == first
    # liveness: the endpoint's "live" twin where it has one (a service that cannot reach
    # NATS is not ready, but restarting it would not help)
    for probe in ("livenessProbe", "startupProbe"):
        live = container[probe]["httpGet"]
        assert live["path"] == spec.health.replace("/ready", "/live")
        assert _port_number(container, live["port"]) == first


@pytest.mark.parametrize("spec", SERVICES, ids=lambda s: s.name)
def test_each_deployment_sets_only_real_settings(
    objects: list[dict[str, Any]], spec: Service
) -> None:
    container = _container(_named(objects, "Deployment")[spec.name])
    env = _env(container, objects)
    cvops = {k for k in env if k.startswith("CVOPS_")}
    assert cvops <= SETTINGS_VARS, f"not cvops.core.Settings fields: {cvops - SETTINGS_VARS}"
    assert set(env) == cvops, f"variables no code reads: {set(env) - cvops}"
    plain = {k: str(v) for k, v in env.items() if isinstance(v, str)}
    settings = load_settings(plain)
    assert settings.metrics_host == "0.0.0.0"
    assert spec.bind_host(settings) == "0.0.0.0"
    assert settings.nats_url == f"nats://nats:{DEFAULTS.nats_port}"
    assert settings.stream_replicas == 3
    for key, value in plain.items():  # any port written down is the default one
        if key.endswith("_PORT"):
            assert int(value) == getattr(DEFAULTS, key[6:].lower()), key
    # its own NATS user, its password from the Secret the NATS release reads too
    assert env["CVOPS_NATS_USER"] == spec.name and spec.name in nats_auth.SERVICES
    ref = env["CVOPS_NATS_PASSWORD"]["secretKeyRef"]
    assert ref == {"name": "cvops-nats", "key": nats_auth.env_password_name(spec.name)}


def test_projections_keep_their_volume_or_rebuild(objects: list[dict[str, Any]]) -> None:
    """A service with one replica keeps its projection on a PVC; the gateway and the router
    (stateless, scaled) rebuild theirs from the log in an emptyDir."""
    claims = _named(objects, "PersistentVolumeClaim")
    for name, deployment in _named(objects, "Deployment").items():
        if name == "tritonserver":
            continue
        pod = deployment["spec"]["template"]["spec"]
        (home,) = [m for m in _container(deployment)["volumeMounts"] if m["name"] == "home"]
        assert home["mountPath"] == "/var/lib/cvops"
        (volume,) = [v for v in pod["volumes"] if v["name"] == "home"]
        if "persistentVolumeClaim" in volume:
            claim = claims[volume["persistentVolumeClaim"]["claimName"]]
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
            assert deployment["spec"]["replicas"] == 1, name
            assert deployment["spec"]["strategy"]["type"] == "Recreate", name
        else:
            assert "emptyDir" in volume and name in {"gateway", "inference-router"}, name


def test_the_router_is_autoscaled_behind_its_service(objects: list[dict[str, Any]]) -> None:
    service = _named(objects, "Service")["inference-router"]
    assert {p["port"] for p in service["spec"]["ports"]} == {
        DEFAULTS.router_http_port,
        DEFAULTS.router_grpc_port,
        DEFAULTS.router_metrics_port,
    }
    router = _named(objects, "Deployment")["inference-router"]
    assert (
        service["spec"]["selector"].items()
        <= router["spec"]["template"]["metadata"]["labels"].items()
    )
    hpa = _named(objects, "HorizontalPodAutoscaler")["inference-router"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "inference-router",
    }
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "replicas" not in router["spec"], "the autoscaler owns the router's replicas"


def test_triton_runs_on_a_gpu_with_the_routers_model_repository(
    objects: list[dict[str, Any]],
) -> None:
    deployments = _named(objects, "Deployment")
    triton = _container(deployments["tritonserver"])
    assert triton["image"] == _compose()["services"]["tritonserver"]["image"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    args = triton["args"]
    assert "--model-control-mode=explicit" in args
    assert f"--http-port={DEFAULTS.triton_http_port}" in args
    assert f"--grpc-port={DEFAULTS.triton_grpc_port}" in args
    assert f"--metrics-port={DEFAULTS.triton_metrics_port}" in args
    repo = next(a.split("=", 1)[1] for a in args if a.startswith("--model-repository="))

    def models_claim(name: str, path: str) -> str:
        deployment = deployments[name]
        (mount,) = [m for m in _container(deployment)["volumeMounts"] if m["mountPath"] == path]
        volumes = deployment["spec"]["template"]["spec"]["volumes"]
        (volume,) = [v for v in volumes if v["name"] == mount["name"]]
        return str(volume["persistentVolumeClaim"]["claimName"])

    router = _container(deployments["inference-router"])
    env = _env(router, objects)
    claim = models_claim("tritonserver", repo)
    assert claim == models_claim("inference-router", env["CVOPS_TRITON_MODEL_REPOSITORY"])
    pvc = _named(objects, "PersistentVolumeClaim")[claim]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # router and Triton pods share it
    service = _named(objects, "Service")["tritonserver"]
    assert (
        env["CVOPS_TRITON_URL"]
        == f"http://{service['metadata']['name']}:{DEFAULTS.triton_http_port}"
    )
    assert DEFAULTS.triton_http_port in {p["port"] for p in service["spec"]["ports"]}


def test_services_expose_their_ports(objects: list[dict[str, Any]]) -> None:
    services = _named(objects, "Service")
    for spec in SERVICES:
        ports = {p["port"] for p in services[spec.name]["spec"]["ports"]}
        assert ports == set(spec.port_numbers(DEFAULTS)), spec.name


# -- NATS: the NATS project's Helm chart ------------------------------------------------------


def _nats_values() -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        yaml.safe_load((K8S / "nats-values.yaml").read_text()),
        yaml.safe_load((K8S / "nats-auth-values.yaml").read_text()),
    )


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of two values files: maps deeply, anything else replaced."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _render_values() -> str:
    sys.path.insert(0, str(K8S))
    try:
        import nats_auth_values  # deploy/k8s/nats_auth_values.py

        return str(nats_auth_values.render())
    finally:
        sys.path.remove(str(K8S))
        sys.modules.pop("nats_auth_values", None)


def test_the_nats_users_are_those_of_nats_auth() -> None:
    """The chart's authorization is the launcher's: every user, every permission."""
    assert (K8S / "nats-auth-values.yaml").read_text() == _render_values(), (
        "deploy/k8s/nats-auth-values.yaml is stale: run "
        "`python deploy/k8s/nats_auth_values.py > deploy/k8s/nats-auth-values.yaml`"
    )
    _, auth = _nats_values()
    users = auth["config"]["merge"]["authorization"]["users"]
    assert [u["user"] for u in users] == nats_auth.users()
    for user in users:
        name = user["user"]
        expected = (
            nats_auth.INTEGRATOR_PERMISSIONS
            if name == nats_auth.INTEGRATOR
            else nats_auth.permissions(name)
        )
        assert user["permissions"] == expected, name
        var = nats_auth.env_password_name(name)
        assert user["password"] == f"<< ${var} >>"
        ref = auth["container"]["env"][var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "cvops-nats", "key": var}


def test_the_nats_secret_has_every_password() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator["name"] == "cvops-nats"
    assert generator["options"]["disableNameSuffixHash"] is True  # the NATS release reads it
    (envs,) = generator["envs"]
    example = (K8S / f"{envs}.example").read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in example if line and not line.startswith("#")]
    assert keys == [nats_auth.env_password_name(u) for u in nats_auth.users()]
    ignored = (ROOT / ".gitignore").read_text().split()
    assert f"deploy/k8s/{envs}" in ignored, "real passwords stay uncommitted"


def test_the_nats_release_is_a_three_node_jetstream_cluster_on_cvops_ports() -> None:
    values, _ = _nats_values()
    config = values["config"]
    assert config["nats"]["port"] == DEFAULTS.nats_port
    assert config["monitor"] == {"enabled": True, "port": DEFAULTS.nats_monitor_port}
    assert config["cluster"]["enabled"] and config["cluster"]["replicas"] == 3
    jetstream = config["jetstream"]
    assert jetstream["enabled"] and jetstream["fileStore"]["enabled"]
    assert jetstream["fileStore"]["pvc"]["enabled"]
    assert jetstream["merge"]["sync_interval"] == "<< always >>"
    # the chart's version is pinned where it is installed; the server is compose's
    text = (K8S / "nats-values.yaml").read_text()
    assert re.search(r"helm install nats nats/nats --version \d+\.\d+\.\d+", text)
    compose_tag = _compose()["services"]["nats"]["image"].split(":", 1)[1]
    assert values["container"]["image"]["tag"] == compose_tag
    config_map = yaml.safe_load((K8S / "config.yaml").read_text())
    assert config_map["data"]["CVOPS_STREAM_REPLICAS"] == "3"


def _as_nats_conf(value: Any) -> str:
    """The chart's rendering of config values: JSON, with ``"<< x >>"`` written as ``x``."""
    return re.sub(r'"<< (.*?) >>"', r"\1", json.dumps(value, indent=1))


def test_the_chart_values_make_a_config_nats_server_accepts(tmp_path: Path) -> None:
    """What the chart writes from these values (the merge blocks over its JetStream and
    listener settings), checked by a real nats-server with every password set."""
    values, auth = _nats_values()
    merged = _merge(values, auth)
    config = merged["config"]
    conf = {
        "port": config["nats"]["port"],
        "http_port": config["monitor"]["port"],
        "jetstream": {"store_dir": str(tmp_path / "js"), **config["jetstream"]["merge"]},
        **config["merge"],
    }
    path = tmp_path / "nats.conf"
    path.write_text(_as_nats_conf(conf))
    env = {
        **os.environ,
        **{nats_auth.env_password_name(u): f"pw-{u}" for u in nats_auth.users()},
    }
    check = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert check.returncode == 0, check.stderr


def test_kustomize_builds_the_manifests(tmp_path: Path) -> None:
    """``kubectl kustomize`` (where kubectl is installed) builds every object, the Secret
    from a passwords file like the one ``python -m cvops.core.nats_auth --env`` writes."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "nats-passwords.env").write_text(nats_auth.env_lines())
    built = subprocess.run(
        [kubectl, "kustomize", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"cvops"}
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "cvops-nats"
    assert set(secret["data"]) == {nats_auth.env_password_name(u) for u in nats_auth.users()}
