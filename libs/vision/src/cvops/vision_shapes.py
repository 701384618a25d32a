"""The one generator of the bundled ``shapes`` data set (numpy and Pillow only, no torch).

3,000 (by default) 32x32 RGB images of 10 geometric shapes (circle, square, triangle, star,
cross, ring, hexagon, diamond, ellipse, line) with random position, size, rotation, colours
and noise, balanced and seeded: the same arguments give the same bytes. The registry writes
``shapes_arrays()`` (seed 0) as the bundled set every install gets; ``cvops.vision.bundled``
adds split indices for training and benchmarks, so tests and benchmarks measure the set
users have.

It lives outside the ``cvops.vision`` package on purpose: importing ``cvops.vision`` imports
torch, and the registry's main process must stay without torch (it loads torch only in its
inspector child process). Changing what this module draws changes the bundled set of every
new install while existing event logs keep the old one under the same name, so the digest
test in ``libs/vision/tests/test_data.py`` pins it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

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
