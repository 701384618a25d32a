"""The converter on a real nats-server, as a subprocess: a digits model to every CPU target
within tolerance, the INT8 gate against a broken calibration set, an op ONNX cannot export,
and images that do not fit the model."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from cvops.contracts.conversion import (
    ArtifactProduced,
    ArtifactRejected,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    TargetUnavailable,
)
from cvops.core import ArtifactStore, Bus
from cvops.testing.converter import (
    TrainedModel,
    publish_dataset,
    publish_model_version,
    stamp,
    watch_job,
)

pytestmark = pytest.mark.usefixtures("converter")

CPU_TARGETS = ["onnx", "fp16", "int8", "openvino", "openvino-int8"]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _ended(job) -> bool:  # type: ignore[no-untyped-def]
    return bool(job.of(ConversionCompleted) or job.of(ConversionFailed))


async def _model(bus: Bus, tmp_path: Path, trained: TrainedModel, digits) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    dataset = _name("digits")
    await publish_dataset(bus, tmp_path, dataset, digits)
    model = _name("cnn")
    await publish_model_version(
        bus, trained.weights, model, format="safetensors", architecture=trained.arch,
        input_shape=[trained.channels, *trained.image_size], num_classes=trained.num_classes,
        dataset=dataset, hyperparameters=trained.hyperparameters,
    )  # fmt: skip
    return model, dataset


def _request(model: str, **fields) -> ConversionRequested:  # type: ignore[no-untyped-def]
    return ConversionRequested(
        **stamp().envelope("request"), job_id=_name("conv"), model_name=model, version=1, **fields
    )


async def test_a_digits_model_converts_to_every_cpu_target_within_tolerance(
    bus: Bus, tmp_path: Path, trained: TrainedModel, digits, converter: subprocess.Popen[bytes]
) -> None:
    model, dataset = await _model(bus, tmp_path, trained, digits)
    request = _request(model)  # every target: TensorRT says why it cannot run here
    async with watch_job(bus, request.job_id) as job:
        await bus.publish(request)
        await job.wait(_ended, timeout=150)
    assert not job.of(ConversionFailed), job.of(ConversionFailed)
    (done,) = job.of(ConversionCompleted)
    produced = {e.target: e for e in job.of(ArtifactProduced)}
    rejected = {e.target: e for e in job.of(ArtifactRejected)}
    unavailable = {e.target: e for e in job.of(TargetUnavailable)}
    # one result per target, and the completion lists each in its place
    assert sorted([*produced, *rejected, *unavailable]) == sorted(request.targets)
    assert set(done.produced) == set(produced) and set(done.unavailable) == set(unavailable)
    assert {"onnx", "fp16", "int8", "openvino"} <= set(produced), {
        t: e.reason for t, e in rejected.items()
    }
    for target in ("tensorrt-fp16", "tensorrt-int8"):
        assert unavailable[target].reason.startswith("unavailable: ")
    (started,) = job.of(ConversionStarted)
    assert started.dataset == dataset and started.normalization_source == "lineage"
    assert started.input_shape == [-1, 1, 16, 16]

    onnx = produced["onnx"].parity
    assert onnx.max_abs_error < 1e-4 and onnx.top1_agreement == 1.0 and onnx.reference == "torch"
    assert produced["openvino"].parity.max_abs_error < 1e-3
    assert produced["fp16"].parity.top1_agreement >= 0.99
    for e in produced.values():  # every accepted artifact passed the gate with its numbers
        assert e.gate.passed and e.parity.accuracy_drop <= request.max_accuracy_drop
        assert e.parity.n_images == len(digits["val_idx"])
        assert e.source.sha256 == trained_sha(trained) and e.dataset == dataset
        assert e.normalization == trained.hyperparameters["normalization"]
    assert produced["int8"].calibration == "minmax"
    assert produced["openvino"].format == "openvino-ir"
    assert [c.filename for c in produced["openvino"].companions] == ["model.bin"]
    if "openvino-int8" in rejected:  # NNCF has no float fallback: the gate says why, with numbers
        assert "drop" in rejected["openvino-int8"].reason

    # the stored ONNX artifact is the model: same logits as the torch source
    store = ArtifactStore(bus)
    path = await store.get_file(produced["onnx"].artifact.sha256, tmp_path / "model.onnx")
    import onnxruntime as ort

    from cvops.vision.data import Normalization, preprocess
    from cvops.vision.zoo import load_weights

    images = preprocess(
        digits["x"][digits["val_idx"][:16]],
        Normalization.from_dict(trained.hyperparameters["normalization"]),
    )
    logits = ort.InferenceSession(str(path)).run(None, {"input": images})[0]
    torch_model = load_weights(trained.arch, trained.weights)
    with torch.inference_mode():
        expected = torch_model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def trained_sha(trained: TrainedModel) -> str:
    import hashlib

    return hashlib.sha256(trained.weights.read_bytes()).hexdigest()


async def test_int8_gate_rejects_a_calibration_set_of_blank_images(
    bus: Bus, tmp_path: Path, trained: TrainedModel, digits
) -> None:
    model, _ = await _model(bus, tmp_path, trained, digits)
    # the same digits, except that every calibration image is blank (the validation split is
    # untouched): activation ranges calibrated on them clip every real image
    broken = dict(digits, x=digits["x"].copy())
    broken["x"][broken["calib_idx"]] = 0
    dataset = _name("digits-blank-calib")
    await publish_dataset(bus, tmp_path, dataset, broken)
    strict = _request(model, targets=["int8"], dataset=dataset, int8_max_float_layers=0)
    fallback = _request(model, targets=["int8"], dataset=dataset)
    async with watch_job(bus, strict.job_id) as a, watch_job(bus, fallback.job_id) as b:
        await bus.publish(strict)
        await bus.publish(fallback)
        await a.wait(_ended, timeout=90)
        await b.wait(_ended, timeout=90)
    (refused,) = a.of(ArtifactRejected)
    assert refused.stage == "gate" and not refused.gate.passed
    assert refused.parity.accuracy_drop > 10.0  # points
    assert "rejected" in refused.reason and "drop" in refused.reason
    assert a.of(ConversionCompleted)[0].rejected == ["int8"]
    # with the fallback allowed the gate still never waves it through silently: either some
    # layers had to stay in float, or it is rejected after the retries, with the numbers
    rescued = b.of(ArtifactProduced)
    if rescued:
        assert rescued[0].excluded_layers and rescued[0].gate.passed
    else:
        (again,) = b.of(ArtifactRejected)
        assert len(again.attempts) > 1 and again.attempts[0].accuracy_drop > 10.0


class _KthPool(torch.nn.Module):
    """A conv and a k-th value pooling: torch runs it, ONNX has no kthvalue."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 10, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.kthvalue(self.conv(x).flatten(2), 3, dim=2)[0]


async def test_an_op_onnx_cannot_export_fails_the_job_naming_it(
    bus: Bus, tmp_path: Path, digits
) -> None:
    dataset = _name("digits")
    await publish_dataset(bus, tmp_path, dataset, digits)
    path = tmp_path / "kth.pt"
    torch.jit.save(torch.jit.trace(_KthPool().eval(), torch.zeros(2, 1, 16, 16)), str(path))
    model = _name("kth")
    await publish_model_version(
        bus, path, model, format="torchscript", input_shape=[1, 16, 16], num_classes=10,
        dataset=dataset,
    )  # fmt: skip
    request = _request(model, targets=["onnx", "int8"])
    async with watch_job(bus, request.job_id) as job:
        await bus.publish(request)
        await job.wait(_ended, timeout=90)
    (failed,) = job.of(ConversionFailed)
    assert failed.op == "aten::kthvalue" and "aten::kthvalue" in failed.reason
    assert not job.of(ArtifactProduced) and not job.of(ConversionCompleted)


async def test_images_that_do_not_fit_the_model_fail_the_job_with_both_shapes(
    bus: Bus, tmp_path: Path, trained: TrainedModel, digits
) -> None:
    from cvops.vision.data import synthetic_arrays

    model, _ = await _model(bus, tmp_path, trained, digits)
    rgb = _name("rgb")
    await publish_dataset(bus, tmp_path, rgb, synthetic_arrays(60, 10, 16, 3, seed=0))
    request = _request(model, targets=["int8"], dataset=rgb)
    async with watch_job(bus, request.job_id) as job:
        await bus.publish(request)
        await job.wait(_ended, timeout=60)
    (failed,) = job.of(ConversionFailed)
    assert "3x16x16" in failed.reason and "1x16x16" in failed.reason, failed.reason
