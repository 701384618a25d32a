"""Convert an exported ONNX model to its deployable targets: FP16, INT8 (QDQ), OpenVINO IR and
TensorRT.

Every target either returns an ``Artifact`` written atomically, or an ``Unavailable`` saying why
this host cannot produce it. Nothing is faked.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from cvops.engines.errors import CalibrationError, ConversionError

Target = Literal[
    "onnx",
    "fp16",
    "int8",
    "openvino",
    "openvino-fp16",
    "openvino-int8",
    "tensorrt-fp16",
    "tensorrt-int8",
]
TARGETS: tuple[str, ...] = (
    "onnx",
    "fp16",
    "int8",
    "openvino",
    "openvino-fp16",
    "openvino-int8",
    "tensorrt-fp16",
    "tensorrt-int8",
)
CalibrationMethodName = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
QUANTIZABLE_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")


class Artifact(msgspec.Struct, frozen=True, kw_only=True):
    """A converted model on disk: its main file plus any companion files (OpenVINO's .bin)."""

    target: str
    format: str
    precision: str
    path: str
    files: list[str]
    size_bytes: int
    sha256: str
    details: dict[str, str] = {}


class Unavailable(msgspec.Struct, frozen=True):
    """A target this host cannot produce, and why."""

    reason: str
    target: str = ""


# ---------------------------------------------------------------------------------------------
# dispatcher


def convert(
    onnx_path: str | os.PathLike[str],
    target: str,
    out_dir: str | os.PathLike[str],
    calibration: np.ndarray | None = None,
    method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
) -> Artifact | Unavailable:
    """Produce one target from an exported ONNX model.

    Args:
        onnx_path: the FP32 ONNX model (from ``export_onnx``).
        target: one of ``TARGETS``.
        out_dir: folder for the artifact; file names derive from the target.
        calibration: ``(N, C, H, W)`` float32, already normalised; needed by INT8 targets.
        method: INT8 calibration method, ``minmax`` | ``entropy`` | ``percentile``.
        nodes_to_exclude: ONNX node names kept in float (INT8 targets).

    Returns:
        The ``Artifact``, or ``Unavailable`` when this host lacks the runtime.

    Raises:
        ConversionError: bad target, bad model or bad calibration data.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = Path(onnx_path)
    match target:
        case "onnx":
            dest = out / "model.onnx"
            files = [dest]
            sidecar = source.with_name(source.name + ".data")
            if sidecar.exists():  # over 2 GB: the weights' file keeps the name the model cites
                files.append(out / sidecar.name)
                _atomic_copy(sidecar, files[-1])
            _atomic_copy(source, dest)
            return _artifact("onnx", "onnx", "fp32", dest, files)
        case "fp16":
            return to_fp16(source, out / "model.fp16.onnx")
        case "int8":
            return to_int8(
                source,
                out / "model.int8.onnx",
                _require_calibration(calibration, target),
                method=method,
                nodes_to_exclude=nodes_to_exclude,
            )
        case "openvino":
            return to_openvino(source, out / "openvino-fp32" / "model.xml", compress_to_fp16=False)
        case "openvino-fp16":
            return to_openvino(source, out / "openvino-fp16" / "model.xml", compress_to_fp16=True)
        case "openvino-int8":
            ok, why = openvino_int8_available()
            if not ok:
                return Unavailable(why, target=target)
            return to_openvino_int8(
                source,
                out / "openvino-int8" / "model.xml",
                _require_calibration(calibration, target),
            )
        case "tensorrt-fp16" | "tensorrt-int8":
            ok, why = tensorrt_available()
            if not ok:
                return Unavailable(why, target=target)
            precision = target.removeprefix("tensorrt-")
            return to_tensorrt(
                source,
                out / f"model.{precision}.plan",
                precision=precision,
                calibration=calibration if precision == "int8" else None,
            )
        case _:
            raise ConversionError(
                f"unknown target {target!r}; expected one of {', '.join(TARGETS)}"
            )


def target_availability() -> dict[str, tuple[bool, str]]:
    """Which targets this host can produce, each with the reason when it cannot."""
    result = {t: (True, "") for t in ("onnx", "fp16", "int8", "openvino", "openvino-fp16")}
    result["openvino-int8"] = openvino_int8_available()
    trt = tensorrt_available()
    result["tensorrt-fp16"] = trt
    result["tensorrt-int8"] = trt
    return result


# ---------------------------------------------------------------------------------------------
# FP16


def to_fp16(onnx_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Artifact:
    """Convert weights and compute to float16, keeping the model's inputs and outputs float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(onnx_path))
    try:
        with _quiet_logs("onnxruntime"):
            half = convert_float_to_float16(model, keep_io_types=True)
        _topological_sort(half.graph)  # the converter appends its input casts at the end
        onnx.checker.check_model(half)
    except Exception as err:
        raise ConversionError(f"fp16 conversion failed: {err}") from err
    dest = Path(out_path)
    _atomic_save(half, dest)
    return _artifact("fp16", "onnx", "fp16", dest, [dest], {"keep_io_types": "true"})


def _topological_sort(graph: Any) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs."""
    produced = {out for node in graph.node for out in node.output if out}
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        progressed = False
        rest = []
        for node in pending:
            if all(i in ready or i not in produced for i in node.input):
                ordered.append(node)
                ready.update(node.output)
                progressed = True
            else:
                rest.append(node)
        if not progressed:
            raise ConversionError("fp16 graph has a cycle; cannot order its nodes")
        pending = rest
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# ---------------------------------------------------------------------------------------------
# INT8 (ONNX Runtime static quantization, QDQ)


def check_calibration(calibration: Any, input_shape: Sequence[int | str]) -> np.ndarray:
    """Return the calibration set as float32 ``(N, C, H, W)``, or say why it does not fit."""
    if not isinstance(calibration, np.ndarray):
        raise CalibrationError(f"calibration set must be a numpy array, got {type(calibration)}")
    if calibration.ndim != len(input_shape):
        raise CalibrationError(
            f"calibration set has shape {list(calibration.shape)}; the model expects "
            f"{len(input_shape)}-d input {list(input_shape)}"
        )
    if calibration.shape[0] == 0:
        raise CalibrationError("calibration set is empty")
    for axis, (have, want) in enumerate(zip(calibration.shape, input_shape, strict=True)):
        if axis == 0 or not isinstance(want, int):
            continue
        if have != want:
            raise CalibrationError(
                f"calibration images have shape {list(calibration.shape[1:])}; the model expects "
                f"{list(input_shape[1:])}"
            )
    if not np.issubdtype(calibration.dtype, np.floating):
        raise CalibrationError(f"calibration set must be float, got {calibration.dtype}")
    if not np.isfinite(calibration).all():
        raise CalibrationError("calibration set contains NaN or infinite values")
    return np.ascontiguousarray(calibration, dtype=np.float32)


def quantizable_nodes(onnx_path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The (node name, op type) pairs that INT8 quantization turns into integer compute."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in QUANTIZABLE_OPS]


def to_int8(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: np.ndarray,
    method: str = "minmax",
    nodes_to_exclude: Sequence[str] = (),
    nodes_to_quantize: Sequence[str] = (),
    per_channel: bool = True,
    symmetric_activations: bool = False,
    calibration_cache: str | os.PathLike[str] | None = None,
    calibration_batch: int = 16,
) -> Artifact:
    """Static INT8 quantization in QDQ format, weights per channel, from a calibration array.

    Args:
        onnx_path: the FP32 model.
        out_path: where the QDQ model goes (atomically).
        calibration: ``(N, C, H, W)`` float32, normalised as the model expects.
        method: ``minmax`` | ``entropy`` | ``percentile``.
        nodes_to_exclude: node names kept in float.
        nodes_to_quantize: when given, only these nodes are quantized (sensitivity probes).
        per_channel: per-output-channel weight scales.
        symmetric_activations: int8 activations with zero point 0 (what TensorRT needs);
            otherwise uint8 activations, the fast path on x86 with VNNI.
        calibration_cache: a JSON file of tensor ranges: reused when present, written when not,
            so repeated quantizations (sensitivity, retries) calibrate once.
        calibration_batch: images per calibration inference.

    Returns:
        The INT8 ``Artifact``.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    if method not in methods:
        raise ConversionError(
            f"unknown calibration method {method!r}; expected one of {', '.join(methods)}"
        )
    model = onnx.load(str(onnx_path), load_external_data=False)
    input_name = model.graph.input[0].name
    input_shape = [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in model.graph.input[0].type.tensor_type.shape.dim
    ]
    data = check_calibration(calibration, input_shape)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = iter(
                data[i : i + calibration_batch] for i in range(0, len(data), calibration_batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    extra: dict[str, Any] = {"ActivationSymmetric": symmetric_activations}
    if method == "percentile":
        extra["CalibPercentile"] = 99.999
    kwargs: dict[str, Any] = {}
    if calibration_cache is not None and _supports_calibration_cache():
        kwargs["calibration_cache_path"] = str(calibration_cache)

    dest = Path(out_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=dest.parent) as work:
        staged = Path(work) / dest.name
        try:
            with _quiet_logs("root"):
                quantize_static(
                    str(onnx_path),
                    str(staged),
                    _Reader(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=per_channel,
                    reduce_range=False,
                    activation_type=QuantType.QInt8 if symmetric_activations else QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=methods[method],
                    nodes_to_exclude=list(nodes_to_exclude),
                    nodes_to_quantize=list(nodes_to_quantize),
                    extra_options=extra,
                    **kwargs,
                )
        except CalibrationError:
            raise
        except Exception as err:
            raise ConversionError(f"int8 quantization failed: {err}") from err
        os.replace(staged, dest)
    details = {
        "format": "QDQ",
        "calibration_method": method,
        "calibration_images": str(len(data)),
        "per_channel": str(per_channel).lower(),
        "activations": "int8-symmetric" if symmetric_activations else "uint8",
        "weights": "int8",
        "nodes_excluded": ",".join(nodes_to_exclude),
    }
    return _artifact("int8", "onnx", "int8", dest, [dest], details)


@functools.cache
def _supports_calibration_cache() -> bool:
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


# ---------------------------------------------------------------------------------------------
# OpenVINO


def to_openvino(
    onnx_path: str | os.PathLike[str],
    out_xml: str | os.PathLike[str],
    compress_to_fp16: bool = False,
) -> Artifact:
    """OpenVINO IR (``.xml`` + ``.bin``) from the ONNX model; FP16 weight compression optional."""
    try:
        import openvino as ov
    except ImportError as err:
        raise ConversionError(f"openvino: python package not importable ({err})") from err
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as err:
        raise ConversionError(f"openvino conversion failed: {err}") from err
    precision = "fp16" if compress_to_fp16 else "fp32"
    target = "openvino-fp16" if compress_to_fp16 else "openvino"
    return _save_openvino(
        ov, model, Path(out_xml), target, precision, {"compress_to_fp16": str(compress_to_fp16)}
    )


@functools.cache
def openvino_int8_available() -> tuple[bool, str]:
    """OpenVINO INT8 needs NNCF's post-training quantization."""
    try:
        with _quiet_logs("nncf"), contextlib.redirect_stdout(io.StringIO()):
            import nncf  # noqa: F401
            import openvino  # noqa: F401
    except Exception as err:
        return False, f"openvino-int8: nncf not importable ({err})"
    return True, ""


def to_openvino_int8(
    onnx_path: str | os.PathLike[str],
    out_xml: str | os.PathLike[str],
    calibration: np.ndarray,
    subset_size: int = 300,
) -> Artifact:
    """OpenVINO INT8 IR through NNCF post-training quantization on the calibration set."""
    ok, why = openvino_int8_available()
    if not ok:
        raise ConversionError(why)
    import nncf
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    shape = [d.get_length() if d.is_static else "?" for d in model.inputs[0].get_partial_shape()]
    data = check_calibration(calibration, shape)
    items = [data[i : i + 1] for i in range(len(data))]
    try:
        with _quiet_logs("nncf"), contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                model,
                nncf.Dataset(items),
                subset_size=min(subset_size, len(items)),
                preset=nncf.QuantizationPreset.PERFORMANCE,
            )
    except Exception as err:
        raise ConversionError(f"openvino int8 quantization (nncf) failed: {err}") from err
    return _save_openvino(
        ov,
        quantized,
        Path(out_xml),
        "openvino-int8",
        "int8",
        {"quantizer": "nncf", "calibration_images": str(min(subset_size, len(items)))},
    )


def _save_openvino(
    ov: Any, model: Any, xml: Path, target: str, precision: str, details: dict[str, str]
) -> Artifact:
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ov-", dir=xml.parent) as work:
        staged = Path(work) / xml.name
        ov.save_model(model, str(staged), compress_to_fp16=precision == "fp16")
        os.replace(staged.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(staged, xml)
    return _artifact(target, "openvino-ir", precision, xml, [xml, xml.with_suffix(".bin")], details)


# ---------------------------------------------------------------------------------------------
# TensorRT


@functools.cache
def tensorrt_available() -> tuple[bool, str]:
    """TensorRT needs its python package and a CUDA device."""
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False, "tensorrt: python package not importable"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "tensorrt: no CUDA device visible to torch"
    except Exception as err:
        return False, f"tensorrt: cannot query CUDA ({err})"
    return True, ""


def to_tensorrt(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    precision: str = "fp16",
    calibration: np.ndarray | None = None,
    max_batch: int = 64,
    workspace_bytes: int = 4 << 30,
) -> Artifact:
    """A serialized TensorRT engine (``.plan``) for this GPU, FP16 or INT8.

    INT8 uses explicit quantization: the ONNX model is first quantized to symmetric QDQ from the
    calibration set (TensorRT 10 deprecates implicit calibration), then built with INT8 + FP16.
    """
    ok, why = tensorrt_available()
    if not ok:
        raise ConversionError(why)
    import tensorrt as trt

    if precision not in ("fp16", "int8"):
        raise ConversionError(f"tensorrt precision must be fp16 or int8, got {precision!r}")
    dest = Path(out_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".trt-", dir=dest.parent) as work:
        source = Path(onnx_path)
        if precision == "int8":
            if calibration is None:
                raise CalibrationError("tensorrt-int8 needs a calibration set")
            source = Path(work) / "qdq.onnx"
            to_int8(onnx_path, source, calibration, symmetric_activations=True)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(source.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ConversionError(f"tensorrt could not parse the ONNX model: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        tensor = network.get_input(0)
        dims = list(tensor.shape)
        if dims[0] == -1:
            profile = builder.create_optimization_profile()
            rest = dims[1:]
            opt = max(1, min(32, max_batch))
            profile.set_shape(tensor.name, [1, *rest], [opt, *rest], [max_batch, *rest])
            config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ConversionError("tensorrt failed to build an engine (see the TensorRT log)")
        staged = Path(work) / dest.name
        staged.write_bytes(bytes(serialized))
        os.replace(staged, dest)
    return _artifact(
        f"tensorrt-{precision}",
        "tensorrt-plan",
        precision,
        dest,
        [dest],
        {"tensorrt": trt.__version__, "max_batch": str(max_batch)},
    )


# ---------------------------------------------------------------------------------------------
# helpers


def _require_calibration(calibration: np.ndarray | None, target: str) -> np.ndarray:
    if calibration is None:
        raise CalibrationError(f"{target} needs a calibration set")
    return calibration


def _artifact(
    target: str,
    fmt: str,
    precision: str,
    path: Path,
    files: list[Path],
    details: dict[str, str] | None = None,
) -> Artifact:
    return Artifact(
        target=target,
        format=fmt,
        precision=precision,
        path=str(path),
        files=[str(f) for f in files],
        size_bytes=sum(f.stat().st_size for f in files),
        sha256=_sha256(path),
        details=details or {},
    )


def _atomic_save(model: Any, dest: Path) -> None:
    import onnx

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".save-", delete=False) as handle:
        staged = Path(handle.name)
    try:
        onnx.save_model(model, str(staged))
        os.replace(staged, dest)
    finally:
        staged.unlink(missing_ok=True)


def _atomic_copy(source: Path, dest: Path) -> None:
    if source.resolve() == dest.resolve():
        return
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=".copy-", delete=False) as handle:
        staged = Path(handle.name)
    try:
        shutil.copyfile(source, staged)
        os.replace(staged, dest)
    finally:
        staged.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_logs(name: str) -> Iterator[None]:
    """ORT's quantizer and NNCF log advice at WARNING on every call; keep service logs clean."""
    logger = logging.getLogger(None if name == "root" else name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
