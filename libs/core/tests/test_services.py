"""The service list: every port it names is a setting, no two defaults collide."""

from __future__ import annotations

from cvops.core import services
from cvops.core.services import SERVICES, module_of
from cvops.core.settings import Settings

DEFAULTS = Settings()
FIELDS = Settings.__struct_fields__


def test_names_are_unique_and_name_their_modules() -> None:
    assert len(services.names()) == len(SERVICES)
    for spec in SERVICES:
        assert services.get(spec.name) is spec
        assert spec.module == module_of(spec.name) == f"cvops.{spec.name.replace('-', '_')}"
    assert services.get("nosuch") is None
    assert module_of("inference-router") == "cvops.inference_router"


def test_every_port_and_host_of_a_service_is_an_integer_setting() -> None:
    for spec in SERVICES:
        assert spec.ports, spec.name
        for field in (*spec.ports, spec.host):
            assert field in FIELDS, f"{spec.name}: Settings has no {field}"
        assert all(isinstance(p, int) for p in spec.port_numbers(DEFAULTS))
        assert spec.health.startswith("/")


def test_a_metrics_only_service_serves_where_it_is_probed() -> None:
    """run_service serves /metrics on Settings.metrics_port(name); the launcher probes the
    service's first port: the same field."""
    for spec in SERVICES:
        if spec.health == "/metrics":
            assert spec.ports == (f"{spec.name.replace('-', '_')}_metrics_port",)
            assert DEFAULTS.metrics_port(spec.name) == spec.port_numbers(DEFAULTS)[0]


def test_every_metrics_port_setting_belongs_to_a_registered_service() -> None:
    claimed = {f for spec in SERVICES for f in spec.ports} | {"triton_metrics_port"}
    stray = {f for f in FIELDS if f.endswith("_metrics_port")} - claimed
    assert stray == set(), "a metrics port for a service not in cvops.core.services"


def test_no_two_default_ports_collide() -> None:
    ports = [p for spec in SERVICES for p in spec.port_numbers(DEFAULTS)]
    ports += [DEFAULTS.nats_port, DEFAULTS.nats_monitor_port]
    ports += [DEFAULTS.triton_http_port, DEFAULTS.triton_grpc_port, DEFAULTS.triton_metrics_port]
    assert len(ports) == len(set(ports))


def test_a_planned_service_keeps_no_projection_yet() -> None:
    for spec in SERVICES:
        if spec.planned:
            assert not spec.projection, f"{spec.name}: a planned service has no entry point yet"
