"""What a model version's report says: its sections, their tables and the data of each
chart, built from states that ``cvops.domain`` folded (no fold of its own here).

Pure: no I/O, no clock. A section without results is listed in ``missing`` with what it
waits for, so a report of a version with nothing yet still says something useful.
"""

from __future__ import annotations

from typing import Any

import msgspec

from cvops.contracts.conversion import BenchmarkCompleted, BenchmarkRow
from cvops.contracts.reporting import REPORT_SECTIONS, MissingSection
from cvops.domain.benchmark import BenchmarkState
from cvops.domain.catalog import DatasetVersionState, ModelVersionState
from cvops.domain.conversion import ConversionState
from cvops.domain.deployment import DeploymentState
from cvops.domain.training import JobState

Cell = str | int | float | bool | None

TITLES = {
    "dataset": "Data set",
    "training": "GA search",
    "conversion": "Conversions",
    "benchmark": "Benchmarks",
    "recommendation": "Recommendation",
    "deployment": "Deployment",
}


class Thumbnail(msgspec.Struct, frozen=True, kw_only=True):
    """One sample image of the data set, as a PNG."""

    label: str
    png: bytes


class LiveNumbers(msgspec.Struct, frozen=True, kw_only=True):
    """What the router measured for one deployed version (from its Prometheus metrics)."""

    deployment: str
    requests: float
    errors: float
    mean_ms: float | None = None
    p95_ms: float | None = None
    rate_rps: float | None = None  # None: one sample only


class LiveMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """The router's numbers, or why there are none."""

    source: str
    numbers: list[LiveNumbers] = []
    error: str | None = None


class ReportInputs(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a report is built from: folded states up to ``last_seq``, and what the
    reporter read beside the log (sample images, the router's live numbers)."""

    model_name: str
    version: int
    last_seq: int
    model: ModelVersionState | None = None
    dataset: DatasetVersionState | None = None
    training: JobState | None = None
    conversions: list[ConversionState] = []
    benchmarks: list[BenchmarkState] = []
    deployments: list[DeploymentState] = []
    thumbnails: list[Thumbnail] = []
    live: LiveMetrics | None = None


class Table(msgspec.Struct, frozen=True, kw_only=True):
    """A table of a section: its title, column names and rows."""

    title: str
    columns: list[str]
    rows: list[list[Cell]]


class Section(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    title: str
    present: bool
    missing: str = ""  # what the section waits for, when not present
    facts: list[tuple[str, Cell]] = []
    tables: list[Table] = []
    charts: list[str] = []  # names of charts (see ``charts``), in order


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """A version's report, ready to render: sections and the data behind every chart."""

    model_name: str
    version: int
    last_seq: int
    sections: list[Section]
    chart_data: dict[str, list[dict[str, Any]]]
    header: list[tuple[str, Cell]] = []
    thumbnails: list[Thumbnail] = []
    training_job: str | None = None
    conversion_jobs: list[str] = []
    benchmark_jobs: list[str] = []
    deployments: list[str] = []

    @property
    def key(self) -> str:
        return f"{self.model_name}:{self.version}"

    @property
    def present(self) -> list[str]:
        return [s.name for s in self.sections if s.present]

    @property
    def missing(self) -> list[MissingSection]:
        return [
            MissingSection(section=s.name, reason=s.missing) for s in self.sections if not s.present
        ]

    @property
    def charts(self) -> list[str]:
        return [c for s in self.sections for c in s.charts]


# -- sections ---------------------------------------------------------------------------------


def _dataset(inp: ReportInputs, data: dict[str, list[dict[str, Any]]]) -> Section:
    ds = inp.dataset
    if ds is None:
        name = inp.model.lineage.dataset if inp.model is not None else None
        why = (
            f"data set {name!r} is not validated (yet)"
            if name
            else "the version names no data set in its lineage (it was uploaded, not trained here)"
        )
        return Section(name="dataset", title=TITLES["dataset"], present=False, missing=why)
    classes = list(ds.classes)
    counts = list(ds.class_counts) + [0] * max(0, len(classes) - len(ds.class_counts))
    data["class_counts"] = [
        {"class": c, "images": n} for c, n in zip(classes, counts, strict=False)
    ]
    charts = ["class_counts"]
    splits: list[list[Cell]] = []
    if ds.splits is not None:
        sp = ds.splits
        splits = [
            ["train", sp.train],
            ["val", sp.val],
            ["test", sp.test],
            ["calibration", sp.calibration],
        ]
        data["splits"] = [{"split": s, "images": n} for s, n in splits]
        charts.append("splits")
    if inp.thumbnails:
        charts.append("samples")
    return Section(
        name="dataset",
        title=TITLES["dataset"],
        present=True,
        facts=[
            ("data set", f"{ds.name}:{ds.version}"),
            ("images", ds.num_images),
            ("classes", len(classes)),
            ("image size (HxW)", "x".join(str(x) for x in ds.image_size)),
            ("channels", ds.channels),
        ],
        tables=[
            Table(
                title="Classes",
                columns=["class", "images"],
                rows=[[c, n] for c, n in zip(classes, counts, strict=False)],
            ),
            *([Table(title="Splits", columns=["split", "images"], rows=splits)] if splits else []),
        ],
        charts=charts,
    )


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _training(inp: ReportInputs, data: dict[str, list[dict[str, Any]]]) -> Section:
    job = inp.training
    lineage = inp.model.lineage if inp.model is not None else None
    if job is None:
        why = (
            f"training job {lineage.job_id} is not in the log"
            if lineage is not None and lineage.job_id
            else "the version was not produced by a GA search here (no training job in its lineage)"
        )
        return Section(name="training", title=TITLES["training"], present=False, missing=why)
    chosen = lineage.trial_id if lineage is not None else None
    front = {t.trial_id for t in job.front}
    trials = sorted(
        (t for t in job.trials.values() if t.metrics is not None),
        key=lambda t: (t.generation, t.index),
    )
    points: list[dict[str, Any]] = [
        {
            "trial": t.trial_id,
            "generation": t.generation,
            "index": t.index,
            "accuracy": t.metrics.accuracy,
            "latency_ms": t.metrics.latency_ms,
            "size_bytes": t.metrics.size_bytes,
            "parameters": t.metrics.parameters,
            "pareto": t.trial_id in front,
            "chosen": t.trial_id == chosen,
        }
        for t in trials
        if t.metrics is not None
    ]
    fitness: list[dict[str, Any]] = []
    for g in sorted({int(p["generation"]) for p in points}):
        accs = [float(p["accuracy"]) for p in points if p["generation"] == g]
        fitness.append(
            {"generation": g, "best": max(accs), "mean": sum(accs) / len(accs), "trials": len(accs)}
        )
    effects = []
    for t in trials:
        assert t.metrics is not None
        for name, value in sorted(t.hyperparameters.items()):
            v = _numeric(value)
            if v is not None:
                effects.append(
                    {
                        "parameter": name,
                        "value": v,
                        "accuracy": t.metrics.accuracy,
                        "latency_ms": t.metrics.latency_ms,
                        "trial": t.trial_id,
                    }
                )
    charts: list[str] = []
    if fitness:
        data["fitness"] = fitness
        charts.append("fitness")
    if points:
        data["pareto"] = points
        charts.append("pareto")
    if effects:
        data["hyperparameters"] = effects
        charts.append("hyperparameters")
    counts = job.counts()
    facts: list[tuple[str, Cell]] = [
        ("job", job.job_id),
        ("status", job.status),
        ("generations", len(job.generations)),
        ("trials completed", counts["completed"]),
        ("trials failed", counts["failed"]),
        ("trials pruned", counts["pruned"]),
        ("chosen trial", chosen),
    ]
    if job.reason:
        facts.append(("reason", job.reason))
    front_rows: list[list[Cell]] = [
        [
            s.trial_id,
            s.generation,
            s.metrics.accuracy,
            s.metrics.latency_ms,
            s.metrics.size_bytes,
            s.trial_id == chosen,
        ]
        for s in job.front
    ]
    tables = [
        Table(
            title="Fitness per generation",
            columns=["generation", "best accuracy", "mean accuracy", "trials"],
            rows=[[f["generation"], f["best"], f["mean"], f["trials"]] for f in fitness],
        ),
    ]
    tables.append(
        Table(
            title="Trials",
            columns=[
                "trial",
                "generation",
                "index",
                "accuracy",
                "latency ms",
                "size bytes",
                "hyperparameters",
            ],
            rows=[
                [
                    p["trial"],
                    p["generation"],
                    p["index"],
                    p["accuracy"],
                    p["latency_ms"],
                    p["size_bytes"],
                    _params(job.trials[p["trial"]].hyperparameters),
                ]
                for p in points
            ],
        )
    )
    if front_rows:
        tables.append(
            Table(
                title="Pareto front",
                columns=["trial", "generation", "accuracy", "latency ms", "size bytes", "chosen"],
                rows=front_rows,
            )
        )
    if lineage is not None and lineage.hyperparameters:
        tables.append(
            Table(
                title="Chosen hyperparameters",
                columns=["parameter", "value"],
                rows=[[k, _cell(v)] for k, v in sorted(lineage.hyperparameters.items())],
            )
        )
    present = bool(points) or job.terminal
    return Section(
        name="training",
        title=TITLES["training"],
        present=present,
        missing="" if present else f"training job {job.job_id} is {job.status}, no trial has ended",
        facts=facts,
        tables=tables,
        charts=charts,
    )


def _params(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items()))


def _cell(value: Any) -> Cell:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _conversion(inp: ReportInputs, data: dict[str, list[dict[str, Any]]]) -> Section:
    if not inp.conversions:
        return Section(
            name="conversion",
            title=TITLES["conversion"],
            present=False,
            missing=f"no conversion yet: cvops convert {inp.model_name}:{inp.version}",
        )
    rows: list[list[Cell]] = []
    accuracy: list[dict[str, Any]] = []
    for job in inp.conversions:
        for target, res in job.results.items():
            p, g = res.parity, res.gate
            rows.append(
                [
                    job.job_id,
                    target,
                    res.outcome,
                    res.precision,
                    res.format,
                    p.top1_agreement if p else None,
                    p.max_abs_error if p else None,
                    p.reference_accuracy if p else None,
                    p.candidate_accuracy if p else None,
                    p.accuracy_drop if p else None,
                    g.passed if g else None,
                    res.reason or (g.reason if g else ""),
                ]
            )
            if p is not None and p.candidate_accuracy is not None:
                accuracy.append(
                    {
                        "job": job.job_id,
                        "target": target,
                        "precision": res.precision or "",
                        "accuracy": p.candidate_accuracy,
                        "reference": p.reference_accuracy,
                        "outcome": res.outcome,
                    }
                )
    charts = []
    if accuracy:
        data["accuracy_by_precision"] = accuracy
        charts.append("accuracy_by_precision")
    jobs: list[list[Cell]] = [
        [j.job_id, j.status, j.dataset and f"{j.dataset}:{j.dataset_version}", j.reason]
        for j in inp.conversions
    ]
    present = bool(rows)
    return Section(
        name="conversion",
        title=TITLES["conversion"],
        present=present,
        missing="" if present else "the conversions have no result yet",
        tables=[
            Table(
                title="Conversion jobs", columns=["job", "status", "data set", "reason"], rows=jobs
            ),
            Table(
                title="Parity per target",
                columns=[
                    "job",
                    "target",
                    "outcome",
                    "precision",
                    "format",
                    "top-1 agreement",
                    "max abs error",
                    "reference accuracy",
                    "accuracy",
                    "accuracy drop (pts)",
                    "gate passed",
                    "reason",
                ],
                rows=rows,
            ),
        ],
        charts=charts,
    )


def _row_label(r: BenchmarkRow) -> str:
    return f"{r.engine}/{r.precision}"


def newest_benchmark(benchmarks: list[BenchmarkState]) -> BenchmarkState | None:
    """The benchmark a report shows: the newest completed one, else the newest with rows."""
    done = [b for b in benchmarks if b.result is not None]
    if done:
        return max(done, key=lambda b: (b.finished_at is not None, b.finished_at, b.job_id))
    with_rows = [b for b in benchmarks if b.rows]
    return max(with_rows, key=lambda b: b.request.occurred_at) if with_rows else None


def _benchmark(inp: ReportInputs, data: dict[str, list[dict[str, Any]]]) -> Section:
    bench = newest_benchmark(inp.benchmarks)
    if bench is None:
        why = (
            "the benchmarks have no row yet ("
            + ", ".join(f"{b.job_id} {b.status}" for b in inp.benchmarks)
            + ")"
            if inp.benchmarks
            else f"no benchmark yet: cvops bench {inp.model_name}:{inp.version}"
        )
        return Section(name="benchmark", title=TITLES["benchmark"], present=False, missing=why)
    ok = [r for r in bench.rows if r.error is None]
    smallest = min(((r.batch_size, r.concurrency) for r in ok), default=None)
    latency = [
        {
            "engine": _row_label(r),
            "artifact": r.artifact,
            "p50_ms": r.p50_ms,
            "p95_ms": r.p95_ms,
            "p99_ms": r.p99_ms,
            "ci95_low_ms": r.ci95_low_ms,
            "ci95_high_ms": r.ci95_high_ms,
            "batch_size": r.batch_size,
            "concurrency": r.concurrency,
        }
        for r in ok
        if (r.batch_size, r.concurrency) == smallest and r.p95_ms is not None
    ]
    curves = [
        {
            "engine": _row_label(r),
            "batch_size": r.batch_size,
            "concurrency": r.concurrency,
            "p95_ms": r.p95_ms,
            "throughput_ips": r.throughput_ips,
            "cell": f"b{r.batch_size}xc{r.concurrency}",
            "order": r.batch_size * 10_000 + r.concurrency,
        }
        for r in ok
        if r.p95_ms is not None and r.throughput_ips is not None
    ]
    memory: dict[str, dict[str, Any]] = {}
    for r in ok:
        m = memory.setdefault(
            _row_label(r), {"engine": _row_label(r), "peak_rss_mb": None, "gpu_mem_mb": None}
        )
        for k in ("peak_rss_mb", "gpu_mem_mb"):
            v = getattr(r, k)
            if v is not None and (m[k] is None or v > m[k]):
                m[k] = v
    charts = []
    if latency:
        data["latency"] = latency
        charts.append("latency")
    if curves:
        data["throughput"] = curves
        charts.append("throughput")
    mem = [
        m for m in memory.values() if m["peak_rss_mb"] is not None or m["gpu_mem_mb"] is not None
    ]
    if mem:
        data["memory"] = mem
        charts.append("memory")
    rows: list[list[Cell]] = [
        [
            r.engine,
            r.precision,
            r.artifact,
            r.device,
            r.batch_size,
            r.concurrency,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.ci95_low_ms,
            r.ci95_high_ms,
            r.throughput_ips,
            r.peak_rss_mb,
            r.gpu_mem_mb,
            r.accuracy,
            r.stable,
            r.error,
        ]
        for r in bench.rows
    ]
    unavailable: list[list[Cell]] = [[e, why] for e, why in sorted(bench.unavailable.items())]
    tables = [
        Table(
            title=f"Rows of {bench.job_id}",
            columns=[
                "engine",
                "precision",
                "artifact",
                "device",
                "batch",
                "concurrency",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "p95 CI low",
                "p95 CI high",
                "images/s",
                "peak RSS MB",
                "GPU MB",
                "accuracy",
                "stable",
                "error",
            ],
            rows=rows,
        ),
    ]
    if unavailable:
        tables.append(
            Table(title="Engines not measured", columns=["engine", "why"], rows=unavailable)
        )
    others: list[list[Cell]] = [
        [b.job_id, b.status, len(b.rows)] for b in inp.benchmarks if b is not bench
    ]
    if others:
        tables.append(
            Table(
                title="Other benchmarks of this version",
                columns=["job", "status", "rows"],
                rows=others,
            )
        )  # type: ignore[arg-type]
    return Section(
        name="benchmark",
        title=TITLES["benchmark"],
        present=True,
        facts=[
            ("job", bench.job_id),
            ("status", bench.status),
            ("host", bench.host),
            ("rows", len(bench.rows)),
            ("failed rows", bench.failed_rows),
            (
                "latency cell (batch, concurrency)",
                f"{smallest[0]}, {smallest[1]}" if smallest else None,
            ),
        ],
        tables=tables,
        charts=charts,
    )


def _recommendation(inp: ReportInputs) -> Section:
    bench = newest_benchmark(inp.benchmarks)
    result: BenchmarkCompleted | None = bench.result if bench is not None else None
    if result is None:
        why = (
            f"benchmark {bench.job_id} has not completed ({bench.status})"
            if bench is not None
            else "no completed benchmark: the recommendation comes from one"
        )
        return Section(
            name="recommendation", title=TITLES["recommendation"], present=False, missing=why
        )
    pick = result.pick or result.closest
    facts: list[tuple[str, Cell]] = [
        ("benchmark", result.job_id),
        ("met the SLA", result.met_sla),
        ("SLA p95 ms", result.p95_ms),
        ("SLA max accuracy drop (pts)", result.max_accuracy_drop),
        ("reference accuracy", result.reference_accuracy),
        ("why", result.reason),
    ]
    if pick is not None:
        facts += [
            ("picked" if result.pick else "closest (misses the SLA)", _row_label(pick)),
            ("artifact", pick.artifact),
            ("batch size", pick.batch_size),
            ("concurrency", pick.concurrency),
            ("p95 ms", pick.p95_ms),
            ("images/s", pick.throughput_ips),
            ("accuracy", pick.accuracy),
        ]
    if result.batcher is not None:
        b = result.batcher
        facts += [
            ("batcher preferred sizes", ", ".join(str(x) for x in b.preferred_batch_sizes)),
            ("batcher max batch", b.max_batch_size),
            ("batcher max queue delay µs", b.max_queue_delay_us),
        ]
    front: list[list[Cell]] = [
        [
            _row_label(r),
            r.artifact,
            r.batch_size,
            r.concurrency,
            r.p95_ms,
            r.throughput_ips,
            r.accuracy,
        ]
        for r in result.pareto
    ]
    tables = []
    if front:
        tables.append(
            Table(
                title="Pareto front of the sweep",
                columns=[
                    "engine",
                    "artifact",
                    "batch",
                    "concurrency",
                    "p95 ms",
                    "images/s",
                    "accuracy",
                ],
                rows=front,
            )
        )
    return Section(
        name="recommendation",
        title=TITLES["recommendation"],
        present=True,
        facts=facts,
        tables=tables,
    )


def _deployment(inp: ReportInputs) -> Section:
    deps = inp.deployments
    if not deps:
        return Section(
            name="deployment",
            title=TITLES["deployment"],
            present=False,
            missing=f"not deployed: cvops deploy {inp.model_name}:{inp.version}",
        )
    own = inp.model.artifact.sha256 if inp.model is not None else None
    rows: list[list[Cell]] = []
    for d in deps:
        spec = d.serving
        arms = [("primary", spec.version, spec.engine, spec.precision, spec.served)]
        if spec.canary is not None:
            c = spec.canary
            arms.append(
                (
                    "canary",
                    c.model_version,
                    c.engine or spec.engine,
                    c.precision or spec.precision,
                    c.served,
                )
            )
        for arm, version, engine, precision, served in arms:
            if (spec.model_name, version) != (inp.model_name, inp.version):
                continue
            sha = served.artifact.sha256 if served is not None else own
            rows.append(
                [
                    d.deployment,
                    arm,
                    d.phase,
                    engine,
                    precision,
                    served.target if served else "source",
                    sha,
                    spec.canary.weight_percent if arm == "canary" and spec.canary else None,
                    ", ".join(d.instances),
                    d.serving_reason or d.reason,
                ]
            )
    live_rows: list[list[Cell]] = []
    facts: list[tuple[str, Cell]] = []
    if inp.live is not None:
        facts.append(("live numbers from", inp.live.source))
        if inp.live.error:
            facts.append(("live numbers unavailable", inp.live.error))
        live_rows = [
            [n.deployment, n.requests, n.errors, n.rate_rps, n.mean_ms, n.p95_ms]
            for n in inp.live.numbers
        ]
    tables = [
        Table(
            title="Serving",
            columns=[
                "deployment",
                "arm",
                "phase",
                "engine",
                "precision",
                "target",
                "artifact sha256",
                "canary %",
                "instances",
                "reason",
            ],
            rows=rows,
        )
    ]
    if live_rows:
        tables.append(
            Table(
                title="Live (router)",
                columns=["deployment", "requests", "errors", "requests/s", "mean ms", "p95 ms"],
                rows=live_rows,
            )
        )
    present = bool(rows)
    return Section(
        name="deployment",
        title=TITLES["deployment"],
        present=present,
        missing="" if present else "requested, but no deployment serves this version now",
        facts=facts,
        tables=tables,
    )


def build_report(inp: ReportInputs) -> Report:
    """The report of one model version from its folded states."""
    data: dict[str, list[dict[str, Any]]] = {}
    sections = [
        _dataset(inp, data),
        _training(inp, data),
        _conversion(inp, data),
        _benchmark(inp, data),
        _recommendation(inp),
        _deployment(inp),
    ]
    assert [s.name for s in sections] == list(REPORT_SECTIONS)
    return Report(
        model_name=inp.model_name,
        version=inp.version,
        last_seq=inp.last_seq,
        sections=sections,
        chart_data=data,
        header=model_facts(inp),
        thumbnails=list(inp.thumbnails),
        training_job=inp.training.job_id if inp.training is not None else None,
        conversion_jobs=[c.job_id for c in inp.conversions],
        benchmark_jobs=[b.job_id for b in inp.benchmarks],
        deployments=[d.deployment for d in inp.deployments],
    )


def model_facts(inp: ReportInputs) -> list[tuple[str, Cell]]:
    """The header of a report: the version itself, or that it is not registered."""
    m = inp.model
    if m is None:
        return [("model version", f"{inp.model_name}:{inp.version} is not registered (yet)")]
    return [
        ("model version", f"{m.model_name}:{m.version}"),
        ("format", m.format),
        ("architecture", m.architecture),
        ("parameters", m.parameter_count),
        ("stage", m.stage),
        ("artifact sha256", m.artifact.sha256),
        ("training job", m.lineage.job_id),
    ]
