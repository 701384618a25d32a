"""Conversion and benchmark events: engines made from a model version, and how they run.

A conversion job lives on ``cvops.evt.conversion.<job_id>.*``: the request, one result per
target (``artifact_produced``, ``artifact_rejected`` or ``target_unavailable``) and one end
(``completed`` or ``failed``). A benchmark job lives on ``cvops.evt.benchmark.<job_id>.*``:
the request, one ``row_measured`` per engine x precision x batch size x concurrency (which is
also the resume checkpoint of a sweep) and one end. Produced artifacts name the model version
and its source artifact, so the log links every engine to the weights it came from.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from cvops.contracts.common import ArtifactRef
from cvops.contracts.envelope import Event

ConversionTarget = Literal[
    "onnx", "fp16", "int8", "openvino", "openvino-int8", "tensorrt-fp16", "tensorrt-int8"
]
CONVERSION_TARGETS: tuple[ConversionTarget, ...] = (
    "onnx",
    "fp16",
    "int8",
    "openvino",
    "openvino-int8",
    "tensorrt-fp16",
    "tensorrt-int8",
)
CalibrationMethod = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ("minmax", "entropy", "percentile")
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of top-1 accuracy

# Every inference engine ``cvops.engines`` can measure (a benchmark row's ``engine``); the
# engine registry there is keyed by exactly these names.
ENGINE_NAMES: tuple[str, ...] = (
    "torch-eager",
    "torch-compiled",
    "onnxruntime-cpu",
    "onnxruntime-cuda",
    "onnxruntime-tensorrt",
    "openvino-cpu",
    "tensorrt",
)


# -- value types ----------------------------------------------------------------------------


class ParityNumbers(msgspec.Struct, frozen=True, kw_only=True):
    """How far an artifact's outputs are from the source model's on the same validation images.

    Accuracies are fractions in [0, 1]; ``accuracy_drop`` is in points (source minus artifact).
    ``reference`` says what ran the source: ``torch`` or ``onnxruntime-cpu`` (an ONNX source).
    """

    n_images: int
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    top1_agreement: float
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None
    accuracy_drop: float | None = None
    engine: str = ""
    reference: str = "torch"


class GateResult(msgspec.Struct, frozen=True, kw_only=True):
    """The accuracy gate's verdict with the numbers that decided it."""

    passed: bool
    reason: str
    basis: str  # "accuracy" (labelled split) or "top1-agreement"
    drop_points: float
    max_accuracy_drop: float


class Int8Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One INT8 quantization tried by the fallback: which layers stayed in float, the result."""

    excluded_layers: list[str]
    accuracy_drop: float | None
    top1_agreement: float
    passed: bool


class BenchmarkRow(msgspec.Struct, frozen=True, kw_only=True):
    """One measured cell: an engine at a precision, batch size and concurrency.

    Latencies are per request (one inference of ``batch_size`` images) in ms; ``throughput_ips``
    is images per second; ``accuracy`` a fraction on the validation split. A failed cell has
    ``error`` set (``unavailable: <why>`` when the engine's runtime refused) and no numbers.
    """

    engine: str
    precision: str
    artifact: str  # the conversion target it ran ("source" for the torch engines)
    device: str
    batch_size: int
    concurrency: int
    requests: int = 0
    images: int = 0
    duration_s: float = 0.0
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    ci95_low_ms: float | None = None
    ci95_high_ms: float | None = None
    cv: float | None = None
    stable: bool = False
    throughput_ips: float | None = None
    peak_rss_mb: float | None = None
    gpu_mem_mb: float | None = None
    accuracy: float | None = None
    error: str | None = None

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return (self.engine, self.precision, self.artifact, self.batch_size, self.concurrency)


class BatcherAdvice(msgspec.Struct, frozen=True, kw_only=True):
    """What a Triton dynamic batcher should use for the picked engine."""

    preferred_batch_sizes: list[int]
    max_batch_size: int
    max_queue_delay_us: int
    reason: str


# -- conversion -----------------------------------------------------------------------------


class _ConversionEvent(Event, frozen=True, kw_only=True):
    job_id: str
    model_name: str
    version: int

    @property
    def aggregate_id(self) -> str:
        return self.job_id


class ConversionRequested(_ConversionEvent, tag="conversion.requested.v1"):
    """Convert ``model_name:version`` to ``targets``, each held to the accuracy gate.

    ``dataset`` supplies the validation split (parity, accuracy) and the calibration split
    (INT8); None means the data set the model version was trained on (its lineage).
    ``int8_max_float_layers`` bounds the INT8 fallback (layers kept in float when the gate
    fails): None lets the converter choose (a quarter of the layers), 0 turns it off.
    """

    targets: list[ConversionTarget] = msgspec.field(
        default_factory=lambda: list(CONVERSION_TARGETS)
    )
    opset: int = 18
    calibration: CalibrationMethod = "minmax"
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    dataset: str | None = None
    dataset_version: int | None = None  # None: the lineage's version, else the newest
    validation_images: int | None = None  # cap on validation images (None: the whole split)
    int8_max_float_layers: int | None = None


class ConversionStarted(_ConversionEvent, tag="conversion.started.v1"):
    """A converter took the job (``attempt`` counts deliveries; targets still to produce)."""

    attempt: int
    host: str
    source_format: str
    dataset: str
    dataset_version: int
    targets: list[str]
    input_shape: list[int]  # N, C, H, W of the exported model (N = -1: dynamic batch)
    normalization: dict[str, list[float]] = {}
    normalization_source: str = ""  # lineage | weights | dataset


class ArtifactProduced(_ConversionEvent, tag="conversion.artifact_produced.v1"):
    """An artifact passed the gate and is stored; ``source`` is the model version's artifact.

    ``companions`` are files that must lie beside ``artifact`` under their ``filename``
    (OpenVINO's ``.bin``, ONNX external data). ``probe`` is an ``.npz`` of a few validation
    inputs (``inputs``) and the source model's outputs on them (``reference``), shared by
    the job's artifacts: a deployment checks what it serves against it.
    """

    target: ConversionTarget
    artifact: ArtifactRef
    format: str  # onnx | openvino-ir | tensorrt-plan
    precision: str  # fp32 | fp16 | int8
    parity: ParityNumbers
    gate: GateResult
    source: ArtifactRef
    dataset: str
    dataset_version: int
    input_shape: list[int]
    normalization: dict[str, list[float]] = {}
    companions: list[ArtifactRef] = []
    excluded_layers: list[str] = []  # INT8: layers kept in float by the fallback
    calibration: CalibrationMethod | None = None
    opset: int | None = None
    details: dict[str, str] = {}
    probe: ArtifactRef | None = None


class ArtifactRejected(_ConversionEvent, tag="conversion.artifact_rejected.v1"):
    """A target was not produced: the gate refused it (``stage`` gate) or conversion failed
    (``stage`` conversion); ``reason`` carries the numbers."""

    target: ConversionTarget
    reason: str
    stage: Literal["gate", "conversion"] = "gate"
    parity: ParityNumbers | None = None
    gate: GateResult | None = None
    excluded_layers: list[str] = []  # INT8: layers kept in float in the last attempt
    attempts: list[Int8Attempt] = []


class TargetUnavailable(_ConversionEvent, tag="conversion.target_unavailable.v1"):
    """This host cannot produce the target (its runtime is absent); never faked."""

    target: ConversionTarget
    reason: str


class ConversionCompleted(_ConversionEvent, tag="conversion.completed.v1"):
    """Every requested target has its result."""

    produced: list[str]
    rejected: list[str]
    unavailable: list[str]


class ConversionFailed(_ConversionEvent, tag="conversion.failed.v1"):
    """The job could not go on (unknown model, unusable data set, export failure...).

    ``op`` names the operator when ONNX export failed at one.
    """

    reason: str
    op: str | None = None


# -- benchmark ------------------------------------------------------------------------------


class _BenchmarkEvent(Event, frozen=True, kw_only=True):
    job_id: str
    model_name: str
    version: int

    @property
    def aggregate_id(self) -> str:
        return self.job_id


class BenchmarkRequested(_BenchmarkEvent, tag="benchmark.requested.v1"):
    """Measure every engine this host can run for ``model_name:version`` and pick one.

    ``engines`` empty means all. The SLA (``p95_ms`` per request, ``max_accuracy_drop`` in
    points against the source model) decides the pick. ``time_cap_s`` caps each cell after
    warm-up; a cell stops earlier, once ``min_requests`` are in, as soon as the 95% confidence
    interval of its p95 is within ``±ci_target`` (a fraction) of the p95 and its latencies do
    not drift, and is then ``stable``. Engines run the newest produced artifact per conversion
    target (of ``conversion_job`` when given).
    """

    engines: list[str] = []
    batch_sizes: list[int] = msgspec.field(default_factory=lambda: [1, 8, 32])
    concurrency: list[int] = msgspec.field(default_factory=lambda: [1, 4, 16])
    p95_ms: float | None = None
    max_accuracy_drop: float | None = DEFAULT_MAX_ACCURACY_DROP
    time_cap_s: float = 1.0
    min_requests: int = 30
    warmup: int = 3
    dataset: str | None = None
    dataset_version: int | None = None
    validation_images: int | None = None
    conversion_job: str | None = None
    ci_target: float = 0.05


class BenchmarkStarted(_BenchmarkEvent, tag="benchmark.started.v1"):
    """A benchmarker took the job: what it will measure, what it cannot, rows already done."""

    attempt: int
    host: str
    targets: list[str]  # engine/precision [artifact]
    unavailable: dict[str, str] = {}
    rows_done: int = 0
    gpu: str | None = None  # the leased GPU (lease key) when GPU engines are measured


class BenchmarkRowMeasured(_BenchmarkEvent, tag="benchmark.row_measured.v1"):
    """One finished cell of the sweep (or its error)."""

    row: BenchmarkRow


class BenchmarkCompleted(_BenchmarkEvent, tag="benchmark.completed.v1"):
    """The sweep is done: the Pareto front, the pick under the SLA and why, batcher advice.

    With nothing meeting the SLA, ``pick`` is None, ``met_sla`` False and ``closest`` is the
    row that misses by the least.
    """

    met_sla: bool
    reason: str
    pick: BenchmarkRow | None = None
    closest: BenchmarkRow | None = None
    pareto: list[BenchmarkRow] = []
    batcher: BatcherAdvice | None = None
    unavailable: dict[str, str] = {}  # engine -> "unavailable: <why>"
    rows: int = 0
    failed_rows: int = 0
    reference_accuracy: float | None = None
    p95_ms: float | None = None
    max_accuracy_drop: float | None = None
    host: dict[str, Any] = {}


class BenchmarkFailed(_BenchmarkEvent, tag="benchmark.failed.v1"):
    reason: str


CONVERSION_EVENTS = (
    ConversionRequested,
    ConversionStarted,
    ArtifactProduced,
    ArtifactRejected,
    TargetUnavailable,
    ConversionCompleted,
    ConversionFailed,
    BenchmarkRequested,
    BenchmarkStarted,
    BenchmarkRowMeasured,
    BenchmarkCompleted,
    BenchmarkFailed,
)
