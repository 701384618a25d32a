"""Decisions and projection of jobs, deployments, conversions and benchmarks: no broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp
from cvops.contracts.api import (
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    DatasetView,
    ModelVersionView,
)
from cvops.contracts.conversion import (
    ArtifactProduced,
    ArtifactRejected,
    BenchmarkCompleted,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
    ConversionCompleted,
    ConversionRequested,
    ConversionStarted,
    GateResult,
    ParityNumbers,
    TargetUnavailable,
)
from cvops.contracts.deployment import (
    Canary,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.contracts.registry import ImageStats, ModelUploadReceived, ModelVersionAdded, SplitCounts
from cvops.contracts.training import (
    ARCHITECTURES,
    Budget,
    Constraints,
    GenerationCompleted,
    GenerationStarted,
    ParamSpec,
    TrainingCancelRequested,
    TrainingCompleted,
    TrainingPlan,
    TrainingRequested,
    TrainingStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialProgressed,
    TrialRequested,
    TrialSpec,
    TrialStarted,
    TrialSummary,
)
from cvops.core import dump_rows, sqlite_engine
from cvops.domain.training import JobState
from cvops.gateway import benchmark as benchmarks
from cvops.gateway import conversion as conversions
from cvops.gateway import deployment as deployments
from cvops.gateway import projection as views
from cvops.gateway.catalog import projection as catalog_views
from cvops.gateway.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded
from cvops.gateway.training import projection as training_views
from cvops.gateway.training import rules as training

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STAMP = Stamp(now=NOW, actor="eng", correlation_id="req-1")
REF = ArtifactRef(sha256="ab" * 32, size=3, filename="m.onnx")
WEIGHTS = ArtifactRef(sha256="cd" * 32, size=5000, filename="m.onnx.data")  # external data
DATASET = DatasetView(
    name="shapes",
    owner="eng",
    version=1,
    created_at=NOW,
    classes=["a", "b"],
    class_counts=[5, 5],
    num_images=10,
    images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=3),
    splits=SplitCounts(train=6, val=2, test=2, calibration=2),
    source=REF,
    canonical=REF,
)


def version(fmt: str = "onnx", v: int = 1) -> ModelVersionView:
    return ModelVersionView(
        model_name="net",
        version=v,
        stage="none",
        format=fmt,
        artifact=REF,
        inputs=[],
        outputs=[],
        parameter_count=1,
        created_at=NOW,
        created_by="eng",
    )


def train(**fields: Any) -> list[Event]:
    body = msgspec.convert({"dataset": "shapes", "arch": "resnet-mini", **fields}, CreateJob)
    return training.request_training(
        body, job_id="job-1", role="engineer", dataset=DATASET, dataset_rejection=None, stamp=STAMP
    )


# -- decisions -----------------------------------------------------------------------------


def test_a_training_request_keeps_the_users_fields_and_records_the_role() -> None:
    (event,) = train(
        budget={"trials": 24, "population": 6},
        objectives=["accuracy", "latency", "accuracy"],
        constraints={"max_latency_ms": 5},
        device="cuda",
    )
    assert isinstance(event, TrainingRequested)
    assert event.budget == Budget(trials=24, population=6, generations=4)
    assert event.objectives == ["accuracy", "latency"]
    assert (event.role, event.actor, event.correlation_id) == ("engineer", "eng", "req-1")
    assert event.constraints == Constraints(max_latency_ms=5)
    assert train(budget={"trials": 24, "population": 6}) == train(
        budget={"trials": 24, "population": 6}
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"budget": {"trials": 0}}, "budget trials must be at least 1"),
        ({"budget": {"population": 0, "generations": 2}}, "budget population must be at least 1"),
        ({"budget": {"trials": 10, "population": 4}}, "not a multiple of the population 4"),
        ({"budget": {"trials": 9, "population": 2, "generations": 4}}, "contradicts"),
        ({"search_space": {"lr": {"kind": "log_float", "low": 0.1, "high": 0.01}}}, "inverted"),
        ({"search_space": {"lr": {"kind": "float", "low": 0.1, "high": 0.1}}}, "empty range"),
        ({"search_space": {"lr": {"kind": "log_float", "low": 0, "high": 1}}}, "low > 0"),
        ({"search_space": {"depth": {"kind": "int", "low": 1.5, "high": 3}}}, "whole-number"),
        ({"search_space": {"opt": {"kind": "categorical", "choices": []}}}, "no choices"),
        ({"search_space": {"lr": {"kind": "float", "low": 0.1}}}, "needs low and high"),
        ({"objectives": ["accuracy", "speed"]}, "unknown objective 'speed'"),
        ({"objectives": []}, "at least one objective"),
        ({"objectives": ["latency"]}, "must include accuracy"),
        ({"weights": {"accuracy": 1}}, "mode 'weighted'"),
        ({"mode": "weighted", "weights": {"size": 1}}, "not searched: size"),
        ({"constraints": {"max_latency_ms": 0}}, "max_latency_ms must be positive"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"arch": "../x"}, "invalid architecture"),
        ({"job_type": "single", "search_space": {"lr": {"kind": "float"}}}, "not a search_space"),
    ],
)
def test_bad_training_requests_are_refused_with_the_reason(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Invalid, match=reason.replace("(", r"\(")):
        train(**fields)


def test_a_training_request_needs_a_validated_data_set() -> None:
    body = CreateJob(dataset="blobs", arch="resnet-mini")
    args: dict[str, Any] = {"job_id": "j", "role": "engineer", "stamp": STAMP, "dataset": None}
    with pytest.raises(Invalid, match="unknown data set 'blobs'"):
        training.request_training(body, dataset_rejection=None, **args)
    with pytest.raises(Invalid, match="failed validation: corrupt zip"):
        training.request_training(body, dataset_rejection="corrupt zip", **args)
    pinned = CreateJob(dataset="blobs", arch="resnet-mini", dataset_version=3)
    with pytest.raises(Invalid, match="no validated version 3"):
        training.request_training(pinned, dataset_rejection=None, **args)


def test_an_unknown_architecture_is_refused_at_once_naming_the_known_ones() -> None:
    with pytest.raises(Invalid) as refused:
        train(arch="nosucharch")
    assert str(refused.value) == (
        "unknown architecture 'nosucharch'; architectures: simple-cnn, resnet-mini, mobilenet-mini"
    )
    for arch in ARCHITECTURES:
        (event,) = train(arch=arch)
        assert isinstance(event, TrainingRequested) and event.arch == arch


def test_gpu_quotas_count_only_cuda_jobs_per_user_then_per_role() -> None:
    args = {"username": "eng", "role": "engineer", "per_user": 2, "per_role": 3}
    training.check_gpu_quota("cpu", user_running=9, role_running=9, **args)  # type: ignore[arg-type]
    training.check_gpu_quota("cuda", user_running=1, role_running=2, **args)  # type: ignore[arg-type]
    with pytest.raises(QuotaExceeded, match="limit per user is 2"):
        training.check_gpu_quota("cuda", user_running=2, role_running=2, **args)  # type: ignore[arg-type]
    with pytest.raises(QuotaExceeded, match="role engineer has 3"):
        training.check_gpu_quota("cuda", user_running=0, role_running=3, **args)  # type: ignore[arg-type]
    unlimited = {**args, "per_user": 0, "per_role": 0}
    training.check_gpu_quota("cuda", user_running=50, role_running=50, **unlimited)  # type: ignore[arg-type]


def test_cancel_is_for_the_owner_or_an_admin_and_only_once() -> None:
    requested = TrainingRequested(
        **Stamp(now=NOW, actor="ann", correlation_id="job-c").envelope("training/j"),
        job_id="j",
        dataset="shapes",
        arch="simple-cnn",
    )
    job = JobState(job_id="j", status="running", request=requested)
    (cancel,) = training.cancel_training(job, username="ann", is_admin=False, stamp=STAMP)
    assert isinstance(cancel, TrainingCancelRequested)
    assert cancel.correlation_id == "job-c"  # on the job's own feed
    assert training.cancel_training(job, username="root", is_admin=True, stamp=STAMP)
    with pytest.raises(Forbidden):
        training.cancel_training(job, username="bob", is_admin=False, stamp=STAMP)
    asked = msgspec.structs.replace(job, cancel_requested=True)
    assert training.cancel_training(asked, username="ann", is_admin=False, stamp=STAMP) == []
    with pytest.raises(Conflict, match="already completed"):
        done = msgspec.structs.replace(job, status="completed")
        training.cancel_training(done, username="ann", is_admin=False, stamp=STAMP)
    with pytest.raises(NotFound):
        training.cancel_training(None, username="ann", is_admin=False, stamp=STAMP)


def test_canary_syntax_and_deployment_checks() -> None:
    assert deployments.parse_canary("net:2=10%", "net") == Canary(
        model_version=2, weight_percent=10
    )
    assert deployments.parse_canary("v3=2.5", "net") == Canary(model_version=3, weight_percent=2.5)
    for bad, why in (
        ("other:2=10%", "same model"),
        ("net:2=100%", "between 0 and 100"),
        ("x", "must look like"),
    ):
        with pytest.raises(Invalid, match=why):
            deployments.parse_canary(bad, "net")

    body = CreateDeployment(model_name="net", version=1, public=True)
    args: dict[str, Any] = {"canary": None, "canary_version": None, "stamp": STAMP}
    (event,) = deployments.request_deployment(body, version=version(), **args)
    assert isinstance(event, DeploymentRequested) and event.deployment == "net" and event.public
    with pytest.raises(NotFound, match="no version 1"):
        deployments.request_deployment(body, version=None, **args)
    with pytest.raises(Invalid, match="convert it to ONNX"):
        deployments.request_deployment(body, version=version("torchscript"), **args)
    for change, why in (
        ({"engine": "magic"}, "unknown engine"),
        ({"preferred_batch_sizes": [16]}, "outside 1..max_batch_size"),
        ({"instance_count": 0}, "instance_count"),
        ({"deployment": "a b"}, "invalid deployment name"),
    ):
        with pytest.raises(Invalid, match=why):
            bad_body = msgspec.structs.replace(body, **change)
            deployments.request_deployment(bad_body, version=version(), **args)
    canary = Canary(model_version=2, weight_percent=10)
    with pytest.raises(NotFound, match="no version 2"):
        deployments.request_deployment(body, version=version(), **{**args, "canary": canary})


def test_conversion_targets_expand_tensorrt_and_refuse_unknown_ones() -> None:
    assert conversions.conversion_targets(["onnx", "tensorrt", "onnx"]) == [
        "onnx",
        "tensorrt-fp16",
        "tensorrt-int8",
    ]
    with pytest.raises(Invalid, match="unknown target 'tflite'"):
        conversions.conversion_targets(["tflite"])
    body = CreateConversion(model_name="net", version=1, calibration="magic")
    with pytest.raises(Invalid, match="calibration method"):
        conversions.request_conversion(
            body, job_id="c", version=version(), dataset=None, stamp=STAMP
        )
    with pytest.raises(NotFound):
        conversions.request_conversion(body, job_id="c", version=None, dataset=None, stamp=STAMP)


def test_a_conversion_of_a_model_without_lineage_needs_a_data_set() -> None:
    uploaded = version()  # an upload: no data set in its lineage
    body = CreateConversion(model_name="net", version=1)
    with pytest.raises(Invalid, match=r"net:1 has no data set in its lineage.*--dataset"):
        conversions.request_conversion(
            body, job_id="c", version=uploaded, dataset=None, stamp=STAMP
        )
    named = CreateConversion(model_name="net", version=1, dataset="shapes")
    (event,) = conversions.request_conversion(
        named, job_id="c", version=uploaded, dataset=DATASET, stamp=STAMP
    )
    assert isinstance(event, ConversionRequested) and event.dataset == "shapes"
    trained = msgspec.structs.replace(uploaded, lineage=Lineage(dataset="shapes"))
    (event,) = conversions.request_conversion(
        body, job_id="c", version=trained, dataset=None, stamp=STAMP
    )
    assert isinstance(event, ConversionRequested) and event.dataset is None


def test_benchmark_requests_check_sizes_sla_and_the_conversion_job() -> None:
    args: dict[str, Any] = {"job_id": "b", "version": version(), "dataset": None, "stamp": STAMP}
    (event,) = benchmarks.request_benchmark(
        CreateBenchmark(model_name="net", version=1, batch_sizes=[8, 1, 8]), conversion=None, **args
    )
    assert isinstance(event, BenchmarkRequested) and event.batch_sizes == [1, 8]
    for change, why in (
        ({"batch_sizes": []}, "at least one batch size"),
        ({"concurrency": [0]}, "concurrency must be within"),
        ({"p95_ms": -1}, "p95_ms must be positive"),
        ({"conversion_job": "conv-x"}, "unknown conversion job"),
    ):
        body = msgspec.convert({"model_name": "net", "version": 1, **change}, CreateBenchmark)
        with pytest.raises(Invalid, match=why):
            benchmarks.request_benchmark(body, conversion=None, **args)
    other = CreateBenchmark(model_name="net", version=1, conversion_job="conv-y")
    with pytest.raises(Invalid, match="converted net:2"):
        benchmarks.request_benchmark(other, conversion=("net", 2), **args)


# -- projection ----------------------------------------------------------------------------

PARITY = ParityNumbers(
    n_images=8, max_abs_error=1e-4, mean_abs_error=1e-5, max_rel_error=1e-3, top1_agreement=1.0
)
GATE = GateResult(passed=True, reason="ok", basis="accuracy", drop_points=0.1, max_accuracy_drop=1)
METRICS = TrialMetrics(accuracy=0.9, latency_ms=1.5, size_bytes=4096, parameters=1000, epochs=2)
PLAN = TrainingPlan(
    job_type="search",
    arch="resnet-mini",
    dataset="shapes",
    dataset_version=1,
    canonical=REF,
    classes=["a", "b"],
    channels=3,
    image_size=[8, 8],
    space={"lr": ParamSpec(kind="log_float", low=1e-3, high=0.1)},
    fixed={},
    population=2,
    generations=1,
    trials=2,
    objectives=["accuracy", "latency"],
    mode="pareto",
    weights={},
    constraints=Constraints(),
    seed=0,
    target_engine="onnxruntime-cpu",
    device="auto",
    model_name="net",
    register_limit=1,
)


def work_log() -> list[Event]:
    """A job whose trial t0 completes and is registered while t1 fails (its retry too), a
    deployment that is readied then retired, a conversion and a benchmark."""
    s, later = STAMP, Stamp(now=NOW + timedelta(minutes=5), actor="trainer", correlation_id="req-1")
    trial = {"job_id": "job-1", "generation": 0}
    t0, t1 = {**trial, "trial_id": "t0", "index": 0}, {**trial, "trial_id": "t1", "index": 1}
    want = {"arch": "resnet-mini", "dataset": "shapes", "dataset_version": 1, "canonical": REF}
    want |= {"classes": ["a", "b"], "channels": 3, "image_size": [8, 8], "objectives": []}
    hp = {"lr": 0.01}
    done = {"metrics": METRICS, "onnx": REF, "weights": REF, "normalization": {}}
    summary = TrialSummary(
        trial_id="t0", generation=0, index=0, hyperparameters=hp, metrics=METRICS, onnx=REF
    )
    serving = {"deployment": "net", "model_name": "net", "version": 1}
    conv = {"job_id": "c1", "model_name": "net", "version": 1}
    bench = {"job_id": "b1", "model_name": "net", "version": 1}
    row = BenchmarkRow(
        engine="onnxruntime-cpu",
        precision="fp32",
        artifact="onnx",
        device="cpu",
        batch_size=1,
        concurrency=1,
        p95_ms=2.0,
    )
    return [
        TrainingRequested(
            **s.envelope("job"),
            job_id="job-1",
            dataset="shapes",
            arch="resnet-mini",
            device="cuda",
            role="engineer",
        ),
        TrainingStarted(**later.envelope("started"), job_id="job-1", plan=PLAN),
        GenerationStarted(
            **later.envelope("g0"),
            job_id="job-1",
            generation=0,
            trials=[
                TrialSpec(trial_id="t0", index=0, hyperparameters=hp),
                TrialSpec(trial_id="t1", index=1, hyperparameters={"lr": 0.05}),
            ],
        ),
        TrialRequested(**later.envelope("r0"), **t0, **want, hyperparameters=hp),
        TrialRequested(**later.envelope("r1"), **t1, **want, hyperparameters={"lr": 0.05}),
        TrialStarted(
            **later.envelope("s0"), **t0, attempt=1, host="h1", device="cpu", parameters=9
        ),
        TrialProgressed(
            **later.envelope("p0"),
            **t0,
            attempt=1,
            epoch=1,
            epochs=2,
            train_loss=1,
            val_accuracy=0.5,
        ),
        TrialProgressed(
            **later.envelope("p1"),
            **t0,
            attempt=1,
            epoch=2,
            epochs=2,
            train_loss=0.5,
            val_accuracy=0.8,
        ),
        TrialCompleted(**later.envelope("c0"), **t0, hyperparameters=hp, **done),
        TrialStarted(
            **later.envelope("s1"), **t1, attempt=1, host="h2", device="cpu", parameters=9
        ),
        TrialStarted(
            **later.envelope("s1b"), **t1, attempt=2, host="h3", device="cpu", parameters=9
        ),
        TrialFailed(**later.envelope("f1"), **t1, reason="loss is NaN"),
        TrialCompleted(**later.envelope("late"), **t1, hyperparameters=hp, **done),  # too late
        GenerationCompleted(
            **later.envelope("g0done"),
            job_id="job-1",
            generation=0,
            completed=1,
            failed=1,
            pruned=0,
            front=["t0"],
            best_accuracy=0.9,
        ),
        ModelUploadReceived(**later.envelope("up"), upload_id="t0", model_name="net", artifact=REF),
        ModelVersionAdded(
            **later.envelope("v1"),
            model_name="net",
            version=1,
            upload_id="t0",
            artifact=REF,
            format="onnx",
            inputs=[],
            outputs=[],
            parameter_count=1000,
        ),
        TrainingCompleted(
            **later.envelope("done"),
            job_id="job-1",
            front=[summary],
            model_name="net",
            trials_completed=1,
            trials_failed=1,
            trials_pruned=0,
            registered_uploads=["t0"],
        ),
        TrainingCancelRequested(**s.envelope("cancel"), job_id="job-1"),  # too late: ignored
        DeploymentRequested(**s.envelope("dep"), **serving),
        DeploymentReady(**later.envelope("ready"), **serving, instances=["local"]),
        DeploymentRequested(**s.envelope("dep2"), **{**serving, "version": 2}),
        DeploymentFailed(**later.envelope("nope"), **{**serving, "version": 2}, reason="bad"),
        DeploymentRetireRequested(**s.envelope("retire"), deployment="net"),
        DeploymentRetired(**later.envelope("retired"), deployment="net"),
        ConversionRequested(
            **s.envelope("conv"), **conv, targets=["onnx", "int8", "tensorrt-fp16"]
        ),
        ConversionStarted(
            **later.envelope("cs"),
            **conv,
            attempt=1,
            host="h1",
            source_format="onnx",
            dataset="shapes",
            dataset_version=1,
            targets=["onnx", "int8", "tensorrt-fp16"],
            input_shape=[-1, 3, 8, 8],
        ),
        ArtifactProduced(
            **later.envelope("onnx"),
            **conv,
            target="onnx",
            artifact=REF,
            companions=[WEIGHTS],
            format="onnx",
            precision="fp32",
            parity=PARITY,
            gate=GATE,
            source=REF,
            dataset="shapes",
            dataset_version=1,
            input_shape=[-1, 3, 8, 8],
        ),
        ArtifactRejected(**later.envelope("int8"), **conv, target="int8", reason="drop 3.1 > 1"),
        TargetUnavailable(
            **later.envelope("trt"),
            **conv,
            target="tensorrt-fp16",
            reason="unavailable: no tensorrt",
        ),
        ConversionCompleted(
            **later.envelope("cdone"),
            **conv,
            produced=["onnx"],
            rejected=["int8"],
            unavailable=["tensorrt-fp16"],
        ),
        BenchmarkRequested(**s.envelope("bench"), **bench, p95_ms=20),
        BenchmarkStarted(**later.envelope("bs"), **bench, attempt=1, host="h1", targets=["ort"]),
        BenchmarkRowMeasured(**later.envelope("row"), **bench, row=row),
        BenchmarkCompleted(
            **later.envelope("bdone"), **bench, met_sla=True, reason="fastest", pick=row
        ),
    ]


def _apply(engine: Any, events: list[Event]) -> None:
    with Session(engine) as session, session.begin():
        for seq, event in enumerate(events, start=1):
            views.projection.apply(session, event, seq)


def test_work_events_fold_into_rows_and_applying_them_twice_changes_nothing(
    tmp_path: Path,
) -> None:
    engine = sqlite_engine(tmp_path / "g.sqlite")
    views.metadata.create_all(engine)
    events = work_log()
    _apply(engine, events)
    once = dump_rows(engine, views.metadata)
    _apply(engine, events)
    assert dump_rows(engine, views.metadata) == once

    with Session(engine) as s:
        job = training_views.get_job(s, "job-1")
        deployment = deployments.get_deployment(s, "net")
        conversion = conversions.get_conversion(s, "c1")
        artifacts = catalog_views.list_engine_artifacts(s, "net", 1)
        benchmark = benchmarks.get_benchmark(s, "b1")
        (listed,) = training_views.list_jobs(s)
        running_gpu = training_views.running_gpu_jobs(s, owner="eng")
    engine.dispose()

    assert job is not None and job.status == "completed" and not job.cancel_requested
    assert job.owner == "eng" and job.plan == PLAN and job.request.arch == "resnet-mini"
    assert (job.trials_total, job.trials_done, job.best_accuracy) == (2, 2, 0.9)
    first, second = job.trials
    assert (first.status, first.epoch, first.epochs, first.metrics) == ("completed", 2, 2, METRICS)
    assert (second.status, second.reason, second.attempt, second.host) == (
        "failed",
        "loss is NaN",
        2,
        "h3",
    )
    assert job.generations[0].front == ["t0"] and job.generations[0].completed
    assert [t.trial_id for t in job.front] == ["t0"]
    assert [(m.model_name, m.version, m.status) for m in job.models] == [("net", 1, "validated")]
    assert listed.trials_done == 2 and running_gpu == 0

    assert deployment is not None
    assert (deployment.status, deployment.serving_version, deployment.version) == (
        "retired",
        None,
        2,
    )

    assert conversion is not None and conversion.status == "completed" and conversion.host == "h1"
    assert [(t.target, t.status) for t in conversion.targets] == [
        ("onnx", "produced"),
        ("int8", "rejected"),
        ("tensorrt-fp16", "unavailable"),
    ]
    assert conversion.targets[0].parity == PARITY
    assert [(a.target, a.precision) for a in artifacts] == [("onnx", "fp32")]
    # the files beside an engine reach both reads, so its size on disk can be shown
    assert conversion.targets[0].companions == artifacts[0].companions == [WEIGHTS]

    assert benchmark is not None and benchmark.status == "completed"
    assert [(r.engine, r.p95_ms) for r in benchmark.rows] == [("onnxruntime-cpu", 2.0)]
    assert benchmark.request.p95_ms == 20 and benchmark.planned == ["ort"]
    assert benchmark.recommendation is not None and benchmark.recommendation.pick is not None


def test_a_deployment_that_failed_an_update_keeps_serving_its_ready_version(tmp_path: Path) -> None:
    engine = sqlite_engine(tmp_path / "g.sqlite")
    views.metadata.create_all(engine)
    _apply(engine, work_log()[:-12])  # up to the failed update, before the retire
    with Session(engine) as s:
        deployment = deployments.get_deployment(s, "net")
    engine.dispose()
    assert deployment is not None
    assert (deployment.status, deployment.reason) == ("failed", "bad")
    assert (deployment.version, deployment.serving_version) == (2, 1)
