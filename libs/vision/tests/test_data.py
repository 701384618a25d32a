"""Canonical npz loading and checks, normalisation, augmentation, batching, bundled sets."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cvops.vision import (
    CanonicalDataset,
    DatasetError,
    augment,
    batch_indices,
    compute_normalization,
    load_npz,
    normalize,
    preprocess,
    save_npz,
)
from cvops.vision.bundled import SHAPES, digits_npz, shapes_npz


def test_synthetic_npz_loads_as_a_canonical_data_set(tiny: CanonicalDataset):
    assert tiny.x.dtype == np.uint8 and tiny.x.shape == (160, 16, 16, 3)
    assert tiny.y.dtype == np.int64 and tiny.num_classes == 4
    assert tiny.image_size == (16, 16) and tiny.channels == 3
    parts = [tiny.train_idx, tiny.val_idx, tiny.test_idx]
    assert sorted(np.concatenate(parts).tolist()) == list(range(160))
    assert set(tiny.calib_idx.tolist()) <= set(tiny.train_idx.tolist())
    x_val, y_val = tiny.split("val")
    assert len(x_val) == len(y_val) == len(tiny.val_idx) > 0


def _broken(arrays: dict, **changes) -> dict:
    out = dict(arrays)
    for key, value in changes.items():
        if value is None:
            out.pop(key)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"calib_idx": None}, "missing keys"),
        ({"x": "float"}, "x must be uint8"),
        ({"y": "short"}, "y must be integer"),
        ({"classes": np.asarray(["only"])}, "classes must be"),
        ({"y": "big-label"}, "labels outside"),
        ({"val_idx": np.asarray([10_000])}, "indices outside"),
        ({"val_idx": np.asarray([], dtype=np.int64)}, "val_idx is empty"),
        ({"test_idx": "overlap"}, "overlap"),
    ],
)
def test_malformed_npz_is_refused_with_a_reason(tiny, tmp_path: Path, changes, message):
    arrays = tiny.arrays()
    special = {
        "float": arrays["x"].astype(np.float32),
        "short": arrays["y"][:-1],
        "big-label": np.where(arrays["y"] == 0, 99, arrays["y"]),
        "overlap": arrays["train_idx"][:3],
    }
    changes = {k: special.get(v, v) if isinstance(v, str) else v for k, v in changes.items()}
    path = tmp_path / "bad.npz"
    np.savez(path, **_broken(arrays, **changes))
    with pytest.raises(DatasetError, match=message):
        load_npz(path)


def test_pickled_or_garbage_files_are_refused(tiny, tmp_path: Path):
    path = tmp_path / "pickled.npz"
    arrays = tiny.arrays()
    np.savez(path, **{**arrays, "classes": np.asarray(list(tiny.classes), dtype=object)})
    with pytest.raises(DatasetError, match="without pickles"):
        load_npz(path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetError):
        load_npz(tmp_path / "junk.npz")


def test_save_and_load_round_trip(tiny, tmp_path: Path):
    again = load_npz(save_npz(tmp_path / "copy.npz", tiny))
    for key, value in tiny.arrays().items():
        np.testing.assert_array_equal(again.arrays()[key], value)


def test_normalisation_standardises_the_train_split(tiny):
    x_train, _ = tiny.split("train")
    norm = compute_normalization(x_train)
    assert len(norm.mean) == len(norm.std) == 3
    batch = preprocess(x_train, norm)
    assert batch.shape == (len(x_train), 3, 16, 16) and batch.dtype == np.float32
    np.testing.assert_allclose(batch.mean(axis=(0, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(batch.std(axis=(0, 2, 3)), 1, atol=1e-3)
    assert norm.from_dict(norm.to_dict()) == norm


def _batch(n: int = 16, c: int = 3) -> torch.Tensor:
    return torch.rand(n, c, 16, 16, generator=torch.Generator().manual_seed(1))


def test_augmentation_at_strength_zero_is_the_identity():
    x = _batch()
    assert augment(x, 0.0, torch.Generator().manual_seed(0)) is x


@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_is_reproducible_and_keeps_shape_and_range(channels):
    x = _batch(c=channels)
    a = augment(x.clone(), 1.0, torch.Generator().manual_seed(5))
    b = augment(x.clone(), 1.0, torch.Generator().manual_seed(5))
    c = augment(x.clone(), 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)


def test_stronger_augmentation_changes_images_more():
    x = _batch(64)
    diffs = [
        (augment(x.clone(), s, torch.Generator().manual_seed(0)) - x).abs().mean().item()
        for s in (0.2, 1.0)
    ]
    assert 0 < diffs[0] < diffs[1]


def test_random_crop_shifts_content_without_changing_it():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 6:10, 6:10] = 1.0  # a bright square in the middle; jitter cannot move pixels
    out = augment(x, 1.0, torch.Generator().manual_seed(0))
    centres = [(torch.nonzero(img[0] > 0.5).float().mean(0)) for img in out]
    assert len({tuple(c.round().tolist()) for c in centres}) > 1  # squares moved


def test_batches_cover_every_index_once_and_never_end_with_a_single_image():
    gen = torch.Generator().manual_seed(0)
    batches = batch_indices(65, 8, shuffle=True, generator=gen)
    assert sorted(torch.cat(batches).tolist()) == list(range(65))
    assert all(b.numel() >= 2 for b in batches)
    assert torch.equal(torch.cat(batch_indices(10, 4, shuffle=False)), torch.arange(10))


def test_normalize_uses_per_channel_statistics():
    norm = compute_normalization(np.full((2, 4, 4, 2), 51, dtype=np.uint8))
    out = normalize(torch.full((1, 2, 4, 4), 0.2), norm)
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-5)


def test_bundled_digits_are_a_16x16_grayscale_canonical_set():
    ds = CanonicalDataset.from_arrays(digits_npz())
    assert ds.x.shape == (1797, 16, 16, 1) and ds.num_classes == 10
    assert ds.x.max() > 200  # full uint8 range


def test_bundled_shapes_are_balanced_rgb_and_reproducible():
    arrays = shapes_npz(n=200, size=24, seed=3)
    ds = CanonicalDataset.from_arrays(arrays)
    assert ds.x.shape == (200, 24, 24, 3) and ds.classes == list(SHAPES)
    assert np.bincount(ds.y).tolist() == [20] * 10
    np.testing.assert_array_equal(shapes_npz(n=200, size=24, seed=3)["x"], ds.x)
    assert not np.array_equal(shapes_npz(n=200, size=24, seed=4)["x"], ds.x)


# sha256 of x, y and classes of shapes_arrays() (3,000 images, 32x32, seed 0): the set the
# registry publishes as `shapes`. Existing event logs hold it under that name, and a changed
# generator would give new installs a different set under the same name and event ids.
BUNDLED_SHAPES_SHA256 = "ecd92234621132954d4a665efa4d7537326c77c5f35fcdf4afabc13b5a04005f"


def test_shapes_npz_is_the_registrys_bundled_set_byte_for_byte():
    arrays = shapes_npz()
    digest = hashlib.sha256()
    for key in ("x", "y", "classes"):
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    assert digest.hexdigest() == BUNDLED_SHAPES_SHA256, "the bundled shapes set changed"
    assert arrays["x"].shape == (3000, 32, 32, 3) and arrays["classes"].tolist() == list(SHAPES)
    ds = CanonicalDataset.from_arrays(arrays)
    assert ds.train_idx.size + ds.val_idx.size + ds.test_idx.size == 3000


def test_the_shapes_generator_imports_without_torch():
    # the registry's main process imports it and must not load torch
    code = "import sys, cvops.vision_shapes; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_resizing_a_data_set_keeps_labels_splits_and_content(tiny: CanonicalDataset):
    up = tiny.resized(32)
    assert up.x.shape == (160, 32, 32, 3) and up.x.dtype == np.uint8
    np.testing.assert_array_equal(up.y, tiny.y)
    np.testing.assert_array_equal(up.val_idx, tiny.val_idx)
    back = up.resized((16, 16))
    # Pixel noise is smoothed by the round trip; the images themselves stay the same.
    np.testing.assert_allclose(back.x.mean(axis=(1, 2)), tiny.x.mean(axis=(1, 2)), atol=2)
    corr = np.corrcoef(back.x.ravel().astype(float), tiny.x.ravel().astype(float))[0, 1]
    assert corr > 0.8
    assert tiny.resized(16) is tiny
    with pytest.raises(ValueError, match="positive"):
        tiny.resized(0)
