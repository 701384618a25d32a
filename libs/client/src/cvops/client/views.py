"""Rich tables of the gateway's structs, for people (scripts use ``--json``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cvops.contracts.api import (
    BenchmarkRecommendation,
    BenchmarkView,
    ConversionView,
    DatasetView,
    DeploymentView,
    EngineArtifactView,
    JobSummary,
    JobView,
    ModelVersionView,
    ModelView,
    RegisteredModel,
    ReportView,
    SystemView,
    TokenView,
    TrialView,
    UploadResult,
    UserView,
)
from cvops.contracts.common import ArtifactRef, TensorSpec
from cvops.contracts.conversion import BenchmarkRow
from cvops.contracts.reporting import REPORT_SECTIONS
from cvops.contracts.training import TrialSummary

_ENVELOPE = {"type", "event_id", "occurred_at", "actor", "correlation_id", "causation_id"}


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A timestamp in the local zone: to the minute in tables, to the second in details."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def size(n: int) -> str:
    """Bytes for people: ``512 B``, ``1.5 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def files_size(artifact: ArtifactRef, companions: Iterable[ArtifactRef] = ()) -> str:
    """An engine's size on disk: its file and the ones that lie beside it (OpenVINO's
    ``.bin`` weights next to the ``.xml``, ONNX external data)."""
    return size(artifact.size + sum(c.size for c in companions))


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def tensors(specs: Iterable[TensorSpec]) -> str:
    """``input float32[-1,3,32,32]`` per tensor, one per line."""
    return "\n".join(f"{t.name} {t.dtype}[{','.join(map(str, t.shape))}]" for t in specs) or "-"


def _table(*columns: str, title: str | None = None, wrap: tuple[str, ...] = ()) -> Table:
    """Columns stay on one line unless named in ``wrap`` (the long free-text ones)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        folds = column in wrap
        table.add_column(column, no_wrap=not folds, overflow="fold" if folds else "ellipsis")
    return table


def _row(table: Table, *cells: object) -> None:
    # Text() so that names a user typed are never read as rich markup.
    table.add_row(*(Text(str(c)) for c in cells))


def fields(rows: Iterable[tuple[str, object]], title: str | None = None) -> Table:
    table = Table.grid(padding=(0, 2))
    table.title = title
    table.title_justify = "left"
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(Text(key), Text(str(value)))
    return table


def users_table(users: list[UserView]) -> Table:
    table = _table("USERNAME", "ROLE", "CREATED", "STATUS")
    for u in users:
        _row(table, u.username, u.role, when(u.created_at), "disabled" if u.disabled else "active")
    return table


def user_fields(user: UserView, url: str) -> Table:
    return fields(
        [
            ("username", user.username),
            ("role", user.role),
            ("created", when(user.created_at, seconds=True)),
            ("status", "disabled" if user.disabled else "active"),
            ("gateway", url),
        ]
    )


def tokens_table(tokens: list[TokenView]) -> Table:
    table = _table("ID", "LABEL", "CREATED", "STATUS", wrap=("LABEL",))
    for t in tokens:
        _row(
            table,
            t.token_id,
            t.label or "-",
            when(t.created_at),
            "revoked" if t.revoked else "active",
        )
    return table


def models_table(models: list[ModelView]) -> Table:
    table = _table("NAME", "LATEST", "VERSIONS", "OWNER", "CREATED")
    for m in models:
        latest = "-" if m.latest_version is None else f"v{m.latest_version}"
        versions = len(m.versions) if m.versions else (m.latest_version or 0)
        _row(table, m.name, latest, versions, m.owner, when(m.created_at))
    return table


def versions_table(versions: list[ModelVersionView], title: str | None = None) -> Table:
    table = _table(
        "VER",
        "STAGE",
        "FORMAT",
        "PARAMS",
        "SIZE",
        "INPUTS",
        "CREATED",
        title=title,
        wrap=("INPUTS",),
    )
    for v in versions:
        _row(
            table,
            f"v{v.version}",
            v.stage,
            v.format,
            count(v.parameter_count),
            size(v.artifact.size),
            tensors(v.inputs),
            when(v.created_at),
        )
    return table


def model_view(model: ModelView, versions: list[ModelVersionView]) -> RenderableType:
    head = fields(
        [
            ("model", model.name),
            ("owner", model.owner),
            ("created", when(model.created_at, seconds=True)),
            ("latest", "-" if model.latest_version is None else f"v{model.latest_version}"),
        ]
    )
    if not versions:
        return head
    return Group(head, Text(""), versions_table(versions))


def version_view(v: ModelVersionView) -> RenderableType:
    rows: list[tuple[str, object]] = [
        ("model", f"{v.model_name}:{v.version}"),
        ("stage", v.stage),
        ("format", v.format),
        ("parameters", count(v.parameter_count)),
        ("opset", "-" if v.opset is None else v.opset),
        ("architecture", v.architecture or "-"),
        ("classes", count(v.num_classes)),
        ("file", f"{v.artifact.filename or '-'} ({size(v.artifact.size)})"),
        ("sha256", v.artifact.sha256),
        ("inputs", tensors(v.inputs)),
        ("outputs", tensors(v.outputs)),
        ("created", f"{when(v.created_at, seconds=True)} by {v.created_by}"),
    ]
    if v.description:
        rows.append(("description", v.description))
    lineage = v.lineage
    if lineage.parent_version is not None:
        rows.append(("parent", f"v{lineage.parent_version}"))
    if lineage.job_id:
        rows.append(("job", lineage.job_id))
    if lineage.dataset:
        rows.append(("dataset", lineage.dataset))
    for key, value in sorted(lineage.metrics.items()):
        rows.append((f"metric {key}", f"{value:.4g}"))
    return fields(rows)


def datasets_table(datasets: list[DatasetView]) -> Table:
    table = _table("NAME", "VERSION", "CLASSES", "IMAGES", "SIZE (HxW)", "SPLITS", "OWNER")
    for d in datasets:
        _row(
            table,
            d.name,
            f"v{d.version}",
            len(d.classes),
            count(d.num_images),
            "x".join(map(str, d.images.modal_hw)),
            _splits(d),
            d.owner,
        )
    return table


def _splits(d: DatasetView) -> str:
    s = d.splits
    return f"{s.train}/{s.val}/{s.test}"


def dataset_view(d: DatasetView) -> RenderableType:
    im = d.images
    rows: list[tuple[str, object]] = [
        ("dataset", f"{d.name} (v{d.version})"),
        ("owner", d.owner),
        ("created", when(d.created_at, seconds=True)),
        ("images", count(d.num_images)),
        ("image size", f"{'x'.join(map(str, im.min_hw))} .. {'x'.join(map(str, im.max_hw))}"),
        ("channels", im.channels),
        (
            "splits",
            f"train {d.splits.train}, val {d.splits.val}, test {d.splits.test}, "
            f"calibration {d.splits.calibration} (seed {d.seed})",
        ),
        ("source", f"{d.source.filename or '-'} ({size(d.source.size)})"),
    ]
    if d.description:
        rows.append(("description", d.description))
    classes = _table("CLASS", "IMAGES")
    for name, n in zip(d.classes, d.class_counts, strict=False):
        _row(classes, name, count(n))
    return Group(fields(rows), Text(""), classes)


def upload_line(result: UploadResult) -> Text:
    """One line saying what became of an upload."""
    what = f"{result.kind} {result.name}"
    if result.status == "validated":
        version = "" if result.version is None else f" version {result.version}"
        return Text(f"{what}{version} validated", style="green")
    if result.status == "pending":
        return Text(
            f"{what} is still being validated; follow it with: "
            f"cvops events {result.correlation_id}",
            style="yellow",
        )
    return Text(f"{what} rejected: {result.reason or 'no reason given'}", style="red")


def event_line(seq: int, event_type: str, data: dict[str, Any]) -> Text:
    """``seq  time  type  actor  key=value ...`` for one event of the feed."""
    facts = " ".join(
        f"{k}={_short(v)}" for k, v in data.items() if k not in _ENVELOPE and v not in (None, "")
    )
    occurred = str(data.get("occurred_at", ""))[:19].replace("T", " ")
    actor = str(data.get("actor", ""))
    return Text(f"{seq:>6}  {occurred}  {event_type}  {actor}  {facts}".rstrip())


def _short(value: object, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# -- training jobs ----------------------------------------------------------------------------


def percent(fraction: float | None) -> str:
    """An accuracy in [0, 1] as ``93.12%``."""
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def ms(value: float | None) -> str:
    """Milliseconds to a precision that reads: ``0.123``, ``1.50``, ``23.4``."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def hyperparameters(values: dict[str, Any], limit: int = 80) -> str:
    """``lr=0.0123 width=0.5 optimizer=sgd`` (numbers to 3 significant digits)."""
    parts = []
    for key, value in sorted(values.items()):
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return _short(" ".join(parts), limit) if parts else "-"


def _trials(job: JobSummary) -> str:
    total = "?" if job.trials_total is None else str(job.trials_total)
    return f"{job.trials_done}/{total}"


def job_status(job: JobSummary) -> str:
    if job.cancel_requested and job.status in ("requested", "running"):
        return f"{job.status} (cancelling)"
    return job.status


def jobs_table(jobs: list[JobSummary]) -> Table:
    table = _table(
        "JOB",
        "STATUS",
        "TYPE",
        "ARCH",
        "DATASET",
        "TRIALS",
        "BEST ACC",
        "DEVICE",
        "OWNER",
        "CREATED",
    )
    for j in jobs:
        _row(
            table,
            j.job_id,
            job_status(j),
            j.job_type,
            j.arch,
            j.dataset,
            _trials(j),
            percent(j.best_accuracy),
            j.device,
            j.owner,
            when(j.created_at),
        )
    return table


def front_table(front: list[TrialSummary], title: str | None = "Pareto front") -> Table:
    """The job's result: accuracy, latency, size and parameters of each front member."""
    table = _table(
        "TRIAL",
        "GEN",
        "ACCURACY",
        "LATENCY MS",
        "SIZE",
        "PARAMS",
        "HYPERPARAMETERS",
        title=title,
        wrap=("HYPERPARAMETERS",),
    )
    ranked = sorted(front, key=lambda t: (-t.metrics.accuracy, t.metrics.latency_ms))
    for t in ranked:
        m = t.metrics
        _row(
            table,
            t.trial_id,
            t.generation + 1,
            percent(m.accuracy),
            ms(m.latency_ms),
            size(m.size_bytes),
            count(m.parameters),
            hyperparameters(t.hyperparameters),
        )
    return table


def registered_table(models: list[RegisteredModel], title: str | None = "Registered") -> Table:
    table = _table("MODEL", "VERSION", "STATUS", "FROM", title=title, wrap=("STATUS",))
    for m in models:
        version = "-" if m.version is None else f"v{m.version}"
        status = m.status if not m.reason else f"{m.status}: {m.reason}"
        _row(table, m.model_name, version, status, m.upload_id)
    return table


def trials_table(trials: list[TrialView]) -> Table:
    table = _table(
        "GEN",
        "#",
        "STATUS",
        "EPOCH",
        "VAL ACC",
        "LATENCY MS",
        "HOST",
        "HYPERPARAMETERS",
        "NOTE",
        title="Trials",
        wrap=("HYPERPARAMETERS", "NOTE"),
    )
    for t in trials:
        epochs = f"{t.epoch}/{t.epochs}" if t.epochs else str(t.epoch or "-")
        latency = ms(t.metrics.latency_ms) if t.metrics else "-"
        _row(
            table,
            t.generation + 1,
            t.index + 1,
            t.status,
            epochs,
            percent(t.val_accuracy),
            latency,
            t.host or "-",
            hyperparameters(t.hyperparameters, 60),
            t.reason or "",
        )
    return table


def job_view(job: JobView) -> RenderableType:
    """Everything about a job: summary, generations, trials, the front, registered models."""
    r = job.request
    rows: list[tuple[str, object]] = [
        ("job", job.job_id),
        ("status", job_status(job)),
        ("type", job.job_type),
        ("architecture", r.arch),
        (
            "dataset",
            r.dataset if r.dataset_version is None else f"{r.dataset} v{r.dataset_version}",
        ),
        ("objectives", ", ".join(r.objectives) + ("" if r.mode == "pareto" else " (weighted)")),
        ("device", job.device),
        ("trials", _trials(job)),
        ("best accuracy", percent(job.best_accuracy)),
        ("owner", job.owner),
        ("created", when(job.created_at, seconds=True)),
        ("correlation id", job.correlation_id),
    ]
    if job.plan is not None:
        p = job.plan
        rows.insert(7, ("plan", f"population {p.population} x {p.generations} generations"))
    if job.finished_at is not None:
        rows.append(("finished", when(job.finished_at, seconds=True)))
    if job.reason:
        rows.append(("reason", job.reason))
    parts: list[RenderableType] = [fields(rows)]
    if job.generations:
        gens = _table("GEN", "TRIALS", "DONE", "FAILED", "PRUNED", "BEST ACC", title="Generations")
        for g in job.generations:
            _row(
                gens,
                g.generation + 1,
                len(g.trials),
                g.trials_completed if g.completed else "running",
                g.trials_failed,
                g.trials_pruned,
                percent(g.best_accuracy),
            )
        parts += [Text(""), gens]
    if job.trials:
        parts += [Text(""), trials_table(job.trials)]
    if job.front:
        parts += [Text(""), front_table(job.front)]
    if job.models:
        parts += [Text(""), registered_table(job.models)]
    return Group(*parts)


def job_result(job: JobView) -> RenderableType:
    """The end of ``cvops train``: the Pareto front and the registered model versions."""
    parts: list[RenderableType] = [front_table(job.front)]
    if job.models:
        parts += [Text(""), registered_table(job.models, "Registered model versions")]
    return Group(*parts)


# -- deployments ------------------------------------------------------------------------------


def _canary(d: DeploymentView) -> str:
    c = d.canary
    if c is None:
        return "-"
    arm = f"v{c.model_version}"
    if c.engine is not None or c.precision is not None:
        arm += f" {c.engine or d.engine} {c.precision or d.precision}"
    return f"{arm} {c.weight_percent:g}%"


def _engine(d: DeploymentView) -> str:
    return f"{d.engine} {d.precision}"


def _artifact(d: DeploymentView) -> str:
    if d.artifact_sha256 is None:
        return "the version's own file"
    return f"{d.artifact_target} {d.artifact_sha256[:12]}"


def deployments_table(deployments: list[DeploymentView]) -> Table:
    table = _table(
        "NAME", "MODEL", "STATUS", "SERVING", "ENGINE", "CANARY", "PUBLIC", "UPDATED", "REASON"
    )
    for d in deployments:
        serving = "-" if d.serving_version is None else f"v{d.serving_version}"
        _row(
            table,
            d.deployment,
            f"{d.model_name}:{d.version}",
            d.status,
            serving,
            _engine(d),
            _canary(d),
            "yes" if d.public else "no",
            when(d.updated_at),
            _short(d.reason or "", 50),
        )
    return table


def _preferred(batch_sizes: list[int]) -> str:
    """A batcher's preferred batch sizes; ``none`` when it has none (it batches up to max)."""
    return ",".join(map(str, batch_sizes)) or "none"


def deployment_view(d: DeploymentView) -> RenderableType:
    rows: list[tuple[str, object]] = [
        ("deployment", d.deployment),
        ("model", f"{d.model_name}:{d.version}"),
        ("status", d.status),
        ("serving", "-" if d.serving_version is None else f"v{d.serving_version}"),
        ("engine", _engine(d)),
        ("artifact", _artifact(d)),
        ("benchmark", d.benchmark_id or "-"),
        ("canary", _canary(d)),
        ("public", "yes (no token needed)" if d.public else "no (a token is needed)"),
        (
            "batching",
            "off"
            if d.max_batch_size == 0
            else f"max {d.max_batch_size}, preferred {_preferred(d.preferred_batch_sizes)}, "
            f"queue delay {d.max_queue_delay_us} us",
        ),
        ("instances", ", ".join(d.instances) or "-"),
        ("requested", f"{when(d.requested_at, seconds=True)} by {d.requested_by}"),
        ("updated", when(d.updated_at, seconds=True)),
    ]
    for arm, check in d.checks.items():
        verdict = "passed" if check.passed else "FAILED"
        rows.append(
            (
                f"check ({arm})",
                f"{verdict} on {check.n_images} images: top-1 agreement "
                f"{check.top1_agreement:.3f} (recorded {check.recorded_top1_agreement:.3f}), "
                f"max abs error {check.max_abs_error:.2g} "
                f"(recorded {check.recorded_max_abs_error:.2g})",
            )
        )
    if d.reason:
        rows.append(("reason", d.reason))
    return fields(rows)


# -- conversions and benchmarks ---------------------------------------------------------------


def _sci(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def _drop(points: float | None) -> str:
    return "-" if points is None else f"{points:+.2f} pt".replace("+-", "-")


def conversion_table(conversion: ConversionView) -> Table:
    """One row per target: what became of it and its parity numbers."""
    table = _table(
        "TARGET",
        "STATUS",
        "FORMAT",
        "PRECISION",
        "SIZE",
        "MAX ABS ERR",
        "TOP-1 AGREE",
        "ACCURACY",
        "DROP",
        "NOTE",
        title=f"Conversion {conversion.job_id} of {conversion.model_name}:{conversion.version}",
        wrap=("NOTE",),
    )
    for t in conversion.targets:
        p = t.parity
        note = t.reason or ""
        if t.excluded_layers:
            note = (note + "; " if note else "") + f"kept in float: {', '.join(t.excluded_layers)}"
        _row(
            table,
            t.target,
            t.status,
            t.format or "-",
            t.precision or "-",
            files_size(t.artifact, t.companions) if t.artifact else "-",
            _sci(p.max_abs_error) if p else "-",
            percent(p.top1_agreement) if p else "-",
            percent(p.candidate_accuracy) if p else "-",
            _drop(p.accuracy_drop) if p else "-",
            note,
        )
    return table


def engine_artifacts_table(artifacts: list[EngineArtifactView]) -> Table:
    table = _table(
        "TARGET",
        "FORMAT",
        "PRECISION",
        "SIZE",
        "MAX ABS ERR",
        "TOP-1 AGREE",
        "DROP",
        "JOB",
        "CREATED",
    )
    for a in artifacts:
        _row(
            table,
            a.target,
            a.format,
            a.precision,
            files_size(a.artifact, a.companions),
            _sci(a.parity.max_abs_error),
            percent(a.parity.top1_agreement),
            _drop(a.parity.accuracy_drop),
            a.job_id,
            when(a.created_at),
        )
    return table


def bench_rows_table(rows: list[BenchmarkRow], title: str | None = "Measurements") -> Table:
    table = _table(
        "ENGINE",
        "PRECISION",
        "BATCH",
        "CONC",
        "P50 MS",
        "P95 MS",
        "P99 MS",
        "95% CI",
        "IMG/S",
        "ACCURACY",
        "CV",
        "ERROR",
        title=title,
        wrap=("ERROR",),
    )
    for r in rows:
        ci = (
            f"{ms(r.ci95_low_ms)}-{ms(r.ci95_high_ms)}"
            if r.ci95_low_ms is not None and r.ci95_high_ms is not None
            else "-"
        )
        _row(
            table,
            r.engine,
            r.precision,
            r.batch_size,
            r.concurrency,
            ms(r.p50_ms),
            ms(r.p95_ms),
            ms(r.p99_ms),
            ci,
            "-" if r.throughput_ips is None else f"{r.throughput_ips:,.0f}",
            percent(r.accuracy),
            "-" if r.cv is None else f"{r.cv:.2f}",
            r.error or "",
        )
    return table


def _cell(r: BenchmarkRow) -> str:
    return (
        f"{r.engine} {r.precision} at batch {r.batch_size}, concurrency {r.concurrency}: "
        f"p95 {ms(r.p95_ms)} ms, {r.throughput_ips or 0:,.0f} img/s, accuracy {percent(r.accuracy)}"
    )


def recommendation_view(rec: BenchmarkRecommendation) -> RenderableType:
    """The pick and why, or what came closest when nothing met the SLA."""
    sla = []
    if rec.p95_ms is not None:
        sla.append(f"p95 <= {rec.p95_ms:g} ms")
    if rec.max_accuracy_drop is not None:
        sla.append(f"accuracy drop <= {rec.max_accuracy_drop:g} pt")
    rows: list[tuple[str, object]] = [("SLA", ", ".join(sla) or "none")]
    if rec.pick is not None:
        rows.append(("recommended", _cell(rec.pick)))
    else:
        rows.append(("recommended", "nothing meets the SLA"))
        if rec.closest is not None:
            rows.append(("closest", _cell(rec.closest)))
    rows.append(("why", rec.reason))
    if rec.batcher is not None:
        b = rec.batcher
        rows.append(
            (
                "Triton batcher",
                f"max batch {b.max_batch_size}, preferred {_preferred(b.preferred_batch_sizes)}, "
                f"queue delay {b.max_queue_delay_us} us",
            )
        )
    return fields(rows, title="Recommendation")


def benchmark_view(bench: BenchmarkView) -> RenderableType:
    head = fields(
        [
            ("benchmark", bench.job_id),
            ("model", f"{bench.model_name}:{bench.version}"),
            ("status", bench.status if not bench.reason else f"{bench.status}: {bench.reason}"),
            ("host", bench.host or "-"),
            ("rows", len(bench.rows)),
        ]
    )
    parts: list[RenderableType] = [head]
    if bench.unavailable:
        missing = _table("ENGINE", "WHY", title="Unavailable here", wrap=("WHY",))
        for engine, why in sorted(bench.unavailable.items()):
            _row(missing, engine, why)
        parts += [Text(""), missing]
    if bench.rows:
        parts += [Text(""), bench_rows_table(bench.rows)]
    if bench.recommendation is not None:
        parts += [Text(""), recommendation_view(bench.recommendation)]
    return Group(*parts)


def report_sections_table(report: ReportView) -> Table:
    """Each section of a report in report order: shown, or what it still waits for."""
    table = _table("SECTION", "IN REPORT", "WAITS FOR", title="Sections", wrap=("WAITS FOR",))
    missing = {m.section: m.reason for m in report.missing}
    order = {name: i for i, name in enumerate(REPORT_SECTIONS)}
    for section in sorted({*report.sections, *missing}, key=lambda s: (order.get(s, 99), s)):
        if section in missing:
            _row(table, section, "no", missing[section])
        else:
            _row(table, section, "yes", "-")
    return table


def report_view(report: ReportView, files: Iterable[object] = ()) -> RenderableType:
    """A report: which version and log it reflects, its lineage, its sections, files written."""
    rows: list[tuple[str, object]] = [
        ("report", f"{report.model_name}:{report.version}"),
        ("generated", when(report.generated_at, seconds=True)),
        ("log up to", f"sequence {report.last_seq}"),
        ("training job", report.training_job or "-"),
        ("conversions", ", ".join(report.conversion_jobs) or "-"),
        ("benchmarks", ", ".join(report.benchmark_jobs) or "-"),
        ("deployments", ", ".join(report.deployments) or "-"),
        ("charts", ", ".join(report.charts) or "-"),
    ]
    rows += [("wrote", path) for path in files]
    return Group(fields(rows), Text(""), report_sections_table(report))


# -- system -----------------------------------------------------------------------------------


def _ago(value: datetime) -> str:
    seconds = max(0.0, (datetime.now(value.tzinfo) - value).total_seconds())
    return f"{seconds:.0f}s ago" if seconds < 120 else when(value, seconds=True)


def system_view(system: SystemView) -> RenderableType:
    """``cvops status``: services and their instances, streams, GPUs and leases."""
    services = _table(
        "SERVICE", "STATUS", "INSTANCE", "VERSION", "HEALTH", "SEEN", "LAG", "PENDING",
        title="Services", wrap=("HEALTH",),
    )  # fmt: skip
    for svc in system.services:
        if not svc.instances:
            _row(services, svc.name, svc.status, "-", "-", "no instance reports", "-", "-", "-")
        for i in svc.instances:
            lags = [p.lag for p in i.projections if p.lag is not None]
            _row(
                services,
                svc.name,
                svc.status,
                i.instance,
                i.version,
                i.health,
                _ago(i.last_seen),
                count(max(lags)) if lags else "-",
                count(sum(c.pending for c in i.consumers)) if i.consumers else "-",
            )
    streams = _table("STREAM", "MESSAGES", "SIZE", "LAST SEQ", "CONSUMERS", title="Streams")
    for st in system.streams:
        _row(streams, st.name, count(st.messages), size(st.bytes), st.last_seq, st.consumers)
    gpus = _table(
        "HOST", "GPU", "NAME", "UTIL", "MEMORY", "TEMP", "POWER", "LEASED BY", title="GPUs"
    )
    for host in system.hosts:
        if not host.gpus:
            why = "no GPU" if host.gpu_metrics_available else "no NVML (CPU only)"
            _row(gpus, host.host, "-", why, "-", "-", "-", "-", "-")
        for g in host.gpus:
            used = "-" if g.memory_used_bytes is None else size(g.memory_used_bytes)
            _row(
                gpus,
                host.host,
                g.index,
                g.name,
                percent(g.utilization_ratio) if g.utilization_ratio is not None else "-",
                f"{used} / {size(g.memory_total_bytes)}",
                "-" if g.temperature_celsius is None else f"{g.temperature_celsius:.0f} C",
                "-" if g.power_watts is None else f"{g.power_watts:.0f} W",
                "-" if g.lease is None else f"{g.lease.holder} ({g.lease.user or '-'})",
            )
    parts: list[RenderableType] = [services, streams, gpus]
    if system.leases:
        leases = _table("RESOURCE", "HOLDER", "USER", "ROLE", "EXPIRES", title="Leases")
        for le in system.leases:
            _row(
                leases,
                le.resource,
                le.holder,
                le.user or "-",
                le.role or "-",
                when(le.expires_at, seconds=True),
            )
        parts.append(leases)
    return Group(*parts)
