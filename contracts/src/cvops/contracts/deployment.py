"""Deployment events: serve a model version behind Triton, canary it, degrade, retire.

A deployment is named by the model name clients ask the router for (``deployment``);
it serves one version of a registry model (``model_name``/``version``), optionally with a
weighted canary version of the same model. Requests are events too: the router's
deployment worker answers ``deployment.requested`` with ``deployment.ready`` or
``deployment.failed`` (carrying Triton's own message), and
``deployment.retire_requested`` with ``deployment.retired``.
"""

from __future__ import annotations

import msgspec

from cvops.contracts.envelope import Event

# Engines the router can put behind Triton (python backend locally, native on NGC hosts).
SERVING_ENGINES: tuple[str, ...] = ("onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")


class Canary(msgspec.Struct, frozen=True, kw_only=True):
    """Send ``weight_percent`` of the traffic to another version of the same model."""

    model_version: int
    weight_percent: float


class _DeploymentEvent(Event, frozen=True, kw_only=True):
    deployment: str

    @property
    def aggregate_id(self) -> str:
        return f"deployment-{self.deployment}"


class _ServingSpec(_DeploymentEvent, frozen=True, kw_only=True):
    """What a deployment serves; shared by the request and the ready event.

    Batching fields configure Triton's dynamic batcher (from the benchmark's recommendation);
    ``max_batch_size`` 0 turns batching off.
    """

    model_name: str
    version: int
    engine: str = "onnxruntime-cpu"
    canary: Canary | None = None
    public: bool = False
    max_batch_size: int = 8
    preferred_batch_sizes: list[int] = []
    max_queue_delay_us: int = 500
    instance_count: int = 1


class DeploymentRequested(_ServingSpec, tag="deployment.requested.v1"):
    """Serve ``model_name:version`` as ``deployment`` (a new one, or a rolling update)."""


class DeploymentReady(_ServingSpec, tag="deployment.ready.v1"):
    """Every Triton instance serves the spec; the router routes to it from now on."""

    instances: list[str] = []


class DeploymentDegraded(_DeploymentEvent, tag="deployment.degraded.v1"):
    """Some Triton instance lost the deployment (it died, or a reload failed)."""

    reason: str
    instances_down: list[str] = []


class DeploymentFailed(_DeploymentEvent, tag="deployment.failed.v1"):
    """The request could not be served; ``reason`` carries Triton's message when it refused.

    A previously ready spec of the deployment keeps serving.
    """

    model_name: str
    version: int
    reason: str


class DeploymentRetireRequested(_DeploymentEvent, tag="deployment.retire_requested.v1"):
    """Undeploy: stop serving ``deployment``."""

    reason: str = ""


class DeploymentRetired(_DeploymentEvent, tag="deployment.retired.v1"):
    """The deployment is unloaded from every Triton instance."""

    reason: str = ""


DEPLOYMENT_EVENTS = (
    DeploymentRequested,
    DeploymentReady,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentRetireRequested,
    DeploymentRetired,
)
