"""The router's side of the model repository: artifacts read and laid out for Triton.

The generator itself (``config.pbtxt`` from tensor specs, batcher settings and backend, and
the version directories) is ``cvops.core.model_repository``, shared with the gateway's model
bundle. A deployment is one Triton model named after it; each served arm is one version
directory. Locally (the pytriton-shipped ``tritonserver``, whose only backend is ``python``)
every version is ``model.py`` running the arm's runtime (ONNX Runtime, or OpenVINO for IR)
beside ``model.onnx`` / ``model.xml`` and a ``serving.json`` naming its engine; on
Docker/GPU hosts the same entry gets the native ``onnxruntime``, ``openvino`` or
``tensorrt`` backend instead. Only the backend differs; the layout and the control path do
not.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from cvops.contracts import TensorSpec
from cvops.core import model_repository as generator
from cvops.core.model_repository import (
    BACKENDS,
    MODEL_FILES,
    NATIVE_BACKENDS,
    SERVING_FILE,
    Backend,
    ModelEntry,
    RepositoryError,
    config_pbtxt,
    kserve_dtype,
    model_config,
    model_file_name,
    parse_config,
    prune_versions,
    triton_dtype,
    write_config,
)

__all__ = [
    "BACKENDS",
    "MODEL_FILES",
    "MODEL_TEMPLATE",
    "NATIVE_BACKENDS",
    "SERVING_FILE",
    "Backend",
    "ModelEntry",
    "RepositoryError",
    "artifact_io",
    "config_pbtxt",
    "install_version",
    "kserve_dtype",
    "model_config",
    "model_file_name",
    "onnx_io",
    "openvino_io",
    "parse_config",
    "prune_versions",
    "triton_dtype",
    "write_config",
]

MODEL_TEMPLATE = Path(__file__).with_name("python_model.py")


def openvino_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an OpenVINO IR (``model.xml`` beside its ``model.bin``)."""
    try:
        import openvino as ov

        model = ov.Core().read_model(str(path))
    except Exception as err:  # openvino raises RuntimeError for a bad file
        raise RepositoryError(f"not a readable OpenVINO IR: {err}") from err

    def spec(port: object) -> TensorSpec:
        shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]  # type: ignore[attr-defined]
        dtype = port.get_element_type().to_dtype().name  # type: ignore[attr-defined]
        return TensorSpec(name=port.get_any_name(), shape=shape, dtype=kserve_dtype(dtype))  # type: ignore[attr-defined]

    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


def artifact_io(path: Path, fmt: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of an installed artifact (a TensorRT plan is not read here)."""
    if fmt == "onnx":
        return onnx_io(path)
    if fmt == "openvino-ir":
        return openvino_io(path)
    raise RepositoryError(f"cannot read the inputs and outputs of {path.name}")


def onnx_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs and outputs of an ONNX file (weights are not loaded)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError, ValueError, ...
        raise RepositoryError(f"not a readable ONNX model: {err}") from err
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [_spec(v) for v in model.graph.output]
    if not inputs or not outputs:
        raise RepositoryError("the ONNX graph has no inputs or no outputs")
    return inputs, outputs


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    return TensorSpec(name=value.name, shape=dims, dtype=kserve_dtype(dtype))


def install_version(
    blob: Path,
    version_dir: Path,
    backend: Backend,
    fmt: str = "onnx",
    companions: list[tuple[Path, str]] | None = None,
    serving: dict[str, object] | None = None,
) -> Path:
    """Lay out an artifact as a version directory (``cvops.core.model_repository``), with
    the python backend's ``model.py`` when ``backend`` is python; return the model file."""
    extra = {"model.py": MODEL_TEMPLATE} if backend == "python" else None
    return generator.install_version(blob, version_dir, fmt, companions, serving, extra)
