"""Sweep time: how long the default `cvops bench` sweep of a small model takes, and whether the
early-stopping sweep picks what a long run picks.

A small CNN (resnet-mini at 32x32) is trained briefly, exported to ONNX, quantized to INT8 (gated)
and converted to OpenVINO IR: the four CPU targets the benchmarker sweeps for such a model
(torch eager, ONNX Runtime FP32 and INT8, OpenVINO), 9 cells each. The same sweep then runs
twice: with the harness defaults (each cell stops once its p95's 95% CI is within ±5%, else at
the cap) and as the anchor "long run" (every cell measured for the full long cap, no early stop).
Both durations, both picks (default SLA: accuracy drop <= 1 point) and whether they agree are
printed.

    python bench/sweep_time.py [--json] [--long-cap 5] [--order new,long]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_nets import build, separable_images, train_briefly

from cvops.contracts.conversion import DEFAULT_MAX_ACCURACY_DROP
from cvops.engines import (
    BenchmarkRow,
    BenchTarget,
    SweepConfig,
    convert,
    create_engine,
    export_onnx,
    host_fingerprint,
    quantize_int8_gated,
    recommend,
    reference_outputs,
    run_sweep,
)

NUM_CLASSES = 10
SIZE = 32
TARGET_S = 60.0  # the budget for the default sweep of a small model


def prepare(work: Path) -> tuple[list[tuple[str, str, object, str]], np.ndarray, np.ndarray]:
    """(engine, precision, source, artifact) per target, validation images and labels."""
    model, _ = build("resnet-mini", NUM_CLASSES, SIZE)
    x_train, y_train = separable_images(1024, SIZE, NUM_CLASSES, seed=1)
    calibration, _ = separable_images(64, SIZE, NUM_CLASSES, seed=2)
    x_val, y_val = separable_images(200, SIZE, NUM_CLASSES, seed=3)
    model = train_briefly(model, x_train, y_train, steps=80, batch=64)
    reference = reference_outputs(model, x_val, batch_size=32)
    export = export_onnx(model, torch.from_numpy(x_val[:2]), work / "model.onnx")
    int8 = quantize_int8_gated(
        export.path, work / "model.int8.onnx", calibration, reference, x_val, y_val
    )
    ir = convert(export.path, "openvino", work)
    specs: list[tuple[str, str, object, str]] = [
        ("torch-eager", "fp32", model, "source"),
        ("onnxruntime-cpu", "fp32", str(export.path), "onnx"),
        ("openvino-cpu", "fp32", str(ir.path), "openvino"),
    ]
    if int8.artifact is not None:
        specs.append(("onnxruntime-cpu", "int8", str(int8.artifact.path), "int8"))
    else:
        log(f"int8 rejected: {int8.reason}")
    return specs, x_val, y_val


def sweep(
    specs: list[tuple[str, str, object, str]],
    images: np.ndarray,
    labels: np.ndarray,
    config: SweepConfig,
) -> dict:
    """One full sweep as the benchmarker runs it (fresh engines, accuracy per engine)."""
    targets = []
    for name, precision, source, artifact in specs:
        engine = create_engine(name, precision=precision)
        src = copy.deepcopy(source) if isinstance(source, torch.nn.Module) else source
        targets.append(BenchTarget(engine=engine, source=src, artifact=artifact))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    rows = run_sweep(targets, images, labels, config)
    elapsed = time.perf_counter() - started
    rec = recommend(rows, max_accuracy_drop=DEFAULT_MAX_ACCURACY_DROP)
    measured = [r for r in rows if r.error is None]
    pick = rec.pick
    return {
        "elapsed_s": round(elapsed, 1),
        "cells": len(rows),
        "failed": [_failure(r) for r in rows if r.error is not None],
        "stable": sum(r.stable for r in measured),
        "measured_s": round(sum(r.duration_s for r in measured), 1),
        "requests": sum(r.requests for r in measured),
        "load_average_at_start": load,
        "pick": None if pick is None else _key(pick),
        "pick_throughput_ips": None if pick is None else round(pick.throughput_ips or 0.0, 1),
        "pick_p95_ms": None if pick is None else round(pick.p95_ms or 0.0, 3),
        "pick_stable": None if pick is None else pick.stable,
        "reason": rec.reason,
        "rows": [msgspec.to_builtins(r) for r in rows],
    }


def _failure(row: BenchmarkRow) -> str:
    return f"{row.engine}/{row.precision} b{row.batch_size} c{row.concurrency}: {row.error}"


def _key(row: BenchmarkRow) -> dict:
    return {k: getattr(row, k) for k in ("engine", "precision", "batch_size", "concurrency")}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    parser.add_argument("--long-cap", type=float, default=5.0, help="seconds per long-run cell")
    parser.add_argument("--order", default="new,long", help="which sweeps, in which order")
    args = parser.parse_args()

    runs = {
        "new": SweepConfig(),  # the harness defaults, as the benchmarker uses them
        "long": SweepConfig(time_cap_s=args.long_cap, early_stop=False),
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cvops-sweep-time-") as work:
        log("training, export, int8, openvino")
        specs, images, labels = prepare(Path(work))
        for name in args.order.split(","):
            log(f"sweep {name}: {msgspec.to_builtins(runs[name])}")
            results[name] = sweep(specs, images, labels, runs[name])
            log(f"sweep {name}: {results[name]['elapsed_s']} s, pick {results[name]['pick']}")
    report: dict = {
        "benchmark": "sweep_time",
        "host": msgspec.to_builtins(host_fingerprint()),
        "targets": [f"{e}/{p} [{a}]" for e, p, _, a in specs],
        "configs": {k: msgspec.to_builtins(v) for k, v in runs.items() if k in results},
        "results": results,
    }
    if "new" in results and "long" in results:
        new, long = results["new"], results["long"]
        report["same_pick"] = new["pick"] == long["pick"]
        report["same_engine"] = (new["pick"] or {}).get("engine") == (long["pick"] or {}).get(
            "engine"
        ) and (new["pick"] or {}).get("precision") == (long["pick"] or {}).get("precision")
        report["time_ratio"] = round(new["elapsed_s"] / max(long["elapsed_s"], 1e-9), 3)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    host = report["host"]
    print(f"host: {host['cpu_model']}, {host['logical_cores']} logical cores")
    print(f"targets: {', '.join(report['targets'])}")
    for name, r in results.items():
        cfg = report["configs"][name]
        print(
            f"{name:>5}: cap {cfg['time_cap_s']:g} s/cell, early stop {cfg['early_stop']}: "
            f"{r['elapsed_s']:.1f} s for {r['cells']} cells ({r['measured_s']:.1f} s measuring, "
            f"{r['stable']} stable, {len(r['failed'])} failed, "
            f"load {r['load_average_at_start']:.2f})"
        )
        print(
            f"       pick {r['pick']} {r['pick_throughput_ips']} img/s, "
            f"p95 {r['pick_p95_ms']} ms, stable {r['pick_stable']}"
        )
    if "time_ratio" in report:
        new_s = results["new"]["elapsed_s"]
        print(
            f"new/long time: {report['time_ratio']:.3f}; new sweep {new_s:.1f} s "
            f"{'<=' if new_s <= TARGET_S else '>'} {TARGET_S:g} s; same pick: {report['same_pick']}"
            f" (same engine/precision: {report['same_engine']})"
        )


if __name__ == "__main__":
    main()
