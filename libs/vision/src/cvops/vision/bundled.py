"""Small data sets built on the spot (nothing downloaded): `digits` and `shapes`.

Both return canonical arrays (the npz keys: x, y, classes and split indices), so
`save_npz(path, digits_npz())` writes a file the registry and the trainer accept.
`shapes_npz` draws with `cvops.vision_shapes`, the generator the registry publishes the
bundled `shapes` set from, so what is measured here is what users get.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cvops.vision.data import stratified_splits
from cvops.vision_shapes import SHAPES, shapes_arrays

__all__ = ["SHAPES", "digits_npz", "shapes_npz"]


def digits_npz(size: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's 1797 handwritten digits, 1 channel, upsampled 8x8 -> `size` (bilinear).

    16x16 by default so that every zoo architecture (min 16 for resnet/mobilenet) takes it.
    """
    from sklearn.datasets import load_digits  # data ship inside scikit-learn

    d = load_digits()
    img = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    if size != 8:
        img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
    x = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    y = d.target.astype(np.int64)
    return {
        "x": np.ascontiguousarray(x),
        "y": y,
        "classes": np.asarray([str(i) for i in range(10)], dtype=str),
        **stratified_splits(y, seed),
    }


def shapes_npz(n: int = 3000, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """The registry's bundled `shapes` set (`cvops.vision_shapes.shapes_arrays`: 10 RGB shapes
    at random position, size, rotation and colours, plus noise) with seeded split indices.

    The defaults are the set the registry publishes (3,000 images, 32x32, seed 0); smaller or
    lower-resolution variants (as the search benchmarks use) come from the same generator.
    """
    arrays = shapes_arrays(n, size, seed)
    return {**arrays, **stratified_splits(arrays["y"], seed)}
