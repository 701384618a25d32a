"""Helpers for tests of the benchmarker (and cross-service scenarios): conversion artifacts made
in-process with ``cvops.engines`` and announced the way the converter would, with their
measured parity."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cvops.contracts import Stamp
from cvops.contracts.conversion import ArtifactProduced, GateResult, ParityNumbers
from cvops.contracts.registry import ModelVersionAdded
from cvops.core import ArtifactStore, Bus


@dataclass(frozen=True)
class Converted:
    """One converted artifact on disk with its parity numbers."""

    target: str
    format: str
    precision: str
    files: list[Path]
    parity: ParityNumbers
    gate: GateResult


def convert_in_process(
    weights: Path,
    arch: str,
    arrays: dict[str, np.ndarray],
    normalization: dict[str, list[float]],
    directory: Path,
    targets: tuple[str, ...] = ("onnx", "fp16", "int8", "openvino"),
) -> list[Converted]:
    """Export a zoo model and convert it to ``targets``, measuring parity on the val split."""
    import torch

    from cvops.engines import (
        Unavailable,
        artifact_parity,
        convert,
        export_onnx,
        gate,
        reference_outputs,
    )
    from cvops.vision.data import CanonicalDataset, Normalization, preprocess
    from cvops.vision.zoo import load_weights

    ds = CanonicalDataset.from_arrays(arrays)
    norm = Normalization.from_dict(normalization)
    model = load_weights(arch, weights)
    x_val, y_val = ds.split("val")
    val = preprocess(x_val, norm)
    calibration = preprocess(ds.split("calib")[0], norm)
    base = export_onnx(model, torch.zeros(1, ds.channels, *ds.image_size), directory / "base.onnx")
    reference = reference_outputs(model, val)
    out = []
    for target in targets:
        artifact = convert(base.path, target, directory, calibration=calibration)
        if isinstance(artifact, Unavailable):
            raise RuntimeError(f"{target} cannot be produced here: {artifact.reason}")
        report = artifact_parity(artifact, reference, val, y_val)
        verdict = gate(report)
        out.append(
            Converted(
                target=target,
                format=artifact.format,
                precision=artifact.precision,
                files=[Path(f) for f in artifact.files],
                parity=ParityNumbers(
                    n_images=report.n_images,
                    max_abs_error=report.max_abs_error,
                    mean_abs_error=report.mean_abs_error,
                    max_rel_error=report.max_rel_error,
                    top1_agreement=report.top1_agreement,
                    reference_accuracy=report.reference_accuracy,
                    candidate_accuracy=report.candidate_accuracy,
                    accuracy_drop=report.accuracy_drop,
                ),
                gate=GateResult(
                    passed=verdict.passed,
                    reason=verdict.reason,
                    basis=verdict.basis,
                    drop_points=verdict.drop_points,
                    max_accuracy_drop=verdict.max_accuracy_drop,
                ),
            )
        )
    return out


async def publish_conversion(
    bus: Bus,
    version: ModelVersionAdded,
    converted: list[Converted],
    *,
    job_id: str,
    dataset: str,
    input_shape: list[int],
    normalization: dict[str, list[float]],
    stamp: Stamp,
) -> list[ArtifactProduced]:
    """Store the artifacts and announce each as produced (what the converter does)."""
    store = ArtifactStore(bus)
    events = []
    for c in converted:
        refs = [await store.put_file(f, filename=f.name) for f in c.files]
        fields: dict[str, Any] = {
            "job_id": job_id,
            "model_name": version.model_name,
            "version": version.version,
        }
        event = ArtifactProduced(
            **stamp.envelope(f"result/{c.target}"),
            **fields,
            target=c.target,  # type: ignore[arg-type]
            artifact=refs[0],
            companions=refs[1:],
            format=c.format,
            precision=c.precision,
            parity=c.parity,
            gate=c.gate,
            source=version.artifact,
            dataset=dataset,
            dataset_version=1,
            input_shape=[-1, *input_shape],
            normalization=normalization,
        )
        await bus.publish(event)
        events.append(event)
    return events


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time (by PID: the process a test started)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def log_tail(path: Path) -> str:
    """The end of a service's log (for assertion messages)."""
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""
