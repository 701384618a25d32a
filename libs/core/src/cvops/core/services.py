"""The one list of cvops services: register a service here and nowhere else.

Everything that has to know the services reads :data:`SERVICES`: the local launcher
(start order, health probes), ``cvops projections rebuild`` (which names have a
projection), and ``tests/test_deploy_files.py``, which holds ``docker-compose.yml``,
``deploy/Procfile`` and ``deploy/docker/*.Dockerfile`` to this list. The ``typecheck``
recipe and ``./justw`` find the sources by the workspace layout (``services/*``), so a
new service needs no entry there.

Adding a service: its ``services/<name>`` member, a :class:`Service` here, its port fields
in :class:`~cvops.core.settings.Settings` (``<name>_metrics_port``; a test fails until they
exist), and the three deploy files (their test says what is missing).
"""

from __future__ import annotations

from dataclasses import dataclass

from cvops.core.settings import Settings


def module_of(service: str) -> str:
    """``inference-router`` → ``cvops.inference_router``."""
    return f"cvops.{service.replace('-', '_')}"


@dataclass(frozen=True)
class Service:
    """One service: its name, the ports it listens on and how to tell that it is healthy."""

    # the process, pid file, log, compose service and Dockerfile name: ``services/<name>``
    name: str
    # the Settings fields of every port it listens on; the first is the one probed
    ports: tuple[str, ...]
    # the Settings field of the address it binds
    host: str = "metrics_host"
    # the HTTP path on the first port that answers 2xx while it is healthy
    health: str = "/metrics"
    # declares an entry point ``<name>`` in ``cvops.projections`` (``cvops projections rebuild``)
    projection: bool = True
    # named in the deploy files and started when installed, but ``services/<name>`` does not
    # exist yet: the launcher skips it and its image cannot be built
    planned: bool = False
    # its CPU priority under ``./justw up`` (``nice``): background work that nobody waits on
    # yields the cores to the services that answer requests (in Kubernetes: a smaller CPU
    # request)
    nice: int = 0

    @property
    def module(self) -> str:
        """What ``python -m`` runs."""
        return module_of(self.name)

    @property
    def source(self) -> str:
        """Its workspace member, relative to the repository root."""
        return f"services/{self.name}"

    def port_numbers(self, settings: Settings) -> tuple[int, ...]:
        return tuple(int(getattr(settings, field)) for field in self.ports)

    def bind_host(self, settings: Settings) -> str:
        return str(getattr(settings, self.host))


# in the order they start (and stop in reverse)
SERVICES: tuple[Service, ...] = (
    Service("registry", ports=("registry_metrics_port",)),
    Service("gateway", ports=("gateway_port",), host="gateway_host", health="/health/ready"),
    Service("trainer", ports=("trainer_metrics_port",)),
    Service("converter", ports=("converter_metrics_port",)),
    Service("benchmarker", ports=("benchmarker_metrics_port",)),
    Service(
        "inference-router",
        ports=("router_http_port", "router_grpc_port", "router_metrics_port"),
        host="router_host",
        health="/v2/health/ready",
    ),
    # one report with charts per model version, rebuilt as its results arrive
    Service("reporter", ports=("reporter_metrics_port",), nice=10),
)

_BY_NAME = {s.name: s for s in SERVICES}


def names() -> tuple[str, ...]:
    """Every registered service name, in start order."""
    return tuple(_BY_NAME)


def get(name: str) -> Service | None:
    """The registered service called ``name``, or None."""
    return _BY_NAME.get(name)
