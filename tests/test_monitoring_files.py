"""Monitoring files agree with the code: Prometheus's scrape config, the alert rules, the
Grafana provisioning and dashboard.

Every metric an alert or a panel names must be one the code exports: the names are collected
from the sources' prometheus_client definitions (``Counter("x")`` is scraped as ``x_total``,
``Histogram("x")`` as ``x_bucket``/``x_sum``/``x_count``). The rule and config syntax is
checked by ``promtool`` (Prometheus's own checker, installed by
``deploy/system-packages.sh``): missing, the check fails under CI and is skipped elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cvops.core.services import SERVICES
from cvops.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DEFAULTS = Settings()

# the names the monitoring relies on (issue 14): exported by cvops.core.metrics, the
# projection runner, the gateway and the router
REQUIRED = {
    "cvops_events_handled_total",
    "cvops_events_failed_total",
    "cvops_event_handler_duration_seconds_bucket",
    "cvops_consumer_pending_messages",
    "cvops_projection_lag_events",
    "cvops_projection_stuck",
    "cvops_jobs_total",
    "cvops_job_duration_seconds_bucket",
    "cvops_gpus",
    "cvops_gpu_metrics_available",
    "cvops_gpu_utilization_ratio",
    "cvops_gpu_memory_used_bytes",
    "cvops_gpu_memory_total_bytes",
    "cvops_gpu_temperature_celsius",
    "cvops_gpu_power_watts",
    "cvops_gateway_requests_total",
    "cvops_gateway_request_duration_seconds_bucket",
    "cvops_router_requests_total",
    "cvops_router_request_duration_seconds_bucket",
    "cvops_router_upstream_errors_total",
    "cvops_router_instance_up",
}
# metric names that are not the code's: Prometheus's own
FOREIGN = {"up"}

_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum"
    r"|CounterMetricFamily|GaugeMetricFamily|HistogramMetricFamily|SummaryMetricFamily)"
    r"\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\"",
)
_SUFFIXES = {
    "Counter": ("_total",),
    "CounterMetricFamily": ("_total",),
    "Histogram": ("_bucket", "_sum", "_count"),
    "HistogramMetricFamily": ("_bucket", "_sum", "_count"),
    "Summary": ("_sum", "_count", ""),
    "SummaryMetricFamily": ("_sum", "_count", ""),
    "Info": ("_info",),
}


def exported_metrics() -> set[str]:
    """Every sample name the workspace's prometheus_client definitions produce."""
    names: set[str] = set()
    sources = [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]
    for path in sources:
        for kind, name in _DEFINITION.findall(path.read_text()):
            if kind.startswith("Counter"):
                name = name.removesuffix("_total")
            names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: ours (``cvops_*``) and the known others."""
    stripped = re.sub(r'"[^"]*"', '""', expr)  # label values are not names
    tokens = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", stripped))
    return {t for t in tokens if t.startswith("cvops_")} | (tokens & FOREIGN)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _load(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    return [r for g in _load(PROMETHEUS / "alerts.yml")["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    (path,) = (GRAFANA / "dashboards").glob("*.json")
    return json.loads(path.read_text())


def _panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def _metrics_port(name: str) -> int:
    """The port a service's ``/metrics`` is on: the gateway's HTTP port, the router's metrics
    port, the others' own metrics port."""
    if name == "gateway":
        return DEFAULTS.gateway_port
    if name == "inference-router":
        return DEFAULTS.router_metrics_port
    return DEFAULTS.metrics_port(name)


def test_the_monitoring_relies_on_metrics_the_code_exports() -> None:
    """The names the alerts and the dashboard are built on. A name missing here is one a
    service does not define (yet): the alerts and panels on it would stay silent."""
    missing = REQUIRED - exported_metrics()
    assert not missing, f"not exported by any service: {sorted(missing)}"


def test_every_alert_and_panel_reads_exported_metrics(
    rules: list[dict[str, Any]], dashboard: dict[str, Any]
) -> None:
    exported = exported_metrics() | FOREIGN
    exprs = [r["expr"] for r in rules] + _panel_exprs(dashboard)
    unknown = {name for e in exprs for name in metric_names(e)} - exported
    assert not unknown, f"alerts or panels name metrics no code exports: {sorted(unknown)}"


def test_prometheus_scrapes_every_service_triton_and_nats(compose: dict[str, Any]) -> None:
    config = _load(PROMETHEUS / "prometheus.yml")
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in config["scrape_configs"]}
    for spec in SERVICES:
        assert jobs.pop(spec.name) == [f"{spec.name}:{_metrics_port(spec.name)}"], spec.name
    assert jobs.pop("tritonserver") == [f"tritonserver:{DEFAULTS.triton_metrics_port}"]
    (nats,) = jobs.pop("nats")
    exporter, port = nats.split(":")
    assert jobs == {}, f"scrape jobs of no known target: {sorted(jobs)}"
    # the exporter is the compose service it names, reading NATS's monitoring port
    command = compose["services"][exporter]["command"]
    assert command[-1] == f"http://nats:{DEFAULTS.nats_monitor_port}"
    assert port in compose["services"][exporter]["expose"]
    # each target is a compose service listening on that port
    services = compose["services"]
    for spec in SERVICES:
        spec_ports = {int(str(p).rsplit(":", 1)[-1]) for p in services[spec.name].get("ports", [])}
        spec_ports |= {int(p) for p in services[spec.name].get("expose", [])}
        assert _metrics_port(spec.name) in spec_ports, spec.name
    assert config["rule_files"] == ["alerts.yml"]


def test_compose_mounts_the_monitoring_files(compose: dict[str, Any]) -> None:
    s = compose["services"]
    prom_mounts = {v.split(":")[0]: v.split(":")[1] for v in s["prometheus"]["volumes"]}
    assert prom_mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prom_mounts["./deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in s["prometheus"]["command"]
    graf_mounts = {v.split(":")[0]: v.split(":")[1] for v in s["grafana"]["volumes"]}
    assert graf_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = _load(GRAFANA / "provisioning" / "dashboards" / "cvops.yml")["providers"][0]
    assert graf_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for name in ("prometheus", "grafana"):
        for port in s[name]["ports"]:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_every_third_party_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        if "build" in spec:
            continue
        image = spec["image"]
        _, _, tag = image.rpartition(":")
        assert "/" not in tag and tag and tag != "latest", f"{name}: {image} is not pinned"
        assert re.search(r"\d", tag), f"{name}: {image} names no version"


def test_the_dashboard_reads_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (source,) = _load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert source["url"] == "http://prometheus:9090"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    for panel in graphs:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
    # what the issue asks the dashboard to show, by the metric each view reads
    shown = {n for e in _panel_exprs(dashboard) for n in metric_names(e)}
    for needed in (
        "cvops_gateway_requests_total",
        "cvops_gateway_request_duration_seconds_bucket",
        "cvops_events_handled_total",
        "cvops_events_failed_total",
        "cvops_consumer_pending_messages",
        "cvops_projection_lag_events",
        "cvops_jobs_total",
        "cvops_job_duration_seconds_bucket",
        "cvops_router_request_duration_seconds_bucket",
        "cvops_router_requests_total",
        "cvops_gpu_utilization_ratio",
        "cvops_gpu_memory_used_bytes",
        "cvops_gpu_temperature_celsius",
        "cvops_gpu_power_watts",
    ):
        assert needed in shown, f"the dashboard does not show {needed}"


def test_the_alerts_cover_what_an_operator_must_hear_about(rules: list[dict[str, Any]]) -> None:
    by_name = {r["alert"]: r for r in rules}
    assert len(by_name) == len(rules), "alert names repeat"
    reads = {name: metric_names(r["expr"]) for name, r in by_name.items()}
    expected = {
        "CvopsServiceDown": "up",
        "CvopsConsumerLagGrowing": "cvops_consumer_pending_messages",
        "CvopsProjectionLag": "cvops_projection_lag_events",
        "CvopsProjectionStuck": "cvops_projection_stuck",
        "CvopsGpuMemoryNearlyFull": "cvops_gpu_memory_used_bytes",
        "CvopsGatewayErrorRate": "cvops_gateway_requests_total",
        "CvopsInferenceErrorRate": "cvops_router_requests_total",
    }
    for alert, metric in expected.items():
        assert metric in reads[alert], alert
    jobs = re.search(r'job=~"([^"]+)"', by_name["CvopsServiceDown"]["expr"])
    assert jobs is not None
    assert set(jobs.group(1).split("|")) >= {s.name for s in SERVICES}
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert "for" in rule, rule["alert"]


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is missing: run deploy/system-packages.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def test_promtool_accepts_the_rules() -> None:
    check = subprocess.run(
        [_promtool(), "check", "rules", str(PROMETHEUS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_accepts_the_config() -> None:
    check = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_alerts_fire_when_they_should() -> None:
    """``alerts.test.yml``: series in, alerts out (a service down, a backlog growing on a
    shared consumer, a stuck projection, a full GPU, 5xx shares), by Prometheus's evaluator."""
    check = subprocess.run(
        [_promtool(), "test", "rules", str(PROMETHEUS / "alerts.test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
