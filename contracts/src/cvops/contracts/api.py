"""HTTP bodies of the gateway (shared by the gateway and the typed client)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from cvops.contracts.common import ArtifactRef, Lineage, TensorSpec
from cvops.contracts.conversion import (
    CONVERSION_TARGETS,
    DEFAULT_MAX_ACCURACY_DROP,
    BatcherAdvice,
    BenchmarkRow,
    GateResult,
    Int8Attempt,
    ParityNumbers,
)
from cvops.contracts.deployment import Canary, ServingCheck
from cvops.contracts.identity import Role
from cvops.contracts.registry import ImageStats, SplitCounts, Stage
from cvops.contracts.reporting import MissingSection
from cvops.contracts.training import (
    Budget,
    Constraints,
    DevicePreference,
    JobType,
    ParamSpec,
    SearchMode,
    TrainingPlan,
    TrialMetrics,
    TrialSummary,
)


class ErrorBody(msgspec.Struct, kw_only=True):
    """The one error shape: ``{"error": code, "detail": ...}``."""

    error: str
    detail: str | dict[str, object] | list[object] | None = None


class LoginRequest(msgspec.Struct, kw_only=True):
    username: str
    password: str


class LoginResponse(msgspec.Struct, kw_only=True):
    token: str
    token_type: str = "bearer"
    expires_at: datetime
    username: str
    role: Role


class UserView(msgspec.Struct, kw_only=True):
    username: str
    role: Role
    created_at: datetime
    disabled: bool = False


class CreateUser(msgspec.Struct, kw_only=True):
    username: str
    password: str
    role: Role = "viewer"


class UpdateUser(msgspec.Struct, kw_only=True):
    role: Role | None = None
    password: str | None = None
    disabled: bool | None = None


class CreateToken(msgspec.Struct, kw_only=True):
    label: str = ""


class TokenCreated(msgspec.Struct, kw_only=True):
    token_id: str
    token: str  # shown once; only its hash is stored
    label: str


class TokenView(msgspec.Struct, kw_only=True):
    token_id: str
    label: str
    created_at: datetime
    revoked: bool


UploadStatus = Literal["pending", "validated", "rejected"]


class ModelVersionView(msgspec.Struct, kw_only=True):
    model_name: str
    version: int
    stage: Stage
    format: str
    artifact: ArtifactRef
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    opset: int | None = None
    architecture: str | None = None
    num_classes: int | None = None
    description: str = ""
    # a factory, not a shared instance: OpenAPI generation hashes plain defaults
    lineage: Lineage = msgspec.field(default_factory=Lineage)
    created_at: datetime
    created_by: str


class ModelView(msgspec.Struct, kw_only=True):
    name: str
    owner: str
    created_at: datetime
    latest_version: int | None
    versions: list[ModelVersionView] = []


class UploadResult(msgspec.Struct, kw_only=True):
    """Outcome of a model or data-set upload (201 validated, 422 rejected, 202 pending)."""

    upload_id: str
    kind: Literal["model", "dataset"]
    name: str
    status: UploadStatus
    version: int | None = None
    reason: str | None = None
    correlation_id: str


class StageChange(msgspec.Struct, kw_only=True):
    stage: Stage


class DatasetView(msgspec.Struct, kw_only=True):
    name: str
    owner: str
    version: int
    created_at: datetime
    classes: list[str]
    class_counts: list[int]
    num_images: int
    images: ImageStats
    splits: SplitCounts
    source: ArtifactRef
    canonical: ArtifactRef
    seed: int = 0
    description: str = ""


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, object] = {}


# -- jobs: training, conversion, benchmark ---------------------------------------------------

JobKind = Literal["training", "conversion", "benchmark"]
JobStatus = Literal["requested", "running", "completed", "failed", "cancelled"]
TrialStatus = Literal["planned", "requested", "running", "completed", "failed", "pruned"]


class JobCreated(msgspec.Struct, kw_only=True):
    """A job request is in the log; follow ``/events/{correlation_id}`` for its progress."""

    job_id: str
    kind: JobKind
    correlation_id: str
    status: JobStatus = "requested"


class CreateJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /jobs``: the user's fields of ``training.requested`` (a search or one run).

    ``search_space`` entries replace the architecture's default range of the same name;
    ``hyperparameters`` fixes values (all of them for ``job_type`` ``single``). ``objectives``
    are names from ``accuracy``, ``latency``, ``size``; ``device`` ``cuda`` counts against the
    GPU quotas.
    """

    dataset: str
    arch: str
    dataset_version: int | None = None
    job_type: JobType = "search"
    search_space: dict[str, ParamSpec] = {}
    hyperparameters: dict[str, Any] = {}
    budget: Budget = msgspec.field(default_factory=Budget)
    objectives: list[str] = msgspec.field(default_factory=lambda: ["accuracy", "latency"])
    mode: SearchMode = "pareto"
    weights: dict[str, float] = {}
    constraints: Constraints = msgspec.field(default_factory=Constraints)
    seed: int = 0
    image_size: int | None = None
    epochs: int | None = None
    target_engine: str = "onnxruntime-cpu"
    device: DevicePreference = "auto"
    model_name: str | None = None
    register_limit: int = 5
    max_batches_per_epoch: int | None = None


class TrialView(msgspec.Struct, kw_only=True):
    """One trial of a job: its configuration, where it ran, its progress and its metrics."""

    trial_id: str
    generation: int
    index: int
    status: TrialStatus
    hyperparameters: dict[str, Any] = {}
    parents: list[str] = []
    attempt: int = 0
    host: str = ""
    device: str = ""
    parameters: int | None = None
    epoch: int = 0
    epochs: int | None = None
    train_loss: float | None = None
    val_accuracy: float | None = None
    metrics: TrialMetrics | None = None
    reason: str | None = None


class GenerationView(msgspec.Struct, kw_only=True):
    generation: int
    trials: list[str]
    completed: bool = False
    trials_completed: int = 0
    trials_failed: int = 0
    trials_pruned: int = 0
    front: list[str] = []  # trial ids of the job's Pareto front after this generation
    best_accuracy: float | None = None


class RegisteredModel(msgspec.Struct, kw_only=True):
    """A model version a job registered (``pending`` until the registry's verdict)."""

    upload_id: str
    model_name: str
    status: UploadStatus
    version: int | None = None
    reason: str | None = None


class JobSummary(msgspec.Struct, kw_only=True):
    """A training job in ``GET /jobs``."""

    job_id: str
    correlation_id: str
    job_type: JobType
    arch: str
    dataset: str
    owner: str
    device: DevicePreference
    status: JobStatus
    created_at: datetime
    finished_at: datetime | None = None
    cancel_requested: bool = False
    trials_total: int | None = None  # known once the trainer planned the job
    trials_done: int = 0
    best_accuracy: float | None = None


class JobView(JobSummary, kw_only=True):
    """``GET /jobs/{id}``: the request, the plan, generations, trials, the front, models."""

    request: CreateJob
    reason: str | None = None
    plan: TrainingPlan | None = None
    generations: list[GenerationView] = []
    trials: list[TrialView] = []
    front: list[TrialSummary] = []
    models: list[RegisteredModel] = []


# -- deployments ------------------------------------------------------------------------------

DeploymentStatus = Literal["requested", "ready", "degraded", "failed", "retiring", "retired"]


class CreateDeployment(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /deployments``: serve ``model_name:version`` (a new deployment or an update).

    ``deployment`` is the name clients infer against (default: ``model_name``). ``engine``
    and ``precision`` pick the artifact served: the version's own ONNX file or an engine the
    converter produced from it. ``from_benchmark`` (a benchmark id) or ``recommended`` (the
    newest completed benchmark of the version) take engine, precision and the batcher
    settings from that benchmark's pick instead; fields given explicitly are refused beside
    them. ``canary`` is ``"MODEL:VERSION=PERCENT%"`` (another version) or
    ``"MODEL:VERSION@PRECISION=PERCENT%"`` / ``"...@ENGINE/PRECISION=..."`` (another
    engine, e.g. the INT8 engine of the same version).
    """

    model_name: str
    version: int
    deployment: str | None = None
    engine: str = "onnxruntime-cpu"
    precision: str = "fp32"
    canary: str | None = None
    public: bool = False
    max_batch_size: int = 8
    preferred_batch_sizes: list[int] = []
    max_queue_delay_us: int = 500
    instance_count: int = 1
    from_benchmark: str | None = None
    recommended: bool = False


class DeploymentView(msgspec.Struct, kw_only=True):
    """A deployment: its last requested spec, the outcome, and the version it serves."""

    deployment: str
    model_name: str
    version: int
    engine: str
    precision: str = "fp32"
    artifact_sha256: str | None = None  # what the primary arm serves
    artifact_target: str | None = None  # the conversion target that made it, or "source"
    benchmark_id: str | None = None
    canary: Canary | None = None
    public: bool = False
    max_batch_size: int = 8
    preferred_batch_sizes: list[int] = []
    max_queue_delay_us: int = 500
    instance_count: int = 1
    checks: dict[str, ServingCheck] = {}  # served-output checks of the serving spec
    status: DeploymentStatus
    reason: str | None = None
    serving_version: int | None = None  # what answers requests now (a failed update keeps it)
    instances: list[str] = []
    requested_by: str
    correlation_id: str  # of the last request: follow it for ready / failed
    requested_at: datetime
    updated_at: datetime


# -- conversions and benchmarks ---------------------------------------------------------------

TargetStatus = Literal["pending", "produced", "rejected", "unavailable"]


class CreateConversion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /conversions``: engines from a model version, each held to the accuracy gate.

    ``targets`` from ``onnx fp16 int8 openvino openvino-int8 tensorrt-fp16 tensorrt-int8``
    (``tensorrt`` means both TensorRT targets). ``dataset`` None: the one in the lineage.
    """

    model_name: str
    version: int
    targets: list[str] = msgspec.field(default_factory=lambda: list(CONVERSION_TARGETS))
    calibration: str = "minmax"
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    dataset: str | None = None
    dataset_version: int | None = None
    validation_images: int | None = None
    opset: int = 18
    int8_max_float_layers: int | None = None


class ConversionTargetView(msgspec.Struct, kw_only=True):
    """What became of one target: produced (with parity), rejected (why) or unavailable."""

    target: str
    status: TargetStatus
    reason: str | None = None
    format: str | None = None
    precision: str | None = None
    artifact: ArtifactRef | None = None
    companions: list[ArtifactRef] = []  # files beside ``artifact`` (OpenVINO's .bin)
    parity: ParityNumbers | None = None
    gate: GateResult | None = None
    excluded_layers: list[str] = []
    attempts: list[Int8Attempt] = []


class ConversionView(msgspec.Struct, kw_only=True):
    job_id: str
    correlation_id: str
    model_name: str
    version: int
    status: JobStatus
    requested_by: str
    created_at: datetime
    finished_at: datetime | None = None
    request: CreateConversion
    reason: str | None = None
    op: str | None = None  # the operator ONNX export failed at
    dataset: str | None = None
    dataset_version: int | None = None
    host: str | None = None
    targets: list[ConversionTargetView] = []


class EngineArtifactView(msgspec.Struct, kw_only=True):
    """An engine produced from a model version (``GET /models/{name}/versions/{v}/artifacts``)."""

    job_id: str
    target: str
    format: str
    precision: str
    artifact: ArtifactRef
    parity: ParityNumbers
    gate: GateResult
    dataset: str
    dataset_version: int
    input_shape: list[int]
    companions: list[ArtifactRef] = []
    excluded_layers: list[str] = []
    calibration: str | None = None
    opset: int | None = None
    probe: ArtifactRef | None = None  # validation inputs and the source's outputs on them
    created_at: datetime


class CreateBenchmark(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /benchmarks``: measure every engine (or ``engines``) and pick one under the SLA."""

    model_name: str
    version: int
    engines: list[str] = []
    batch_sizes: list[int] = msgspec.field(default_factory=lambda: [1, 8, 32])
    concurrency: list[int] = msgspec.field(default_factory=lambda: [1, 4, 16])
    p95_ms: float | None = None
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP
    time_cap_s: float = 1.0
    min_requests: int = 30
    ci_target: float = 0.05  # a cell stops once its p95's 95 % CI is within this fraction
    dataset: str | None = None
    dataset_version: int | None = None
    validation_images: int | None = None
    conversion_job: str | None = None


class BenchmarkRecommendation(msgspec.Struct, kw_only=True):
    """The pick under the SLA and why (``pick`` None: nothing met it; ``closest`` missed least)."""

    met_sla: bool
    reason: str
    pick: BenchmarkRow | None = None
    closest: BenchmarkRow | None = None
    pareto: list[BenchmarkRow] = []
    batcher: BatcherAdvice | None = None
    reference_accuracy: float | None = None
    p95_ms: float | None = None
    max_accuracy_drop: float | None = None
    host: dict[str, Any] = {}


class BenchmarkView(msgspec.Struct, kw_only=True):
    job_id: str
    correlation_id: str
    model_name: str
    version: int
    status: JobStatus
    requested_by: str
    created_at: datetime
    finished_at: datetime | None = None
    request: CreateBenchmark
    reason: str | None = None
    host: str | None = None
    planned: list[str] = []  # engine/precision [artifact] the benchmarker will measure
    unavailable: dict[str, str] = {}
    rows: list[BenchmarkRow] = []
    recommendation: BenchmarkRecommendation | None = None


# -- reports ----------------------------------------------------------------------------------


class ReportView(msgspec.Struct, kw_only=True):
    """The newest report of a model version (``GET /models/{name}/versions/{v}/report``).

    ``html``, ``pdf``, ``data`` and ``chart_files`` are gateway paths to fetch the files
    from (``chart_files`` by chart name); the report reflects the log up to ``last_seq``.
    """

    model_name: str
    version: int
    generated_at: datetime
    last_seq: int
    html: str
    pdf: str
    data: str
    sections: list[str] = []  # the sections with results, in report order
    missing: list[MissingSection] = []  # each other section and what it waits for
    charts: list[str] = []
    chart_files: dict[str, str] = {}
    training_job: str | None = None  # the lineage: the job that produced the version
    conversion_jobs: list[str] = []
    benchmark_jobs: list[str] = []
    deployments: list[str] = []


# -- system: services, streams, GPUs and their leases (GET /system) --------------------------


class ConsumerView(msgspec.Struct, kw_only=True):
    """A durable work consumer as one instance sees it."""

    durable: str
    pending: int  # messages not yet delivered to any instance
    in_flight: int = 0  # delivered, not yet acknowledged


class ProjectionLagView(msgspec.Struct, kw_only=True):
    """One projection of an instance: its position, how far behind, where it is stuck."""

    name: str
    position: int
    lag: int | None  # None: could not be measured
    stuck_at: int = 0  # the event it cannot apply (0: not stuck)


class InstanceView(msgspec.Struct, kw_only=True):
    """One running instance of a service, as it last reported itself."""

    instance: str  # host and pid
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen: datetime
    health: str  # "ready", or why not
    consumers: list[ConsumerView] = []
    projections: list[ProjectionLagView] = []


class ServiceView(msgspec.Struct, kw_only=True):
    """A service: ``up`` when every instance is ready, ``degraded`` when one is not,
    ``down`` when none reports."""

    name: str
    status: Literal["up", "degraded", "down"]
    instances: list[InstanceView] = []


class StreamView(msgspec.Struct, kw_only=True):
    """A JetStream stream's state."""

    name: str
    messages: int
    bytes: int
    first_seq: int
    last_seq: int
    consumers: int


class LeaseView(msgspec.Struct, kw_only=True):
    """A live lease in KV ``cvops-leases`` (``gpu.<host>.<index>``)."""

    resource: str
    holder: str
    user: str = ""
    role: str = ""
    acquired_at: datetime
    expires_at: datetime


class GpuView(msgspec.Struct, kw_only=True):
    """One GPU of a host with its numbers as last reported (None: NVML does not say)."""

    index: int
    name: str
    uuid: str = ""
    memory_total_bytes: int
    memory_used_bytes: int | None = None
    utilization_ratio: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    lease: LeaseView | None = None  # who holds it now


class HostView(msgspec.Struct, kw_only=True):
    """A host that runs cvops instances, and its GPUs."""

    host: str
    services: list[str] = []
    gpu_metrics_available: bool = False
    gpus: list[GpuView] = []


class SystemView(msgspec.Struct, kw_only=True):
    """The whole platform now: services and instances, the event streams, hosts with their
    GPUs, and every live lease."""

    services: list[ServiceView]
    streams: list[StreamView]
    hosts: list[HostView]
    leases: list[LeaseView] = []
