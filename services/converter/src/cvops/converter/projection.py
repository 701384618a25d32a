"""The converter's projection: model versions and data sets the registry validated, and every
conversion job (the aggregate table ``cvops.core.jobs`` declares, each target's result in
its folded state).

Rows come from events only and every ``apply`` is an upsert or a fold keyed by the event's
sequence, so applying an event twice or rebuilding from the log gives identical rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import SUBJECT_PREFIX, Event
from cvops.contracts.registry import DatasetValidated, ModelVersionAdded
from cvops.core import Settings
from cvops.core.catalog import Catalog
from cvops.core.jobs import conversion_jobs_table, job_summaries
from cvops.domain.conversion import TargetState

SUBJECTS = [f"{SUBJECT_PREFIX}.registry.>", f"{SUBJECT_PREFIX}.conversion.>"]

metadata = MetaData()

catalog = Catalog(metadata)  # validated model versions and data sets

# every conversion job: the domain's ConversionState, each target's first result inside it
jobs = conversion_jobs_table(metadata)
conversions = jobs.table

_encode = msgspec.json.Encoder().encode


class ConverterProjection:
    """Folds registry and conversion events into SQLite (see ``ProjectionRunner``)."""

    name = "converter"
    # 2: the ``state`` column holds a ConversionState (richer target results)
    # 3: jobs are cvops.core.jobs' aggregate table; target results are read off the state
    version = 3
    metadata = metadata

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case ModelVersionAdded() | DatasetValidated():
                catalog.apply(session, event)
            case _:
                jobs.apply(session, event, seq)


projection = ConverterProjection()


def db_path(settings: Settings) -> Path:
    """Where the converter keeps its projection."""
    return settings.home_path / "converter.sqlite"


# -- queries ----------------------------------------------------------------------------------


# a job's folded state (None when its request was not seen); the catalogue's reads
load_job = jobs.get
model_version = catalog.model_version
dataset_versions = catalog.dataset_versions


def _result_row(job_id: str, r: TargetState) -> dict[str, Any]:
    parity = r.parity
    return {
        "job_id": job_id,
        "target": r.target,
        "outcome": r.outcome,
        "reason": r.gate.reason if r.outcome == "produced" and r.gate else r.reason,
        "artifact_sha256": r.artifact.sha256 if r.artifact else None,
        "accuracy_drop": parity.accuracy_drop if parity else None,
        "max_abs_error": parity.max_abs_error if parity else None,
        "top1_agreement": parity.top1_agreement if parity else None,
        "excluded_layers": _encode(r.excluded_layers).decode(),
    }


def job_results(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The result row of every target of a job that has one, by target."""
    state = jobs.get(session, job_id)
    if state is None:
        return []
    return [_result_row(job_id, state.results[t]) for t in sorted(state.results)]


def list_jobs(session: Session) -> list[dict[str, Any]]:
    """Every conversion job, newest first (without the folded state)."""
    return job_summaries(jobs, session)
