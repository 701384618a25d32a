"""``POST /v1/predict/<model>``: an image in, the top-k labels out.

Pure steps around one binary KServe request: decode the PNG/JPEG, resize to the model's
input HxW, normalise (the version's ``mean``/``std`` hyperparameters, else /255), build
the request body, read the logits back and rank them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cvops.contracts import TensorSpec
from cvops.inference_router.repository import RepositoryError, kserve_dtype

MAX_PIXELS = 8192 * 8192
_NUMPY = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "UINT8": np.uint8}


class NotAnImage(ValueError):
    """The body is not a PNG/JPEG (or any image Pillow reads)."""


@dataclass(frozen=True)
class ImageInput:
    """Where the pixels go: layout, channels and size of the model's first input."""

    name: str
    layout: str  # "NCHW" | "NHWC" | "NHW"
    channels: int
    height: int | None
    width: int | None
    datatype: str


def image_input(spec: TensorSpec, hyperparameters: dict[str, Any]) -> ImageInput:
    """Read the image layout off an input spec (batch dimension first)."""
    shape = list(spec.shape)
    try:
        datatype = kserve_dtype(spec.dtype)
    except RepositoryError as err:
        raise ValueError(str(err)) from err
    if datatype not in _NUMPY:
        raise ValueError(f"input {spec.name} is {datatype}, not an image tensor")
    size = hyperparameters.get("image_size") or hyperparameters.get("input_size")
    if isinstance(size, int):
        size = [size, size]
    if len(shape) == 4 and shape[1] in (1, 3):
        layout, c, h, w = "NCHW", shape[1], shape[2], shape[3]
    elif len(shape) == 4 and shape[3] in (1, 3):
        layout, c, h, w = "NHWC", shape[3], shape[1], shape[2]
    elif len(shape) == 3:
        layout, c, h, w = "NHW", 1, shape[1], shape[2]
    else:
        raise ValueError(f"input {spec.name} with shape {shape} is not an image batch")
    if (h is None or h < 0 or w is None or w < 0) and isinstance(size, list) and len(size) == 2:
        h, w = int(size[0]), int(size[1])
    return ImageInput(
        name=spec.name,
        layout=layout,
        channels=c,
        height=h if h and h > 0 else None,
        width=w if w and w > 0 else None,
        datatype=datatype,
    )


def decode_image(data: bytes) -> Image.Image:
    """Open and fully decode an image; anything else is ``NotAnImage``."""
    if not data:
        raise NotAnImage("the request carries no image")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise NotAnImage(f"image of {img.width}x{img.height} pixels is too large")
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise NotAnImage(f"not a PNG/JPEG image: {err}") from err
    return img


def preprocess(img: Image.Image, spec: ImageInput, hyperparameters: dict[str, Any]) -> np.ndarray:
    """Resize, convert and normalise to a batch of one in the model's layout and dtype."""
    img = img.convert("L" if spec.channels == 1 else "RGB")
    w, h = spec.width or img.width, spec.height or img.height
    if (img.width, img.height) != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    mean, std = hyperparameters.get("mean"), hyperparameters.get("std")
    if mean is not None and std is not None:
        m = np.asarray(mean, dtype=np.float32).reshape(-1)
        s = np.asarray(std, dtype=np.float32).reshape(-1)
        scale = 1.0 if float(m.max(initial=0.0)) > 1.0 else 255.0
        x = (x / scale - m) / s
    else:
        x = x / 255.0
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    elif spec.layout == "NHW":
        x = x[:, :, 0]
    return np.ascontiguousarray(x[None].astype(_NUMPY[spec.datatype]))


def infer_body(name: str, x: np.ndarray, datatype: str, output: str) -> tuple[bytes, int]:
    """A binary-tensor KServe request: (body, JSON header length)."""
    header = {
        "inputs": [
            {
                "name": name,
                "shape": list(x.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": x.nbytes},
            }
        ],
        "outputs": [{"name": output, "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    return head + x.tobytes(), len(head)


def read_output(body: bytes, header_length: int | None) -> np.ndarray:
    """The first output tensor of a KServe response (binary or JSON)."""
    head = json.loads(body[:header_length] if header_length else body)
    out = head["outputs"][0]
    dtype = np.dtype(_NUMPY.get(out["datatype"], np.float32))
    if header_length:
        size = int(out.get("parameters", {}).get("binary_data_size", 0))
        raw = body[header_length : header_length + size]
        return np.frombuffer(raw, dtype=dtype).reshape(out["shape"])
    return np.asarray(out["data"], dtype=dtype).reshape(out["shape"])


def top_k(scores: np.ndarray, classes: list[str] | None, k: int) -> list[dict[str, Any]]:
    """Softmax (unless already probabilities) and the ``k`` best labels."""
    v = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (np.all(v >= 0) and abs(float(v.sum()) - 1.0) < 1e-3):
        e = np.exp(v - v.max())
        v = e / e.sum()
    k = max(1, min(k, v.size))
    order = np.argsort(-v)[:k]
    return [
        {
            "index": int(i),
            "label": classes[i] if classes and i < len(classes) else str(int(i)),
            "score": float(v[i]),
        }
        for i in order
    ]
