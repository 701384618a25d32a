"""Deployment events: serve a model version behind Triton, canary it, degrade, retire.

A deployment is named by the model name clients ask the router for (``deployment``);
it serves one artifact of a registry model version (``model_name``/``version``): the
version's own ONNX file or an engine the converter produced from it (FP16, INT8, OpenVINO
IR...), named by its sha256 in ``served``, optionally with a weighted canary (another
version, or another engine of the same version). Requests are events too: the router's
deployment worker answers ``deployment.requested`` with ``deployment.ready`` or
``deployment.failed`` (carrying Triton's own message), and
``deployment.retire_requested`` with ``deployment.retired``.
"""

from __future__ import annotations

import msgspec

from cvops.contracts.common import ArtifactRef
from cvops.contracts.conversion import ParityNumbers
from cvops.contracts.envelope import Event

# Engines the router can put behind Triton (python backend locally, native on NGC hosts).
SERVING_ENGINES: tuple[str, ...] = (
    "onnxruntime-cpu",
    "onnxruntime-cuda",
    "onnxruntime-tensorrt",
    "openvino-cpu",
    "tensorrt",
)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")


class ServedArtifact(msgspec.Struct, frozen=True, kw_only=True):
    """The one file (plus companions) a deployment arm serves, named by its sha256.

    ``target`` is the conversion target that produced it (``onnx``, ``int8``, ``openvino``...)
    or ``source``: the model version's own ONNX file. ``parity`` is the conversion's record
    for this artifact and ``probe`` an ``.npz`` of validation inputs (``inputs``) with the
    source model's outputs on them (``reference``): the router checks what it serves
    against both before the deployment goes ready.
    """

    target: str
    format: str  # onnx | openvino-ir | tensorrt-plan
    precision: str
    artifact: ArtifactRef
    companions: list[ArtifactRef] = []
    conversion_job: str | None = None
    parity: ParityNumbers | None = None
    probe: ArtifactRef | None = None


class ServingCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What the router measured through Triton before going ready, against the record."""

    n_images: int
    top1_agreement: float
    max_abs_error: float
    recorded_top1_agreement: float
    recorded_max_abs_error: float
    passed: bool
    reason: str


class Canary(msgspec.Struct, frozen=True, kw_only=True):
    """Send ``weight_percent`` of the traffic to another arm: another version of the same
    model, or (``engine``/``precision`` set) another engine of any version, e.g. the INT8
    engine of the served version beside its FP32 one."""

    model_version: int
    weight_percent: float
    engine: str | None = None  # None: the deployment's engine and precision
    precision: str | None = None
    served: ServedArtifact | None = None


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
    precision: str = "fp32"
    served: ServedArtifact | None = None  # None (events before it existed): the version's file
    benchmark_id: str | None = None  # the benchmark whose recommendation this is


class DeploymentRequested(_ServingSpec, tag="deployment.requested.v1"):
    """Serve ``model_name:version`` as ``deployment`` (a new one, or a rolling update)."""


class DeploymentReady(_ServingSpec, tag="deployment.ready.v1"):
    """Every Triton instance serves the spec; the router routes to it from now on.

    ``checks`` holds the served-output checks per arm (``primary``, ``canary``).
    """

    instances: list[str] = []
    checks: dict[str, ServingCheck] = {}


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
