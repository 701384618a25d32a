"""A report built from a recorded sequence of events: every chart present, the numbers in the
HTML equal to the events', offline HTML; a version without results says what is missing."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from types import ModuleType

import msgspec
import numpy as np
import pytest
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp
from cvops.contracts.conversion import ArtifactProduced, BenchmarkCompleted, BenchmarkRowMeasured
from cvops.contracts.deployment import DeploymentReady
from cvops.contracts.registry import DatasetValidated
from cvops.contracts.reporting import REPORT_SECTIONS, ReportGenerated
from cvops.contracts.training import TrialCompleted
from cvops.core import ProjectionRunner, dump_rows
from cvops.reporter import projection as p
from cvops.reporter.charts import chart_specs
from cvops.reporter.content import Report, ReportInputs, build_report
from cvops.reporter.render import Rendered, render
from cvops.reporter.work import live_numbers, load_inputs, thumbnails_of

EVERY_CHART = {
    "class_counts",
    "splits",
    "samples",
    "fitness",
    "pareto",
    "hyperparameters",
    "accuracy_by_precision",
    "latency",
    "throughput",
    "memory",
}


def fold(events: list[Event], path: Path) -> ProjectionRunner:
    runner = ProjectionRunner(None, p.projection, path)
    runner.apply_batch([(i + 1, e) for i, e in enumerate(events)])
    return runner


def inputs_of(runner: ProjectionRunner, model: str, version: int) -> ReportInputs:
    with Session(runner.engine) as s, s.begin():
        return load_inputs(s, model, version)


def value(v: object) -> str:
    """How the HTML carries an exact number: ``data-value`` holds it as JSON writes it."""
    return f'data-value="{html.escape(json.dumps(v))}"'


@pytest.fixture
def samples(lineage: ModuleType, tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "canonical.npz"
    y = np.array([0, 1, 2] * 4)
    np.savez(
        path,
        x=rng.integers(0, 255, (12, 8, 8, 1), dtype=np.uint8),
        y=y,
        classes=np.asarray(lineage.CLASSES),
    )
    return path


@pytest.fixture
def full(
    lineage: ModuleType, recorded: list[Event], tmp_path: Path, samples: Path
) -> tuple[Report, Rendered]:
    runner = fold(recorded, tmp_path / "reporter.sqlite")
    inputs = msgspec.structs.replace(
        inputs_of(runner, lineage.MODEL, lineage.VERSION), thumbnails=thumbnails_of(samples)
    )
    report = build_report(inputs)
    return report, render(report)


def test_a_report_from_the_recorded_lineage_has_every_section_and_chart(
    lineage: ModuleType, recorded: list[Event], full: tuple[Report, Rendered]
) -> None:
    report, out = full
    page = out.html.decode()
    assert report.present == list(REPORT_SECTIONS)
    assert report.missing == []
    assert report.last_seq == len(recorded)
    assert (report.training_job, report.conversion_jobs, report.benchmark_jobs) == (
        lineage.JOB,
        [lineage.CONV],
        [lineage.BENCH],
    )
    assert set(report.charts) == EVERY_CHART
    assert set(out.pngs) == EVERY_CHART
    for name, png in out.pngs.items():
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), name
        assert f'id="chart-{name}"' in page, name
    specs = json.loads(re.search(r'id="cvops-specs">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert set(specs) == EVERY_CHART - {"samples"}
    assert set(chart_specs(report, validate=True)) == set(specs)  # valid Vega-Lite
    assert out.pdf.startswith(b"%PDF")
    assert 'id="chart-samples"' in page and page.count("data:image/png;base64,") == 12


def test_numbers_in_the_html_are_the_events_numbers(
    lineage: ModuleType, recorded: list[Event], full: tuple[Report, Rendered]
) -> None:
    _, out = full
    page = out.html.decode()
    ds = next(e for e in recorded if isinstance(e, DatasetValidated))
    for n in [
        *ds.class_counts,
        ds.splits.train,
        ds.splits.val,
        ds.splits.test,
        ds.splits.calibration,
    ]:
        assert value(n) in page
    for t in (e for e in recorded if isinstance(e, TrialCompleted)):
        assert value(t.metrics.accuracy) in page and value(t.metrics.latency_ms) in page
    best_per_generation = {
        max(acc for (g, _), (_, acc, _) in lineage.TRIALS.items() if g == gen) for gen in (0, 1)
    }
    assert all(value(b) in page for b in best_per_generation)
    for e in (e for e in recorded if isinstance(e, ArtifactProduced)):
        for n in (
            e.parity.top1_agreement,
            e.parity.max_abs_error,
            e.parity.candidate_accuracy,
            e.parity.accuracy_drop,
        ):
            assert value(n) in page, (e.target, n)
    for row in (e.row for e in recorded if isinstance(e, BenchmarkRowMeasured)):
        for n in (
            row.p50_ms,
            row.p95_ms,
            row.p99_ms,
            row.ci95_low_ms,
            row.ci95_high_ms,
            row.throughput_ips,
            row.peak_rss_mb,
            row.accuracy,
        ):
            assert value(n) in page, (row.key, n)
    done = next(e for e in recorded if isinstance(e, BenchmarkCompleted))
    assert done.pick is not None
    assert value(done.reason) in page and value(done.p95_ms) in page
    assert value(f"{done.pick.engine}/{done.pick.precision}") in page
    ready = next(e for e in recorded if isinstance(e, DeploymentReady))
    assert ready.served is not None
    assert value(ready.served.artifact.sha256) in page and value("ready") in page
    assert value(lineage.CHOSEN) in page


def test_the_data_json_holds_the_chart_numbers(
    lineage: ModuleType, recorded: list[Event], full: tuple[Report, Rendered]
) -> None:
    _, out = full
    data = json.loads(out.data)
    rows = [e.row for e in recorded if isinstance(e, BenchmarkRowMeasured)]
    measured = {(r.engine + "/" + r.precision, r.batch_size, r.concurrency): r for r in rows}
    for point in data["chart_data"]["throughput"]:
        r = measured[(point["engine"], point["batch_size"], point["concurrency"])]
        assert (point["p95_ms"], point["throughput_ips"]) == (r.p95_ms, r.throughput_ips)
    chosen = [pt for pt in data["chart_data"]["pareto"] if pt["chosen"]]
    assert [pt["trial"] for pt in chosen] == [lineage.CHOSEN]


def test_the_html_works_offline(full: tuple[Report, Rendered]) -> None:
    page = full[1].html.decode()
    assert not re.search(
        r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", page, re.I
    )
    assert not re.search(r"@import\s+url\(\s*[\"']?(https?:)?//", page, re.I)
    assert "vegaEmbed" in page  # Vega's JavaScript is in the page itself


def test_a_version_without_results_says_what_is_missing(
    lineage: ModuleType, tmp_path: Path
) -> None:
    uploaded = msgspec.structs.replace(lineage.version_event(), lineage=Lineage())
    runner = fold([lineage.dataset_event(), uploaded], tmp_path / "reporter.sqlite")
    report = build_report(inputs_of(runner, lineage.MODEL, lineage.VERSION))
    out = render(report)
    page = out.html.decode()
    assert report.present == []
    reasons = {m.section: m.reason for m in report.missing}
    assert set(reasons) == set(REPORT_SECTIONS)
    assert f"cvops convert {lineage.MODEL}:{lineage.VERSION}" in reasons["conversion"]
    assert f"cvops bench {lineage.MODEL}:{lineage.VERSION}" in reasons["benchmark"]
    assert "not deployed" in reasons["deployment"]
    assert "no training job in its lineage" in reasons["training"]
    assert "uploaded, not trained here" in reasons["dataset"]
    for reason in reasons.values():
        assert reason in page or reason.replace("'", "&#x27;") in page
    assert out.pngs == {} and out.pdf.startswith(b"%PDF")


def test_a_version_that_is_not_registered_still_gets_a_report(
    lineage: ModuleType, tmp_path: Path
) -> None:
    runner = fold([lineage.dataset_event()], tmp_path / "reporter.sqlite")
    report = build_report(inputs_of(runner, "nobody", 3))
    assert report.present == [] and "is not registered" in str(report.header)
    assert render(report).html


def test_applying_the_log_twice_changes_no_row_and_results_make_reports_due(
    lineage: ModuleType, recorded: list[Event], tmp_path: Path
) -> None:
    runner = fold(recorded, tmp_path / "a.sqlite")
    before = dump_rows(runner.engine, p.metadata)
    runner.apply_batch([(i + 1, e) for i, e in enumerate(recorded)])
    assert dump_rows(runner.engine, p.metadata) == before
    with Session(runner.engine) as s:
        due = p.due_reports(s)
    assert [(d.model_name, d.version, d.due_seq) for d in due] == [
        (lineage.MODEL, lineage.VERSION, len(recorded))
    ]
    assert due[0].cause == "deployment.ready.v1"


def test_a_published_report_is_no_longer_due_until_the_next_result(
    lineage: ModuleType, recorded: list[Event], tmp_path: Path
) -> None:
    last = len(recorded)
    runner = fold(recorded, tmp_path / "a.sqlite")
    blob = ArtifactRef(sha256="f" * 64, size=1)
    stamp = Stamp(now=recorded[-1].occurred_at, actor="reporter", correlation_id="req-1")
    generated = ReportGenerated(
        **stamp.envelope("report"),
        model_name=lineage.MODEL,
        version=lineage.VERSION,
        html=blob,
        pdf=blob,
        data=blob,
        last_seq=last,
    )
    runner.apply_batch([(last + 1, generated)])
    with Session(runner.engine) as s:
        assert p.due_reports(s) == []
        assert p.latest_report(s, lineage.MODEL, lineage.VERSION) == generated
    done = next(e for e in recorded if isinstance(e, BenchmarkCompleted))
    again = msgspec.structs.replace(done, job_id="bench-2")
    runner.apply_batch([(last + 2, again)])
    with Session(runner.engine) as s:
        assert [d.due_seq for d in p.due_reports(s)] == [last + 2]


def test_live_numbers_come_from_the_routers_metrics() -> None:
    digits = 'model="digits",version="1",protocol="http"'
    text = "\n".join(
        [
            "# TYPE cvops_router_requests counter",
            f'cvops_router_requests_total{{{digits},code="200"}} 90.0',
            f'cvops_router_requests_total{{{digits},code="503"}} 10.0',
            'cvops_router_requests_total{model="other",version="1",protocol="http",code="200"} 7.0',
            "# TYPE cvops_router_request_duration_seconds histogram",
            f'cvops_router_request_duration_seconds_bucket{{{digits},le="0.001"}} 50.0',
            f'cvops_router_request_duration_seconds_bucket{{{digits},le="0.002"}} 96.0',
            f'cvops_router_request_duration_seconds_bucket{{{digits},le="+Inf"}} 100.0',
            f"cvops_router_request_duration_seconds_count{{{digits}}} 100.0",
            f"cvops_router_request_duration_seconds_sum{{{digits}}} 0.15",
        ]
    )
    (n,) = live_numbers(text + "\n", ["digits"], {"digits": (100.0, 40.0)}, now=110.0)
    assert (n.requests, n.errors, n.p95_ms, n.rate_rps) == (100.0, 10.0, 2.0, 6.0)
    assert n.mean_ms == pytest.approx(1.5)
