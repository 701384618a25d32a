"""A recorded lineage of one model version, built with the contract classes: its data set, a
two-generation GA search, the registered version, a conversion (two targets produced, one
unavailable), a benchmark sweep with its recommendation, and a deployment."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from types import ModuleType

import pytest

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp
from cvops.contracts.conversion import (
    ArtifactProduced,
    BatcherAdvice,
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
from cvops.contracts.deployment import DeploymentReady, DeploymentRequested, ServedArtifact
from cvops.contracts.registry import DatasetValidated, ImageStats, ModelVersionAdded, SplitCounts
from cvops.contracts.training import (
    GenerationCompleted,
    GenerationStarted,
    TrainingCompleted,
    TrainingRequested,
    TrialCompleted,
    TrialMetrics,
    TrialRequested,
    TrialSpec,
    TrialStarted,
    TrialSummary,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MODEL, VERSION, JOB, CONV, BENCH = "digits-cnn", 1, "job-1", "conv-1", "bench-1"
DATASET = "digits"
CLASSES = ["zero", "one", "two"]


def ref(tag: str, size: int = 100) -> ArtifactRef:
    return ArtifactRef(sha256=(tag * 64)[:64], size=size, filename=f"{tag}.bin")


def _stamp(actor: str, minutes: int) -> Stamp:
    return Stamp(now=T0 + timedelta(minutes=minutes), actor=actor, correlation_id="req-1")


# (generation, index) -> (hyperparameters, accuracy, latency ms)
TRIALS = {
    (0, 0): ({"lr": 0.01, "width": 16, "optimizer": "adam"}, 0.81, 1.9),
    (0, 1): ({"lr": 0.05, "width": 32, "optimizer": "sgd"}, 0.86, 2.7),
    (1, 0): ({"lr": 0.02, "width": 24, "optimizer": "adam"}, 0.91, 2.2),
    (1, 1): ({"lr": 0.003, "width": 8, "optimizer": "adam"}, 0.78, 1.1),
}
CHOSEN = "trial-1-0"


def _trial_id(g: int, i: int) -> str:
    return f"trial-{g}-{i}"


def _metrics(acc: float, lat: float) -> TrialMetrics:
    return TrialMetrics(accuracy=acc, latency_ms=lat, size_bytes=40_000, parameters=9_000)


def training_events() -> list[Event]:
    s = _stamp("trainer", 1)
    out: list[Event] = [
        TrainingRequested(
            **_stamp("alice", 0).envelope("req"),
            job_id=JOB,
            dataset=DATASET,
            arch="simple-cnn",
            model_name=MODEL,
        ),
    ]
    for g in (0, 1):
        specs = [
            TrialSpec(trial_id=_trial_id(g, i), index=i, hyperparameters=hp)
            for (gg, i), (hp, _, _) in TRIALS.items()
            if gg == g
        ]
        out.append(GenerationStarted(**s.envelope(f"g{g}"), job_id=JOB, generation=g, trials=specs))
        for (gg, i), (hp, acc, lat) in TRIALS.items():
            if gg != g:
                continue
            tid = _trial_id(g, i)
            ids = {"trial_id": tid, "job_id": JOB, "generation": g, "index": i}
            common = {
                "canonical": ref("c"),
                "classes": CLASSES,
                "channels": 1,
                "image_size": [8, 8],
            }
            out += [
                TrialRequested(
                    **s.envelope(f"{tid}/r"),
                    **ids,
                    arch="simple-cnn",
                    hyperparameters=hp,
                    dataset=DATASET,
                    dataset_version=1,
                    objectives=["accuracy", "latency"],
                    **common,
                ),
                TrialStarted(
                    **s.envelope(f"{tid}/s"),
                    **ids,
                    attempt=1,
                    host="h",
                    device="cpu",
                    parameters=9_000,
                ),
                TrialCompleted(
                    **s.envelope(f"{tid}/c"),
                    **ids,
                    hyperparameters=hp,
                    metrics=_metrics(acc, lat),
                    onnx=ref("o"),
                    weights=ref("w"),
                    normalization={},
                ),
            ]
        out.append(
            GenerationCompleted(
                **s.envelope(f"g{g}/done"),
                job_id=JOB,
                generation=g,
                completed=2,
                failed=0,
                pruned=0,
                front=[],
            )
        )
    front = [
        TrialSummary(
            trial_id=_trial_id(*k),
            generation=k[0],
            index=k[1],
            hyperparameters=hp,
            metrics=_metrics(acc, lat),
            onnx=ref("o"),
        )
        for k, (hp, acc, lat) in TRIALS.items()
        if k in ((1, 0), (1, 1))
    ]
    out.append(
        TrainingCompleted(
            **s.envelope("done"),
            job_id=JOB,
            front=front,
            model_name=MODEL,
            trials_completed=4,
            trials_failed=0,
            trials_pruned=0,
        )
    )
    return out


def dataset_event() -> DatasetValidated:
    return DatasetValidated(
        **_stamp("registry", 0).envelope("ds"),
        dataset_name=DATASET,
        version=1,
        upload_id="up-ds",
        source=ref("s"),
        canonical=ref("c"),
        classes=CLASSES,
        class_counts=[40, 35, 45],
        num_images=120,
        images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=1),
        splits=SplitCounts(train=84, val=18, test=18, calibration=12),
    )


def version_event() -> ModelVersionAdded:
    hp, acc, lat = TRIALS[(1, 0)]
    return ModelVersionAdded(
        **_stamp("registry", 2).envelope("v1"),
        model_name=MODEL,
        version=VERSION,
        upload_id=CHOSEN,
        artifact=ref("m"),
        format="onnx",
        inputs=[],
        outputs=[],
        parameter_count=9_000,
        architecture="simple-cnn",
        lineage=Lineage(
            job_id=JOB,
            generation=1,
            trial_id=CHOSEN,
            dataset=DATASET,
            hyperparameters=hp,
            metrics={"accuracy": acc, "latency_ms": lat},
        ),
    )


PARITY = {
    "onnx": ("fp32", 1.0, 2e-6, 0.9112, 0.9112),
    "int8": ("int8", 0.9721, 0.031, 0.9112, 0.8977),
}


def conversion_events() -> list[Event]:
    s = _stamp("converter", 3)
    keys = {"job_id": CONV, "model_name": MODEL, "version": VERSION}
    out: list[Event] = [
        ConversionRequested(
            **_stamp("alice", 3).envelope("conv"), **keys, targets=["onnx", "int8", "tensorrt-fp16"]
        ),
        ConversionStarted(
            **s.envelope("start"),
            **keys,
            attempt=1,
            host="h",
            source_format="onnx",
            dataset=DATASET,
            dataset_version=1,
            targets=["onnx", "int8", "tensorrt-fp16"],
            input_shape=[-1, 1, 8, 8],
        ),
    ]
    for target, (precision, agree, err, ref_acc, acc) in PARITY.items():
        out.append(
            ArtifactProduced(
                **s.envelope(target),
                **keys,
                target=target,
                artifact=ref(target[0]),
                format="onnx",  # type: ignore[arg-type]
                precision=precision,
                parity=ParityNumbers(
                    n_images=18,
                    max_abs_error=err,
                    mean_abs_error=err / 3,
                    max_rel_error=err,
                    top1_agreement=agree,
                    reference_accuracy=ref_acc,
                    candidate_accuracy=acc,
                    accuracy_drop=round((ref_acc - acc) * 100, 4),
                ),
                gate=GateResult(
                    passed=True,
                    reason="within the drop",
                    basis="accuracy",
                    drop_points=round((ref_acc - acc) * 100, 4),
                    max_accuracy_drop=1.0,
                ),
                source=ref("m"),
                dataset=DATASET,
                dataset_version=1,
                input_shape=[-1, 1, 8, 8],
            )
        )
    out.append(
        TargetUnavailable(
            **s.envelope("trt"),
            **keys,
            target="tensorrt-fp16",
            reason="unavailable: tensorrt is not installed",
        )
    )
    out.append(
        ConversionCompleted(
            **s.envelope("end"),
            **keys,
            produced=["onnx", "int8"],
            rejected=[],
            unavailable=["tensorrt-fp16"],
        )
    )
    return out


def rows() -> list[BenchmarkRow]:
    out = []
    for engine, precision, artifact, base in (
        ("onnxruntime-cpu", "fp32", "onnx", 1.25),
        ("onnxruntime-cpu", "int8", "int8", 0.8125),
    ):
        for b in (1, 8):
            for c in (1, 4):
                p95 = base * b * (1 + 0.5 * (c - 1))
                out.append(
                    BenchmarkRow(
                        engine=engine,
                        precision=precision,
                        artifact=artifact,
                        device="cpu",
                        batch_size=b,
                        concurrency=c,
                        requests=100,
                        images=100 * b,
                        duration_s=1.0,
                        mean_ms=p95 * 0.7,
                        p50_ms=p95 * 0.6,
                        p90_ms=p95 * 0.9,
                        p95_ms=p95,
                        p99_ms=p95 * 1.3,
                        ci95_low_ms=p95 * 0.95,
                        ci95_high_ms=p95 * 1.05,
                        cv=0.1,
                        stable=True,
                        throughput_ips=round(1000 * b * c / p95, 3),
                        peak_rss_mb=210.5 if precision == "fp32" else 180.25,
                        accuracy=0.9 - 0.01 * (precision == "int8"),
                    )
                )
    return out


def benchmark_events() -> list[Event]:
    s = _stamp("benchmarker", 5)
    keys = {"job_id": BENCH, "model_name": MODEL, "version": VERSION}
    measured = rows()
    pick = measured[4]  # int8, batch 1, concurrency 1
    return [
        BenchmarkRequested(
            **_stamp("alice", 5).envelope("bench"),
            **keys,
            batch_sizes=[1, 8],
            concurrency=[1, 4],
            p95_ms=2.0,
        ),
        BenchmarkStarted(
            **s.envelope("bench/start"),
            **keys,
            attempt=1,
            host="bench-host",
            targets=["onnxruntime-cpu/fp32 onnx", "onnxruntime-cpu/int8 int8"],
            unavailable={"tensorrt": "unavailable: no CUDA"},
        ),
        *[
            BenchmarkRowMeasured(**s.envelope(f"row{i}"), **keys, row=r)
            for i, r in enumerate(measured)
        ],
        BenchmarkCompleted(
            **s.envelope("bench/end"),
            **keys,
            met_sla=True,
            reason="fastest under p95 2.0 ms within 1.0 pts",
            pick=pick,
            pareto=[pick, measured[3]],
            batcher=BatcherAdvice(
                preferred_batch_sizes=[1, 8], max_batch_size=8, max_queue_delay_us=300, reason="r"
            ),
            unavailable={"tensorrt": "unavailable: no CUDA"},
            rows=len(measured),
            reference_accuracy=0.9112,
            p95_ms=2.0,
            max_accuracy_drop=1.0,
        ),
    ]


def deployment_events() -> list[Event]:
    served = ServedArtifact(
        target="int8", format="onnx", precision="int8", artifact=ref("i"), conversion_job=CONV
    )
    spec = {
        "deployment": "digits",
        "model_name": MODEL,
        "version": VERSION,
        "engine": "onnxruntime-cpu",
        "precision": "int8",
        "served": served,
        "benchmark_id": BENCH,
    }
    return [
        DeploymentRequested(**_stamp("alice", 8).envelope("dep"), **spec),
        DeploymentReady(
            **_stamp("inference-router", 9).envelope("ready"), **spec, instances=["triton-0"]
        ),
    ]


def lineage_events() -> list[Event]:
    """The whole recorded sequence, in the order the services would publish it."""
    return [
        dataset_event(),
        *training_events(),
        version_event(),
        *conversion_events(),
        *benchmark_events(),
        *deployment_events(),
    ]


@pytest.fixture
def recorded() -> list[Event]:
    events = lineage_events()
    assert len({e.event_id for e in events}) == len(events)  # JetStream would drop a repeat
    return events


@pytest.fixture
def lineage() -> ModuleType:
    """This module: the recorded lineage's names and event builders, for the tests."""
    return sys.modules[__name__]
