"""What the trainer, router, converter and benchmarker would answer, scripted for
:class:`cvops.testing.client.FakeGateway`.

Each function turns a request body into a *story*: the event feed of the request (SSE text
of real contract events, as the gateway serves them) and the read model at its end. Numbers
are made up but consistent, so tests of the CLI can check tables and progress against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec

from cvops.contracts import ArtifactRef, Event, Stamp, encode
from cvops.contracts.api import (
    BenchmarkRecommendation,
    BenchmarkView,
    ConversionTargetView,
    ConversionView,
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    DeploymentView,
    EngineArtifactView,
    GenerationView,
    JobView,
    RegisteredModel,
    ReportView,
    TrialView,
)
from cvops.contracts.conversion import (
    CONVERSION_TARGETS,
    ArtifactProduced,
    ArtifactRejected,
    BatcherAdvice,
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
    ConversionCompleted,
    ConversionFailed,
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
from cvops.contracts.registry import ModelUploadReceived, ModelVersionAdded
from cvops.contracts.reporting import MissingSection, ReportGenerated
from cvops.contracts.training import (
    Constraints,
    GenerationCompleted,
    GenerationStarted,
    TrainingCompleted,
    TrainingFailed,
    TrainingPlan,
    TrainingRequested,
    TrainingStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialProgressed,
    TrialSpec,
    TrialStarted,
    TrialSummary,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
ONNX = ArtifactRef(sha256="ef" * 32, size=48_000, filename="model.onnx")
# OpenVINO IR: a small .xml graph and the .bin weights beside it (a companion)
OPENVINO_XML = ArtifactRef(sha256="e1" * 32, size=59_000, filename="model.xml")
OPENVINO_BIN = ArtifactRef(sha256="e2" * 32, size=5_600_000, filename="model.bin")


@dataclass
class Story:
    """A request's feed (SSE text) and the read model where the feed ends."""

    sse: str
    view: Any
    engines: list[EngineArtifactView] = field(default_factory=list)


def feed(events: list[Event]) -> str:
    """The SSE text the gateway serves for these events (sequences from 1)."""
    blocks = [
        f"id: {seq}\nevent: {e.tag()}\ndata: {encode(e).decode()}\n\n"
        for seq, e in enumerate(events, start=1)
    ]
    return "".join(blocks)


def _stamp(actor: str, correlation_id: str) -> Stamp:
    return Stamp(now=T0, actor=actor, correlation_id=correlation_id)


# -- training ------------------------------------------------------------------------------


def _metrics(generation: int, index: int, epochs: int) -> TrialMetrics:
    return TrialMetrics(
        accuracy=round(0.80 + 0.05 * generation + 0.02 * index, 4),
        latency_ms=round(0.5 + 0.25 * index, 3),
        size_bytes=40_000 + 8_000 * index,
        parameters=10_000 + 2_000 * index,
        epochs=epochs,
    )


def training(
    body: CreateJob, *, job_id: str, correlation_id: str, user: str, outcome: str
) -> Story:
    """A search of population x generations trials; the last trial of the first generation
    fails when the population has more than one; the best two form the front and are
    registered. ``outcome``: completed, failed (at validation) or running (no end yet)."""
    b = body.budget
    population = b.population or (min(b.trials, 4) if b.trials else 2)
    generations = b.generations or (-(-b.trials // population) if b.trials else 2)
    epochs = body.epochs or 2
    user_stamp, trainer = _stamp(user, correlation_id), _stamp("trainer", correlation_id)
    request = TrainingRequested(
        **user_stamp.envelope("request"),
        job_id=job_id,
        **{k: getattr(body, k) for k in CreateJob.__struct_fields__ if k != "objectives"},
        objectives=body.objectives,  # type: ignore[arg-type]
        role="engineer",
    )
    view = JobView(
        job_id=job_id,
        correlation_id=correlation_id,
        job_type=body.job_type,
        arch=body.arch,
        dataset=body.dataset,
        owner=user,
        device=body.device,
        status="requested",
        created_at=T0,
        request=body,
    )
    events: list[Event] = [request]
    if outcome == "failed":
        reason = f"image size 8x8 too small for {body.arch} (min 16)"
        events.append(TrainingFailed(**trainer.envelope("failed"), job_id=job_id, reason=reason))
        view.status, view.reason, view.finished_at = "failed", reason, T0
        return Story(feed(events), view)

    model_name = body.model_name or f"{body.arch}-{body.dataset}"
    plan = TrainingPlan(
        job_type=body.job_type,
        arch=body.arch,
        dataset=body.dataset,
        dataset_version=1,
        canonical=ONNX,
        classes=["circle", "square"],
        channels=3,
        image_size=[32, 32],
        space=dict(body.search_space),
        fixed=dict(body.hyperparameters),
        population=population,
        generations=generations,
        trials=population * generations,
        objectives=body.objectives,  # type: ignore[arg-type]
        mode=body.mode,
        weights=dict(body.weights),
        constraints=body.constraints or Constraints(),
        seed=body.seed,
        target_engine=body.target_engine,
        device=body.device,
        model_name=model_name,
        register_limit=body.register_limit,
    )
    events.append(TrainingStarted(**trainer.envelope("started"), job_id=job_id, plan=plan))
    view.status, view.plan, view.trials_total = "running", plan, plan.trials
    done: list[TrialSummary] = []
    for g in range(generations):
        specs = [
            TrialSpec(
                trial_id=f"{job_id}-g{g}-t{i}",
                index=i,
                hyperparameters={"lr": round(0.01 * (i + 1), 4), "width": 0.5},
            )
            for i in range(population)
        ]
        events.append(
            GenerationStarted(
                **trainer.envelope(f"g{g}"), job_id=job_id, generation=g, trials=specs
            )
        )
        failed = 0
        for spec in specs:
            trial: dict[str, Any] = {"job_id": job_id, "generation": g, "index": spec.index}
            trial["trial_id"] = spec.trial_id
            key = spec.trial_id
            events.append(
                TrialStarted(
                    **trainer.envelope(f"{key}/started"),
                    **trial,
                    attempt=1,
                    host="host-a",
                    device="cpu",
                    parameters=10_000,
                )
            )
            for epoch in range(1, epochs + 1):
                events.append(
                    TrialProgressed(
                        **trainer.envelope(f"{key}/epoch{epoch}"),
                        **trial,
                        attempt=1,
                        epoch=epoch,
                        epochs=epochs,
                        train_loss=round(1.0 / epoch, 3),
                        val_accuracy=round(0.5 + 0.1 * epoch, 3),
                    )
                )
            state: dict[str, Any] = {"epoch": epochs, "epochs": epochs, "attempt": 1}
            if g == 0 and population > 1 and spec.index == population - 1:
                failed += 1
                events.append(
                    TrialFailed(**trainer.envelope(f"{key}/failed"), **trial, reason="loss is NaN")
                )
                state.update(status="failed", reason="loss is NaN")
            else:
                m = _metrics(g, spec.index, epochs)
                events.append(
                    TrialCompleted(
                        **trainer.envelope(f"{key}/completed"),
                        **trial,
                        hyperparameters=spec.hyperparameters,
                        metrics=m,
                        onnx=ONNX,
                        weights=ONNX,
                        normalization={"mean": [0.5], "std": [0.25]},
                    )
                )
                state.update(status="completed", metrics=m, val_accuracy=m.accuracy)
                done.append(
                    TrialSummary(
                        trial_id=spec.trial_id,
                        generation=g,
                        index=spec.index,
                        hyperparameters=spec.hyperparameters,
                        metrics=m,
                        onnx=ONNX,
                    )
                )
            view.trials.append(
                TrialView(
                    trial_id=spec.trial_id,
                    generation=g,
                    index=spec.index,
                    hyperparameters=spec.hyperparameters,
                    host="host-a",
                    device="cpu",
                    **state,
                )
            )
        if outcome == "running" and g == 0:
            view.trials_done = len(view.trials)
            return Story(feed(events), view)
        best = max((t.metrics.accuracy for t in done), default=None)
        front = sorted(done, key=lambda t: -t.metrics.accuracy)[:2]
        events.append(
            GenerationCompleted(
                **trainer.envelope(f"g{g}/completed"),
                job_id=job_id,
                generation=g,
                completed=population - failed,
                failed=failed,
                pruned=0,
                front=[t.trial_id for t in front],
                best_accuracy=best,
            )
        )
        view.generations.append(
            GenerationView(
                generation=g,
                trials=[s.trial_id for s in specs],
                completed=True,
                trials_completed=population - failed,
                trials_failed=failed,
                front=[t.trial_id for t in front],
                best_accuracy=best,
            )
        )
    registry = _stamp("registry", correlation_id)
    for version, t in enumerate(front, start=1):
        events += [
            ModelUploadReceived(
                **trainer.envelope(f"upload/{t.trial_id}"),
                upload_id=t.trial_id,
                model_name=model_name,
                artifact=ONNX,
            ),
            ModelVersionAdded(
                **registry.envelope(f"version/{t.trial_id}"),
                model_name=model_name,
                version=version,
                upload_id=t.trial_id,
                artifact=ONNX,
                format="onnx",
                inputs=[],
                outputs=[],
                parameter_count=t.metrics.parameters,
            ),
        ]
    failures = sum(1 for t in view.trials if t.status == "failed")
    events.append(
        TrainingCompleted(
            **trainer.envelope("completed"),
            job_id=job_id,
            front=front,
            model_name=model_name,
            trials_completed=len(done),
            trials_failed=failures,
            trials_pruned=0,
            registered_uploads=[t.trial_id for t in front],
        )
    )
    view.status, view.finished_at, view.front = "completed", T0, front
    view.trials_done, view.best_accuracy = len(view.trials), front[0].metrics.accuracy
    view.models = [
        RegisteredModel(upload_id=t.trial_id, model_name=model_name, status="validated", version=v)
        for v, t in enumerate(front, start=1)
    ]
    return Story(feed(events), view)


# -- deployments ---------------------------------------------------------------------------


def deployment(body: CreateDeployment, *, correlation_id: str, user: str, outcome: str) -> Story:
    """The router's answer: ready on one instance, or failed with Triton's message."""
    name = body.deployment or body.model_name
    canary = None
    if body.canary:
        version_part, _, percent = body.canary.rpartition(":")[2].partition("=")
        canary = Canary(model_version=int(version_part), weight_percent=float(percent.rstrip("%")))
    spec: dict[str, Any] = {
        "deployment": name,
        "model_name": body.model_name,
        "version": body.version,
        "engine": body.engine,
        "precision": body.precision,
        "benchmark_id": body.from_benchmark,
        "canary": canary,
        "public": body.public,
        "max_batch_size": body.max_batch_size,
        "preferred_batch_sizes": list(body.preferred_batch_sizes),
        "max_queue_delay_us": body.max_queue_delay_us,
        "instance_count": body.instance_count,
    }
    router = _stamp("inference-router", correlation_id)
    events: list[Event] = [
        DeploymentRequested(**_stamp(user, correlation_id).envelope("d"), **spec)
    ]
    view = DeploymentView(
        **spec,
        status="ready",
        requested_by=user,
        correlation_id=correlation_id,
        requested_at=T0,
        updated_at=T0,
    )
    if outcome == "failed":
        reason = "failed to load 'model': onnxruntime: Invalid model (Triton)"
        events.append(
            DeploymentFailed(
                **router.envelope("failed"),
                deployment=name,
                model_name=body.model_name,
                version=body.version,
                reason=reason,
            )
        )
        view.status, view.reason = "failed", reason
    else:
        events.append(DeploymentReady(**router.envelope("ready"), **spec, instances=["local"]))
        view.serving_version, view.instances = body.version, ["local"]
    return Story(feed(events), view)


def retirement(current: DeploymentView, *, correlation_id: str, user: str) -> Story:
    events: list[Event] = [
        DeploymentRetireRequested(
            **_stamp(user, correlation_id).envelope("retire"), deployment=current.deployment
        ),
        DeploymentRetired(
            **_stamp("inference-router", correlation_id).envelope("retired"),
            deployment=current.deployment,
        ),
    ]
    view = msgspec.structs.replace(
        current,
        status="retired",
        serving_version=None,
        instances=[],
        correlation_id=correlation_id,
        reason=None,
    )
    return Story(feed(events), view)


# -- conversions and benchmarks ------------------------------------------------------------

_PRECISION = {"fp16": "fp16", "int8": "int8", "openvino-int8": "int8"}


def conversion(
    body: CreateConversion, *, job_id: str, correlation_id: str, user: str, outcome: str
) -> Story:
    """ONNX-family targets are produced, INT8 is rejected by the gate (with the layers the
    fallback kept in float), TensorRT is unavailable; ``outcome`` failed: export failed."""
    targets: list[str] = [t for t in body.targets if t in CONVERSION_TARGETS]
    if "tensorrt" in body.targets:
        targets += ["tensorrt-fp16", "tensorrt-int8"]
    ids: dict[str, Any] = {"job_id": job_id, "model_name": body.model_name, "version": body.version}
    converter = _stamp("converter", correlation_id)
    events: list[Event] = [
        ConversionRequested(
            **_stamp(user, correlation_id).envelope("request"),
            **ids,
            targets=targets,  # type: ignore[arg-type]
            max_accuracy_drop=body.max_accuracy_drop,
        )
    ]
    view = ConversionView(
        job_id=job_id,
        correlation_id=correlation_id,
        model_name=body.model_name,
        version=body.version,
        status="completed",
        requested_by=user,
        created_at=T0,
        finished_at=T0,
        request=body,
        dataset="shapes",
        dataset_version=1,
        host="host-a",
    )
    if outcome == "failed":
        reason = "ONNX export failed at operator aten::unique"
        events.append(
            ConversionFailed(**converter.envelope("f"), **ids, reason=reason, op="aten::unique")
        )
        view.status, view.reason, view.op = "failed", reason, "aten::unique"
        view.targets = [ConversionTargetView(target=t, status="pending") for t in targets]
        return Story(feed(events), view)
    events.append(
        ConversionStarted(
            **converter.envelope("started"),
            **ids,
            attempt=1,
            host="host-a",
            source_format="onnx",
            dataset="shapes",
            dataset_version=1,
            targets=targets,
            input_shape=[-1, 3, 32, 32],
        )
    )
    engines: list[EngineArtifactView] = []
    for i, target in enumerate(targets):
        parity = ParityNumbers(
            n_images=256,
            max_abs_error=round(1e-5 * (i + 1) ** 3, 8),
            mean_abs_error=1e-6,
            max_rel_error=1e-4,
            top1_agreement=1.0 - 0.002 * i,
            reference_accuracy=0.93,
            candidate_accuracy=round(0.93 - 0.001 * i, 4),
            accuracy_drop=round(0.1 * i, 2),
        )
        if target.startswith("tensorrt"):
            reason = "unavailable: the tensorrt package is not importable on this host"
            unavailable = TargetUnavailable(
                **converter.envelope(target),
                **ids,
                target=target,  # type: ignore[arg-type]
                reason=reason,
            )
            events.append(unavailable)
            view.targets.append(
                ConversionTargetView(target=target, status="unavailable", reason=reason)
            )
        elif target == "int8":
            rejected = msgspec.structs.replace(parity, candidate_accuracy=0.9, accuracy_drop=3.0)
            reason = "accuracy drop 3.00 pt > 1.00 pt after keeping 2 layers in float"
            layers = ["conv1", "fc"]
            events.append(
                ArtifactRejected(
                    **converter.envelope(target),
                    **ids,
                    target="int8",
                    reason=reason,
                    parity=rejected,
                    excluded_layers=layers,
                )
            )
            view.targets.append(
                ConversionTargetView(
                    target=target,
                    status="rejected",
                    reason=reason,
                    parity=rejected,
                    excluded_layers=layers,
                )
            )
        else:
            precision = _PRECISION.get(target, "fp32")
            openvino = target.startswith("openvino")
            fmt = "openvino-ir" if openvino else "onnx"
            artifact = OPENVINO_XML if openvino else ONNX
            companions = [OPENVINO_BIN] if openvino else []
            gate = GateResult(
                passed=True,
                reason="within the gate",
                basis="accuracy",
                drop_points=parity.accuracy_drop or 0.0,
                max_accuracy_drop=body.max_accuracy_drop,
            )
            produced = ArtifactProduced(
                **converter.envelope(target),
                **ids,
                target=target,  # type: ignore[arg-type]
                artifact=artifact,
                companions=companions,
                format=fmt,
                precision=precision,
                parity=parity,
                gate=gate,
                source=ONNX,
                dataset="shapes",
                dataset_version=1,
                input_shape=[-1, 3, 32, 32],
            )
            events.append(produced)
            view.targets.append(
                ConversionTargetView(
                    target=target,
                    status="produced",
                    format=fmt,
                    precision=precision,
                    artifact=artifact,
                    companions=companions,
                    parity=parity,
                    gate=gate,
                )
            )
            engines.append(
                EngineArtifactView(
                    job_id=job_id,
                    target=target,
                    format=fmt,
                    precision=precision,
                    artifact=artifact,
                    companions=companions,
                    parity=parity,
                    gate=gate,
                    dataset="shapes",
                    dataset_version=1,
                    input_shape=[-1, 3, 32, 32],
                    created_at=T0,
                )
            )
    outcomes: dict[str, Any] = {
        s: [t.target for t in view.targets if t.status == s]
        for s in ("produced", "rejected", "unavailable")
    }
    events.append(ConversionCompleted(**converter.envelope("completed"), **ids, **outcomes))
    return Story(feed(events), view, engines)


def benchmark(
    body: CreateBenchmark, *, job_id: str, correlation_id: str, user: str, outcome: str
) -> Story:
    """Two engines over the requested batch sizes and concurrency; ORT CPU is the pick."""
    ids: dict[str, Any] = {"job_id": job_id, "model_name": body.model_name, "version": body.version}
    worker = _stamp("benchmarker", correlation_id)
    targets = body.engines or ["onnxruntime-cpu", "torch-eager"]
    events: list[Event] = [
        BenchmarkRequested(
            **_stamp(user, correlation_id).envelope("request"),
            **ids,
            engines=list(body.engines),
            batch_sizes=list(body.batch_sizes),
            concurrency=list(body.concurrency),
            p95_ms=body.p95_ms,
            max_accuracy_drop=body.max_accuracy_drop,
        ),
        BenchmarkStarted(
            **worker.envelope("started"),
            **ids,
            attempt=1,
            host="host-a",
            targets=[f"{t}/fp32" for t in targets],
            unavailable={"tensorrt": "unavailable: no NVIDIA GPU on this host"},
        ),
    ]
    view = BenchmarkView(
        job_id=job_id,
        correlation_id=correlation_id,
        model_name=body.model_name,
        version=body.version,
        status="completed",
        requested_by=user,
        created_at=T0,
        finished_at=T0,
        request=body,
        host="host-a",
        planned=[f"{t}/fp32" for t in targets],
        unavailable={"tensorrt": "unavailable: no NVIDIA GPU on this host"},
    )
    for e, engine in enumerate(targets):
        for batch in body.batch_sizes:
            for conc in body.concurrency:
                p95 = round((1.0 + 2.0 * e) * (1 + batch / 8) * (1 + conc / 8), 3)
                row = BenchmarkRow(
                    engine=engine,
                    precision="fp32",
                    artifact="onnx" if engine.startswith("onnx") else "source",
                    device="cpu",
                    batch_size=batch,
                    concurrency=conc,
                    requests=100,
                    images=100 * batch,
                    p50_ms=round(p95 * 0.8, 3),
                    p95_ms=p95,
                    p99_ms=round(p95 * 1.2, 3),
                    ci95_low_ms=round(p95 * 0.95, 3),
                    ci95_high_ms=round(p95 * 1.05, 3),
                    cv=0.05,
                    stable=True,
                    throughput_ips=round(1000.0 * batch * conc / p95, 1),
                    accuracy=0.93,
                )
                events.append(
                    BenchmarkRowMeasured(
                        **worker.envelope(f"{engine}/{batch}/{conc}"), **ids, row=row
                    )
                )
                view.rows.append(row)
    if outcome == "failed":
        reason = "the model version's artifact is no longer in the object store"
        events.append(BenchmarkFailed(**worker.envelope("failed"), **ids, reason=reason))
        view.status, view.reason = "failed", reason
        return Story(feed(events), view)
    pick = min((r for r in view.rows if r.engine == targets[0]), key=lambda r: r.p95_ms or 0.0)
    met = body.p95_ms is None or (pick.p95_ms or 0.0) <= body.p95_ms
    reason = (
        f"{pick.engine} {pick.precision} has the best throughput with p95 "
        f"{pick.p95_ms} ms within the SLA"
        if met
        else f"no engine meets p95 <= {body.p95_ms} ms; {pick.engine} comes closest"
    )
    batcher = BatcherAdvice(
        preferred_batch_sizes=[pick.batch_size],
        max_batch_size=max(body.batch_sizes),
        max_queue_delay_us=500,
        reason="throughput levels off past this batch size",
    )
    events.append(
        BenchmarkCompleted(
            **worker.envelope("completed"),
            **ids,
            met_sla=met,
            reason=reason,
            pick=pick if met else None,
            closest=None if met else pick,
            batcher=batcher if met else None,
            rows=len(view.rows),
            p95_ms=body.p95_ms,
            max_accuracy_drop=body.max_accuracy_drop,
        )
    )
    view.recommendation = BenchmarkRecommendation(
        met_sla=met,
        reason=reason,
        pick=pick if met else None,
        closest=None if met else pick,
        batcher=batcher if met else None,
        p95_ms=body.p95_ms,
        max_accuracy_drop=body.max_accuracy_drop,
    )
    return Story(feed(events), view)


# -- reports -----------------------------------------------------------------------------------


@dataclass
class ReportStory:
    """A version's report as the gateway serves it: the view and each file's bytes by path."""

    view: ReportView
    files: dict[str, bytes]


def report(model_name: str, version: int, last_seq: int = 42) -> ReportStory:
    """What the reporter would announce for a version with a training job and a benchmark but
    no conversion or deployment yet (``report.generated``), as the gateway's view of it."""
    stamp = Stamp(now=T0, actor="reporter", correlation_id=f"corr-report-{model_name}")
    base = f"/models/{model_name}/versions/{version}/report"
    files = {
        f"{base}.html": f"<!DOCTYPE html><title>{model_name}:{version}</title>".encode(),
        f"{base}.pdf": b"%PDF-1.7 report",
        f"{base}.json": b'{"sections": []}',
        f"{base}/charts/latency.png": b"\x89PNG latency",
    }
    refs = {
        path: ArtifactRef(sha256=f"{n:064x}", size=len(data))
        for n, (path, data) in enumerate(files.items())
    }
    event = ReportGenerated(
        **stamp.envelope("report"),
        model_name=model_name,
        version=version,
        html=refs[f"{base}.html"],
        pdf=refs[f"{base}.pdf"],
        data=refs[f"{base}.json"],
        charts={"latency": refs[f"{base}/charts/latency.png"]},
        sections=["dataset", "training", "benchmark", "recommendation"],
        missing=[
            MissingSection(
                section="conversion",
                reason=f"no conversion yet: cvops convert {model_name}:{version}",
            ),
            MissingSection(
                section="deployment", reason=f"not deployed: cvops deploy {model_name}:{version}"
            ),
        ],
        last_seq=last_seq,
        training_job="job-7",
        benchmark_jobs=["bench-9"],
    )
    view = ReportView(
        model_name=event.model_name,
        version=event.version,
        generated_at=event.occurred_at,
        last_seq=event.last_seq,
        html=f"{base}.html",
        pdf=f"{base}.pdf",
        data=f"{base}.json",
        sections=list(event.sections),
        missing=list(event.missing),
        charts=list(event.charts),
        chart_files={name: f"{base}/charts/{name}.png" for name in event.charts},
        training_job=event.training_job,
        conversion_jobs=list(event.conversion_jobs),
        benchmark_jobs=list(event.benchmark_jobs),
        deployments=list(event.deployments),
    )
    return ReportStory(view=view, files=files)
