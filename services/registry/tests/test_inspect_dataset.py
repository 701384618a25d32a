"""Data-set inspection: canonical npz, seeded stratified splits, and every hostile archive."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvops.registry.inspect_dataset import DatasetLimits, inspect_dataset, split_indices
from cvops.registry.safety import Refused
from cvops.testing import registry as samples

LIMITS = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=1000 * 1000)


def _inspect(tmp_path: Path, data: bytes, *, seed: int = 0, limits: DatasetLimits = LIMITS):
    src = tmp_path / "upload"
    src.write_bytes(data)
    out = tmp_path / f"canonical-{seed}.npz"
    facts = inspect_dataset(src, seed=seed, limits=limits, out=out)
    return facts, out


def _refusal(tmp_path: Path, data: bytes, limits: DatasetLimits = LIMITS) -> str:
    with pytest.raises(Refused) as err:
        _inspect(tmp_path, data, limits=limits)
    assert not (tmp_path / "canonical-0.npz").exists()  # nothing half-written
    return str(err.value)


def test_image_folder_becomes_the_canonical_npz(tmp_path: Path) -> None:
    facts, out = _inspect(tmp_path, samples.image_folder_zip(("cat", "dog", "emu"), per_class=6))
    assert facts.classes == ["cat", "dog", "emu"]
    assert facts.class_counts == [7, 7, 7]
    assert facts.num_images == 21
    assert facts.images.min_hw == [12, 12] and facts.images.max_hw == [16, 14]
    assert facts.images.modal_hw == [12, 12] and facts.images.channels == 3
    with np.load(out, allow_pickle=False) as z:
        assert sorted(z.files) == sorted(
            ["x", "y", "classes", "train_idx", "val_idx", "test_idx", "calib_idx"]
        )
        assert z["x"].dtype == np.uint8 and z["x"].shape == (21, 12, 12, 3)  # resized to modal
        assert z["y"].dtype == np.int64 and z["y"].tolist() == [0] * 7 + [1] * 7 + [2] * 7
        assert z["classes"].tolist() == ["cat", "dog", "emu"]
        for key in ("train_idx", "val_idx", "test_idx", "calib_idx"):
            assert z[key].dtype == np.int64
    assert (facts.splits.train, facts.splits.val, facts.splits.test) == (15, 3, 3)


def test_the_top_level_folder_is_optional(tmp_path: Path) -> None:
    with_top, _ = _inspect(tmp_path, samples.image_folder_zip(top="pets"))
    without, _ = _inspect(tmp_path, samples.image_folder_zip(top=None), seed=1)
    assert with_top.classes == without.classes == ["cat", "dog"]


def test_grayscale_images_give_one_channel(tmp_path: Path) -> None:
    files = {f"{c}/{i}.png": samples.png(value=i, mode="L") for c in "ab" for i in range(4)}
    facts, out = _inspect(tmp_path, samples._zip(files))
    assert facts.images.channels == 1
    with np.load(out) as z:
        assert z["x"].shape == (8, 12, 12, 1)


def test_npz_upload_keeps_labels_and_adds_splits(tmp_path: Path) -> None:
    facts, out = _inspect(tmp_path, samples.dataset_npz(n=40, classes=4, channels=None))
    assert facts.classes == ["0", "1", "2", "3"] and facts.class_counts == [10] * 4
    assert facts.images.channels == 1
    with np.load(out) as z:
        assert z["x"].shape == (40, 8, 8, 1)


def test_canonical_bytes_depend_only_on_input_and_seed(tmp_path: Path) -> None:
    data = samples.image_folder_zip()
    _, first = _inspect(tmp_path, data, seed=7)
    (tmp_path / "first.npz").write_bytes(first.read_bytes())
    _, again = _inspect(tmp_path, data, seed=7)
    _, other = _inspect(tmp_path, data, seed=8)
    assert (tmp_path / "first.npz").read_bytes() == again.read_bytes()
    assert again.read_bytes() != other.read_bytes()


def test_splits_are_stratified_disjoint_and_calibration_comes_from_train() -> None:
    y = np.repeat(np.arange(3), [100, 40, 20])
    s = split_indices(y, 3, seed=3)
    train, val, test, calib = (
        set(s[k].tolist()) for k in ("train_idx", "val_idx", "test_idx", "calib_idx")
    )
    assert train | val | test == set(range(len(y)))
    assert not (train & val or train & test or val & test)
    assert calib <= train
    for c, n in enumerate([100, 40, 20]):
        in_val = sum(1 for i in val if y[i] == c)
        assert in_val == round(n * 0.15)
    assert len(calib) == min(256, len(train))
    big = split_indices(np.repeat(np.arange(2), [900, 100]), 2, seed=0)
    calib_labels = np.repeat(np.arange(2), [900, 100])[big["calib_idx"]]
    assert len(big["calib_idx"]) == 256
    assert abs(np.mean(calib_labels == 1) - 0.1) < 0.02  # stratified like train


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (samples.zip_slip, "unsafe path"),
        (samples.absolute_path_zip, "unsafe path"),
        (samples.symlink_zip, "symbolic link"),
        (samples.zip_bomb, "compression ratio"),
        (samples.decompression_bomb_zip, "decompression bomb"),
        (lambda: samples.decompression_bomb_zip(1200), "decompression bomb"),  # warning zone
        (samples.undecodable_zip, "not a PNG or JPEG"),
        (samples.one_class_zip, "at least 2 classes"),
        (samples.mismatched_npz, "9 labels"),
    ],
)
def test_hostile_archives_are_refused_with_a_reason(
    tmp_path: Path, build: object, expected: str
) -> None:
    assert expected in _refusal(tmp_path, build())  # type: ignore[operator]


def test_expanded_size_over_the_limit_is_refused(tmp_path: Path) -> None:
    small = DatasetLimits(max_expanded_bytes=2000, max_image_pixels=10**6)
    assert "more than the limit" in _refusal(tmp_path, samples.image_folder_zip(), small)


def test_object_arrays_are_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    assert "object arrays are refused" in _refusal(tmp_path, samples.object_array_npz(marker))
    assert not marker.exists()


def test_layout_mistakes_are_explained(tmp_path: Path) -> None:
    png = samples.png()
    assert "class folder" in _refusal(tmp_path, samples._zip({"a.png": png, "b/c.png": png}))
    nested = samples._zip({"a/x/1.png": png, "b/y/2.png": png, "c.png": png})
    assert "nested too deep" in _refusal(tmp_path, nested)
    assert "PNG or JPEG" in _refusal(tmp_path, samples._zip({"a/1.gif": png, "b/2.png": png}))
    gif = io.BytesIO()
    Image.new("RGB", (4, 4)).save(gif, format="GIF")
    renamed = samples._zip({"a/1.png": gif.getvalue(), "b/2.png": png})
    assert "only PNG and JPEG" in _refusal(tmp_path, renamed)
    assert "zip of class folders" in _refusal(tmp_path, b"just some text")


def test_hidden_files_and_macos_metadata_are_ignored(tmp_path: Path) -> None:
    data = samples.image_folder_zip(top=None)
    buf = io.BytesIO(data)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr("__MACOSX/cat/._000.png", b"junk")
        zf.writestr("cat/.DS_Store", b"junk")
    facts, _ = _inspect(tmp_path, buf.getvalue())
    assert facts.classes == ["cat", "dog"]
