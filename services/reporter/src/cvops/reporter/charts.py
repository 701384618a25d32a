"""The report's charts as Vega-Lite specs, built with Altair from a report's chart data.

Each chart's data is inline (``values``), so a spec renders anywhere without a network:
in the HTML (Vega bundled in), to PNG and into the PDF (vl-convert).
"""

from __future__ import annotations

from typing import Any

import altair as alt

from cvops.reporter.content import Report

WIDTH = 520
HEIGHT = 260
Spec = dict[str, Any]


def _data(rows: list[dict[str, Any]]) -> alt.Data:
    return alt.Data(values=rows)


def class_counts(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    return (
        alt.Chart(_data(rows), title="Images per class")
        .mark_bar()
        .encode(
            x=alt.X("class:N", sort=None, title="class"),
            y=alt.Y("images:Q", title="images"),
            tooltip=["class:N", "images:Q"],
        )
        .properties(width=WIDTH, height=HEIGHT)
    )


def splits(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    return (
        alt.Chart(_data(rows), title="Split sizes")
        .mark_bar()
        .encode(
            y=alt.Y("split:N", sort=None, title=None),
            x=alt.X("images:Q", title="images"),
            tooltip=["split:N", "images:Q"],
        )
        .properties(width=WIDTH, height=120)
    )


def fitness(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    base = alt.Chart(_data(rows), title="GA fitness per generation (validation accuracy)")
    x = alt.X("generation:O", title="generation")
    best = base.mark_line(point=True).encode(
        x=x,
        y=alt.Y("best:Q", title="accuracy"),
        color=alt.value("#1f77b4"),
        tooltip=["generation:O", "best:Q", "mean:Q", "trials:Q"],
    )
    mean = base.mark_line(point=True, strokeDash=[4, 3]).encode(
        x=x, y="mean:Q", color=alt.value("#999999")
    )
    return (best + mean).properties(width=WIDTH, height=HEIGHT)


def pareto(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    base = alt.Chart(_data(rows), title="Trials: accuracy x latency (front in colour, chosen ◆)")
    enc = {
        "x": alt.X("latency_ms:Q", title="latency ms (batch 1, target engine)"),
        "y": alt.Y("accuracy:Q", title="validation accuracy", scale=alt.Scale(zero=False)),
    }
    points = base.mark_circle(size=60).encode(
        **enc,
        color=alt.Color(
            "pareto:N",
            title="Pareto front",
            scale=alt.Scale(domain=[True, False], range=["#d62728", "#bbbbbb"]),
        ),
        tooltip=["trial:N", "generation:O", "accuracy:Q", "latency_ms:Q", "size_bytes:Q"],
    )
    front = (
        base.transform_filter("datum.pareto")
        .mark_line(color="#d62728", opacity=0.5)
        .encode(**enc, order="latency_ms:Q")
    )
    chosen = (
        base.transform_filter("datum.chosen")
        .mark_point(shape="diamond", size=260, filled=True, color="black")
        .encode(**enc, tooltip=["trial:N", "accuracy:Q", "latency_ms:Q"])
    )
    return (points + front + chosen).properties(width=WIDTH, height=HEIGHT)


def hyperparameters(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    return (
        alt.Chart(_data(rows), title="Hyperparameter effects on accuracy")
        .mark_circle(size=45)
        .encode(
            x=alt.X("value:Q", title=None, scale=alt.Scale(zero=False)),
            y=alt.Y("accuracy:Q", scale=alt.Scale(zero=False)),
            color=alt.Color("latency_ms:Q", title="latency ms"),
            tooltip=["parameter:N", "value:Q", "accuracy:Q", "trial:N"],
        )
        .properties(width=220, height=160)
        .facet(facet=alt.Facet("parameter:N", title=None), columns=3)
        .resolve_scale(x="independent")
    )


def accuracy_by_precision(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    base = alt.Chart(_data(rows), title="Accuracy per converted target (rule: source model)")
    bars = base.mark_bar().encode(
        x=alt.X("target:N", sort=None, title="target"),
        y=alt.Y("accuracy:Q", title="validation accuracy"),
        color=alt.Color("precision:N"),
        tooltip=["job:N", "target:N", "precision:N", "accuracy:Q", "reference:Q", "outcome:N"],
    )
    reference = base.mark_rule(color="black", strokeDash=[4, 3]).encode(y="mean(reference):Q")
    return (bars + reference).properties(width=WIDTH, height=HEIGHT)


def latency(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    long = [
        {"engine": r["engine"], "percentile": p, "ms": r[f"{p}_ms"]}
        for r in rows
        for p in ("p50", "p95", "p99")
        if r.get(f"{p}_ms") is not None
    ]
    base = alt.Chart(_data(long), title="Latency percentiles per engine (bars: 95% CI of p95)")
    points = base.mark_point(filled=True, size=70).encode(
        y=alt.Y("engine:N", title=None),
        x=alt.X("ms:Q", title="ms per request"),
        color=alt.Color("percentile:N", sort=["p50", "p95", "p99"]),
        tooltip=["engine:N", "percentile:N", "ms:Q"],
    )
    ci = [r for r in rows if r.get("ci95_low_ms") is not None and r.get("ci95_high_ms") is not None]
    bars = (
        alt.Chart(_data(ci))
        .mark_errorbar(ticks=True, color="#ff7f0e")
        .encode(
            y="engine:N",
            x=alt.X("ci95_low_ms:Q", title="ms per request"),
            x2="ci95_high_ms:Q",
            tooltip=["engine:N", "ci95_low_ms:Q", "ci95_high_ms:Q"],
        )
    )
    return (bars + points).properties(width=WIDTH, height=max(80, 30 * len(rows)))


def throughput(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    base = alt.Chart(_data(rows), title="Throughput vs latency over batch size x concurrency")
    enc = {
        "x": alt.X("p95_ms:Q", title="p95 ms per request", scale=alt.Scale(type="log")),
        "y": alt.Y("throughput_ips:Q", title="images/s"),
        "color": alt.Color("engine:N"),
    }
    line = base.mark_line(point=True).encode(
        **enc,
        order="order:Q",
        tooltip=[
            "engine:N",
            "cell:N",
            "batch_size:Q",
            "concurrency:Q",
            "p95_ms:Q",
            "throughput_ips:Q",
        ],
    )
    return line.properties(width=WIDTH, height=HEIGHT)


def memory(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    long = [
        {"engine": r["engine"], "memory": label, "mb": r[key]}
        for r in rows
        for key, label in (("peak_rss_mb", "peak RSS"), ("gpu_mem_mb", "GPU"))
        if r.get(key) is not None
    ]
    return (
        alt.Chart(_data(long), title="Memory per engine (MB, largest over the sweep)")
        .mark_bar()
        .encode(
            y=alt.Y("engine:N", title=None),
            x=alt.X("mb:Q", title="MB"),
            color=alt.Color("memory:N"),
            yOffset="memory:N",
            tooltip=["engine:N", "memory:N", "mb:Q"],
        )
        .properties(width=WIDTH, height=max(80, 36 * len(rows)))
    )


BUILDERS = {
    "class_counts": class_counts,
    "splits": splits,
    "fitness": fitness,
    "pareto": pareto,
    "hyperparameters": hyperparameters,
    "accuracy_by_precision": accuracy_by_precision,
    "latency": latency,
    "throughput": throughput,
    "memory": memory,
}


def chart_specs(report: Report, *, validate: bool = False) -> dict[str, Spec]:
    """Every chart of ``report`` with data, as a Vega-Lite spec, by name (``samples`` is an
    image grid, not a spec: see ``render``). Validating against the schema costs a third of
    a second per report: the tests do it, the service does not."""
    return {
        name: BUILDERS[name](report.chart_data[name]).to_dict(validate=validate)
        for name in report.charts
        if name in BUILDERS
    }
