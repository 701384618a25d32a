"""The shared catalogue fold: registry facts other services act on."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.identity import UserCreated
from cvops.contracts.registry import DatasetValidated, ImageStats, ModelVersionAdded, SplitCounts
from cvops.core import dump_rows, sqlite_engine
from cvops.core.catalog import Catalog

STAMP = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="registry", correlation_id="c")
REF = ArtifactRef(sha256="a" * 64, size=3)


def _events() -> list[object]:
    model = ModelVersionAdded(
        **STAMP.envelope("m"),
        model_name="cnn",
        version=1,
        upload_id="u",
        artifact=REF,
        format="onnx",
        inputs=[],
        outputs=[],
        parameter_count=10,
        architecture="simple-cnn",
    )
    data = DatasetValidated(
        **STAMP.envelope("d"),
        dataset_name="d",
        version=1,
        upload_id="u2",
        source=REF,
        canonical=REF,
        classes=["a", "b"],
        class_counts=[1, 1],
        num_images=2,
        images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=1),
        splits=SplitCounts(train=1, val=1, test=0, calibration=1),
    )
    return [model, data]


def test_catalog_folds_versions_once_and_answers_queries(tmp_path: Path) -> None:
    metadata = MetaData()
    catalog = Catalog(metadata)
    engine = sqlite_engine(tmp_path / "c.sqlite")
    metadata.create_all(engine)
    rows = []
    for _ in range(2):  # the same events twice leave the same rows
        with Session(engine) as s, s.begin():
            assert all(catalog.apply(s, e) for e in _events())  # type: ignore[arg-type]
        rows.append(dump_rows(engine, metadata))
    assert rows[0] == rows[1] and len(rows[0]["model_versions"]) == 1
    with Session(engine) as s:
        other = UserCreated(**STAMP.envelope("x"), username="x", role="viewer", password_hash="h")
        assert not catalog.apply(s, other)
        model = catalog.model_version(s, "cnn", 1)
        assert model is not None and model.architecture == "simple-cnn"
        assert catalog.model_version(s, "cnn", 2) is None
        [data] = catalog.dataset_versions(s)["d"]
        assert (data.image_size, data.classes, data.calibration) == ([8, 8], ["a", "b"], 1)
