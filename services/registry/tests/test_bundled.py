"""Bundled data sets: generated locally, reproducible byte for byte, and valid uploads."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from cvops.registry.bundled import BUNDLED, digits_arrays
from cvops.registry.inspect_dataset import DatasetLimits, inspect_dataset
from cvops.vision_shapes import SHAPES, shapes_arrays

LIMITS = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=1 << 24)
# The sha256 of the bundled `shapes` file, as `dataset_upload_received` (upload id
# `bundled-shapes`) records it in every install's event log: new installs must publish the
# same bytes under that name and event id.
SHAPES_FILE_SHA256 = "b1fec70e57362e3171efe3c715ca22a6b4b54ba650c2ff1235ec725da56c31e6"


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
        if bundled.name == "shapes":
            assert hashlib.sha256(first.read_bytes()).hexdigest() == SHAPES_FILE_SHA256
        facts = inspect_dataset(first, seed=0, limits=LIMITS, out=tmp_path / "canonical.npz")
        assert len(facts.classes) == 10
        assert facts.splits.calibration == 256


def test_the_bundled_shapes_come_from_the_one_shared_generator_without_torch() -> None:
    (shapes,) = [b for b in BUNDLED if b.name == "shapes"]
    assert shapes.make is shapes_arrays  # the generator cvops.vision.bundled.shapes_npz uses
    code = "import sys, cvops.registry.app, cvops.registry.bundled; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # torch is for the inspector child process only
