"""Model inspection: recognise a safe format, load it without running user code, read its facts.

Accepted: ONNX, TorchScript, ``torch.export`` ``.pt2``, and safetensors weights with an
architecture name. A raw pickle or a ``torch.save`` checkpoint is refused, never loaded.
torch is imported only for TorchScript and ``.pt2`` (it is slow to import).
"""

from __future__ import annotations

import ast
import json
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvops.contracts import TensorSpec
from cvops.contracts.registry import ModelFormat
from cvops.registry.safety import (
    Refused,
    check_pickle_globals,
    check_zip,
    looks_like_pickle,
    read_member,
)

ZIP_MAGIC = b"PK\x03\x04"
ARCHITECTURE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,127}$")
# TorchScript pickles are read by torch's C++ unpickler, which only knows torch types; this
# allowlist is a second fence that also names the problem clearly.
TORCHSCRIPT_GLOBALS = re.compile(r"(__torch__|torch)\.[\w.]+|collections\.OrderedDict")
SUPPORTED = "ONNX, TorchScript, torch.export .pt2, or safetensors weights with an architecture"


@dataclass(frozen=True)
class ModelFacts:
    """What inspection learnt about an accepted model file."""

    format: ModelFormat
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    opset: int | None
    architecture: str | None
    num_classes: int | None
    size: int


@dataclass(frozen=True)
class ModelHints:
    """What the uploader told us (needed for safetensors, used where a format is silent)."""

    architecture: str | None = None
    num_classes: int | None = None
    input_shape: list[int] | None = None


def inspect_model(path: Path, hints: ModelHints, *, max_expanded_bytes: int) -> ModelFacts:
    """Identify and check a model file; raises Refused with the reason users see."""
    size = path.stat().st_size
    if size == 0:
        raise Refused("the model file is empty")
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(ZIP_MAGIC):
        return _inspect_zip(path, hints, size, max_expanded_bytes)
    if looks_like_pickle(head):
        raise Refused(
            "the file is a raw Python pickle; unpickling runs arbitrary code, so pickles are "
            f"refused (upload {SUPPORTED})"
        )
    if _looks_like_safetensors(head, size):
        return _inspect_safetensors(path, hints, size)
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version) as a varint: an ONNX ModelProto
        return _inspect_onnx(path, hints, size)
    raise Refused(f"unrecognised model format (expected {SUPPORTED})")


# -- ONNX ---------------------------------------------------------------------------------------


def _inspect_onnx(path: Path, hints: ModelHints, size: int) -> ModelFacts:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise Refused(f"not a valid ONNX model ({_short(err)})") from err
    _refuse_external_data(model)
    graph = model.graph
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        raise Refused(f"the ONNX checker refused the model ({_short(err)})") from err
    init_names = {t.name for t in graph.initializer}
    inputs = [_onnx_spec(v) for v in graph.input if v.name not in init_names]
    outputs = [_onnx_spec(v) for v in graph.output]
    params = sum(_prod(t.dims) for t in graph.initializer)
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return ModelFacts(
        format="onnx",
        inputs=inputs,
        outputs=outputs,
        parameter_count=params,
        opset=opset,
        architecture=hints.architecture,
        num_classes=hints.num_classes or _classes_from_outputs(outputs),
        size=size,
    )


def _refuse_external_data(model: Any) -> None:
    """Refuse a model if any tensor anywhere in it points at data outside the uploaded file.

    An upload is one file, so every external reference names a file on the server (the
    checker and any later loader resolve it against their own directory). Every message of
    the ModelProto is walked, so initializers, sparse initializers, Constant and other node
    attributes (``t``, ``tensors``, sparse ones), subgraphs (If/Loop/Scan bodies), functions
    and training graphs are all covered. The reason never depends on whether the referenced
    path exists, so a refusal cannot be used to probe the server's files.
    """
    from google.protobuf.message import Message
    from onnx import TensorProto

    stack: list[tuple[Message, str]] = [(model, "model")]
    while stack:
        msg, where = stack.pop()
        if isinstance(msg, TensorProto):
            if msg.data_location != TensorProto.DEFAULT or len(msg.external_data) > 0:
                raise Refused(
                    f"the ONNX model keeps tensor {msg.name[:80]!r} ({where}) in external data "
                    "files; only self-contained ONNX files are accepted: export it as one file"
                )
            continue
        for field, value in msg.ListFields():
            if field.message_type is None:
                continue
            if field.is_repeated:
                if field.message_type.GetOptions().map_entry:
                    continue  # string maps (metadata); no tensors inside
                stack.extend((v, _onnx_path(where, field.name, i, v)) for i, v in enumerate(value))
            else:
                stack.append((value, f"{where}.{field.name}"))


def _onnx_path(where: str, field: str, index: int, item: Any) -> str:
    """``graph.node[0]:If.then_branch.node[1]:Constant.value`` rather than bare field indices."""
    from onnx import AttributeProto, NodeProto

    if isinstance(item, AttributeProto):
        return f"{where}.{item.name[:40]}"
    if isinstance(item, NodeProto):
        return f"{where}.{field}[{index}]:{item.op_type[:40]}"
    return f"{where}.{field}[{index}]"


def _onnx_spec(value: Any) -> TensorSpec:
    from onnx import helper

    t = value.type
    if not t.HasField("tensor_type"):
        return TensorSpec(name=value.name, shape=[], dtype=t.WhichOneof("value") or "unknown")
    tt = t.tensor_type
    shape = [
        int(d.dim_value) if d.HasField("dim_value") else -1
        for d in (tt.shape.dim if tt.HasField("shape") else [])
    ]
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    except Exception:
        dtype = f"onnx:{tt.elem_type}"
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)


# -- safetensors --------------------------------------------------------------------------------


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _inspect_safetensors(path: Path, hints: ModelHints, size: int) -> ModelFacts:
    from safetensors import safe_open

    arch = (hints.architecture or "").strip()
    if not arch:
        raise Refused("safetensors weights need an architecture name (say which model they fit)")
    if not ARCHITECTURE_NAME.match(arch):
        raise Refused(f"architecture {arch!r} is not a valid name (letters, digits, _ . -)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            shapes = [f.get_slice(k).get_shape() for k in f.keys()]  # noqa: SIM118
    except Exception as err:
        raise Refused(f"not a valid safetensors file ({_short(err)})") from err
    if not shapes:
        raise Refused("the safetensors file holds no tensors")
    inputs = []
    if hints.input_shape:
        inputs = [TensorSpec(name="input", shape=[-1, *hints.input_shape], dtype="float32")]
    outputs = []
    if hints.num_classes:
        outputs = [TensorSpec(name="logits", shape=[-1, hints.num_classes], dtype="float32")]
    return ModelFacts(
        format="safetensors",
        inputs=inputs,
        outputs=outputs,
        parameter_count=sum(_prod(s) for s in shapes),
        opset=None,
        architecture=arch,
        num_classes=hints.num_classes,
        size=size,
    )


# -- zip archives: TorchScript, torch.export, torch.save ----------------------------------------


def _inspect_zip(path: Path, hints: ModelHints, size: int, max_expanded: int) -> ModelFacts:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise Refused(f"the zip archive is unreadable ({_short(err)})") from err
    with zf:
        summary = check_zip(zf, max_expanded_bytes=max_expanded, what="the model archive")
        names = [i.filename for i in summary.members]
        roots = {n.split("/", 1)[0] for n in names}
        root = next(iter(roots)) if len(roots) == 1 and all("/" in n for n in names) else None
        rel = (
            {n.split("/", 1)[1]: i for n, i in zip(names, summary.members, strict=True)}
            if root
            else {}
        )
        if root and "archive_format" in rel:
            if read_member(zf, rel["archive_format"]).strip() != b"pt2":
                raise Refused("unknown archive_format in the torch.export archive")
            _check_pt2_archive(zf, rel)
            kind = "pt2"
        elif root and "constants.pkl" in rel and any(n.startswith("code/") for n in rel):
            for name, info in rel.items():
                if name.endswith((".pkl", ".debug_pkl")):
                    check_pickle_globals(
                        read_member(zf, info), f"TorchScript member {name!r}", TORCHSCRIPT_GLOBALS
                    )
            kind = "torchscript"
        elif any(n.endswith("data.pkl") for n in names):
            raise Refused(
                "the file is a torch.save checkpoint (a zipped pickle); unpickling runs "
                "arbitrary code, so it is refused: save the model with torch.jit.save, "
                "torch.export.save, ONNX, or safetensors weights"
            )
        else:
            raise Refused(f"unrecognised zip archive (expected {SUPPORTED})")
    if kind == "pt2":
        return _load_pt2(path, hints, size)
    return _load_torchscript(path, hints, size)


def _load_torchscript(path: Path, hints: ModelHints, size: int) -> ModelFacts:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as err:
        raise Refused(
            f"torch.jit.load could not read the TorchScript archive ({_short(err)})"
        ) from err
    params = sum(int(p.numel()) for p in module.parameters())
    shape = [-1, *hints.input_shape] if hints.input_shape else []
    dtype = "float32" if hints.input_shape else "unknown"
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    try:
        schema = module.forward.schema
        for arg in schema.arguments[1:]:  # skip self
            inputs.append(TensorSpec(name=arg.name, shape=shape, dtype=dtype))
        for i, ret in enumerate(schema.returns):
            out_shape = [-1, hints.num_classes] if hints.num_classes else []
            name = ret.name or ("output" if len(schema.returns) == 1 else f"output{i}")
            out_dtype = "float32" if hints.num_classes else "unknown"
            outputs.append(TensorSpec(name=name, shape=out_shape, dtype=out_dtype))
    except Exception:  # a module without forward: still a valid archive, facts unknown
        pass
    return ModelFacts(
        format="torchscript",
        inputs=inputs,
        outputs=outputs,
        parameter_count=params,
        opset=None,
        architecture=hints.architecture,
        num_classes=hints.num_classes,
        size=size,
    )


# torch.export.load can, for some members, fall back to full pickle, dlopen compiled code, or
# eval sympy strings. Only the plain layout torch.export.save writes is accepted, checked first.
_PT2_FIXED = {"archive_format", "archive_version", "byteorder", ".data/version",
              ".data/serialization_id", ".data/serialization_version"}  # fmt: skip
_PT2_PATTERNS = (
    re.compile(r"^models/[\w.\-]+\.json$"),
    re.compile(r"^data/weights/[\w.\-]+$"),
    re.compile(r"^data/constants/[\w.\-]+$"),
    re.compile(r"^data/sample_inputs/[\w.\-]+\.pt$"),
    re.compile(r"^extra/[\w.\-/]+$"),
)
# what torch.save writes for plain tensors (the weights-only unpickler accepts the same)
_SAMPLE_INPUT_GLOBALS = re.compile(
    r"torch\._utils\._rebuild_(tensor(_v2|_v3)?|parameter(_with_state)?)"
    r"|torch\._tensor\._rebuild_from_type(_v2)?"
    r"|torch\.\w*Storage|torch\.(device|Size|float\w*|int\w*|bool|bfloat16|half|double|long)"
    r"|collections\.OrderedDict"
)
_SYMPY_CALLS = {
    "Symbol", "Integer", "Float", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity", "OpaqueUnaryFn_sqrt", "BitwiseFn_bitwise_and",
    "BitwiseFn_bitwise_or",
}  # fmt: skip
_SYMBOL_NAME = re.compile(r"^[a-z]{1,3}\d+$")
_OP_TARGET = re.compile(r"^(torch\.ops\.[\w.]+|_operator\.\w+|math\.\w+|torch\._?sym_\w+)$")


def _check_pt2_archive(zf: zipfile.ZipFile, rel: dict[str, zipfile.ZipInfo]) -> None:
    for name in rel:
        if name not in _PT2_FIXED and not any(p.match(name) for p in _PT2_PATTERNS):
            raise Refused(
                f"the .pt2 archive has a member {name!r} that plain torch.export.save does "
                "not write (compiled code and pickled objects are refused)"
            )
    models = [n for n in rel if n.startswith("models/")]
    if "models/model.json" not in rel:
        raise Refused("the .pt2 archive has no exported program named 'model'")
    for name in models:
        program = _json_member(zf, rel[name], name)
        if program.get("guards_code"):
            raise Refused("the .pt2 archive carries guard code (Python source); refused")
        for expr in _find_key(program, "expr_str"):
            _check_sym_expr(expr)
        for target in _node_targets(program):
            if not _OP_TARGET.match(target):
                raise Refused(f"the exported graph calls {target!r}, which is not a torch op")
    for name, info in rel.items():
        if name.endswith("_config.json") and name.startswith(("data/weights/", "data/constants/")):
            config = _json_member(zf, info, name).get("config", {})
            for fqn, meta in config.items():
                if meta.get("use_pickle"):
                    raise Refused(f"the .pt2 archive stores {fqn!r} as a pickle; refused")
                if name.startswith("data/constants/") and not str(
                    meta.get("path_name", "")
                ).startswith("tensor_"):
                    raise Refused(f"the .pt2 archive holds a non-tensor constant {fqn!r}")
        elif name.startswith("data/sample_inputs/"):
            _check_sample_inputs(read_member(zf, info), name)


def _check_sample_inputs(data: bytes, name: str) -> None:
    import io

    try:
        inner = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise Refused(f"{name} in the .pt2 archive is not a torch tensor file") from err
    with inner:
        for info in inner.infolist():
            if info.filename.endswith(".pkl"):
                check_pickle_globals(
                    read_member(inner, info), f"{name} in the .pt2 archive", _SAMPLE_INPUT_GLOBALS
                )
    # torch.export.load tries weights_only=True first and falls back to a full unpickle on
    # failure; the fallback must never be reached, so the weights-only load must succeed here.
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:
        raise Refused(f"{name} in the .pt2 archive is not plain tensors ({_short(err)})") from err


def _check_sym_expr(expr: object) -> None:
    """Shape expressions are eval'd by sympy on load: accept only arithmetic on symbols."""
    if not isinstance(expr, str) or len(expr) > 2000:
        raise Refused("the .pt2 archive has a malformed shape expression")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as err:
        raise Refused(f"the .pt2 archive has an unparsable shape expression {expr[:60]!r}") from err
    for node in ast.walk(tree):
        ok = isinstance(
            node,
            ast.Expression
            | ast.BinOp
            | ast.UnaryOp
            | ast.Compare
            | ast.BoolOp
            | ast.operator
            | ast.unaryop
            | ast.cmpop
            | ast.boolop
            | ast.keyword
            | ast.Load,
        )
        if isinstance(node, ast.Constant):
            ok = isinstance(node.value, int | float | bool | str) and (
                not isinstance(node.value, str) or bool(_SYMBOL_NAME.match(node.value))
            )
        elif isinstance(node, ast.Name):
            ok = (
                node.id in _SYMPY_CALLS
                or node.id in ("True", "False", "oo")
                or bool(_SYMBOL_NAME.match(node.id))
            )
        elif isinstance(node, ast.Call):
            ok = isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS
        if not ok:
            raise Refused(
                "the .pt2 archive has a shape expression that is not plain arithmetic: "
                f"{expr[:80]!r}"
            )


def _load_pt2(path: Path, hints: ModelHints, size: int) -> ModelFacts:
    import torch

    try:
        ep = torch.export.load(str(path))
    except Exception as err:
        raise Refused(f"torch.export.load could not read the archive ({_short(err)})") from err
    from torch.export.graph_signature import InputKind, OutputKind

    nodes = {n.name: n for n in ep.graph.nodes}
    sig = ep.graph_signature
    inputs = [
        _fx_spec(spec.arg.name, nodes.get(spec.arg.name))
        for spec in sig.input_specs
        if spec.kind == InputKind.USER_INPUT and hasattr(spec.arg, "name")
    ]
    out_node = next((n for n in ep.graph.nodes if n.op == "output"), None)
    out_vals = list(out_node.args[0]) if out_node is not None else []
    user_outs = [s for s in sig.output_specs if s.kind == OutputKind.USER_OUTPUT]
    outputs = []
    for i, spec in enumerate(user_outs):
        name = getattr(spec.arg, "name", f"output{i}")
        node = nodes.get(name)
        if node is None and i < len(out_vals) and hasattr(out_vals[i], "meta"):
            node = out_vals[i]
        outputs.append(_fx_spec(name, node))
    state = ep.state_dict
    params = sum(int(state[k].numel()) for k in sig.parameters if k in state)
    return ModelFacts(
        format="torch_export",
        inputs=inputs,
        outputs=outputs,
        parameter_count=params,
        opset=None,
        architecture=hints.architecture,
        num_classes=hints.num_classes or _classes_from_outputs(outputs),
        size=size,
    )


def _fx_spec(name: str, node: Any) -> TensorSpec:
    val = getattr(node, "meta", {}).get("val") if node is not None else None
    if val is None or not hasattr(val, "shape"):
        return TensorSpec(name=name, shape=[], dtype="unknown")
    shape = [int(d) if isinstance(d, int) else -1 for d in val.shape]
    return TensorSpec(name=name, shape=shape, dtype=str(val.dtype).removeprefix("torch."))


# -- helpers ------------------------------------------------------------------------------------


def _json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> dict[str, Any]:
    try:
        value = json.loads(read_member(zf, info))
    except ValueError as err:
        raise Refused(f"{name} in the .pt2 archive is not JSON") from err
    if not isinstance(value, dict):
        raise Refused(f"{name} in the .pt2 archive is not a JSON object")
    return value


def _find_key(obj: Any, key: str) -> list[Any]:
    found: list[Any] = []
    stack = [obj]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            for k, v in cur.items():
                if k == key:
                    found.append(v)
                stack.append(v)
        elif isinstance(cur, list):
            stack.extend(cur)
    return found


def _node_targets(program: dict[str, Any]) -> list[str]:
    targets: list[str] = []
    for nodes in _find_key(program, "nodes"):
        if isinstance(nodes, list):
            targets.extend(str(n.get("target", "")) for n in nodes if isinstance(n, dict))
    return targets


def _classes_from_outputs(outputs: list[TensorSpec]) -> int | None:
    if len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].shape[1] > 0:
        return outputs[0].shape[1]
    return None


def _prod(dims: Any) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _short(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:limit]
