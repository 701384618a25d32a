"""The model-repository generator: every config.pbtxt parses as Triton's ModelConfig."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cvops.contracts import TensorSpec
from cvops.inference_router.repository import (
    ModelEntry,
    RepositoryError,
    config_pbtxt,
    install_version,
    kserve_dtype,
    onnx_io,
    parse_config,
    prune_versions,
    write_config,
)

IMAGE = [TensorSpec(name="input", shape=[-1, 3, 224, 224], dtype="float32")]
LOGITS = [TensorSpec(name="logits", shape=[-1, 1000], dtype="FP32")]


def entry(**overrides: object) -> ModelEntry:
    values: dict[str, object] = {
        "name": "resnet",
        "backend": "python",
        "versions": [2, 1],
        "inputs": IMAGE,
        "outputs": LOGITS,
        "max_batch_size": 16,
        "preferred_batch_sizes": [4, 8, 32],
        "max_queue_delay_us": 250,
        "instance_count": 2,
    }
    values.update(overrides)
    return ModelEntry(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["python", "onnxruntime", "tensorrt"])
def test_every_backend_writes_a_config_that_parses_as_model_config(backend: str) -> None:
    text = config_pbtxt(entry(backend=backend, gpu=backend != "python"))
    config = mc.ModelConfig()
    text_format.Parse(text, config)  # unknown fields would raise
    assert config.backend == backend
    assert config.max_batch_size == 16
    assert list(config.version_policy.specific.versions) == [1, 2]
    assert list(config.input[0].dims) == [3, 224, 224]
    assert config.input[0].data_type == mc.TYPE_FP32
    assert list(config.output[0].dims) == [1000]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]  # 32 > max batch
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    group = config.instance_group[0]
    assert group.count == 2
    if backend == "python":
        assert group.kind == mc.ModelInstanceGroup.KIND_CPU
        assert config.parameters["EXECUTION_PROVIDERS"].string_value == "CPUExecutionProvider"
    else:
        assert group.kind == mc.ModelInstanceGroup.KIND_GPU
        expected = "model.plan" if backend == "tensorrt" else "model.onnx"
        assert config.default_model_filename == expected


@pytest.mark.parametrize(
    ("backend", "key"), [("python", "INTRA_OP_THREADS"), ("onnxruntime", "intra_op_thread_count")]
)
def test_engine_threads_reach_the_backend_that_runs_the_engine(backend: str, key: str) -> None:
    bounded = parse_config(config_pbtxt(entry(backend=backend, intra_op_threads=4)))
    assert bounded.parameters[key].string_value == "4"
    free = parse_config(config_pbtxt(entry(backend=backend)))
    assert free.parameters[key].string_value in ("", "0")  # the runtime's own choice


def test_onnxruntime_with_tensorrt_provider_asks_for_the_tensorrt_accelerator() -> None:
    e = entry(
        backend="onnxruntime",
        gpu=True,
        execution_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    )
    config = parse_config(config_pbtxt(e))
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accel] == ["tensorrt"]


def test_a_fixed_batch_dimension_turns_batching_off() -> None:
    fixed = [TensorSpec(name="input", shape=[1, 3, 32, 32], dtype="float32")]
    config = parse_config(config_pbtxt(entry(inputs=fixed, outputs=[LOGITS[0]])))
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1, 3, 32, 32]
    assert not config.HasField("dynamic_batching")


def test_a_config_with_an_unknown_field_does_not_parse() -> None:
    with pytest.raises(text_format.ParseError):
        parse_config(config_pbtxt(entry()) + "\nmax_batch: 3\n")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("float32", "FP32"), ("FLOAT", "FP32"), ("TYPE_FP16", "FP16"), ("int64", "INT64")],
)
def test_element_type_names_are_normalised(name: str, expected: str) -> None:
    assert kserve_dtype(name) == expected


def test_an_unknown_element_type_is_refused() -> None:
    with pytest.raises(RepositoryError):
        kserve_dtype("complex128")


def test_onnx_io_reads_names_shapes_and_types(onnx_models: dict[str, Path]) -> None:
    inputs, outputs = onnx_io(onnx_models["v1"])
    assert inputs == [TensorSpec(name="input", shape=[-1, 3, 32, 32], dtype="FP32")]
    assert outputs == [TensorSpec(name="logits", shape=[-1, 10], dtype="FP32")]
    with pytest.raises(RepositoryError):
        onnx_io(onnx_models["corrupt"])


def test_versions_are_installed_atomically_and_pruned(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    model_dir = tmp_path / "repo" / "m"
    install_version(onnx_models["v1"], model_dir / "1", "python")
    install_version(onnx_models["v2"], model_dir / "2", "python")
    write_config(model_dir, entry(name="m"))
    assert (model_dir / "1" / "model.py").exists() and (model_dir / "2" / "model.onnx").exists()
    assert parse_config((model_dir / "config.pbtxt").read_text()).name == "m"
    prune_versions(model_dir, {2})
    assert not (model_dir / "1").exists() and (model_dir / "2").exists()
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".")] == []


def test_a_zipped_model_with_external_data_is_unpacked(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(onnx_models["v1"], "net.onnx")
        zf.writestr("net.onnx.data", b"weights")
    model = install_version(archive, tmp_path / "m" / "1", "onnxruntime")
    assert model.name == "model.onnx" and (model.parent / "net.onnx.data").exists()
    assert not (model.parent / "model.py").exists()


def test_an_archive_escaping_its_directory_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../evil.onnx", b"x")
    with pytest.raises(RepositoryError):
        install_version(archive, tmp_path / "m" / "1", "python")
    assert not (tmp_path / "m" / "1").exists()
    assert not (tmp_path / "evil.onnx").exists()


@pytest.mark.parametrize(
    ("backend", "filename", "kind"),
    [
        ("openvino", "model.xml", mc.ModelInstanceGroup.KIND_CPU),
        ("tensorrt", "model.plan", mc.ModelInstanceGroup.KIND_GPU),
    ],
)
def test_native_openvino_and_tensorrt_plan_configs(backend: str, filename: str, kind: int) -> None:
    config = parse_config(config_pbtxt(entry(backend=backend, gpu=True)))
    assert (config.backend, config.default_model_filename) == (backend, filename)
    assert config.instance_group[0].kind == kind
    if backend == "tensorrt":
        assert config.platform == "tensorrt_plan"


def test_an_int8_arm_on_the_tensorrt_accelerator_asks_for_int8() -> None:
    e = entry(
        backend="onnxruntime",
        gpu=True,
        precision="int8",
        execution_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"],
    )
    accel = parse_config(config_pbtxt(e)).optimization.execution_accelerators
    assert accel.gpu_execution_accelerator[0].parameters["precision_mode"] == "INT8"


def test_an_openvino_ir_is_laid_out_with_its_weights_and_its_serving_settings(
    tmp_path: Path,
) -> None:
    xml, weights = tmp_path / "net.xml", tmp_path / "net.bin"
    xml.write_text("<net/>")
    weights.write_bytes(b"w")
    serving = {"engine": "openvino-cpu", "format": "openvino-ir"}
    model = install_version(
        xml, tmp_path / "m" / "7", "python", "openvino-ir", [(weights, "net.bin")], serving
    )
    assert model.name == "model.xml" and (model.parent / "model.bin").read_bytes() == b"w"
    assert json.loads((model.parent / "serving.json").read_text()) == serving
    assert (model.parent / "model.py").exists()
    with pytest.raises(RepositoryError, match="unsafe companion"):
        install_version(xml, tmp_path / "m" / "8", "python", "onnx", [(weights, "model.py")])
    assert not (tmp_path / "m" / "8").exists()
    with pytest.raises(RepositoryError, match="cannot serve artifacts of format"):
        install_version(xml, tmp_path / "m" / "9", "python", "tflite")
