"""Decoded-size limits: images and npz arrays are judged by their headers, before decoding.

The zip's own limits (expanded size, ratio) say nothing about pixels: 24 blank 4096 x 4096
PNGs zip to about 6 KB and decode to 402.7 MB.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvops.core.settings import Settings
from cvops.registry import inspect_dataset as dataset
from cvops.registry.inspect_dataset import DatasetLimits, inspect_dataset
from cvops.registry.safety import Refused
from cvops.testing import registry as samples

# the service's defaults: what an upload meets in production
SERVICE = DatasetLimits(
    max_expanded_bytes=Settings().max_dataset_expanded_bytes,
    max_image_pixels=Settings().max_image_pixels,
)


def _refusal(tmp_path: Path, data: bytes, limits: DatasetLimits = SERVICE) -> str:
    src = tmp_path / "upload"
    src.write_bytes(data)
    out = tmp_path / "canonical.npz"
    with pytest.raises(Refused) as err:
        inspect_dataset(src, seed=0, limits=limits, out=out)
    assert not out.exists()
    return str(err.value)


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pixel decode fail the test: refusals must come from headers alone."""

    def refuse_to_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded before the size was checked")

    monkeypatch.setattr(dataset, "_decode", refuse_to_decode)
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", refuse_to_decode)


def test_small_zip_of_huge_images_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = samples.large_images_zip(count=24, side=4096)
    assert len(data) < 100_000  # tiny upload, well within the zip limits
    _no_decoding(monkeypatch)
    reason = _refusal(tmp_path, data)
    assert reason == "decoded images would take 402.7 MB, over the 256 MB limit"


def test_the_default_cap_is_documented_and_fits_the_bundled_sets() -> None:
    assert DatasetLimits(1, 1).max_decoded_bytes == dataset.MAX_DECODED_BYTES == 256 * 1000**2
    shapes = 3000 * 32 * 32 * 3
    assert shapes < dataset.MAX_DECODED_BYTES // 20


def test_decoded_size_counts_channels_from_the_header(tmp_path: Path) -> None:
    rgba = io.BytesIO()
    Image.new("RGBA", (100, 100)).save(rgba, format="PNG")
    data = samples._zip({f"{c}/{i}.png": rgba.getvalue() for c in "ab" for i in range(5)})
    limits = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=10**6,
                           max_decoded_bytes=399_999)  # fmt: skip
    reason = _refusal(tmp_path, data, limits)  # 10 x 100 x 100 x 4 = 400,000 bytes
    assert reason == "decoded images would take 0.4 MB, over the 0.4 MB limit"
    ok = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=10**6,
                       max_decoded_bytes=400_000)  # fmt: skip
    inspect_dataset(tmp_path / "upload", seed=0, limits=ok, out=tmp_path / "c.npz")


def test_the_canonical_array_is_capped_too(tmp_path: Path) -> None:
    """Gray images made 3-channel by one colour image cost three times their pixels."""
    gray = samples.png(100, 100, mode="L")
    files = {f"{c}/{i}.png": gray for c in "ab" for i in range(10)}
    files["a/colour.png"] = samples.png(4, 4)
    limits = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=10**6,
                           max_decoded_bytes=300_000)  # fmt: skip
    reason = _refusal(tmp_path, samples._zip(files), limits)
    assert reason.startswith("the canonical array (21 x 100x100x3) would take 0.6 MB")


def test_one_image_over_the_pixel_cap_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=1000 * 1000)
    _no_decoding(monkeypatch)
    reason = _refusal(tmp_path, samples.decompression_bomb_zip(1200), limits)
    assert "'dog/bomb.png' is 1200x1200 = 1,440,000 pixels" in reason
    assert "over the limit of 1,000,000 pixels per image" in reason
    reason = _refusal(tmp_path, samples.decompression_bomb_zip(6000), limits)  # Pillow's fence
    assert "decompression bomb" in reason and "1,000,000 pixels per image" in reason


def test_a_png_with_a_huge_header_and_no_pixel_data_is_refused_for_its_size(
    tmp_path: Path,
) -> None:
    """The header alone decides: the (missing) pixel data is never reached."""
    bomb = samples.decompression_bomb_png(1200)
    truncated = bomb[: bomb.index(b"IDAT") + 8]
    data = samples._zip({"a/1.png": samples.png(), "b/1.png": samples.png(), "b/2.png": truncated})
    limits = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=1000 * 1000)
    assert "1,440,000 pixels" in _refusal(tmp_path, data, limits)


def test_npz_arrays_are_capped_by_their_declared_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = samples.dataset_npz(n=40, size=100, channels=3)  # x: 1.2 MB
    limits = DatasetLimits(max_expanded_bytes=1 << 30, max_image_pixels=10**6,
                           max_decoded_bytes=1_000_000)  # fmt: skip
    _no_decoding(monkeypatch)
    reason = _refusal(tmp_path, data, limits)
    assert reason == "the arrays x, y and classes would take 1.2 MB, over the 1 MB limit"


def test_an_npz_header_declaring_gigabytes_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = samples.npz_declaring((100_000, 256, 256, 3))  # 19.7 GB declared, no data
    assert len(data) < 1000
    _no_decoding(monkeypatch)
    reason = _refusal(tmp_path, data)
    assert reason == "the arrays x, y and classes would take 19,660.8 MB, over the 256 MB limit"


def test_npz_image_size_is_checked_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = samples.npz_declaring((2, 5000, 5000))
    _no_decoding(monkeypatch)
    reason = _refusal(tmp_path, data)
    assert reason == "images of 5000x5000 exceed 16,777,216 pixels per image"


def test_npz_object_arrays_are_refused_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "pwned"
    _no_decoding(monkeypatch)
    assert "object arrays are refused" in _refusal(tmp_path, samples.object_array_npz(marker))
    assert not marker.exists()
