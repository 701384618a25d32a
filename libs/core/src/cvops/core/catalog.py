"""The registry's catalogue as other services see it: validated model versions and data sets.

Services that act on registered models (converter, benchmarker) fold the same two registry
events into the same two tables of their own projection; this module is that fold.
"""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, select
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Event, Lineage, TensorSpec
from cvops.contracts.registry import DatasetValidated, ModelVersionAdded


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


_decode_model = msgspec.json.Decoder(ModelVersionView).decode
_decode_dataset = msgspec.json.Decoder(DatasetView).decode
_encode = msgspec.json.Encoder().encode


class Catalog:
    """The two catalogue tables inside a service's own ``metadata``, their fold and queries."""

    def __init__(self, metadata: MetaData) -> None:
        self.model_versions = Table(
            "model_versions",
            metadata,
            Column("model_name", String, primary_key=True),
            Column("version", Integer, primary_key=True),
            Column("format", String, nullable=False),
            Column("view", Text, nullable=False),  # ModelVersionView as JSON
        )
        self.datasets = Table(
            "datasets",
            metadata,
            Column("name", String, primary_key=True),
            Column("version", Integer, primary_key=True),
            Column("view", Text, nullable=False),  # DatasetView as JSON
        )

    def apply(self, session: Session, event: Event) -> bool:
        """Fold a catalogue event (versions never change once added); False for others."""
        match event:
            case ModelVersionAdded():
                session.execute(
                    insert(self.model_versions)
                    .values(
                        model_name=event.model_name,
                        version=event.version,
                        format=event.format,
                        view=_encode(model_view(event)).decode(),
                    )
                    .on_conflict_do_nothing()
                )
            case DatasetValidated():
                session.execute(
                    insert(self.datasets)
                    .values(
                        name=event.dataset_name,
                        version=event.version,
                        view=_encode(dataset_view(event)).decode(),
                    )
                    .on_conflict_do_nothing()
                )
            case _:
                return False
        return True

    def model_version(self, session: Session, name: str, version: int) -> ModelVersionView | None:
        t = self.model_versions
        value = session.execute(
            select(t.c.view).where(t.c.model_name == name, t.c.version == version)
        ).scalar()
        return _decode_model(value) if value else None

    def dataset_versions(self, session: Session) -> dict[str, list[DatasetView]]:
        """Every validated data-set version, by name."""
        out: dict[str, list[DatasetView]] = {}
        for (value,) in session.execute(select(self.datasets.c.view)).all():
            view = _decode_dataset(value)
            out.setdefault(view.name, []).append(view)
        return out
