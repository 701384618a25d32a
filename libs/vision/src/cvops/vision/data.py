"""Canonical data sets (the registry's npz), normalisation, torch-only augmentation, seeding.

The canonical npz holds `x` uint8 (N, H, W, C), `y` int64 (N,), `classes` (str array) and the
split indices `train_idx`, `val_idx`, `test_idx`, `calib_idx` (int64). Batches are plain index
tensors over arrays kept in memory: on a couple of CPU cores that beats DataLoader workers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import torch
import torch.nn.functional as F

SPLITS = ("train", "val", "test", "calib")
Split = Literal["train", "val", "test", "calib"]
_INDEX_KEYS = tuple(f"{s}_idx" for s in SPLITS)


class DatasetError(ValueError):
    """A canonical data set that cannot be used (missing keys, wrong types, bad indices)."""


@dataclass(frozen=True, eq=False)
class CanonicalDataset:
    """Images, labels, class names and split indices of one data set version."""

    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # int64 (N,)
    classes: list[str]
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    calib_idx: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x.shape[1]), int(self.x.shape[2])

    @property
    def channels(self) -> int:
        return int(self.x.shape[3])

    def indices(self, split: Split) -> np.ndarray:
        """Indices of one split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        return getattr(self, f"{split}_idx")

    def split(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of one split."""
        idx = self.indices(split)
        return self.x[idx], self.y[idx]

    def resized(self, size: int | tuple[int, int] | list[int]) -> CanonicalDataset:
        """The same data set with every image resized to `size` (H or (H, W))."""
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if (h, w) == self.image_size:
            return self
        return CanonicalDataset(
            x=resize_images(self.x, (h, w)),
            y=self.y,
            classes=self.classes,
            train_idx=self.train_idx,
            val_idx=self.val_idx,
            test_idx=self.test_idx,
            calib_idx=self.calib_idx,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The npz contents (what `save_npz` writes)."""
        return {
            "x": self.x,
            "y": self.y,
            "classes": np.asarray(self.classes, dtype=str),
            **{key: getattr(self, key) for key in _INDEX_KEYS},
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], *, source: str = "arrays") -> CanonicalDataset:
        """Check canonical arrays and wrap them; DatasetError says what is wrong."""
        missing = [k for k in ("x", "y", "classes", *_INDEX_KEYS) if k not in arrays]
        if missing:
            raise DatasetError(f"{source}: missing keys {missing}")
        x = np.asarray(arrays["x"])
        y = np.asarray(arrays["y"])
        classes_arr = np.asarray(arrays["classes"])
        if x.dtype != np.uint8 or x.ndim != 4:
            raise DatasetError(
                f"{source}: x must be uint8 (N, H, W, C), got {x.dtype} {tuple(x.shape)}"
            )
        if x.shape[0] == 0 or 0 in x.shape[1:]:
            raise DatasetError(f"{source}: x is empty {tuple(x.shape)}")
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
            raise DatasetError(
                f"{source}: y must be integer ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}"
            )
        if classes_arr.ndim != 1 or classes_arr.dtype.kind not in "US" or classes_arr.size < 2:
            raise DatasetError(f"{source}: classes must be a 1-D string array of >= 2 names")
        classes = [str(c) for c in classes_arr]
        if y.min() < 0 or y.max() >= len(classes):
            raise DatasetError(f"{source}: labels outside [0, {len(classes)})")
        idx: dict[str, np.ndarray] = {}
        for key in _INDEX_KEYS:
            a = np.asarray(arrays[key])
            if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
                raise DatasetError(f"{source}: {key} must be a 1-D integer array")
            a = a.astype(np.int64)
            if a.size and (a.min() < 0 or a.max() >= x.shape[0]):
                raise DatasetError(f"{source}: {key} has indices outside [0, {x.shape[0]})")
            idx[key] = a
        for key in ("train_idx", "val_idx"):
            if idx[key].size == 0:
                raise DatasetError(f"{source}: {key} is empty")
        tr, va, te = (set(idx[k].tolist()) for k in ("train_idx", "val_idx", "test_idx"))
        if tr & va or tr & te or va & te:
            raise DatasetError(f"{source}: train/val/test splits overlap")
        return cls(x=x, y=y.astype(np.int64), classes=classes, **idx)


def load_npz(path: str | Path) -> CanonicalDataset:
    """Load and check a canonical npz; DatasetError when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable npz without pickles ({exc})") from exc
    return CanonicalDataset.from_arrays(arrays, source=str(path))


def save_npz(path: str | Path, data: CanonicalDataset | dict[str, np.ndarray]) -> Path:
    """Write canonical arrays (checked first) to `path`."""
    ds = data if isinstance(data, CanonicalDataset) else CanonicalDataset.from_arrays(data)
    path = Path(path)
    with path.open("wb") as f:
        np.savez(f, **ds.arrays())
    return path


def stratified_splits(
    y: np.ndarray, seed: int, val: float = 0.15, test: float = 0.15, calib_max: int = 256
) -> dict[str, np.ndarray]:
    """Per-class random train/val/test split plus a calibration subset of train."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n = members.size
        n_val = max(1, round(n * val)) if n >= 3 else 0
        n_test = max(1, round(n * test)) if n >= 3 else 0
        parts["val"].append(members[:n_val])
        parts["test"].append(members[n_val : n_val + n_test])
        parts["train"].append(members[n_val + n_test :])
    out = {f"{k}_idx": np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}
    train = out["train_idx"]
    calib = rng.choice(train, size=min(calib_max, train.size), replace=False)
    out["calib_idx"] = np.sort(calib).astype(np.int64)
    return out


def resize_images(x: np.ndarray, size: tuple[int, int], chunk: int = 1024) -> np.ndarray:
    """Resize uint8 NHWC images to (H, W): bilinear, antialiased when shrinking."""
    if size[0] < 1 or size[1] < 1:
        raise ValueError(f"image size must be positive, got {size[0]}x{size[1]}")
    out = np.empty((x.shape[0], size[0], size[1], x.shape[3]), dtype=np.uint8)
    for i in range(0, x.shape[0], chunk):
        batch = to_unit_nchw(torch.from_numpy(np.ascontiguousarray(x[i : i + chunk])))
        shrink = size[0] < x.shape[1] or size[1] < x.shape[2]
        batch = F.interpolate(batch, size=size, mode="bilinear", antialias=shrink)
        out[i : i + chunk] = (batch.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
    return out


# --- normalisation ----------------------------------------------------------------------------


class Normalization(msgspec.Struct, frozen=True, kw_only=True):
    """Per-channel mean/std of pixel values scaled to [0, 1] (from the train split)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalization:
        return cls(mean=tuple(float(v) for v in d["mean"]), std=tuple(float(v) for v in d["std"]))


def compute_normalization(x: np.ndarray) -> Normalization:
    """Mean/std per channel of uint8 NHWC images (std floored so it is never zero)."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    mean = flat.mean(axis=0)
    std = np.maximum(flat.std(axis=0), 1e-3)
    return Normalization(mean=tuple(mean.tolist()), std=tuple(std.tolist()))


def to_unit_nchw(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1]."""
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(batch: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """Standardise a float NCHW [0, 1] batch with per-channel mean/std."""
    mean = torch.tensor(norm.mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(norm.std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - mean) / std


def preprocess(x: np.ndarray, norm: Normalization) -> np.ndarray:
    """uint8 NHWC images -> normalised float32 NCHW (the input of exported models)."""
    return normalize(to_unit_nchw(torch.from_numpy(np.ascontiguousarray(x))), norm).numpy()


# --- augmentation -----------------------------------------------------------------------------


def augment(batch: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random crop with padding, horizontal flip and colour jitter on a float NCHW [0, 1] batch.

    `strength` in [0, 1] scales all three (0 returns the batch untouched): crop padding up to
    1/8 of the side, flip probability up to 0.5, brightness/contrast/saturation up to ±40 %.
    Random numbers come from `generator` (CPU) so the result is reproducible.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"augment strength must be in [0, 1], got {strength}")
    if strength == 0.0:
        return batch
    n, c, h, w = batch.shape
    dev = batch.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    pad = round(strength * max(1, min(h, w) // 8))
    if pad > 0:
        padded = F.pad(
            batch, (pad, pad, pad, pad), mode="reflect" if pad < min(h, w) else "replicate"
        )
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(dev)
        rows = oy[:, None] + torch.arange(h, device=dev)
        cols = ox[:, None] + torch.arange(w, device=dev)
        nidx = torch.arange(n, device=dev)[:, None, None]
        # Advanced indices around a slice put the indexed dims first: (N, H, W, C).
        batch = padded[nidx, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    flip = uniform(n) < 0.5 * strength
    batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
    jitter = 0.4 * strength
    brightness = 1.0 + (uniform(n) * 2 - 1) * jitter
    contrast = 1.0 + (uniform(n) * 2 - 1) * jitter
    saturation = 1.0 + (uniform(n) * 2 - 1) * jitter
    batch = batch * brightness[:, None, None, None]
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    batch = (batch - mean) * contrast[:, None, None, None] + mean
    if c == 3:
        gray = (batch * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(
            dim=1, keepdim=True
        )
        batch = (batch - gray) * saturation[:, None, None, None] + gray
    return batch.clamp_(0.0, 1.0)


# --- seeding and batching ---------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_indices(
    n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Index batches over `n` items; a trailing batch of one is merged into the one before.

    (BatchNorm cannot train on a batch of one image with 1x1 features.)
    """
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        last = batches.pop()
        batches[-1] = torch.cat([batches[-1], last])
    return batches


# --- synthetic data for tests -----------------------------------------------------------------


def synthetic_arrays(
    n: int, classes: int | list[str], hw: int | tuple[int, int], channels: int, seed: int
) -> dict[str, np.ndarray]:
    """Learnable canonical arrays: each class is a smooth random template plus noise."""
    names = [f"class_{i}" for i in range(classes)] if isinstance(classes, int) else list(classes)
    h, w = (hw, hw) if isinstance(hw, int) else hw
    k = len(names)
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((k, channels, 4, 4), dtype=np.float32))
    templates = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).numpy()
    y = np.arange(n, dtype=np.int64) % k
    rng.shuffle(y)
    noise = rng.random((n, channels, h, w), dtype=np.float32)
    img = 0.7 * templates[y] + 0.3 * noise
    x = (img.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    return {
        "x": x,
        "y": y,
        "classes": np.asarray(names, dtype=str),
        **stratified_splits(y, seed),
    }


def make_synthetic_npz(
    path: str | Path,
    n: int = 200,
    classes: int | list[str] = 4,
    hw: int | tuple[int, int] = 16,
    channels: int = 3,
    seed: int = 0,
) -> Path:
    """Write a tiny, learnable canonical npz (for tests) and return its path."""
    return save_npz(path, synthetic_arrays(n, classes, hw, channels, seed))
