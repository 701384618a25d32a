"""Bundled data sets: generated locally, reproducible byte for byte, and valid uploads."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cvops.registry.bundled import BUNDLED, SHAPES, digits_arrays, shapes_arrays
from cvops.registry.inspect_dataset import DatasetLimits, inspect_dataset

LIMITS = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=1 << 24)


def test_digits_are_sklearns_real_digits_upsampled_to_16x16() -> None:
    d = digits_arrays()
    assert d["x"].shape == (1797, 16, 16) and d["x"].dtype == np.uint8
    assert d["x"].max() == 255 and d["x"].min() == 0
    assert np.bincount(d["y"]).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert digits_arrays(size=8)["x"].shape == (1797, 8, 8)


def test_shapes_are_balanced_rgb_and_seeded() -> None:
    a = shapes_arrays(n=200, seed=5)
    assert a["x"].shape == (200, 32, 32, 3)
    assert np.bincount(a["y"]).tolist() == [20] * len(SHAPES)
    assert a["classes"].tolist() == list(SHAPES)
    assert np.array_equal(a["x"], shapes_arrays(n=200, seed=5)["x"])
    assert not np.array_equal(a["x"], shapes_arrays(n=200, seed=6)["x"])


def test_bundled_files_are_reproducible_fast_and_pass_validation(tmp_path: Path) -> None:
    for bundled in BUNDLED:
        started = time.perf_counter()
        first = bundled.write(tmp_path / f"{bundled.name}-1.npz")
        elapsed = time.perf_counter() - started
        assert elapsed < 6.0, f"{bundled.name} took {elapsed:.2f}s"  # ~0.5 s on an idle core
        again = bundled.write(tmp_path / f"{bundled.name}-2.npz")
        assert first.read_bytes() == again.read_bytes()
        facts = inspect_dataset(first, seed=0, limits=LIMITS, out=tmp_path / "canonical.npz")
        assert len(facts.classes) == 10
        assert facts.splits.calibration == 256
