"""Training events: a job (search or single run), its generations, and the trials inside.

Job events live on ``cvops.evt.training.<job_id>.*``; every trial is its own aggregate on
``cvops.evt.trial.<trial_id>.*`` so any trainer instance can take it from a shared consumer.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cvops.contracts.common import ArtifactRef
from cvops.contracts.envelope import Event

ParamKind = Literal["float", "log_float", "int", "categorical"]
Objective = Literal["accuracy", "latency", "size"]
OBJECTIVES: tuple[Objective, ...] = ("accuracy", "latency", "size")
# The model zoo's architectures (``cvops.vision.zoo`` builds them and its tests hold the two
# equal), here so that the gateway can refuse an unknown one without importing torch.
ARCHITECTURES: tuple[str, ...] = ("simple-cnn", "resnet-mini", "mobilenet-mini")
SearchMode = Literal["pareto", "weighted"]
JobType = Literal["search", "single"]
DevicePreference = Literal["auto", "cpu", "cuda"]
Choice = str | int | float | bool


class ParamSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One searched hyperparameter: a linear or log range, an integer range, or choices."""

    kind: ParamKind
    low: float | None = None
    high: float | None = None
    choices: list[Choice] | None = None


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """``population`` x ``generations``, or a number of ``trials`` (population chosen for it)."""

    population: int | None = None
    generations: int | None = None
    trials: int | None = None


class Constraints(msgspec.Struct, frozen=True, kw_only=True):
    """Limits a model must meet to count as a result; violators rank below every feasible one."""

    max_latency_ms: float | None = None
    max_parameters: int | None = None
    max_size_bytes: int | None = None


class TrialMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """Measured on the exported ONNX model: val accuracy, batch-1 latency, file size."""

    accuracy: float
    latency_ms: float
    size_bytes: int
    parameters: int
    torch_accuracy: float | None = None  # val accuracy of the torch model before export
    epochs: int = 0
    train_seconds: float = 0.0
    engine: str = "onnxruntime-cpu"


class TrialSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One individual of a generation: its configuration and its genome in [0, 1]^d."""

    trial_id: str
    index: int
    hyperparameters: dict[str, Any]
    genome: list[float] = []
    parents: list[str] = []


class TrialSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A finished trial as a result of the job (a member of the Pareto front)."""

    trial_id: str
    generation: int
    index: int
    hyperparameters: dict[str, Any]
    metrics: TrialMetrics
    onnx: ArtifactRef
    weights: ArtifactRef | None = None
    score: float | None = None  # weighted mode: the scalarised objective


class TrainingPlan(msgspec.Struct, frozen=True, kw_only=True):
    """A validated request with every default filled in (what the coordinator runs)."""

    job_type: JobType
    arch: str
    dataset: str
    dataset_version: int
    canonical: ArtifactRef
    classes: list[str]
    channels: int
    image_size: list[int]  # H, W the models are trained at
    space: dict[str, ParamSpec]
    fixed: dict[str, Any]
    population: int
    generations: int
    trials: int
    objectives: list[Objective]
    mode: SearchMode
    weights: dict[str, float]
    constraints: Constraints
    seed: int
    target_engine: str
    device: DevicePreference
    model_name: str
    register_limit: int
    max_batches_per_epoch: int | None = None


# -- job events ---------------------------------------------------------------------------


class _JobEvent(Event, frozen=True, kw_only=True):
    job_id: str

    @property
    def aggregate_id(self) -> str:
        return self.job_id


class TrainingRequested(_JobEvent, tag="training.requested.v1"):
    """A user asks for a search (or one plain training run) on a registered data set.

    ``search_space`` entries replace the architecture's default range of the same name;
    ``hyperparameters`` fixes values (taken out of the search; all of them for ``single``).
    """

    dataset: str
    arch: str
    dataset_version: int | None = None  # None: the newest validated version
    job_type: JobType = "search"
    search_space: dict[str, ParamSpec] = {}
    hyperparameters: dict[str, Any] = {}
    budget: Budget = Budget()
    objectives: list[Objective] = msgspec.field(default_factory=lambda: ["accuracy", "latency"])
    mode: SearchMode = "pareto"
    weights: dict[str, float] = {}
    constraints: Constraints = Constraints()
    seed: int = 0
    image_size: int | None = None
    epochs: int | None = None
    target_engine: str = "onnxruntime-cpu"
    device: DevicePreference = "auto"
    model_name: str | None = None
    register_limit: int = 5
    role: str = ""
    max_batches_per_epoch: int | None = None  # cap per epoch (smoke runs, benchmarks)


class TrainingStarted(_JobEvent, tag="training.started.v1"):
    plan: TrainingPlan


class GenerationStarted(_JobEvent, tag="training.generation_started.v1"):
    """The population of ``generation`` (the trials that follow are exactly these)."""

    generation: int
    trials: list[TrialSpec]


class GenerationCompleted(_JobEvent, tag="training.generation_completed.v1"):
    """Every trial of ``generation`` ended; ``front`` is the job's Pareto front so far."""

    generation: int
    completed: int
    failed: int
    pruned: int
    front: list[str]
    best_accuracy: float | None = None
    population: ArtifactRef | None = None  # JSON: genomes, configurations, metrics, ranks


class TrainingCompleted(_JobEvent, tag="training.completed.v1"):
    front: list[TrialSummary]
    model_name: str
    trials_completed: int
    trials_failed: int
    trials_pruned: int
    registered_uploads: list[str] = []


class TrainingFailed(_JobEvent, tag="training.failed.v1"):
    reason: str


class TrainingCancelRequested(_JobEvent, tag="training.cancel_requested.v1"):
    reason: str = ""


class TrainingCancelled(_JobEvent, tag="training.cancelled.v1"):
    reason: str = ""


# -- trial events -------------------------------------------------------------------------


class _TrialEvent(Event, frozen=True, kw_only=True):
    trial_id: str
    job_id: str
    generation: int
    index: int

    @property
    def aggregate_id(self) -> str:
        return self.trial_id


class TrialRequested(_TrialEvent, tag="trial.requested.v1"):
    """Everything a trainer instance needs to run one trial without asking anyone."""

    arch: str
    hyperparameters: dict[str, Any]
    dataset: str
    dataset_version: int
    canonical: ArtifactRef
    classes: list[str]
    channels: int
    image_size: list[int]
    objectives: list[Objective]
    constraints: Constraints = Constraints()
    target_engine: str = "onnxruntime-cpu"
    device: DevicePreference = "auto"
    seed: int = 0
    user: str = ""
    role: str = ""
    max_batches_per_epoch: int | None = None


class TrialStarted(_TrialEvent, tag="trial.started.v1"):
    attempt: int
    host: str
    device: str
    parameters: int
    hyperparameters: dict[str, Any] = {}
    # the trainer process that took it, ``host:pid`` (several instances may share a host)
    worker: str = ""


class TrialProgressed(_TrialEvent, tag="trial.progressed.v1"):
    attempt: int
    epoch: int  # 1-based: epochs finished so far
    epochs: int
    train_loss: float
    val_accuracy: float


class TrialCompleted(_TrialEvent, tag="trial.completed.v1"):
    hyperparameters: dict[str, Any]
    metrics: TrialMetrics
    onnx: ArtifactRef
    weights: ArtifactRef
    normalization: dict[str, list[float]]  # mean/std the model's input is standardised with
    host: str = ""
    device: str = ""
    worker: str = ""  # the trainer process that ran it, ``host:pid``


class TrialFailed(_TrialEvent, tag="trial.failed.v1"):
    reason: str
    hyperparameters: dict[str, Any] = {}
    cancelled: bool = False


class TrialPruned(_TrialEvent, tag="trial.pruned.v1"):
    epoch: int
    val_accuracy: float
    reason: str
    hyperparameters: dict[str, Any] = {}


TRAINING_EVENTS = (
    TrainingRequested,
    TrainingStarted,
    GenerationStarted,
    GenerationCompleted,
    TrainingCompleted,
    TrainingFailed,
    TrainingCancelRequested,
    TrainingCancelled,
    TrialRequested,
    TrialStarted,
    TrialProgressed,
    TrialCompleted,
    TrialFailed,
    TrialPruned,
)
