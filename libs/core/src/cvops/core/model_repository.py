"""The one generator of Triton model repositories: ``config.pbtxt`` and version directories.

A deployment is one Triton model named after it; each served arm is one version directory
holding its artifact under the name Triton's backend looks for. The router writes its
repository with this (the python backend locally, a native backend on NGC hosts) and the
gateway the model bundle of ``cvops package`` (always the native backend of the NGC image).
No torch, no ONNX: tensor specs come in, text and files go out.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cvops.contracts import TensorSpec
from cvops.domain.deployment import GPU_ENGINES

Backend = Literal["python", "onnxruntime", "openvino", "tensorrt"]
BACKENDS: tuple[Backend, ...] = ("python", "onnxruntime", "openvino", "tensorrt")
# The NGC image the native backends come from (Triton 2.51, the release pytriton ships);
# docker-compose.yml and every model bundle's Dockerfile run this one.
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
SERVING_FILE = "serving.json"  # per version: the engine, precision and providers to run it
# artifact format -> the file name Triton's backends look for
MODEL_FILES = {"onnx": "model.onnx", "openvino-ir": "model.xml", "tensorrt-plan": "model.plan"}
# the native backend of each engine (Docker/NGC hosts)
NATIVE_BACKENDS: dict[str, Backend] = {
    "onnxruntime-cpu": "onnxruntime",
    "onnxruntime-cuda": "onnxruntime",
    "onnxruntime-tensorrt": "onnxruntime",
    "openvino-cpu": "openvino",
    "tensorrt": "tensorrt",
}
# ONNX Runtime's execution providers of each engine (none: not an ONNX Runtime engine)
PROVIDERS: dict[str, list[str]] = {
    "onnxruntime-cpu": ["CPUExecutionProvider"],
    "onnxruntime-cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "onnxruntime-tensorrt": [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ],
    "openvino-cpu": [],
    "tensorrt": [],
}

# element type names (ONNX, numpy, KServe, Triton) -> the KServe datatype
_DTYPE_ALIASES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "half": "FP16",
    "float": "FP32",
    "float32": "FP32",
    "double": "FP64",
    "float64": "FP64",
    "bfloat16": "BF16",
    "string": "BYTES",
    "bytes": "BYTES",
}
_KSERVE = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
_KSERVE |= {"FP16", "FP32", "FP64", "BF16", "BYTES"}


class RepositoryError(ValueError):
    """A deployment that cannot be written as a Triton model (bad artifact or spec)."""


def kserve_dtype(name: str) -> str:
    """Normalise an element type name (``float32``, ``FLOAT``, ``TYPE_FP32``) to ``FP32``."""
    raw = name.strip()
    upper = raw.upper().removeprefix("TYPE_")
    if upper == "STRING":
        return "BYTES"
    if upper in _KSERVE:
        return upper
    alias = _DTYPE_ALIASES.get(raw.lower())
    if alias is None:
        raise RepositoryError(f"unsupported tensor element type {name!r}")
    return alias


def triton_dtype(name: str) -> int:
    """The ``ModelConfig`` DataType enum value of an element type name."""
    k = kserve_dtype(name)
    return mc.DataType.Value("TYPE_STRING" if k == "BYTES" else f"TYPE_{k}")


@dataclass(frozen=True)
class ModelEntry:
    """Everything the generator needs for one deployment's model directory."""

    name: str
    backend: Backend
    versions: list[int]
    inputs: list[TensorSpec]  # full shapes, batch dimension included, -1 = dynamic
    outputs: list[TensorSpec]
    max_batch_size: int = 8
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 500
    instance_count: int = 1
    gpu: bool = False
    execution_providers: list[str] = field(default_factory=lambda: ["CPUExecutionProvider"])
    intra_op_threads: int = 0
    precision: str = "fp32"

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0 and all(
            t.shape and t.shape[0] == -1 for t in (*self.inputs, *self.outputs)
        )


class ServingSettings(Protocol):
    """The serving fields of a deployment (a request, a ready event, a projection row)."""

    @property
    def engine(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def max_batch_size(self) -> int: ...
    @property
    def preferred_batch_sizes(self) -> Sequence[int]: ...
    @property
    def max_queue_delay_us(self) -> int: ...
    @property
    def instance_count(self) -> int: ...


def deployment_entry(
    name: str,
    spec: ServingSettings,
    engines: Iterable[str],
    versions: Iterable[int],
    io: tuple[list[TensorSpec], list[TensorSpec]],
    *,
    native: bool,
    engine_threads: int = 0,
) -> ModelEntry:
    """The model entry of a deployment serving ``versions`` (its arms run ``engines``).

    ``native``: the engines' native backend of the NGC image (one per model: arms of
    engines of different backends are refused); otherwise the python backend.
    ``engine_threads``: each engine's threads, the python backend's session or the native
    ONNX Runtime backend's (0: the runtime's choice).
    """
    backend: Backend = "python"
    if native:
        natives = {NATIVE_BACKENDS[e] for e in engines}
        if len(natives) > 1:
            raise RepositoryError(
                "arms of different engines need the python backend: "
                "one native Triton model runs one backend"
            )
        backend = natives.pop()
    providers = PROVIDERS.get(spec.engine, ["CPUExecutionProvider"])
    return ModelEntry(
        name=name,
        backend=backend,
        versions=list(versions),
        inputs=io[0],
        outputs=io[1],
        max_batch_size=spec.max_batch_size,
        preferred_batch_sizes=list(spec.preferred_batch_sizes),
        max_queue_delay_us=spec.max_queue_delay_us,
        instance_count=spec.instance_count,
        gpu=spec.engine in GPU_ENGINES,
        execution_providers=providers or ["CPUExecutionProvider"],
        intra_op_threads=max(0, engine_threads),
        precision=spec.precision,
    )


def model_config(entry: ModelEntry) -> mc.ModelConfig:
    """Triton's ``ModelConfig`` for an entry (the generator's single source)."""
    if entry.backend not in BACKENDS:
        raise RepositoryError(f"unknown Triton backend {entry.backend!r}")
    if not entry.versions:
        raise RepositoryError("a model needs at least one version")
    batching = entry.batching
    config = mc.ModelConfig(
        name=entry.name,
        backend=entry.backend,
        max_batch_size=entry.max_batch_size if batching else 0,
        version_policy=mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(versions=sorted(set(entry.versions)))
        ),
    )
    skip = 1 if batching else 0
    for t in entry.inputs:
        config.input.append(
            mc.ModelInput(name=t.name, data_type=triton_dtype(t.dtype), dims=_dims(t, skip))
        )
    for t in entry.outputs:
        config.output.append(
            mc.ModelOutput(name=t.name, data_type=triton_dtype(t.dtype), dims=_dims(t, skip))
        )
    if batching:
        preferred = sorted(
            {b for b in entry.preferred_batch_sizes if 0 < b <= entry.max_batch_size}
        )
        config.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=preferred,
                max_queue_delay_microseconds=max(0, entry.max_queue_delay_us),
            )
        )
    kind = mc.ModelInstanceGroup.KIND_GPU if entry.gpu else mc.ModelInstanceGroup.KIND_CPU
    if entry.backend == "python":
        kind = mc.ModelInstanceGroup.KIND_CPU  # the stub places its own session on a GPU
        _param(config, "ONNX_FILE", "model.onnx")
        _param(config, "EXECUTION_PROVIDERS", ",".join(entry.execution_providers))
        _param(config, "INTRA_OP_THREADS", str(entry.intra_op_threads))
    elif entry.backend == "onnxruntime":
        config.default_model_filename = "model.onnx"
        if entry.intra_op_threads > 0:  # the ONNX Runtime backend's own parameter
            _param(config, "intra_op_thread_count", str(entry.intra_op_threads))
        if "TensorrtExecutionProvider" in entry.execution_providers and entry.gpu:
            accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add()
            accel.name = "tensorrt"
            accel.parameters["precision_mode"] = "INT8" if entry.precision == "int8" else "FP16"
    elif entry.backend == "openvino":
        config.default_model_filename = "model.xml"
        kind = mc.ModelInstanceGroup.KIND_CPU
    else:
        config.default_model_filename = "model.plan"
        config.platform = "tensorrt_plan"
    config.instance_group.append(
        mc.ModelInstanceGroup(kind=kind, count=max(1, entry.instance_count))
    )
    return config


def config_pbtxt(entry: ModelEntry) -> str:
    """``config.pbtxt`` text for an entry."""
    return text_format.MessageToString(model_config(entry))


def parse_config(text: str) -> mc.ModelConfig:
    """Parse ``config.pbtxt`` text as Triton does (an unknown field raises)."""
    config = mc.ModelConfig()
    text_format.Parse(text, config)
    return config


def _dims(t: TensorSpec, skip: int) -> list[int]:
    dims = [int(d) if int(d) >= 0 else -1 for d in t.shape[skip:]]
    return dims or [1]


def _param(config: mc.ModelConfig, key: str, value: str) -> None:
    config.parameters[key].string_value = value


# -- version directories ---------------------------------------------------------------


def model_file_name(fmt: str) -> str:
    """The file name a version directory holds an artifact of format ``fmt`` under."""
    name = MODEL_FILES.get(fmt)
    if name is None:
        raise RepositoryError(f"Triton cannot serve artifacts of format {fmt!r}")
    return name


def install_version(
    blob: Path,
    version_dir: Path,
    fmt: str = "onnx",
    companions: list[tuple[Path, str]] | None = None,
    serving: dict[str, object] | None = None,
    extra: Mapping[str, Path] | None = None,
) -> Path:
    """Put an artifact into a version directory atomically; return the model file.

    A plain file becomes ``model.onnx`` (``model.xml``, ``model.plan``) with its
    ``companions`` (blob, file name) beside it under their names (OpenVINO's weights as
    ``model.bin``, where the IR looks for them); a zip (an ONNX model with its
    external-data sidecars) is unpacked as is and its one model file renamed. ``serving``
    is written as the version's ``serving.json`` (the python backend reads it); ``extra``
    files are copied in under their names (the python backend's ``model.py``).
    """
    target_name = model_file_name(fmt)
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version_dir.name}-", dir=version_dir.parent))
    try:
        if zipfile.is_zipfile(blob):
            _unzip(blob, tmp)
            suffix = Path(target_name).suffix
            found = [p for p in tmp.rglob(f"*{suffix}") if p.is_file()]
            if len(found) != 1:
                raise RepositoryError(f"the archive holds {len(found)} {suffix} files, not one")
            if found[0].parent != tmp:
                raise RepositoryError(f"the {suffix} file must sit at the archive's top level")
            found[0].rename(tmp / target_name)
        else:
            _link_or_copy(blob, tmp / target_name)
        for path, filename in companions or []:
            name = Path(filename).name
            if fmt == "openvino-ir" and name.endswith(".bin"):
                name = "model.bin"
            if not name or name in (target_name, "model.py", SERVING_FILE):
                raise RepositoryError(f"unsafe companion file name {filename!r}")
            _link_or_copy(path, tmp / name)
        if serving is not None:
            (tmp / SERVING_FILE).write_text(json.dumps(serving, sort_keys=True))
        for name, source in (extra or {}).items():
            shutil.copyfile(source, tmp / name)
        if version_dir.exists():
            shutil.rmtree(version_dir)
        os.replace(tmp, version_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version_dir / target_name


def write_config(model_dir: Path, entry: ModelEntry) -> Path:
    """Write ``config.pbtxt`` atomically (Triton may read it at any moment)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    tmp = model_dir / ".config.pbtxt.tmp"
    tmp.write_text(config_pbtxt(entry))
    os.replace(tmp, path)
    return path


def prune_versions(model_dir: Path, keep: set[int]) -> None:
    """Delete version directories that are no longer served."""
    if not model_dir.exists():
        return
    for child in model_dir.iterdir():
        if child.is_dir() and child.name.isdigit() and int(child.name) not in keep:
            shutil.rmtree(child, ignore_errors=True)


def _unzip(blob: Path, into: Path) -> None:
    with zipfile.ZipFile(blob) as archive:
        for info in archive.infolist():
            name = Path(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise RepositoryError(f"unsafe path in archive: {info.filename}")
        archive.extractall(into)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
