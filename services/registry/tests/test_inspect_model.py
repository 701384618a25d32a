"""Model inspection: each safe format gives its facts; pickles and tampered archives never load."""

from __future__ import annotations

from pathlib import Path

import pytest

from cvops.registry.inspect_model import ModelHints, inspect_model
from cvops.registry.safety import Refused, looks_like_pickle, pickle_globals
from cvops.testing import registry as samples


def _inspect(tmp_path: Path, data: bytes, **hints: object) -> object:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return inspect_model(path, ModelHints(**hints), max_expanded_bytes=1 << 30)  # type: ignore[arg-type]


def _refusal(tmp_path: Path, data: bytes, **hints: object) -> str:
    with pytest.raises(Refused) as err:
        _inspect(tmp_path, data, **hints)
    return str(err.value)


def test_onnx_gives_io_specs_parameter_count_and_opset(tmp_path: Path) -> None:
    data = samples.onnx_model(classes=3, features=4)
    facts = _inspect(tmp_path, data)
    assert facts.format == "onnx"
    assert [(s.name, s.shape, s.dtype) for s in facts.inputs] == [("input", [-1, 4], "float32")]
    assert [(s.name, s.shape, s.dtype) for s in facts.outputs] == [("logits", [-1, 3], "float32")]
    assert facts.parameter_count == 4 * 3 + 3
    assert facts.opset == 17
    assert facts.num_classes == 3
    assert facts.size == len(data)


def test_onnx_with_external_weights_is_refused(tmp_path: Path) -> None:
    import onnx

    model = onnx.load_from_string(samples.onnx_model(classes=64, features=64))
    onnx.save(
        model, str(tmp_path / "m.onnx"), save_as_external_data=True, size_threshold=0,
        location="m.onnx.data",
    )  # fmt: skip
    reason = _refusal(tmp_path, (tmp_path / "m.onnx").read_bytes())
    assert "external data" in reason


def test_garbage_that_starts_like_protobuf_is_refused(tmp_path: Path) -> None:
    assert "ONNX" in _refusal(tmp_path, b"\x08\x07" + b"\xff" * 100)


def test_torchscript_is_loaded_with_hints_for_shapes(tmp_path: Path) -> None:
    facts = _inspect(tmp_path, samples.torchscript_model(), input_shape=[1, 8, 8], num_classes=3)
    assert facts.format == "torchscript"
    assert facts.parameter_count == (2 * 1 * 3 * 3 + 2) + (2 * 3 + 3)
    assert facts.inputs[0].shape == [-1, 1, 8, 8]
    assert facts.outputs[0].shape == [-1, 3]


def test_exported_program_keeps_the_dynamic_batch(tmp_path: Path) -> None:
    facts = _inspect(tmp_path, samples.exported_program(), architecture="tiny-cnn")
    assert facts.format == "torch_export"
    assert [(s.shape, s.dtype) for s in facts.inputs] == [([-1, 1, 8, 8], "float32")]
    assert facts.outputs[0].shape == [-1, 3]
    assert facts.parameter_count == 29
    assert facts.num_classes == 3
    assert facts.architecture == "tiny-cnn"


def test_safetensors_needs_an_architecture_name(tmp_path: Path) -> None:
    data = samples.safetensors_weights()
    facts = _inspect(tmp_path, data, architecture="mlp", num_classes=3, input_shape=[4])
    assert (facts.format, facts.parameter_count, facts.architecture) == ("safetensors", 67, "mlp")
    assert facts.outputs[0].shape == [-1, 3]
    assert "architecture" in _refusal(tmp_path, data)
    assert "architecture" in _refusal(tmp_path, data, architecture="   ")
    assert "not a valid name" in _refusal(tmp_path, data, architecture="../../etc")


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    data = samples.malicious_pickle(marker, protocol=protocol)
    assert "pickle" in _refusal(tmp_path, data)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (samples.torch_save_checkpoint, "torch.save"),
        (samples.torchscript_with_pickle, "would import"),
        (samples.exported_program_with_code, "shape expression"),
        (samples.exported_program_with_pickled_weight, "pickle"),
    ],
)
def test_archives_smuggling_code_are_refused_and_never_run(
    tmp_path: Path, build: object, expected: str
) -> None:
    marker = tmp_path / "pwned"
    reason = _refusal(tmp_path, build(marker))  # type: ignore[operator]
    assert expected in reason
    assert not marker.exists()


def test_exported_program_with_compiled_code_is_refused(tmp_path: Path) -> None:
    assert "aotinductor" in _refusal(tmp_path, samples.exported_program_with_compiled_code())


def test_unknown_bytes_empty_files_and_unsafe_zips_are_refused(tmp_path: Path) -> None:
    assert "unrecognised model format" in _refusal(tmp_path, b"GIF89a not a model")
    assert "empty" in _refusal(tmp_path, b"")
    assert "unsafe path" in _refusal(tmp_path, samples.zip_slip())


def test_pickle_scanner_sees_globals_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in (0, 1, 2, 3, 4, 5):
        data = samples.malicious_pickle(marker, protocol=protocol)
        assert pickle_globals(data) in ({"builtins.open"}, {"io.open"}, {"__builtin__.open"})
        assert looks_like_pickle(data[:64]) or protocol == 1
    assert not marker.exists()
