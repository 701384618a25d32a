"""Fixtures of the vision tests: tiny synthetic canonical data sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvops.vision import CanonicalDataset, load_npz, make_synthetic_npz


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 RGB 16x16 images of 4 classes."""
    path = tmp_path_factory.mktemp("vision") / "tiny.npz"
    return make_synthetic_npz(path, n=160, classes=4, hw=16, channels=3, seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_npz: Path) -> CanonicalDataset:
    return load_npz(tiny_npz)
