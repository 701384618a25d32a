"""The registry's catalogue as other services see it: validated model versions and data sets.

Services that act on registered models (converter, benchmarker, router) keep the same two
aggregate tables in their own projection, folded by ``cvops.domain.catalog``; this module
declares them, and the whole catalogue (names, versions, uploads) that the registry keeps and
the gateway mirrors (``RegistryCatalog``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core.aggregates import AggregateTable
from cvops.domain.catalog import (
    DatasetVersionState,
    ModelVersionState,
    NameState,
    UploadState,
    dataset_name_key,
    dataset_version_key,
    evolve_dataset_version,
    evolve_model_version,
    evolve_name,
    evolve_upload,
    model_name_key,
    model_version_key,
    upload_key,
)

# the states as the services that use them have always named them
ModelVersionView = ModelVersionState
DatasetView = DatasetVersionState


def model_versions_table(metadata: MetaData) -> AggregateTable[ModelVersionState]:
    """Validated model versions: key columns, ``format``, the state as JSON in ``view``."""
    return AggregateTable(
        metadata,
        "model_versions",
        ModelVersionState,
        key=[Column("model_name", String), Column("version", Integer)],
        key_of=model_version_key,
        evolve=evolve_model_version,
        columns=[Column("format", String, nullable=False)],
        state_column="view",
    )


def datasets_table(metadata: MetaData) -> AggregateTable[DatasetVersionState]:
    """Validated data-set versions: key columns, the state as JSON in ``view``."""
    return AggregateTable(
        metadata,
        "datasets",
        DatasetVersionState,
        key=[Column("name", String), Column("version", Integer)],
        key_of=dataset_version_key,
        evolve=evolve_dataset_version,
        state_column="view",
    )


def dataset_versions(
    table: AggregateTable[DatasetVersionState], session: Session
) -> dict[str, list[DatasetVersionState]]:
    """Every validated data-set version, by name."""
    out: dict[str, list[DatasetVersionState]] = {}
    for state in table.states(session):
        out.setdefault(state.name, []).append(state)
    return out


class Catalog:
    """The two catalogue tables inside a service's own ``metadata``, their fold and queries."""

    def __init__(self, metadata: MetaData) -> None:
        self.models = model_versions_table(metadata)
        self.data_sets = datasets_table(metadata)
        self.model_versions = self.models.table
        self.datasets = self.data_sets.table

    def apply(self, session: Session, event: Event) -> bool:
        """Fold a catalogue event (a version never changes once added but for its stage);
        False for others."""
        return self.models.apply(session, event) or self.data_sets.apply(session, event)

    def model_version(self, session: Session, name: str, version: int) -> ModelVersionView | None:
        return self.models.get(session, name, version)

    def dataset_versions(self, session: Session) -> dict[str, list[DatasetView]]:
        """Every validated data-set version, by name."""
        return dataset_versions(self.data_sets, session)


# -- the whole catalogue (the registry's, mirrored by the gateway) -----------------------------


def _iso(get: Callable[[Any], datetime | None]) -> Callable[[Any], str | None]:
    return lambda state: None if (when := get(state)) is None else when.isoformat()


def names_table(
    metadata: MetaData, name: str, key_of: Callable[[Event], tuple[str] | None]
) -> AggregateTable[NameState]:
    """Model or data-set names (``key_of`` says which): owner, creation, latest version."""
    return AggregateTable(
        metadata,
        name,
        NameState,
        key=[Column("name", String)],
        key_of=key_of,
        evolve=evolve_name,
        columns=[
            Column("owner", String, nullable=False),
            (Column("created_at", String, nullable=False), _iso(attrgetter("created_at"))),
            Column("latest_version", Integer, nullable=False),
        ],
    )


class RegistryCatalog:
    """Every catalogue aggregate inside a service's own ``metadata``: model and data-set names,
    their versions (with stages) and the uploads, folded by ``cvops.domain.catalog``. The
    columns beside each state are what reads look up (blobs by sha256, uploads by status)."""

    def __init__(self, metadata: MetaData) -> None:
        self.models = names_table(metadata, "models", model_name_key)
        self.datasets = names_table(metadata, "datasets", dataset_name_key)
        self.model_versions = AggregateTable(
            metadata,
            "model_versions",
            ModelVersionState,
            key=[Column("model_name", String), Column("version", Integer)],
            key_of=model_version_key,
            evolve=evolve_model_version,
            columns=[
                Column("format", String, nullable=False),
                (
                    Column("artifact_sha256", String, nullable=False, index=True),
                    lambda v: v.artifact.sha256,
                ),
                Column("stage", String, nullable=False),
            ],
        )
        self.dataset_versions = AggregateTable(
            metadata,
            "dataset_versions",
            DatasetVersionState,
            key=[Column("dataset_name", String), Column("version", Integer)],
            key_of=dataset_version_key,
            evolve=evolve_dataset_version,
            columns=[
                (
                    Column("source_sha256", String, nullable=False, index=True),
                    lambda d: d.source.sha256 if d.source else "",
                ),
                (
                    Column("canonical_sha256", String, nullable=False, index=True),
                    lambda d: d.canonical.sha256,
                ),
            ],
        )
        self.uploads = AggregateTable(
            metadata,
            "uploads",
            UploadState,
            key=[Column("upload_id", String)],
            key_of=upload_key,
            evolve=evolve_upload,
            columns=[
                Column("kind", String, nullable=False),  # model | dataset
                Column("name", String, nullable=False),
                Column("status", String, nullable=False),  # pending | validated | rejected
                Column("artifact_sha256", String, nullable=False, index=True),
                (Column("received_at", String), _iso(attrgetter("received_at"))),
                (Column("decided_at", String), _iso(attrgetter("decided_at"))),
            ],
        )
        self.tables: list[AggregateTable[Any]] = [
            self.models,
            self.datasets,
            self.model_versions,
            self.dataset_versions,
            self.uploads,
        ]

    def apply(self, session: Session, event: Event) -> None:
        """Fold a ``registry.*`` event into each table that holds its aggregate."""
        for table in self.tables:
            table.apply(session, event)
