"""Data-set inspection: check an ImageFolder zip or an ``.npz`` and write the canonical npz.

The canonical npz is what the trainer reads: ``x`` uint8 (N, H, W, C) at the modal size
(C = 1 when every image is grayscale, else 3), ``y`` int64, ``classes`` (str), and the seeded
stratified ``train_idx``/``val_idx``/``test_idx`` (70/15/15) plus ``calib_idx`` (a stratified
subset of train). Its bytes depend only on the input and the seed, so a retried validation
stores the same blob.

Sizes are judged from headers before any pixel or array is decoded: every image's width x
height (per-image cap) and the decoded bytes of the whole set (one cap for the pixels Pillow
would decode, the canonical array, and the arrays of an npz).
"""

from __future__ import annotations

import io
import math
import tempfile
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from cvops.contracts.registry import ImageStats, SplitCounts
from cvops.registry.safety import Refused, check_zip, read_member

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORED_NAMES = {"Thumbs.db", "desktop.ini"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
CALIBRATION_MAX = 256
# The bundled sets decode to 0.5 MB (digits) and 9.2 MB (shapes); CIFAR-10 whole is 184 MB.
MAX_DECODED_BYTES = 256 * 1000**2
NPZ_ARRAYS = ("x", "y", "classes")  # the only arrays of an upload that are ever loaded
_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class DatasetLimits:
    """What a data-set upload may cost once decoded (the zip's own limits are separate)."""

    max_expanded_bytes: int
    max_image_pixels: int  # width x height of one image, read from its header
    max_decoded_bytes: int = MAX_DECODED_BYTES  # all images or arrays of the set, decoded


@dataclass(frozen=True)
class DatasetFacts:
    """What inspection learnt about an accepted data set (the canonical npz is on disk)."""

    classes: list[str]
    class_counts: list[int]
    num_images: int
    images: ImageStats
    splits: SplitCounts


def inspect_dataset(path: Path, *, seed: int, limits: DatasetLimits, out: Path) -> DatasetFacts:
    """Check a data-set upload and write its canonical npz to ``out``; raises Refused."""
    if path.stat().st_size == 0:
        raise Refused("the data-set file is empty")
    if not zipfile.is_zipfile(path):
        raise Refused("a data set must be a zip of class folders (PNG/JPEG) or an .npz file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise Refused(f"the zip archive is unreadable ({err})") from err
    with zf:
        summary = check_zip(zf, max_expanded_bytes=limits.max_expanded_bytes, what="the archive")
        names = [i.filename for i in summary.members]
        is_npz = bool(names) and all(n.endswith(".npy") for n in names)
        if not is_npz:
            return _inspect_image_folder(zf, summary.members, seed, limits, out)
        _check_npz_headers(_npy_headers(zf, summary.members), limits)
    return _inspect_npz(path, seed, limits, out)


# -- ImageFolder zip ----------------------------------------------------------------------------


def _inspect_image_folder(
    zf: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    seed: int,
    limits: DatasetLimits,
    out: Path,
) -> DatasetFacts:
    files = [m for m in members if not _ignored(m.filename)]
    if not files:
        raise Refused("the archive holds no images")
    parts = [PurePosixPath(m.filename.replace("\\", "/")).parts for m in files]
    if all(len(p) >= 3 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]  # one optional top-level folder
    labelled: list[tuple[str, str, zipfile.ZipInfo]] = []
    for p, info in zip(parts, files, strict=True):
        if len(p) == 1:
            raise Refused(
                f"{info.filename!r} is not inside a class folder (use one folder per class)"
            )
        if len(p) > 2:
            raise Refused(
                f"{info.filename!r} is nested too deep (use one folder per class, images inside)"
            )
        if not p[1].lower().endswith(IMAGE_SUFFIXES):
            raise Refused(f"{info.filename!r} is not a PNG or JPEG image")
        labelled.append((p[0], p[1], info))
    labelled.sort(key=lambda t: (t[0], t[1]))
    classes = sorted({c for c, _, _ in labelled})
    if len(classes) < 2:
        raise Refused(f"a data set needs at least 2 classes; found {len(classes)} ({classes})")
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[c] for c, _, _ in labelled], dtype=np.int64)

    sizes: list[tuple[int, int]] = []
    gray = True
    decoded = 0
    for _, _, info in labelled:  # pass 1: headers only, nothing is decoded yet
        im = _open(read_member(zf, info), info.filename, limits.max_image_pixels)
        sizes.append((im.height, im.width))
        gray = gray and im.mode in GRAY_MODES
        decoded += im.width * im.height * _bytes_per_pixel(im.mode)
    channels = 1 if gray else 3
    modal = _modal(sizes)
    _check_decoded("decoded images", decoded, limits.max_decoded_bytes)
    canonical = len(labelled) * modal[0] * modal[1] * channels
    _check_decoded(
        f"the canonical array ({len(labelled)} x {modal[0]}x{modal[1]}x{channels})",
        canonical,
        limits.max_decoded_bytes,
    )
    splits = split_indices(y, len(classes), seed)

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        n = len(labelled)
        x = np.lib.format.open_memmap(
            Path(tmp) / "x.npy", mode="w+", dtype=np.uint8, shape=(n, modal[0], modal[1], channels)
        )
        for i, (_, _, info) in enumerate(labelled):  # pass 2: every image must decode
            im = _decode(read_member(zf, info), info.filename, limits.max_image_pixels)
            x[i] = _to_array(im, modal, channels)
        x.flush()
        write_npz(out, {"x": x, "y": y, "classes": np.asarray(classes, dtype=str), **splits})
        del x
    return _facts(classes, y, sizes, channels, splits)


def _ignored(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if not parts:
        return True
    return (
        parts[0] == "__MACOSX"
        or any(p.startswith(".") for p in parts)
        or parts[-1] in IGNORED_NAMES
    )


def _open(data: bytes, name: str, max_pixels: int):  # type: ignore[no-untyped-def]
    """Read an image's header (``Image.open`` decodes no pixels) and refuse what is too big."""
    from PIL import Image

    # Pillow's own check, also in Image.open, stays as a second fence: it raises
    # DecompressionBombError above twice this; the warning between is ours to explain.
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as err:
            raise Refused(
                f"{name!r} is a decompression bomb (over the limit of {max_pixels:,} pixels "
                f"per image): {err}"
            ) from err
        except Image.UnidentifiedImageError as err:
            raise Refused(f"{name!r} is not a PNG or JPEG image (unrecognised data)") from err
        except Exception as err:
            raise Refused(f"{name!r} does not decode as an image ({err})") from err
    if im.format not in ("PNG", "JPEG"):
        raise Refused(f"{name!r} is a {im.format} image; only PNG and JPEG are accepted")
    if im.width < 1 or im.height < 1:
        raise Refused(f"{name!r} has no pixels")
    if im.width * im.height > max_pixels:
        raise Refused(
            f"{name!r} is {im.width}x{im.height} = {im.width * im.height:,} pixels, over the "
            f"limit of {max_pixels:,} pixels per image (a decompression bomb)"
        )
    return im


def _decode(data: bytes, name: str, max_pixels: int):  # type: ignore[no-untyped-def]
    im = _open(data, name, max_pixels)
    try:
        im.load()
    except Exception as err:
        raise Refused(f"{name!r} does not decode as an image ({err})") from err
    return im


def _bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel of ``mode`` once decoded (RGB 3, L 1, I;16 2, F 4)."""
    from PIL import ImageMode

    try:
        spec = ImageMode.getmode(mode)
    except KeyError:
        return 4  # an unknown mode: assume Pillow's widest storage
    return len(spec.bands) * np.dtype(spec.typestr).itemsize


def _check_decoded(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise Refused(f"{what} would take {_megabytes(size)}, over the {_megabytes(limit)} limit")


def _megabytes(size: int) -> str:
    return f"{size / 1000**2:,.1f}".removesuffix(".0") + " MB"


def _to_array(im, modal: tuple[int, int], channels: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PIL import Image

    if im.mode.startswith("I"):
        im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    im = im.convert("L" if channels == 1 else "RGB")
    if (im.height, im.width) != modal:
        im = im.resize((modal[1], modal[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


# -- npz ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Declared:
    """An .npy member's header: what loading it would allocate."""

    shape: tuple[int, ...]
    dtype: np.dtype  # type: ignore[type-arg]

    @property
    def size(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


def _npy_headers(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> dict[str, _Declared]:
    """The shape and dtype of each array named in ``NPZ_ARRAYS``, read from its .npy header."""
    found: dict[str, _Declared] = {}
    for info in members:
        key = info.filename.removesuffix(".npy")
        if key not in NPZ_ARRAYS:
            continue
        try:
            with zf.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                else:
                    raise ValueError(f".npy format {version} (only 1.0 and 2.0 are read)")
        except Exception as err:
            raise Refused(f"array {key!r} is unreadable ({err})") from err
        found[key] = _Declared(shape=tuple(int(d) for d in shape), dtype=dtype)
    return found


def _check_npz_headers(declared: dict[str, _Declared], limits: DatasetLimits) -> None:
    """Refuse an npz by its arrays' declared shapes and dtypes, before any is loaded."""
    for key, arr in declared.items():
        if arr.dtype.hasobject:
            raise Refused(
                f"array {key!r} holds Python objects (a pickle); object arrays are refused"
            )
    x = declared.get("x")
    if x is not None and len(x.shape) in (3, 4):
        _check_npz_image_pixels(x.shape, limits.max_image_pixels)
    total = sum(arr.size for arr in declared.values())
    _check_decoded("the arrays x, y and classes", total, limits.max_decoded_bytes)


def _check_npz_image_pixels(shape: tuple[int, ...], max_pixels: int) -> None:
    if shape[1] * shape[2] > max_pixels:
        raise Refused(f"images of {shape[1]}x{shape[2]} exceed {max_pixels:,} pixels per image")


def _inspect_npz(path: Path, seed: int, limits: DatasetLimits, out: Path) -> DatasetFacts:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as err:
        raise Refused(f"the .npz file is unreadable ({err})") from err
    with npz:
        if "x" not in npz.files or "y" not in npz.files:
            raise Refused(f"an .npz data set needs arrays 'x' and 'y' (found {sorted(npz.files)})")
        x = _array(npz, "x")
        y = _array(npz, "y")
        names = _array(npz, "classes") if "classes" in npz.files else None
    if x.dtype != np.uint8:
        raise Refused(f"x must be uint8 images, got {x.dtype}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3) or 0 in x.shape:
        raise Refused(f"x must be (N, H, W) or (N, H, W, C) with C 1 or 3, got {x.shape}")
    _check_npz_image_pixels(x.shape, limits.max_image_pixels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise Refused(f"y must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
    if len(y) != len(x):
        raise Refused(f"x holds {len(x)} images but y holds {len(y)} labels")
    if y.min() < 0:
        raise Refused("labels must not be negative")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise Refused("classes must be a 1-D array of strings")
        classes = [str(c) for c in names.astype(str)]
        if y.max() >= len(classes):
            raise Refused(f"label {int(y.max())} has no name in classes ({len(classes)} names)")
        labels = y.astype(np.int64)
    else:
        present = np.unique(y)
        classes = [str(int(v)) for v in present]
        labels = np.searchsorted(present, y).astype(np.int64)
    if len(set(classes)) != len(classes):
        raise Refused("class names must be unique")
    if len(np.unique(labels)) < 2:
        raise Refused("a data set needs at least 2 classes with images")
    splits = split_indices(labels, len(classes), seed)
    write_npz(out, {"x": x, "y": labels, "classes": np.asarray(classes, dtype=str), **splits})
    sizes = [(int(x.shape[1]), int(x.shape[2]))] * len(x)
    return _facts(classes, labels, sizes, int(x.shape[3]), splits)


def _array(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as err:  # allow_pickle=False refuses object arrays
        raise Refused(
            f"array {key!r} holds Python objects (a pickle); object arrays are refused"
        ) from err
    except Exception as err:
        raise Refused(f"array {key!r} is unreadable ({err})") from err


# -- splits, stats, canonical file ---------------------------------------------------------------


def split_indices(y: np.ndarray, num_classes: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded stratified 70/15/15 splits and a stratified calibration subset of train."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for c in range(num_classes):
        members = rng.permutation(np.flatnonzero(y == c))
        n = len(members)
        n_val = max(1, round(n * VAL_FRACTION)) if n >= 3 else 0
        n_test = max(1, round(n * TEST_FRACTION)) if n >= 3 else 0
        val.append(members[:n_val])
        test.append(members[n_val : n_val + n_test])
        train.append(members[n_val + n_test :])
    if sum(len(v) for v in val) == 0:
        raise Refused("too few images to split: at least one class needs 3 or more images")
    calib = _stratified_subset(train, min(CALIBRATION_MAX, sum(len(t) for t in train)), rng)
    return {
        "train_idx": _sorted(train),
        "val_idx": _sorted(val),
        "test_idx": _sorted(test),
        "calib_idx": _sorted([calib]),
    }


def _stratified_subset(
    groups: list[np.ndarray], total: int, rng: np.random.Generator
) -> np.ndarray:
    sizes = np.asarray([len(g) for g in groups], dtype=np.float64)
    if total <= 0 or sizes.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    quota = sizes * total / sizes.sum()
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: total - int(take.sum())]:
        take[i] += 1  # largest remainders get the leftover places
    picks = [rng.choice(g, size=k, replace=False) for g, k in zip(groups, take, strict=True) if k]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(parts)).astype(np.int64)


def _modal(sizes: list[tuple[int, int]]) -> tuple[int, int]:
    counts = Counter(sizes)
    return min(counts, key=lambda hw: (-counts[hw], hw))  # most common; ties: smallest


def _facts(
    classes: list[str],
    y: np.ndarray,
    sizes: list[tuple[int, int]],
    channels: int,
    splits: dict[str, np.ndarray],
) -> DatasetFacts:
    hs = [h for h, _ in sizes]
    ws = [w for _, w in sizes]
    modal = _modal(sizes)
    return DatasetFacts(
        classes=classes,
        class_counts=[int(c) for c in np.bincount(y, minlength=len(classes))],
        num_images=len(y),
        images=ImageStats(
            min_hw=[min(hs), min(ws)],
            max_hw=[max(hs), max(ws)],
            modal_hw=[modal[0], modal[1]],
            channels=channels,
        ),
        splits=SplitCounts(
            train=len(splits["train_idx"]),
            val=len(splits["val_idx"]),
            test=len(splits["test_idx"]),
            calibration=len(splits["calib_idx"]),
        ),
    )


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz whose bytes depend only on the arrays (fixed timestamps, no compression)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, arr in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
