"""Export and every CPU conversion of a briefly trained tiny CNN, held to parity tolerances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from cvops.engines import (
    CalibrationError,
    ExportError,
    Unavailable,
    artifact_parity,
    convert,
    describe_onnx,
    export_onnx,
    gate,
    quantize_int8_gated,
    reference_outputs,
)


@torch.library.custom_op("cvops_engines_test::wobble", mutates_args=())
def wobble(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@wobble.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class WobbleNet(nn.Module):
    """A model whose custom op has no ONNX translation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return wobble(self.conv(x)).mean(dim=(2, 3))


def test_export_writes_one_checked_file_with_a_dynamic_batch(task, tmp_path):
    model = onnx.load(str(task.onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert [p.name for p in task.onnx_path.parent.iterdir()] == [task.onnx_path.name]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 16, 16]
    assert next(o.version for o in model.opset_import if o.domain == "") == 18
    assert any(v.name for v in model.graph.value_info)  # shape inference ran
    described = describe_onnx(task.onnx_path)
    assert described.input_shape == ["batch", 3, 16, 16] and described.dynamic_batch
    assert described.output_shape == ["batch", 4] and described.opset == 18


def test_export_of_an_unsupported_op_names_it(tmp_path):
    target = tmp_path / "wobble.onnx"
    with pytest.raises(ExportError) as caught:
        export_onnx(WobbleNet(), torch.randn(1, 3, 8, 8), target)
    assert caught.value.op == "cvops_engines_test::wobble"
    assert "cvops_engines_test::wobble" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_fp32_onnx_matches_torch(task, tmp_path):
    artifact = convert(task.onnx_path, "onnx", tmp_path)
    report = artifact_parity(artifact, task.model, task.val_images, task.val_labels)
    assert report.max_abs_error < 1e-4
    assert report.top1_agreement == 1.0
    assert report.reference_accuracy > 0.9  # the task was learned
    assert gate(report).passed


def test_fp16_onnx_agrees_on_top1(task, tmp_path):
    artifact = convert(task.onnx_path, "fp16", tmp_path)
    model = onnx.load(artifact.path)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = artifact_parity(artifact, task.model, task.val_images, task.val_labels)
    assert report.top1_agreement >= 0.98
    assert report.max_abs_error < 0.05


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_passes_the_gate(task, tmp_path, method):
    outcome = quantize_int8_gated(
        task.onnx_path,
        tmp_path / "int8.onnx",
        task.calibration,
        task.model,
        task.val_images,
        task.val_labels,
        method=method,
    )
    assert outcome.passed, outcome.reason
    assert outcome.report.accuracy_drop <= 1.0
    model = onnx.load(outcome.artifact.path)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert outcome.artifact.details["calibration_method"] == method


def test_broken_calibration_fails_the_gate(task, tmp_path):
    out = tmp_path / "int8.onnx"
    outcome = quantize_int8_gated(
        task.onnx_path,
        out,
        task.calibration * 1000.0,
        task.model,
        task.val_images,
        task.val_labels,
    )
    assert not outcome.passed
    assert outcome.report.accuracy_drop > 1.0
    assert "rejected" in outcome.reason and "drop" in outcome.reason
    assert len(outcome.attempts) > 1 and outcome.sensitivity  # the fallback was tried
    assert not out.exists()


def test_int8_fallback_keeps_the_harmful_layers_in_float(task, tmp_path):
    # One extra channel after the first conv carries a huge constant that the second conv ignores:
    # harmless in float, but its per-tensor int8 scale wipes out the real signal.
    model = _with_activation_outlier(task.model)
    reference = reference_outputs(model, task.val_images)
    np.testing.assert_allclose(reference, reference_outputs(task.model, task.val_images), atol=1e-3)
    onnx_path = tmp_path / "outlier.onnx"
    export_onnx(model, torch.from_numpy(task.val_images[:2]), onnx_path)
    outcome = quantize_int8_gated(
        onnx_path,
        tmp_path / "int8.onnx",
        task.calibration,
        reference,
        task.val_images,
        task.val_labels,
    )
    assert outcome.attempts[0].passed is False
    assert outcome.passed, outcome.reason
    assert 1 <= len(outcome.excluded_nodes) <= 2
    assert outcome.report.excluded_nodes == outcome.excluded_nodes
    assert "kept in float" in outcome.reason
    top = {s.node for s in outcome.sensitivity[:2]}
    assert set(outcome.excluded_nodes) <= top


def test_calibration_that_does_not_fit_the_model_is_refused(task, tmp_path):
    wrong = np.zeros((8, 3, 32, 32), dtype=np.float32)
    with pytest.raises(CalibrationError, match=r"\[3, 32, 32\].*\[3, 16, 16\]"):
        convert(task.onnx_path, "int8", tmp_path, calibration=wrong)
    assert not (tmp_path / "model.int8.onnx").exists()


@pytest.mark.parametrize(("target", "abs_tol"), [("openvino", 1e-4), ("openvino-fp16", 0.05)])
def test_openvino_ir_matches_torch(task, tmp_path, target, abs_tol):
    artifact = convert(task.onnx_path, target, tmp_path)
    assert artifact.format == "openvino-ir"
    assert all(Path(f).exists() for f in artifact.files)
    report = artifact_parity(artifact, task.model, task.val_images, task.val_labels)
    assert report.max_abs_error < abs_tol
    assert report.top1_agreement >= 0.98


def test_openvino_int8_or_says_why(task, tmp_path):
    result = convert(task.onnx_path, "openvino-int8", tmp_path, calibration=task.calibration)
    if isinstance(result, Unavailable):
        assert result.reason.startswith("openvino-int8:")
        return
    report = artifact_parity(result, task.model, task.val_images, task.val_labels)
    assert report.accuracy_drop <= 1.0


@pytest.mark.parametrize("target", ["tensorrt-fp16", "tensorrt-int8"])
def test_tensorrt_is_unavailable_without_its_package(task, tmp_path, target):
    pytest.importorskip("cvops.engines")
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here")
    except ImportError:
        pass
    result = convert(task.onnx_path, target, tmp_path, calibration=task.calibration)
    assert result == Unavailable("tensorrt: python package not importable", target=target)


def _with_activation_outlier(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model).eval()
    conv1, bn1 = clone.features[0], clone.features[1]
    conv2 = clone.features[3]
    # fold BN1 into conv1 so that the outlier channel can be appended
    scale = bn1.weight / torch.sqrt(bn1.running_var + bn1.eps)
    weight = conv1.weight * scale[:, None, None, None]
    bias = (conv1.bias - bn1.running_mean) * scale + bn1.bias
    wide = nn.Conv2d(conv1.in_channels, conv1.out_channels + 1, 3, padding=1)
    wider = nn.Conv2d(conv2.in_channels + 1, conv2.out_channels, 3, stride=2, padding=1)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:-1] = weight
        wide.bias[:-1] = bias
        wide.bias[-1] = 1e4
        wider.weight.zero_()
        wider.weight[:, :-1] = conv2.weight
        wider.bias.copy_(conv2.bias)
    clone.features[0] = wide
    clone.features[1] = nn.Identity()
    clone.features[3] = wider
    return clone.eval()
