"""Model zoo in plain torch: small image classifiers with width/depth/dropout knobs.

Every model is a `Classifier` (features -> AdaptiveAvgPool 1x1 -> dropout -> linear), built only
from ops that export to ONNX with a dynamic batch: no data-dependent control flow in `forward`.
Weights travel as safetensors with the architecture and its knobs in the file's metadata, so a
model can be rebuilt from the file alone (`load_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from cvops.vision.data import Normalization

ImageSize = int | tuple[int, int] | list[int]

_META_ARCH = "cvops.arch_config"
_META_NORM = "cvops.normalization"
_META_EXTRA = "cvops.extra"


@dataclass(frozen=True)
class ArchSpec:
    """What the zoo knows about one architecture (the builder is private)."""

    name: str
    description: str
    min_image_size: int
    default_space: dict[str, dict[str, Any]]
    build: Callable[..., Classifier] = field(repr=False, compare=False)

    def info(self) -> dict[str, Any]:
        """Plain-data view (for APIs and events): name, description, min size, space hints."""
        return {
            "name": self.name,
            "description": self.description,
            "min_image_size": self.min_image_size,
            "default_space": self.default_space,
        }


class Classifier(nn.Module):
    """features -> global average pool -> dropout -> linear; remembers how it was built."""

    def __init__(
        self, features: nn.Module, feature_channels: int, num_classes: int, dropout: float
    ):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_channels, num_classes)
        # Filled by build_model / the trainer; saved into safetensors metadata.
        self.arch_config: dict[str, Any] = {}
        self.normalization: Normalization | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.dropout(x))


def _channels(base: int, width: float) -> int:
    return max(4, round(base * width))


def _conv_bn(
    cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: type = nn.ReLU
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        act(inplace=True),
    )


# --- simple-cnn -------------------------------------------------------------------------------


def _build_simple_cnn(
    num_classes: int, in_channels: int, width: float, depth: int, dropout: float
) -> Classifier:
    layers: list[nn.Module] = []
    cin = in_channels
    for base in (32, 64, 128):
        cout = _channels(base, width)
        for _ in range(depth):
            layers.append(_conv_bn(cin, cout))
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return Classifier(nn.Sequential(*layers), cin, num_classes, dropout)


# --- resnet-mini ------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _build_resnet_mini(
    num_classes: int, in_channels: int, width: float, depth: int, dropout: float
) -> Classifier:
    stem = _channels(16, width)
    layers: list[nn.Module] = [_conv_bn(in_channels, stem)]
    cin = stem
    for base, stride in ((16, 1), (32, 2), (64, 2), (128, 2)):
        cout = _channels(base, width)
        for i in range(depth):
            layers.append(BasicBlock(cin, cout, stride if i == 0 else 1))
            cin = cout
    return Classifier(nn.Sequential(*layers), cin, num_classes, dropout)


# --- mobilenet-mini ---------------------------------------------------------------------------


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 + pointwise 1x1 (MobileNet v1 block); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.depthwise = _conv_bn(cin, cin, 3, stride=stride, groups=cin, act=nn.ReLU6)
        self.pointwise = _conv_bn(cin, cout, 1, act=nn.ReLU6)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pointwise(self.depthwise(x))
        # `residual` is fixed at build time, so this is not data-dependent control flow.
        return out + x if self.residual else out


def _build_mobilenet_mini(
    num_classes: int, in_channels: int, width: float, depth: int, dropout: float
) -> Classifier:
    stem = _channels(16, width)
    layers: list[nn.Module] = [_conv_bn(in_channels, stem, act=nn.ReLU6)]
    cin = stem
    for base, stride in ((32, 1), (64, 2), (128, 2), (256, 2)):
        cout = _channels(base, width)
        for i in range(depth):
            layers.append(DepthwiseSeparable(cin, cout, stride if i == 0 else 1))
            cin = cout
    return Classifier(nn.Sequential(*layers), cin, num_classes, dropout)


def _default_space(width: tuple[float, float]) -> dict[str, dict[str, Any]]:
    return {
        "lr": {"kind": "log", "low": 3e-4, "high": 0.3},
        "weight_decay": {"kind": "log", "low": 1e-5, "high": 1e-2},
        "batch_size": {"kind": "categorical", "choices": [32, 64, 128]},
        "optimizer": {"kind": "categorical", "choices": ["sgd", "adamw"]},
        "epochs": {"kind": "int", "low": 2, "high": 10},
        "width": {"kind": "float", "low": width[0], "high": width[1]},
        "depth": {"kind": "int", "low": 1, "high": 3},
        "dropout": {"kind": "float", "low": 0.0, "high": 0.5},
        "augment": {"kind": "float", "low": 0.0, "high": 1.0},
        "label_smoothing": {"kind": "float", "low": 0.0, "high": 0.2},
    }


# Named in ``cvops.contracts.training.ARCHITECTURES`` too (the gateway checks requests against
# it without torch); the zoo's tests hold the two equal.
ARCHITECTURES: dict[str, ArchSpec] = {
    spec.name: spec
    for spec in (
        ArchSpec(
            name="simple-cnn",
            description="3 stages of (conv3x3-BN-ReLU) x depth + maxpool; 32/64/128 x w",
            min_image_size=8,
            default_space=_default_space((0.25, 1.5)),
            build=_build_simple_cnn,
        ),
        ArchSpec(
            name="resnet-mini",
            description="conv stem + 4 stages of residual BasicBlocks x depth; 16..128 x w",
            min_image_size=16,
            default_space=_default_space((0.25, 1.5)),
            build=_build_resnet_mini,
        ),
        ArchSpec(
            name="mobilenet-mini",
            description="conv stem + 4 stages of depthwise-separable blocks x depth; 32..256 x w",
            min_image_size=16,
            default_space=_default_space((0.25, 2.0)),
            build=_build_mobilenet_mini,
        ),
    )
}


def architecture(arch: str) -> ArchSpec:
    """The spec of `arch`; ValueError naming the known ones when it is unknown."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {arch!r} (known: {known})") from None


def image_hw(image_size: ImageSize) -> tuple[int, int]:
    """(H, W) from an int or a pair."""
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def check_image_size(arch: str, image_size: ImageSize) -> None:
    """Raise ValueError when `arch` cannot take images of `image_size`."""
    spec = architecture(arch)
    h, w = image_hw(image_size)
    if min(h, w) < spec.min_image_size:
        raise ValueError(f"image size {h}x{w} too small for {arch} (min {spec.min_image_size})")


def build_model(
    arch: str,
    num_classes: int,
    in_channels: int,
    image_size: ImageSize,
    width: float = 1.0,
    depth: int = 1,
    dropout: float = 0.0,
) -> Classifier:
    """Build an untrained classifier of the zoo.

    Args:
        arch: a key of `ARCHITECTURES`.
        num_classes: outputs of the final linear layer (>= 2).
        in_channels: image channels (1 for grayscale, 3 for RGB).
        image_size: H (square) or (H, W); each side >= the arch's `min_image_size`.
        width: channel multiplier (> 0).
        depth: blocks per stage (>= 1).
        dropout: dropout before the classifier, in [0, 1).

    Returns:
        A `Classifier` taking float NCHW input of any batch size (and any size >= the minimum),
        with `arch_config` set to the arguments above.
    """
    spec = architecture(arch)
    check_image_size(arch, image_size)
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    model = spec.build(int(num_classes), int(in_channels), float(width), int(depth), dropout)
    h, w = image_hw(image_size)
    model.arch_config = {
        "arch": arch,
        "num_classes": int(num_classes),
        "in_channels": int(in_channels),
        "image_size": [h, w],
        "width": float(width),
        "depth": int(depth),
        "dropout": float(dropout),
    }
    return model


def parameter_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    normalization: Normalization | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the model's state dict as safetensors, with arch, knobs and normalisation as metadata.

    Args:
        model: a zoo model (its `arch_config` and `normalization` are stored when present).
        path: file to write (written to a temporary name first, then renamed).
        normalization: overrides `model.normalization`.
        extra: JSON-serialisable facts to keep beside the weights (e.g. metrics, lineage).

    Returns:
        The path written.
    """
    path = Path(path)
    metadata: dict[str, str] = {}
    arch_config = getattr(model, "arch_config", None)
    if arch_config:
        metadata[_META_ARCH] = json.dumps(arch_config)
    norm = normalization or getattr(model, "normalization", None)
    if norm is not None:
        metadata[_META_NORM] = json.dumps(norm.to_dict())
    if extra:
        metadata[_META_EXTRA] = json.dumps(extra)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class WeightsInfo:
    """Metadata found in a safetensors file written by `save_weights` (all optional)."""

    arch_config: dict[str, Any] | None
    normalization: Normalization | None
    extra: dict[str, Any]


def read_weights_info(path: str | Path) -> WeightsInfo:
    """Read the cvops metadata of a safetensors file without loading its tensors."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    arch_config = json.loads(meta[_META_ARCH]) if _META_ARCH in meta else None
    norm = Normalization.from_dict(json.loads(meta[_META_NORM])) if _META_NORM in meta else None
    extra = json.loads(meta[_META_EXTRA]) if _META_EXTRA in meta else {}
    return WeightsInfo(arch_config=arch_config, normalization=norm, extra=extra)


def load_weights(arch: str, path: str | Path, **knobs: Any) -> Classifier:
    """Rebuild a zoo model from safetensors weights.

    Args:
        arch: architecture name; must match the file's metadata when it has one.
        path: a safetensors file (ideally written by `save_weights`).
        **knobs: `num_classes`, `in_channels`, `image_size`, `width`, `depth`, `dropout`;
            they override the file's metadata. Without metadata, `num_classes` and
            `in_channels` are read off the tensor shapes; width/depth default to 1.

    Returns:
        The model in eval mode, with `arch_config` and `normalization` restored.
    """
    allowed = {"num_classes", "in_channels", "image_size", "width", "depth", "dropout"}
    unknown = set(knobs) - allowed
    if unknown:
        raise ValueError(f"unknown knobs {sorted(unknown)} (allowed: {sorted(allowed)})")
    spec = architecture(arch)
    info = read_weights_info(path)
    state = load_file(str(path))
    config: dict[str, Any] = dict(info.arch_config or {})
    stored_arch = config.pop("arch", arch)
    if stored_arch != arch:
        raise ValueError(f"{path} holds {stored_arch} weights, not {arch}")
    config.update({k: v for k, v in knobs.items() if v is not None})
    if "num_classes" not in config and "fc.weight" in state:
        config["num_classes"] = int(state["fc.weight"].shape[0])
    if "in_channels" not in config:
        first_conv = next((v for k, v in state.items() if v.ndim == 4), None)
        if first_conv is not None:
            config["in_channels"] = int(first_conv.shape[1])
    config.setdefault("image_size", spec.min_image_size)
    missing = {"num_classes", "in_channels"} - set(config)
    if missing:
        raise ValueError(f"{path}: cannot tell {sorted(missing)}; pass them as knobs")
    model = build_model(arch, **config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        shown = {k: v for k, v in model.arch_config.items() if k != "arch"}
        first = str(exc).splitlines()[0]
        raise ValueError(f"weights in {path} do not fit {arch} {shown}: {first}") from exc
    model.normalization = info.normalization
    return model.eval()
