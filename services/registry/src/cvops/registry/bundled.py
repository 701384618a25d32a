"""The two bundled data sets, made on this machine at first start (nothing is downloaded).

- ``digits``: scikit-learn's 1,797 real handwritten digits (8x8, values 0..16), scaled to
  uint8 0..255 and upsampled to 16x16 (bilinear) so every zoo architecture can take them.
- ``shapes``: 3,000 generated 32x32 RGB images of 10 geometric shapes with random position,
  size, rotation, colours and noise (seeded, byte-for-byte reproducible). The generator is
  cvops-vision's torch-free ``cvops.vision_shapes``, the one the vision tests and the search
  benchmarks use too.

Each is written as an upload-style npz (``x``, ``y``, ``classes``) and validated like any
other upload.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cvops.registry.inspect_dataset import write_npz
from cvops.vision_shapes import shapes_arrays


@dataclass(frozen=True)
class BundledDataset:
    name: str
    description: str
    make: Callable[[], dict[str, np.ndarray]]

    def write(self, path: Path) -> Path:
        """Generate the arrays and write them as a deterministic npz."""
        write_npz(path, self.make())
        return path


def digits_arrays(size: int = 16) -> dict[str, np.ndarray]:
    """scikit-learn's handwritten digits as uint8 (N, size, size) images."""
    raw = _digits_table()
    images = np.rint(raw[:, :64].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    labels = raw[:, 64].astype(np.int64)
    if size != 8:
        images = np.stack(
            [
                np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR))
                for im in images
            ]
        )
    return {"x": images, "y": labels, "classes": np.asarray([str(d) for d in range(10)])}


def _digits_table() -> np.ndarray:
    # The data file ships inside scikit-learn; reading it directly skips sklearn's slow import.
    spec = importlib.util.find_spec("sklearn")
    if spec and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            csv = Path(root) / "datasets" / "data" / "digits.csv.gz"
            if csv.exists():
                with gzip.open(csv, "rt") as fh:
                    return np.loadtxt(fh, delimiter=",")
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.concatenate([d.data, d.target[:, None]], axis=1)


BUNDLED = (
    BundledDataset(
        name="digits",
        description=(
            "scikit-learn's 1,797 handwritten digits (8x8, 0..16), scaled to uint8 and "
            "upsampled to 16x16 grayscale"
        ),
        make=digits_arrays,
    ),
    BundledDataset(
        name="shapes",
        description=(
            "3,000 generated 32x32 RGB images of 10 geometric shapes (random position, size, "
            "rotation, colours, noise; seed 0)"
        ),
        make=shapes_arrays,
    ),
)
