"""The registry's catalogue as other services see it: validated model versions and data sets.

Services that act on registered models (converter, benchmarker, router) keep the same two
aggregate tables in their own projection, folded by ``cvops.domain.catalog``; this module
declares them.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, MetaData, String
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core.aggregates import AggregateTable
from cvops.domain.catalog import (
    DatasetVersionState,
    ModelVersionState,
    dataset_version_key,
    evolve_dataset_version,
    evolve_model_version,
    model_version_key,
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
