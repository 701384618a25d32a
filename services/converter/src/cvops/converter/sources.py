"""What a conversion starts from, loaded in a worker thread: the source model in any registered
format (a torch module to export, or an ONNX file), and the data set's validation and
calibration images in the model's input layout.

torch.export cannot take a TorchScript module, and the module ``torch.export.load`` returns
refuses ``.eval()``; both are wrapped in ``FrozenModule`` (a TorchScript module is first turned
into an ExportedProgram) so one export path serves every format.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvops.converter.handlers import (
    Dim,
    InputFit,
    ModelVersionView,
    declared_input,
    fit_input,
    lineage_image_size,
    lineage_normalization,
)


class SourceError(Exception):
    """The source model or data set cannot be used; ``str(err)`` is the user-facing reason."""

    def __init__(self, message: str, op: str | None = None) -> None:
        super().__init__(message)
        self.op = op


def _frozen(inner: Any) -> Any:
    import torch

    class FrozenModule(torch.nn.Module):
        """Calls a loaded module without registering it (its ``eval()`` may be unsupported)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            object.__setattr__(self, "_inner", inner)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            call: Any = self._inner
            return call(x)

    return FrozenModule(inner)


@dataclass
class Source:
    """The loaded source model and what it says about its input."""

    format: str
    model_chw: tuple[Dim, Dim, Dim]
    declared_hw: list[int] | None
    weights_normalization: dict[str, list[float]] | None
    module: Any = None  # torch: the reference (eval mode, CPU)
    exportable: Any = None  # torch: what export_onnx takes (built lazily for TorchScript)
    onnx_path: Path | None = None  # onnx: the registered file


def load_source(path: Path, model: ModelVersionView, workdir: Path) -> Source:
    """Load the registered artifact of ``model`` lying at ``path``."""
    declared = lineage_image_size(model)
    hint = declared_input(model)
    match model.format:
        case "safetensors":
            return _load_safetensors(path, model, declared, hint)
        case "torchscript":
            import torch

            try:
                module = torch.jit.load(str(path), map_location="cpu").eval()
            except Exception as err:
                raise SourceError(
                    f"torch.jit.load could not read the model: {_first(err)}"
                ) from err
            return Source(
                format="torchscript",
                model_chw=hint,
                declared_hw=declared,
                weights_normalization=None,
                module=_frozen(module),
            )
        case "torch_export":
            import torch

            try:
                program = torch.export.load(str(path))
            except Exception as err:
                raise SourceError(
                    f"torch.export.load could not read the model: {_first(err)}"
                ) from err
            module = _frozen(program.module())
            chw = _program_input_chw(program) or hint
            return Source(
                format="torch_export",
                model_chw=chw,
                declared_hw=declared,
                weights_normalization=None,
                module=module,
                exportable=module,
            )
        case "onnx":
            target = workdir / "source.onnx"
            shutil.copyfile(path, target)
            return Source(
                format="onnx",
                model_chw=_onnx_input_chw(target),
                declared_hw=declared,
                weights_normalization=None,
                onnx_path=target,
            )
    raise SourceError(f"cannot convert a {model.format} model")


def _load_safetensors(
    path: Path, model: ModelVersionView, declared: list[int] | None, hint: tuple[Dim, Dim, Dim]
) -> Source:
    from cvops.vision.zoo import load_weights, read_weights_info

    hyper = model.hyperparameters
    arch = str(model.architecture or hyper.get("arch"))
    try:
        info = read_weights_info(path)
    except ValueError as err:
        raise SourceError(str(err)) from err
    knobs: dict[str, Any] = {k: hyper[k] for k in ("width", "depth", "dropout") if k in hyper}
    if model.num_classes:
        knobs["num_classes"] = model.num_classes
    if hint[0] is not None:
        knobs["in_channels"] = hint[0]
    stored = (info.arch_config or {}).get("image_size")
    weights_hw = [int(stored[0]), int(stored[1])] if isinstance(stored, list) else None
    declared = declared or weights_hw
    if declared:
        knobs["image_size"] = declared
    try:
        module = load_weights(arch, path, **knobs)
    except ValueError as err:
        raise SourceError(f"cannot rebuild {arch} from the weights: {err}") from err
    channels = int(module.arch_config["in_channels"])
    norm = info.normalization.to_dict() if info.normalization is not None else None
    return Source(
        format="safetensors",
        model_chw=(channels, None, None),  # zoo models take any size above their minimum
        declared_hw=declared,
        weights_normalization=norm,
        module=module.eval(),
        exportable=module,
    )


def _program_input_chw(program: Any) -> tuple[Dim, Dim, Dim] | None:
    """C, H, W of an ExportedProgram's first user input (None where symbolic)."""
    try:
        names = set(program.graph_signature.user_inputs)
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in names:
                shape = node.meta["val"].shape
                if len(shape) != 4:
                    return None
                dims = [int(d) if str(d).lstrip("-").isdigit() else None for d in shape[1:]]
                return dims[0], dims[1], dims[2]
    except Exception:
        return None
    return None


def _onnx_input_chw(path: Path) -> tuple[Dim, Dim, Dim]:
    from cvops.engines import describe_onnx

    try:
        shape = describe_onnx(path).input_shape
    except Exception as err:
        raise SourceError(f"the ONNX model is unreadable: {_first(err)}") from err
    if len(shape) != 4:
        raise SourceError(f"the ONNX model takes a {len(shape)}-d input {shape}; expected N,C,H,W")
    dims = [d if isinstance(d, int) else None for d in shape[1:]]
    return dims[0], dims[1], dims[2]


def exportable_module(source: Source, fit: InputFit) -> Any:
    """The torch module to export (a TorchScript module goes through an ExportedProgram)."""
    if source.exportable is not None:
        return source.exportable
    import torch
    from torch._export.converter import TS2EPConverter

    example = torch.zeros(2, fit.channels, fit.height, fit.width)
    inner = source.module._inner
    try:
        program = TS2EPConverter(inner, (example,)).convert()
    except Exception as err:
        raise SourceError(
            f"the TorchScript model could not be converted for ONNX export: {_first(err)}"
        ) from err
    source.exportable = _frozen(program.module())
    return source.exportable


def ensure_dynamic_batch(path: Path) -> None:
    """Make a fixed batch axis of an ONNX model symbolic (parity and serving feed any batch)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim
    if not dim or not dim[0].HasField("dim_value"):
        return
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]  # shapes inferred for the fixed batch would contradict
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        raise SourceError(f"the ONNX model with a dynamic batch fails onnx.checker: {err}") from err
    onnx.save_model(model, str(path))


# -- the data set ---------------------------------------------------------------------------


@dataclass
class Images:
    """Validation and calibration images, float32 NCHW normalised for the model."""

    val: np.ndarray
    val_labels: np.ndarray
    calibration: np.ndarray
    fit: InputFit
    normalization: dict[str, list[float]]
    normalization_source: str


def load_images(
    npz: Path,
    source: Source,
    model: ModelVersionView,
    validation_images: int | None,
) -> Images:
    """The data set in the model's input layout, normalised as the model was trained."""
    from cvops.vision.data import (
        DatasetError,
        Normalization,
        compute_normalization,
        load_npz,
        preprocess,
    )

    try:
        ds = load_npz(npz)
    except DatasetError as err:
        raise SourceError(f"unusable data set: {err}") from err
    h, w = ds.image_size
    fit = fit_input(source.model_chw, source.declared_hw, (ds.channels, h, w))
    if isinstance(fit, str):
        raise SourceError(f"the calibration and validation images do not fit the model: {fit}")
    if fit.resize:
        ds = ds.resized((fit.height, fit.width))
    norm = lineage_normalization(model)
    norm_source = "lineage"
    if norm is None and source.weights_normalization is not None:
        norm, norm_source = source.weights_normalization, "weights"
    if norm is None:
        # what the trainer does: per-channel mean/std of the train split
        norm = compute_normalization(ds.split("train")[0]).to_dict()
        norm_source = "dataset"
    if len(norm["mean"]) != fit.channels:
        raise SourceError(
            f"the model's normalisation has {len(norm['mean'])} channel(s); its input has "
            f"{fit.channels}"
        )
    normalization = Normalization.from_dict(norm)
    x_val, y_val = ds.split("val")
    if validation_images is not None:
        x_val, y_val = x_val[:validation_images], y_val[:validation_images]
    x_cal, _ = ds.split("calib")
    return Images(
        val=preprocess(x_val, normalization),
        val_labels=np.asarray(y_val, dtype=np.int64),
        calibration=preprocess(x_cal, normalization),
        fit=fit,
        normalization=norm,
        normalization_source=norm_source,
    )


def _first(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:400]
