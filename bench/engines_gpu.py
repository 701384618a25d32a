"""GPU engine benchmark: torch eager FP32 vs FP16 vs torch.compile vs CUDA graphs, against
a hand-tuned ``torch.compile(mode="max-autotune")`` FP16 channels-last run of the same net, side by
side on the same card, at batch 32. ONNX Runtime CUDA/TensorRT EPs and native TensorRT join when
present (their numbers include host<->device copies: they run through the Engine interface).

Targets: the best FP16 engine >= 3x FP32 eager throughput, and >= 0.9x the max-autotune anchor.
Without a CUDA device it prints why and exits 0.

    python bench/engines_gpu.py [--json] [--nets resnet-mini@32,resnet18@224] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_nets import build

from cvops.engines import (
    OrtCudaEngine,
    OrtTensorrtEngine,
    TensorRTEngine,
    convert,
    export_onnx,
    host_fingerprint,
    summarize,
)
from cvops.engines.stats import is_stable

TARGETS = {"best_fp16_vs_fp32_eager": 3.0, "best_vs_max_autotune": 0.9}
ANCHOR = "max-autotune fp16 channels-last"
NUM_CLASSES = 10


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure(
    run: Callable[[torch.Tensor], object], x: torch.Tensor, args: argparse.Namespace
) -> dict:
    """ms per batch from CUDA events over blocks of iterations, until stable or the time cap."""
    with torch.inference_mode():
        for _ in range(args.warmup):
            run(x)
        torch.cuda.synchronize()
        blocks: list[float] = []
        started = time.perf_counter()
        while time.perf_counter() - started < args.cap:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            for _ in range(args.iters):
                run(x)
            end.record()
            end.synchronize()
            blocks.append(begin.elapsed_time(end) / args.iters)
            if len(blocks) >= 15 and is_stable(blocks, window=3, threshold=0.02):
                break
    stats = summarize(blocks)
    return {
        "ms_per_batch": stats.p50_ms,
        "ci95_ms": [stats.ci95_low_ms, stats.ci95_high_ms],
        "cv": stats.cv,
        "blocks": stats.n,
        "throughput_ips": x.shape[0] * 1000.0 / stats.p50_ms,
    }


def cuda_graph(model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], object]:
    """Capture one forward pass; each call copies the input in and replays the graph."""
    static_x = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.inference_mode(), torch.cuda.stream(stream):
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_y = model(static_x)

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_x.copy_(x)
        graph.replay()
        return static_y

    return replay


def bench_net(spec: str, args: argparse.Namespace, work: Path) -> dict:
    name, size_text = spec.split("@")
    size = int(size_text)
    base, origin = build(name, NUM_CLASSES, size)
    base = base.eval().cuda()
    x32 = torch.randn(args.batch, 3, size, size, device="cuda")
    x16 = x32.half()
    x16_cl = x16.contiguous(memory_format=torch.channels_last)
    fp16 = _copy(base).half()
    fp16_cl = _copy(base).half().to(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = base(x32).float()

    variants: list[
        tuple[str, str, Callable[[], Callable[[torch.Tensor], object]], torch.Tensor]
    ] = [
        ("eager fp32", "fp32", lambda: base, x32),
        ("eager fp16", "fp16", lambda: fp16, x16),
        ("eager fp16 channels-last", "fp16", lambda: fp16_cl, x16_cl),
        ("compile fp16 channels-last", "fp16", lambda: torch.compile(fp16_cl), x16_cl),
        ("cuda-graph fp16 channels-last", "fp16", lambda: cuda_graph(fp16_cl, x16_cl), x16_cl),
        (
            "compile reduce-overhead fp16 channels-last",
            "fp16",
            lambda: torch.compile(_copy(fp16_cl), mode="reduce-overhead"),
            x16_cl,
        ),
        (
            ANCHOR,
            "fp16",
            lambda: torch.compile(_copy(fp16_cl), mode="max-autotune"),
            x16_cl,
        ),
    ]
    rows: dict[str, dict] = {}
    for label, precision, make, x in variants:
        log(f"[{spec}] {label}")
        try:
            started = time.perf_counter()
            run = make()
            with torch.inference_mode():
                out = run(x)  # compiles here
            torch.cuda.synchronize()
            setup_s = time.perf_counter() - started
            error = (torch.as_tensor(out).float() - reference).abs().max().item()
            rows[label] = {
                "precision": precision,
                "setup_s": round(setup_s, 1),
                "max_abs_error": error,
                **measure(run, x, args),
            }
        except Exception as err:
            rows[label] = {"precision": precision, "error": f"{type(err).__name__}: {err}"[:300]}
        torch.cuda.empty_cache()

    rows.update(_engine_rows(spec, base, x32, args, work))

    ok = {k: v for k, v in rows.items() if "error" not in v}
    fp32 = ok.get("eager fp32", {}).get("throughput_ips")
    anchor = ok.get(ANCHOR, {}).get("throughput_ips")
    candidates = {k: v for k, v in ok.items() if v["precision"] == "fp16" and k != ANCHOR}
    best = max(candidates, key=lambda k: candidates[k]["throughput_ips"], default=None)
    best_ips = candidates[best]["throughput_ips"] if best else None
    return {
        "net": spec,
        "model_origin": origin,
        "batch": args.batch,
        "rows": rows,
        "best_fp16": best,
        "ratios": {
            "best_fp16_vs_fp32_eager": best_ips / fp32 if best_ips and fp32 else None,
            "best_vs_max_autotune": best_ips / anchor if best_ips and anchor else None,
        },
    }


def _engine_rows(
    spec: str, model: torch.nn.Module, x32: torch.Tensor, args: argparse.Namespace, work: Path
) -> dict[str, dict]:
    """ORT CUDA / TensorRT EPs and native TensorRT through the Engine interface, where present."""
    engines = [e for e in (OrtCudaEngine("fp32"), OrtTensorrtEngine("fp16")) if e.available()[0]]
    trt = TensorRTEngine("fp16")
    if not engines and not trt.available()[0]:
        return {}
    rows: dict[str, dict] = {}
    folder = work / spec.replace("@", "-")
    onnx_path = export_onnx(model.cpu(), x32[:2].cpu(), folder / "model.onnx").path
    model.cuda()
    sources: list[tuple[object, str]] = [(e, onnx_path) for e in engines]
    if trt.available()[0]:
        plan = convert(onnx_path, "tensorrt-fp16", folder)
        sources.append((trt, getattr(plan, "path", "")))
    host_x = x32.cpu().numpy()
    for engine, source in sources:
        label = f"{engine.label} (incl. host copies)"
        log(f"[{spec}] {label}")
        try:
            engine.load(source)
            rows[label] = {
                "precision": engine.precision,
                **measure(lambda _x, e=engine: e.infer(host_x), x32, args),
            }
        except Exception as err:
            rows[label] = {"precision": engine.precision, "error": f"{err}"[:300]}
        finally:
            engine.close()
    return rows


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--nets", default="resnet-mini@32,resnet18@224")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20, help="batches per timed block")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--cap", type=float, default=10.0, help="seconds per variant at most")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        reason = f"no CUDA device (torch {torch.__version__})"
        if args.json:
            print(json.dumps({"benchmark": "engines_gpu", "skipped": reason}))
        else:
            print(f"engines_gpu: skipped: {reason}")
        return 0

    torch.backends.cudnn.benchmark = True
    np.random.seed(0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="cvops-bench-gpu-") as work:
        results = [bench_net(s, args, Path(work)) for s in args.nets.split(",") if s]
    report = {
        "benchmark": "engines_gpu",
        "host": msgspec.to_builtins(host_fingerprint()),
        "device": torch.cuda.get_device_name(0),
        "targets": TARGETS,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"device: {report['device']}; torch {torch.__version__}")
    for r in results:
        print(f"\n{r['net']} ({r['model_origin']}), batch {r['batch']}")
        print(f"{'variant':<48}{'ms/batch':>10}{'images/s':>12}{'max|err|':>10}{'setup s':>9}")
        for label, row in r["rows"].items():
            if "error" in row:
                print(f"{label:<48}  error: {row['error']}")
                continue
            print(
                f"{label:<48}{fmt(row['ms_per_batch'], 3):>10}{fmt(row['throughput_ips'], 0):>12}"
                f"{fmt(row.get('max_abs_error'), 4):>10}{fmt(row.get('setup_s'), 1):>9}"
            )
        ratios = r["ratios"]
        print(
            f"best FP16 ({r['best_fp16']}) / FP32 eager: "
            f"{fmt(ratios['best_fp16_vs_fp32_eager'])}x (target >= 3x); "
            f"best / max-autotune: {fmt(ratios['best_vs_max_autotune'])}x (target >= 0.9x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
