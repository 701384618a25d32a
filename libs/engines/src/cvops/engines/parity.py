"""Parity of a converted artifact with its source torch model, the accuracy gate, and the INT8
fallback that keeps the most harmful layers in float until the gate passes (or a limit)."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from cvops.engines.convert import Artifact, quantizable_nodes, to_int8
from cvops.engines.engines import Engine, OpenVinoEngine, OrtCpuEngine, TensorRTEngine
from cvops.engines.errors import ConversionError

DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of top-1 accuracy


class ParityReport(msgspec.Struct, frozen=True, kw_only=True):
    """How far an artifact's outputs are from the source model's on the same images.

    Accuracies are fractions in [0, 1]; ``accuracy_drop`` is in points (percentage points).
    ``max_rel_error`` is the largest per-image ``max|a - b| / max|a|`` (a: reference logits).
    """

    artifact: str
    engine: str
    precision: str
    n_images: int
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    top1_agreement: float
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None
    accuracy_drop: float | None = None
    excluded_nodes: list[str] = []


class GateVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """Whether an artifact may ship, with the numbers that decided it."""

    passed: bool
    reason: str
    basis: str  # "accuracy" (labelled split) or "top1-agreement" (no labels)
    drop_points: float
    max_accuracy_drop: float


class LayerSensitivity(msgspec.Struct, frozen=True, kw_only=True):
    """Output damage when only this node is quantized (relative squared error of the logits)."""

    node: str
    op_type: str
    relative_error: float
    top1_disagreement: float


class Int8Attempt(msgspec.Struct, frozen=True, kw_only=True):
    excluded_nodes: list[str]
    accuracy_drop: float | None
    top1_agreement: float
    passed: bool


class Int8Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The gated INT8 conversion: the artifact when it passed, and how it got there."""

    passed: bool
    artifact: Artifact | None
    report: ParityReport
    verdict: GateVerdict
    excluded_nodes: list[str]
    sensitivity: list[LayerSensitivity]
    attempts: list[Int8Attempt]
    reason: str


# ---------------------------------------------------------------------------------------------
# measuring


def reference_outputs(model: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of the source torch model in FP32 on the CPU: the yardstick for every artifact."""
    import torch

    model = model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
            outputs.append(model(x.to(device, torch.float32)).float().cpu().numpy())
    return np.concatenate(outputs)


def engine_outputs(engine: Engine, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of a loaded engine over ``images`` in batches."""
    outputs = [
        engine.infer(images[start : start + batch_size])
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs).astype(np.float32, copy=False)


def compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray | None = None,
    artifact: str = "",
    engine: str = "",
    precision: str = "",
    excluded_nodes: Sequence[str] = (),
) -> ParityReport:
    """Pure comparison of two logit arrays (and accuracy when labels are given)."""
    if reference.shape != candidate.shape:
        raise ConversionError(
            f"output shapes differ: reference {list(reference.shape)}, "
            f"candidate {list(candidate.shape)}"
        )
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    cand = candidate.reshape(len(candidate), -1).astype(np.float64)
    diff = np.abs(ref - cand)
    scale = np.maximum(np.abs(ref).max(axis=1), 1e-12)
    ref_top1 = ref.argmax(axis=1)
    cand_top1 = cand.argmax(axis=1)
    ref_acc = cand_acc = drop = None
    if labels is not None:
        truth = np.asarray(labels).ravel()
        ref_acc = float((ref_top1 == truth).mean())
        cand_acc = float((cand_top1 == truth).mean())
        drop = (ref_acc - cand_acc) * 100.0
    return ParityReport(
        artifact=artifact,
        engine=engine,
        precision=precision,
        n_images=len(ref),
        max_abs_error=float(diff.max()),
        mean_abs_error=float(diff.mean()),
        max_rel_error=float((diff.max(axis=1) / scale).max()),
        top1_agreement=float((ref_top1 == cand_top1).mean()),
        reference_accuracy=ref_acc,
        candidate_accuracy=cand_acc,
        accuracy_drop=drop,
        excluded_nodes=list(excluded_nodes),
    )


def measure_parity(
    reference: Any,
    candidate: Engine,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    batch_size: int = 64,
    artifact: str = "",
) -> ParityReport:
    """Compare a loaded engine with the source model (a torch module or its precomputed logits).

    Args:
        reference: the source ``torch.nn.Module`` or its logits on ``images``.
        candidate: a loaded ``Engine`` running the artifact.
        images: ``(N, C, H, W)`` float32 validation images, normalised.
        labels: ``(N,)`` class ids of ``images``; enables accuracy and the accuracy gate.
        batch_size: images per inference call.
        artifact: a name for the report (target or path).

    Returns:
        The ``ParityReport``.
    """
    ref = (
        reference
        if isinstance(reference, np.ndarray)
        else reference_outputs(reference, images, batch_size)
    )
    cand = engine_outputs(candidate, images, batch_size)
    return compare(ref, cand, labels, artifact, candidate.name, candidate.precision)


def engine_for(artifact: Artifact) -> Engine:
    """The CPU-first engine that runs an artifact's format."""
    match artifact.format:
        case "onnx":
            return OrtCpuEngine(precision=artifact.precision)
        case "openvino-ir":
            return OpenVinoEngine(precision=artifact.precision)
        case "tensorrt-plan":
            return TensorRTEngine(precision=artifact.precision)
    raise ConversionError(f"no engine runs artifact format {artifact.format!r}")


def artifact_parity(
    artifact: Artifact,
    reference: Any,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    batch_size: int = 64,
) -> ParityReport:
    """Load the artifact in its engine and measure parity with the source model."""
    engine = engine_for(artifact)
    engine.load(artifact.path)
    try:
        report = measure_parity(reference, engine, images, labels, batch_size, artifact.target)
    finally:
        engine.close()
    excluded = [n for n in artifact.details.get("nodes_excluded", "").split(",") if n]
    return msgspec.structs.replace(report, excluded_nodes=excluded)


# ---------------------------------------------------------------------------------------------
# the gate


def gate(report: ParityReport, max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> GateVerdict:
    """Pass when accuracy drops by at most ``max_accuracy_drop`` points.

    Without labels the drop is measured as top-1 disagreement with the source model (in points),
    which bounds the accuracy drop from above.
    """
    if report.accuracy_drop is not None:
        basis, drop = "accuracy", report.accuracy_drop
        numbers = (
            f"accuracy {_pct(report.candidate_accuracy)} "
            f"vs source {_pct(report.reference_accuracy)} "
            f"(drop {drop:.2f} pts, limit {max_accuracy_drop:.2f})"
        )
    else:
        basis, drop = "top1-agreement", (1.0 - report.top1_agreement) * 100.0
        numbers = (
            f"top-1 agreement {_pct(report.top1_agreement)} with the source "
            f"(disagreement {drop:.2f} pts, limit {max_accuracy_drop:.2f})"
        )
    if not math.isfinite(report.max_abs_error):
        return GateVerdict(
            passed=False,
            reason=f"{report.artifact}: outputs are not finite; {numbers}",
            basis=basis,
            drop_points=drop,
            max_accuracy_drop=max_accuracy_drop,
        )
    passed = drop <= max_accuracy_drop
    verdict = "passes" if passed else "rejected"
    return GateVerdict(
        passed=passed,
        reason=f"{report.artifact or report.engine}: {verdict}: {numbers}",
        basis=basis,
        drop_points=drop,
        max_accuracy_drop=max_accuracy_drop,
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}%"


# ---------------------------------------------------------------------------------------------
# INT8 with fallback


def layer_sensitivity(
    onnx_path: str | os.PathLike[str],
    calibration: np.ndarray,
    images: np.ndarray,
    reference: np.ndarray,
    method: str = "minmax",
    calibration_cache: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> list[LayerSensitivity]:
    """Quantize one Conv/Gemm/MatMul at a time and rank nodes by the damage done to the logits.

    Quantizing a node alone puts Q/DQ on its inputs and output, so a node next to a badly
    quantizable activation ranks high together with its neighbours.
    """
    nodes = quantizable_nodes(onnx_path)
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    energy = max(float((ref**2).mean()), 1e-12)
    ranked = []
    with tempfile.TemporaryDirectory(prefix=".sensitivity-", dir=work_dir) as work:
        probe = Path(work) / "probe.onnx"
        for node, op_type in nodes:
            to_int8(
                onnx_path,
                probe,
                calibration,
                method=method,
                nodes_to_quantize=[node],
                calibration_cache=calibration_cache,
            )
            engine = OrtCpuEngine(precision="int8")
            engine.load(probe)
            try:
                out = engine_outputs(engine, images).reshape(len(images), -1).astype(np.float64)
            finally:
                engine.close()
            error = float(((out - ref) ** 2).mean()) / energy
            if not math.isfinite(error):
                error = math.inf
            ranked.append(
                LayerSensitivity(
                    node=node,
                    op_type=op_type,
                    relative_error=error,
                    top1_disagreement=float((out.argmax(1) != ref.argmax(1)).mean()),
                )
            )
    ranked.sort(key=lambda s: (-s.relative_error, s.node))
    return ranked


def quantize_int8_gated(
    onnx_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: np.ndarray,
    reference: Any,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    method: str = "minmax",
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    max_excluded: int | None = None,
    sensitivity_images: int = 128,
) -> Int8Outcome:
    """INT8 QDQ quantization held to the accuracy gate, keeping the most harmful layers in float.

    First quantize everything. If the gate fails, rank layers by sensitivity and retry with the
    top 1, 2, ... kept in float until the gate passes or ``max_excluded`` is reached (default: a
    quarter of the quantizable layers, at least 2 and always leaving one quantized). A rejected
    model leaves no file at ``out_path``.

    Args:
        onnx_path: the FP32 ONNX model.
        out_path: where the accepted INT8 model goes.
        calibration: ``(N, C, H, W)`` float32 calibration images, normalised.
        reference: the source torch module, or its logits on ``images``.
        images: validation images for parity.
        labels: their labels (gate on accuracy); without them the gate uses top-1 agreement.
        method: ``minmax`` | ``entropy`` | ``percentile``.
        max_accuracy_drop: the gate's limit in points.
        max_excluded: the most layers kept in float.
        sensitivity_images: validation images used to rank layers.

    Returns:
        An ``Int8Outcome``: passed or not, the artifact, the final parity report and verdict, the
        excluded layers, the sensitivity ranking and every attempt.
    """
    ref = reference if isinstance(reference, np.ndarray) else reference_outputs(reference, images)
    dest = Path(out_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts: list[Int8Attempt] = []
    with tempfile.TemporaryDirectory(prefix=".int8-gate-", dir=dest.parent) as work:
        cache = Path(work) / "calibration.json"
        candidate = Path(work) / dest.name

        def attempt(excluded: list[str]) -> tuple[Artifact, ParityReport, GateVerdict]:
            art = to_int8(
                onnx_path,
                candidate,
                calibration,
                method=method,
                nodes_to_exclude=excluded,
                calibration_cache=cache,
            )
            report = artifact_parity(art, ref, images, labels)
            verdict = gate(report, max_accuracy_drop)
            attempts.append(
                Int8Attempt(
                    excluded_nodes=list(excluded),
                    accuracy_drop=report.accuracy_drop,
                    top1_agreement=report.top1_agreement,
                    passed=verdict.passed,
                )
            )
            return art, report, verdict

        art, report, verdict = attempt([])
        sensitivity: list[LayerSensitivity] = []
        excluded: list[str] = []
        if not verdict.passed:
            subset = slice(0, min(sensitivity_images, len(images)))
            sensitivity = layer_sensitivity(
                onnx_path, calibration, images[subset], ref[subset], method, cache, work
            )
            n_nodes = len(sensitivity)
            limit = max_excluded if max_excluded is not None else max(2, math.ceil(n_nodes / 4))
            limit = max(0, min(limit, n_nodes - 1))
            for layer in sensitivity[:limit]:
                excluded.append(layer.node)
                art, report, verdict = attempt(excluded)
                if verdict.passed:
                    break

        if verdict.passed:
            os.replace(candidate, dest)
            art = msgspec.structs.replace(art, path=str(dest), files=[str(dest)])
            reason = verdict.reason
            if excluded:
                reason += f"; kept in float: {', '.join(excluded)}"
            return Int8Outcome(
                passed=True,
                artifact=art,
                report=report,
                verdict=verdict,
                excluded_nodes=excluded,
                sensitivity=sensitivity,
                attempts=attempts,
                reason=reason,
            )

    tried = f"{len(excluded)} most sensitive layer(s) kept in float" if excluded else "no retry"
    return Int8Outcome(
        passed=False,
        artifact=None,
        report=report,
        verdict=verdict,
        excluded_nodes=excluded,
        sensitivity=sensitivity,
        attempts=attempts,
        reason=f"int8 rejected after {len(attempts)} attempt(s) ({tried}): {verdict.reason}",
    )
