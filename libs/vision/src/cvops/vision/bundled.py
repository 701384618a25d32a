"""Small data sets built on the spot (nothing downloaded): `digits` and `shapes`.

Both return canonical arrays (the npz keys: x, y, classes and split indices), so
`save_npz(path, digits_npz())` writes a file the registry and the trainer accept.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cvops.vision.data import stratified_splits

SHAPE_CLASSES = (
    "circle",
    "square",
    "triangle",
    "ring",
    "cross",
    "diamond",
    "hbar",
    "vbar",
    "x",
    "frame",
)


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


def shapes_npz(
    n: int = 3000, size: int = 32, seed: int = 0, noise: float = 0.08
) -> dict[str, np.ndarray]:
    """10 classes of geometric shapes, RGB: random position, size, colours and contrast, plus
    Gaussian (`noise` std) and salt-and-pepper noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES)
    rng.shuffle(y)
    r = rng.uniform(0.18, 0.4, n).astype(np.float32) * size
    cy = (size / 2 + rng.uniform(-1, 1, n) * (size / 2 - r - 1)).astype(np.float32)
    cx = (size / 2 + rng.uniform(-1, 1, n) * (size / 2 - r - 1)).astype(np.float32)
    grid = np.arange(size, dtype=np.float32) + 0.5
    dy = (grid[None, :, None] - cy[:, None, None]) / r[:, None, None]  # (n, H, 1), unit radius
    dx = (grid[None, None, :] - cx[:, None, None]) / r[:, None, None]  # (n, 1, W)
    ay, ax = np.abs(dy), np.abs(dx)
    box = np.maximum(ay, ax)
    rad = np.sqrt(dy**2 + dx**2)
    third = 1 / 3
    masks = [
        rad <= 1,  # circle
        box <= 0.85,  # square
        (dy >= -1) & (dy <= 0.8) & (ax <= (dy + 1) / 2),  # triangle, apex up
        (rad <= 1) & (rad >= 0.6),  # ring
        ((ay <= third) & (ax <= 1)) | ((ax <= third) & (ay <= 1)),  # cross
        ax + ay <= 1,  # diamond
        (ay <= third) & (ax <= 1),  # hbar
        (ax <= third) & (ay <= 1),  # vbar
        ((np.abs(dx - dy) <= 0.3) | (np.abs(dx + dy) <= 0.3)) & (box <= 0.9),  # x
        (box <= 0.9) & (box >= 0.6),  # frame
    ]
    mask = np.zeros((n, size, size), dtype=bool)
    for label, m in enumerate(masks):
        sel = y == label
        mask[sel] = np.broadcast_to(m, (n, size, size))[sel]
    # Low, random contrast between shape and background, then noise and salt-and-pepper.
    background = rng.uniform(0.0, 1.0, (n, 1, 1, 3)).astype(np.float32)
    sign = np.where(background.mean(axis=3, keepdims=True) > 0.5, -1.0, 1.0)
    delta = rng.uniform(0.2, 0.55, (n, 1, 1, 1)) + rng.uniform(-0.1, 0.1, (n, 1, 1, 3))
    foreground = np.clip(background + sign * delta, 0, 1).astype(np.float32)
    img = np.where(mask[..., None], foreground, background)
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    salt = rng.random((n, size, size, 1)) < 0.01
    img = np.where(salt, rng.random((n, size, size, 1)).astype(np.float32), img)
    x = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return {
        "x": x,
        "y": y,
        "classes": np.asarray(SHAPE_CLASSES, dtype=str),
        **stratified_splits(y, seed),
    }
