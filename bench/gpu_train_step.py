"""Images/s of one resnet-mini training step on CUDA (fp32, AMP bf16, AMP fp16) and on CPU.

The trainer's GPU benchmark. Every row runs the trainer's own `TrainStep` (forward under autocast,
cross-entropy, backward, SGD step) on one synthetic batch held on the device, so data loading
is left out and only the step is timed. Same method everywhere: build, warm up, synchronise,
then `--repeats` timed runs of `--steps` steps each, each closed by a synchronise; the median
run is reported. The anchor is CPU fp32 measured in the same process.

    python bench/gpu_train_step.py                     # all devices present
    python bench/gpu_train_step.py --devices cpu --steps 3 --warmup 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

import torch

from cvops.vision import TrainConfig, TrainStep, build_model, parameter_count
from cvops.vision.train import make_optimizer

PRECISIONS = {"fp32": None, "amp-bf16": torch.bfloat16, "amp-fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(
    device: torch.device,
    precision: str,
    args: argparse.Namespace,
    steps: int,
    warmup: int,
) -> dict[str, Any]:
    """Time `repeats` x `steps` training steps after `warmup` steps; median run wins."""
    torch.manual_seed(0)
    config = TrainConfig(
        arch=args.arch, lr=0.05, momentum=0.9, weight_decay=5e-4, width=args.width, depth=1
    )
    model = build_model(args.arch, args.classes, 3, args.image_size, width=args.width).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    step = TrainStep(
        model, make_optimizer(model, config), device=device, autocast_dtype=PRECISIONS[precision]
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=gen)
    y = torch.randint(0, args.classes, (args.batch_size,), generator=gen)
    x = x.to(device).contiguous(memory_format=memory_format)
    y = y.to(device)

    for _ in range(warmup):
        step(x, y)
    _sync(device)
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(x, y)
        _sync(device)
        runs.append(time.perf_counter() - start)
    if not torch.isfinite(loss).item():
        raise RuntimeError(f"{device} {precision}: loss is {loss.item()}")
    seconds = statistics.median(runs)
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "precision": precision,
        "batch_size": args.batch_size,
        "steps": steps,
        "repeats": args.repeats,
        "ms_per_step": 1000 * seconds / steps,
        "images_per_s": args.batch_size * steps / seconds,
        "images_per_s_runs": [args.batch_size * steps / r for r in runs],
        "final_loss": loss.item(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet-mini")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=50, help="timed steps per run on CUDA")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--cpu-steps", type=int, default=None, help="default: --steps, at most 10")
    p.add_argument("--cpu-warmup", type=int, default=None, help="default: --warmup, at most 2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cpu-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--devices", default="auto", help="auto, cpu, cuda or cpu,cuda")
    p.add_argument("--precisions", default="fp32,amp-bf16,amp-fp16", help="for CUDA")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--no-cudnn-benchmark", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = p.parse_args(argv)

    torch.set_num_threads(args.cpu_threads)
    torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    devices = ["cpu", "cuda"] if args.devices == "auto" else args.devices.split(",")
    if "cuda" in devices and not torch.cuda.is_available():
        if args.devices != "auto":
            print("CUDA requested but not available", file=sys.stderr)
            return 2
        devices.remove("cuda")

    results: list[dict[str, Any]] = []
    for name in devices:
        device = torch.device(name)
        if device.type == "cpu":
            steps = args.cpu_steps or min(args.steps, 10)
            warmup = args.cpu_warmup if args.cpu_warmup is not None else min(args.warmup, 2)
            results.append(measure(device, "fp32", args, steps, warmup))
            continue
        for precision in args.precisions.split(","):
            if precision == "amp-bf16" and not torch.cuda.is_bf16_supported():
                continue
            results.append(measure(device, precision, args, args.steps, args.warmup))

    anchor = next((r for r in results if r["device"] == "cpu"), None)
    for r in results:
        r["vs_cpu_fp32"] = r["images_per_s"] / anchor["images_per_s"] if anchor else None
    model = build_model(args.arch, args.classes, 3, args.image_size, width=args.width)
    doc = {
        "benchmark": "train_step",
        "arch": args.arch,
        "width": args.width,
        "parameters": parameter_count(model),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "classes": args.classes,
        "optimizer": "sgd (nesterov, momentum 0.9)",
        "channels_last": args.channels_last,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "results": results,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(
        f"{args.arch} (width {args.width}, {doc['parameters']:,} params) training step, "
        f"batch {args.batch_size}, {args.image_size}x{args.image_size}x3, {args.classes} classes, "
        f"SGD; torch {torch.__version__}; CPU threads {doc['cpu_threads']}"
    )
    header = f"{'device':<34} {'precision':<9} {'ms/step':>9} {'images/s':>10} {'vs CPU':>8}"
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"{r['vs_cpu_fp32']:.1f}x" if r["vs_cpu_fp32"] is not None else "-"
        print(
            f"{r['device_name'][:34]:<34} {r['precision']:<9} {r['ms_per_step']:>9.2f} "
            f"{r['images_per_s']:>10,.0f} {ratio:>8}"
        )
    gpu = [r for r in results if r["device"] == "cuda"]
    if anchor and gpu:
        best = max(gpu, key=lambda r: r["images_per_s"])
        print(f"GPU/CPU ratio (best GPU row, {best['precision']}): {best['vs_cpu_fp32']:.1f}x")
    elif not gpu:
        print("no CUDA device here: CPU row only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
