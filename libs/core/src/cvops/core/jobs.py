"""Training, conversion and benchmark jobs, and deployments, as every service keeps them: one
aggregate per job id (deployment name), folded by ``cvops.domain``. The trainer, converter,
benchmarker and router run them and the gateway shows them, each in its own projection; this
module declares their tables once.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

import msgspec
from sqlalchemy import Boolean, Column, Float, Integer, MetaData, String, Text
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core.aggregates import AggregateTable, Children, ColumnSpec
from cvops.domain import benchmark, conversion, training
from cvops.domain.benchmark import BenchmarkState
from cvops.domain.conversion import ConversionState
from cvops.domain.deployment import DeploymentState, deployment_key, evolve_deployment
from cvops.domain.training import JobState

_encode = msgspec.json.Encoder().encode
_decode_job = msgspec.json.Decoder(JobState).decode


def job_key(context: str) -> Callable[[Event], tuple[str] | None]:
    """The key of a ``context`` event's job, its ``job_id`` (None for another context's)."""

    def key_of(event: Event) -> tuple[str] | None:
        return (str(getattr(event, "job_id", "")),) if event.context == context else None

    return key_of


def _request_columns() -> list[ColumnSpec]:
    """The columns a job is looked up by: the model version it is about and its status."""
    return [
        (Column("model_name", String, nullable=False), lambda s: s.request.model_name),
        (Column("version", Integer, nullable=False), lambda s: s.request.version),
        Column("status", String, nullable=False),
    ]


def conversion_jobs_table(metadata: MetaData) -> AggregateTable[ConversionState]:
    """``conversions``: one ``ConversionState`` per job (each target's result inside it),
    its newest event's sequence in ``last_seq``."""
    return AggregateTable(
        metadata,
        "conversions",
        ConversionState,
        key=[Column("job_id", String)],
        key_of=job_key("conversion"),
        evolve=conversion.evolve,
        columns=_request_columns(),
        sequence="last_seq",
    )


def benchmark_jobs_table(metadata: MetaData) -> AggregateTable[BenchmarkState]:
    """``benchmarks``: one ``BenchmarkState`` per job, its newest event's sequence in
    ``last_seq``, and ``benchmark_rows``: one row per measured cell (the row as JSON)."""
    return AggregateTable(
        metadata,
        "benchmarks",
        BenchmarkState,
        key=[Column("job_id", String)],
        key_of=job_key("benchmark"),
        evolve=benchmark.evolve,
        columns=_request_columns(),
        children=[
            Children(
                "benchmark_rows",
                lambda s: s.rows,
                key=[
                    Column("engine", String),
                    Column("precision", String),
                    Column("artifact", String),
                    Column("batch_size", Integer),
                    Column("concurrency", Integer),
                ],
                columns=[(Column("body", Text, nullable=False), lambda r: _encode(r).decode())],
            )
        ],
        sequence="last_seq",
    )


def _evolve_training(state: JobState | None, event: Event, seq: int) -> JobState | None:
    # the domain's fold changes a state in place: fold a copy, so the table sees what changed
    return training.evolve(None if state is None else _decode_job(_encode(state)), event, seq)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def training_jobs_table(metadata: MetaData) -> AggregateTable[JobState]:
    """``jobs``: one ``JobState`` per training job (its newest ``training.*`` event's sequence
    in ``last_seq``: the domain's fold records it) with the columns jobs are listed and counted
    by, and ``job_trials``: one row per trial, what trials are compared by."""
    return AggregateTable(
        metadata,
        "jobs",
        JobState,
        key=[Column("job_id", String)],
        key_of=lambda e: (
            (str(getattr(e, "job_id", "")),) if e.context in ("training", "trial") else None
        ),
        evolve_at=_evolve_training,
        columns=[
            (Column("owner", String, nullable=False, index=True), attrgetter("owner")),
            (Column("role", String, nullable=False), lambda s: s.request.role),
            (Column("device", String, nullable=False), lambda s: s.request.device),
            Column("status", String, nullable=False, index=True),
            Column("cancel_requested", Boolean, nullable=False),
            (Column("created_at", String, nullable=False), lambda s: _iso(s.request.occurred_at)),
        ],
        children=[
            Children(
                "job_trials",
                lambda s: s.trials.values(),
                key=[Column("trial_id", String)],
                columns=[
                    Column("generation", Integer, nullable=False),
                    (Column("idx", Integer, nullable=False), attrgetter("index")),
                    Column("status", String, nullable=False),
                    Column("parameters", Integer),
                    Column("epoch", Integer, nullable=False),
                    Column("val_accuracy", Float),
                ],
            )
        ],
    )


def _summary(state: ConversionState | BenchmarkState) -> dict[str, Any]:
    req = state.request
    return {
        "job_id": state.job_id,
        "model_name": req.model_name,
        "version": req.version,
        "actor": req.actor,
        "status": state.status,
        "reason": state.reason,
        "requested_at": req.occurred_at.isoformat(),
    }


def job_summaries(
    table: AggregateTable[ConversionState] | AggregateTable[BenchmarkState], session: Session
) -> list[dict[str, Any]]:
    """Every job of ``table`` as a flat row (its request and progress), newest first."""
    rows = [_summary(state) for state in table.states(session)]
    return sorted(rows, key=lambda r: r["requested_at"], reverse=True)


def deployments_table(
    metadata: MetaData, status: Callable[[DeploymentState], str] = attrgetter("status")
) -> AggregateTable[DeploymentState]:
    """``deployments``: one ``DeploymentState`` per deployment name; the ``status`` column is
    the API's status, or (``status=attrgetter("phase")``) what the router serves."""
    return AggregateTable(
        metadata,
        "deployments",
        DeploymentState,
        key=[Column("name", String)],
        key_of=lambda e: None if (k := deployment_key(e)) is None else (k,),
        evolve=evolve_deployment,
        columns=[(Column("status", String, nullable=False), status)],
    )
