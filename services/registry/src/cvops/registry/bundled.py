"""The two bundled data sets, made on this machine at first start (nothing is downloaded).

- ``digits``: scikit-learn's 1,797 real handwritten digits (8x8, values 0..16), scaled to
  uint8 0..255 and upsampled to 16x16 (bilinear) so every zoo architecture can take them.
- ``shapes``: 3,000 generated 32x32 RGB images of 10 geometric shapes with random position,
  size, rotation, colours and noise (seeded, byte-for-byte reproducible).

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
from PIL import Image, ImageDraw

from cvops.registry.inspect_dataset import write_npz

SHAPES = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "hexagon",
    "diamond",
    "ellipse",
    "line",
)


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


def shapes_arrays(n: int = 3000, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` RGB images (size x size) of the 10 SHAPES, balanced, seeded."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(SHAPES)
    rng.shuffle(labels)
    scale = 2  # draw at twice the size, then downsample: anti-aliased edges
    big = size * scale
    x = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        bg, fg = _colours(rng)
        im = Image.new("RGB", (big, big), bg)
        draw = ImageDraw.Draw(im)
        r = rng.uniform(0.22, 0.42) * big
        cx, cy = rng.uniform(r + 1, big - r - 1, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        _draw_shape(draw, SHAPES[label], cx, cy, r, angle, fg, bg, rng)
        x[i] = np.asarray(im.resize((size, size), Image.Resampling.BOX))
    sigma = rng.uniform(0, 12, size=(n, 1, 1, 1)).astype(np.float32)
    noisy = rng.standard_normal(x.shape, dtype=np.float32)
    noisy *= sigma
    noisy += x
    np.clip(noisy, 0, 255, out=noisy)
    x = np.rint(noisy).astype(np.uint8)
    return {"x": x, "y": labels, "classes": np.asarray(SHAPES)}


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    bg, fg, dark, light = (c.tolist() for c in rng.integers(0, 256, size=(4, 3)))
    luma_bg = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    luma_fg = 0.299 * fg[0] + 0.587 * fg[1] + 0.114 * fg[2]
    if abs(luma_fg - luma_bg) < 70:  # keep the shape visible: dark on light or light on dark
        fg = (
            [v * 70 // 256 for v in dark] if luma_bg > 127 else [186 + v * 70 // 256 for v in light]
        )
    return tuple(bg), tuple(fg)


def _polygon(
    radii: list[float], cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    k = len(radii)
    return [
        (
            cx + r * radii[j] * np.cos(angle + 2 * np.pi * j / k),
            cy + r * radii[j] * np.sin(angle + 2 * np.pi * j / k),
        )
        for j in range(k)
    ]


def _rotated(
    points: list[tuple[float, float]], cx: float, cy: float, r: float, angle: float
) -> list[tuple[float, float]]:
    c, s = np.cos(angle), np.sin(angle)
    return [(cx + r * (px * c - py * s), cy + r * (px * s + py * c)) for px, py in points]


def _draw_shape(
    d: ImageDraw.ImageDraw,
    shape: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    fg: tuple[int, ...],
    bg: tuple[int, ...],
    rng: np.random.Generator,
) -> None:
    tilt = (angle % (np.pi / 6)) - np.pi / 12  # small tilt for shapes that must stay upright
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
        inner = r * 0.6
        d.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=bg)
    elif shape == "square":
        d.polygon(_polygon([1.0] * 4, cx, cy, r, np.pi / 4 + tilt), fill=fg)
    elif shape == "diamond":
        pts = [(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)]
        d.polygon(_rotated(pts, cx, cy, r, tilt), fill=fg)
    elif shape == "triangle":
        d.polygon(_polygon([1.0] * 3, cx, cy, r, angle), fill=fg)
    elif shape == "hexagon":
        d.polygon(_polygon([1.0] * 6, cx, cy, r, angle), fill=fg)
    elif shape == "star":
        d.polygon(_polygon([1.0, 0.42] * 5, cx, cy, r, angle), fill=fg)
    elif shape == "cross":
        w = 0.3
        arm = [(w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1),
               (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1)]  # fmt: skip
        d.polygon(_rotated(arm, cx, cy, r, tilt), fill=fg)
    elif shape == "ellipse":
        ratio = rng.uniform(0.4, 0.6)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = list(zip(np.cos(t), ratio * np.sin(t), strict=True))
        d.polygon(_rotated(pts, cx, cy, r, angle), fill=fg)
    elif shape == "line":
        w = 0.12
        pts = [(-1.0, -w), (1.0, -w), (1.0, w), (-1.0, w)]
        d.polygon(_rotated(pts, cx, cy, r, angle), fill=fg)


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
