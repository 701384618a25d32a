"""The registry's catalogue as other services see it: validated model versions and data sets.

Services that act on registered models (converter, benchmarker) fold the same two registry
events into the same two aggregate tables of their own projection; this module is that fold.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Column, Integer, MetaData, String
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Event, Lineage, TensorSpec
from cvops.contracts.registry import DatasetValidated, ModelVersionAdded
from cvops.core.aggregates import AggregateTable


class ModelVersionView(msgspec.Struct, frozen=True, kw_only=True):
    """What the registry said about one model version."""

    model_name: str
    version: int
    artifact: ArtifactRef
    format: str
    architecture: str | None = None
    num_classes: int | None = None
    inputs: list[TensorSpec] = []
    lineage: Lineage = Lineage()

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.lineage.hyperparameters)


class DatasetView(msgspec.Struct, frozen=True, kw_only=True):
    """One validated data-set version and its canonical npz."""

    name: str
    version: int
    canonical: ArtifactRef
    channels: int
    image_size: list[int]  # modal H, W
    classes: list[str] = []
    calibration: int = 0  # images in the calibration split


def model_view(e: ModelVersionAdded) -> ModelVersionView:
    return ModelVersionView(
        model_name=e.model_name,
        version=e.version,
        artifact=e.artifact,
        format=e.format,
        architecture=e.architecture,
        num_classes=e.num_classes,
        inputs=list(e.inputs),
        lineage=e.lineage,
    )


def dataset_view(e: DatasetValidated) -> DatasetView:
    hw = [*e.images.modal_hw, 0, 0][:2]
    return DatasetView(
        name=e.dataset_name,
        version=e.version,
        canonical=e.canonical,
        classes=list(e.classes),
        channels=e.images.channels,
        image_size=[int(hw[0]), int(hw[1])],
        calibration=e.splits.calibration,
    )


def evolve_model(state: ModelVersionView | None, event: Event) -> ModelVersionView | None:
    """A version is what its ``model_version_added`` said; it never changes once added."""
    if state is None and isinstance(event, ModelVersionAdded):
        return model_view(event)
    return state


def evolve_dataset(state: DatasetView | None, event: Event) -> DatasetView | None:
    """A data-set version is what its ``dataset_validated`` said; it never changes."""
    if state is None and isinstance(event, DatasetValidated):
        return dataset_view(event)
    return state


def _model_key(event: Event) -> tuple[str, int] | None:
    return (event.model_name, event.version) if isinstance(event, ModelVersionAdded) else None


def _dataset_key(event: Event) -> tuple[str, int] | None:
    return (event.dataset_name, event.version) if isinstance(event, DatasetValidated) else None


class Catalog:
    """The two catalogue tables inside a service's own ``metadata``, their fold and queries."""

    def __init__(self, metadata: MetaData) -> None:
        # the rows as they always were: key columns, ``format``, the view as JSON in ``view``
        self.models = AggregateTable(
            metadata,
            "model_versions",
            ModelVersionView,
            key=[Column("model_name", String), Column("version", Integer)],
            key_of=_model_key,
            evolve=evolve_model,
            columns=[Column("format", String, nullable=False)],
            state_column="view",
        )
        self.data_sets = AggregateTable(
            metadata,
            "datasets",
            DatasetView,
            key=[Column("name", String), Column("version", Integer)],
            key_of=_dataset_key,
            evolve=evolve_dataset,
            state_column="view",
        )
        self.model_versions = self.models.table
        self.datasets = self.data_sets.table

    def apply(self, session: Session, event: Event) -> bool:
        """Fold a catalogue event (versions never change once added); False for others."""
        return self.models.apply(session, event) or self.data_sets.apply(session, event)

    def model_version(self, session: Session, name: str, version: int) -> ModelVersionView | None:
        return self.models.get(session, name, version)

    def dataset_versions(self, session: Session) -> dict[str, list[DatasetView]]:
        """Every validated data-set version, by name."""
        out: dict[str, list[DatasetView]] = {}
        for view in self.data_sets.states(session):
            out.setdefault(view.name, []).append(view)
        return out
