"""Export a torch model to one self-contained, checked, simplified and shape-inferred ONNX file."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import msgspec

from cvops.engines.errors import ExportError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_PROTOBUF_LIMIT = 2**31 - 1  # a ModelProto above 2 GB cannot be one file

_OP_PATTERNS = (
    # DispatchError: No ONNX function found for <OpOverload(op='ns.name', overload='default')>
    re.compile(r"OpOverload\(op='(?P<op>[\w.]+)'"),
    # ConversionError: Error when translating node ... target=torch.ops.ns.name.default
    re.compile(r"target=torch\.ops\.(?P<op>[\w]+\.[\w]+)"),
    # torch.export: Could not guard / unsupported operator aten.foo.default
    re.compile(r"operator (?P<op>[\w]+\.[\w]+)"),
)


class OnnxExport(msgspec.Struct, frozen=True, kw_only=True):
    """Where an exported ONNX model lies and what it expects."""

    path: str
    opset: int
    input_name: str
    output_name: str
    input_shape: list[int | str]
    output_shape: list[int | str]
    dynamic_batch: bool
    simplifier: str
    node_count: int
    size_bytes: int
    sha256: str


def export_onnx(
    model: Any,
    example_input: Any,
    path: str | os.PathLike[str],
    opset: int = 18,
    dynamic_batch: bool = True,
) -> OnnxExport:
    """Export ``model`` with torch's dynamo exporter and leave one finished ONNX file at ``path``.

    Args:
        model: a ``torch.nn.Module`` (put in eval mode here).
        example_input: one example batch ``(N, C, H, W)`` tensor on the model's device.
        path: where the ``.onnx`` file goes; written atomically (nothing is left on failure).
        opset: the ONNX opset to export.
        dynamic_batch: make the first axis symbolic (``batch``).

    Returns:
        An ``OnnxExport`` describing the written file.

    Raises:
        ExportError: the exporter failed; ``err.op`` names the operator when one is at fault.
    """
    import onnx
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = example_input
    if dynamic_batch and example.shape[0] == 1:
        # torch.export specialises a size-1 axis; a batch of two keeps it symbolic.
        example = torch.cat([example, example], dim=0)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None

    with tempfile.TemporaryDirectory(prefix=".export-", dir=target.parent) as work:
        raw = Path(work) / "raw.onnx"
        try:
            with _quiet_exporter(), torch.no_grad():
                torch.onnx.export(
                    model,
                    (example,),
                    str(raw),
                    dynamo=True,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_shapes=dynamic_shapes,
                    external_data=True,
                    verbose=False,
                )
        except Exception as err:  # the exporter raises many kinds; all are an export failure
            raise _export_error(err) from err

        proto = onnx.load(str(raw), load_external_data=True)
        proto, simplifier = _simplify(proto, Path(work))
        proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False)
        staged = Path(work) / "final.onnx"
        if proto.ByteSize() < _PROTOBUF_LIMIT:
            onnx.save_model(proto, str(staged))
        else:
            onnx.save_model(
                proto,
                str(staged),
                save_as_external_data=True,
                location=target.name + ".data",
            )
        try:
            onnx.checker.check_model(str(staged), full_check=True)
        except Exception as err:
            raise ExportError(f"exported ONNX model fails onnx.checker: {err}") from err
        sidecar = staged.with_name(target.name + ".data")
        if sidecar.exists():
            os.replace(sidecar, target.with_name(target.name + ".data"))
        os.replace(staged, target)

    return OnnxExport(
        path=str(target),
        opset=opset,
        input_name=proto.graph.input[0].name,
        output_name=proto.graph.output[0].name,
        input_shape=_shape_of(proto.graph.input[0]),
        output_shape=_shape_of(proto.graph.output[0]),
        dynamic_batch=dynamic_batch,
        simplifier=simplifier,
        node_count=len(proto.graph.node),
        size_bytes=target.stat().st_size,
        sha256=_sha256(target),
    )


def describe_onnx(path: str | os.PathLike[str]) -> OnnxExport:
    """Describe an ONNX file already on disk (opset, IO names and shapes, size, digest)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    first = _shape_of(proto.graph.input[0])
    return OnnxExport(
        path=str(path),
        opset=opset,
        input_name=proto.graph.input[0].name,
        output_name=proto.graph.output[0].name,
        input_shape=first,
        output_shape=_shape_of(proto.graph.output[0]),
        dynamic_batch=bool(first) and isinstance(first[0], str),
        simplifier="unknown",
        node_count=len(proto.graph.node),
        size_bytes=Path(path).stat().st_size,
        sha256=_sha256(Path(path)),
    )


def _simplify(proto: Any, work: Path) -> tuple[Any, str]:
    """onnxslim when installed, else ONNX Runtime's offline basic (hardware-independent) pass."""
    try:
        import onnxslim
    except ImportError:
        onnxslim = None
    if onnxslim is not None:
        with contextlib.redirect_stdout(io.StringIO()):
            return onnxslim.slim(proto), "onnxslim"

    import onnx
    import onnxruntime as ort

    before = work / "before-ort.onnx"
    after = work / "after-ort.onnx"
    onnx.save_model(proto, str(before))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(after)
    ort.InferenceSession(str(before), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(after)), "onnxruntime-basic"


def _export_error(err: BaseException) -> ExportError:
    messages: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        messages.append(str(current))
        current = current.__cause__ or current.__context__
    op = None
    for text in messages:
        for pattern in _OP_PATTERNS:
            found = pattern.search(text)
            if found:
                op = _op_name(found.group("op"))
                break
        if op:
            break
    summary = _summary_line(messages)
    if op:
        return ExportError(f"ONNX export failed at operator {op}: {summary}", op=op)
    return ExportError(f"ONNX export failed: {summary}")


def _op_name(dotted: str) -> str:
    parts = dotted.split(".")
    if len(parts) >= 2:
        return f"{parts[0]}::{parts[1]}"
    return dotted


def _summary_line(messages: list[str]) -> str:
    """The most specific line of the exporter's report: the innermost exception's first line."""
    for text in reversed(messages):
        for line in text.splitlines():
            line = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
            if line:
                return line[:500]
    return "unknown error"


def _shape_of(value_info: Any) -> list[int | str]:
    dims: list[int | str] = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints progress and warns about absent torchvision ops; keep logs clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
