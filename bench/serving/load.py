"""Serving benchmark: the router vs direct Triton vs in-process ONNX Runtime.

Starts a throwaway NATS and a real router (which supervises the pytriton-shipped
tritonserver), deploys each model (random weights) twice — dynamic batching on and off —
and drives each target with a closed-loop load generator (KServe v2 binary-tensor requests
over keep-alive HTTP, what tritonclient sends) at several concurrencies. Models: a 32x32
two-conv CNN and a 224x224 one (both nearly free to compute: they measure serving
overhead), and a ResNet-10-shaped 224x224 classifier (a real workload). The targets of one
cell are measured in alternating slices, so a noisy host weighs on each alike. Prints
p50/p95/p99 and throughput per cell, then the target ratios against the
anchors measured in the same run (direct Triton; batching off).

    python bench/serving/load.py --duration 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import uvloop

from cvops.core import Bus, load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.inference_router.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from cvops.testing import router as t


@dataclass
class Cell:
    model: str
    concurrency: int
    target: str
    latencies_s: list[float]
    errors: int
    seconds: float
    router_cpu_s: float = 0.0
    triton_cpu_s: float = 0.0

    def cpu_us(self, seconds: float) -> float:
        """CPU time per answered request, in microseconds."""
        return seconds / len(self.latencies_s) * 1e6 if self.latencies_s else float("nan")

    def pct(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        data = sorted(self.latencies_s)
        return data[min(len(data) - 1, int(q / 100 * len(data)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_s) * 1000 if self.latencies_s else float("nan")

    @property
    def throughput(self) -> float:
        return len(self.latencies_s) / self.seconds if self.seconds else 0.0


class HttpTarget:
    """A closed-loop load on one URL over lean keep-alive HTTP/1.1 connections (the client
    must steal little CPU from the servers it measures: this host has 2 cores)."""

    def __init__(self, address: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        self.pool = UpstreamPool(address)
        self.path, self.body, self.headers = path, body, headers

    async def run(self, concurrency: int, seconds: float) -> tuple[list[float], int]:
        latencies: list[float] = []
        errors = 0
        end = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while (start := time.perf_counter()) < end:
                try:
                    r = await self.pool.request("POST", self.path, self.body, self.headers, 60)
                    ok = r.status == 200
                except (UpstreamError, UpstreamTimeout):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return latencies, errors

    def close(self) -> None:
        self.pool.close()


class OrtTarget:
    """The same closed loop on one in-process ORT session (threads; ORT frees the GIL)."""

    def __init__(self, model: Path, x: np.ndarray) -> None:
        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.x = x

    async def run(self, concurrency: int, seconds: float) -> tuple[list[float], int]:
        return await asyncio.to_thread(self._run, concurrency, seconds), 0

    def _run(self, concurrency: int, seconds: float) -> list[float]:
        latencies: list[float] = []
        lock = threading.Lock()
        end = time.perf_counter() + seconds

        def client() -> None:
            while (start := time.perf_counter()) < end:
                self.session.run(None, {"input": self.x})
                with lock:
                    latencies.append(time.perf_counter() - start)

        with ThreadPoolExecutor(concurrency) as pool:
            for f in [pool.submit(client) for _ in range(concurrency)]:
                f.result()
        return latencies

    def close(self) -> None:
        pass


def cpu_seconds(pids: list[int]) -> float:
    """user+system CPU time of processes (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def process_group(pgid: int) -> list[int]:
    """tritonserver and its python-backend stubs (one process group)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


async def interleaved(
    model: str,
    targets: dict[str, HttpTarget | OrtTarget],
    concurrency: int,
    warmup: float,
    duration: float,
    rounds: int,
    router_pid: int,
    triton_pid: int,
) -> list[Cell]:
    """Measure targets in alternating slices so that a noisy host weighs on each alike;
    also the CPU time the router and Triton spent on each target's requests (a measure
    the host's noise barely moves)."""
    got: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in targets}
    cpu = {name: [0.0, 0.0] for name in targets}
    triton = process_group(triton_pid)
    try:
        for target in targets.values():
            await target.run(concurrency, warmup)
        names = list(targets)
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                r0, t0 = cpu_seconds([router_pid]), cpu_seconds(triton)
                lat, err = await targets[name].run(concurrency, duration / rounds)
                cpu[name][0] += cpu_seconds([router_pid]) - r0
                cpu[name][1] += cpu_seconds(triton) - t0
                got[name][0].extend(lat)
                got[name] = (got[name][0], got[name][1] + err)
    finally:
        for target in targets.values():
            target.close()
    return [
        Cell(model, concurrency, n, lat, err, duration, cpu[n][0], cpu[n][1])
        for n, (lat, err) in got.items()
    ]


def fmt(v: float) -> str:
    return f"{v:8.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass(frozen=True)
class Model:
    """One benchmarked model: label, input size, the target its c=1 p50 ratio must meet."""

    label: str
    size: int
    kind: str  # "cnn" (two convs: pure serving overhead) | "resnet" (a real 224x224 net)
    p50_limit: float | None

    @property
    def name(self) -> str:
        return f"bench-{self.label}"


MODELS = {
    "cnn32": Model("cnn32", 32, "cnn", 1.3),
    "resnet224": Model("resnet224", 224, "resnet", 1.10),
    "cnn224": Model("cnn224", 224, "cnn", None),
}


def resnet_mini(classes: int = 1000) -> Any:
    """A ResNet-10-shaped classifier (ImageNet stem, one basic block per stage)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.skip = (
                nn.Identity()
                if stride == 1 and cin == cout
                else nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.body(x) + self.skip(x))

    torch.manual_seed(0)
    widths = (32, 64, 128, 256)
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = widths[0]
    for i, w in enumerate(widths):
        layers.append(Block(cin, w, 1 if i == 0 else 2))
        cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def build(model: Model, root: Path) -> Path:
    path = root / f"{model.label}.onnx"
    if model.kind == "resnet":
        return t.export_onnx(resnet_mini(), path, size=model.size)
    return t.build_cnn_onnx(path, size=model.size, seed=model.size)


async def deploy_all(settings: object, models: dict[Model, Path]) -> None:
    bus = await Bus.connect(settings, name="bench")  # type: ignore[arg-type]
    try:
        await t.ensure_user(bus, "bench-admin", "admin")
        for model, path in models.items():
            await t.add_model_version(bus, model.label, 1, path)
            await t.request_deployment(
                bus,
                model.name,
                model.label,
                1,
                actor="bench-admin",
                max_batch_size=32,
                max_queue_delay_us=100,
            )
            await t.request_deployment(
                bus,
                f"{model.name}-nobatch",
                model.label,
                1,
                actor="bench-admin",
                max_batch_size=0,
            )
    finally:
        await bus.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--duration", type=float, default=3.0, help="seconds measured per target and cell"
    )
    ap.add_argument("--warmup", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=4, help="alternating slices per cell")
    ap.add_argument("--concurrency", default="1,4,16,64")
    ap.add_argument("--models", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # a cheaper client
    chosen = [MODELS[m] for m in args.models.split(",")]

    root = Path(tempfile.mkdtemp(prefix="cvops-bench-serving-"))
    nats, port = start_nats(root / "nats", port=-1)
    router = None
    try:
        base = load_settings({}, nats_url=f"nats://127.0.0.1:{port}", log_level="warning")
        settings = t.router_settings(base, root / "home")
        models = {m: build(m, root) for m in chosen}
        router = t.RouterProcess(settings, root / "router.log").start()
        asyncio.run(deploy_all(settings, models))
        for m in chosen:
            router.wait_model_ready(m.name)
            router.wait_model_ready(f"{m.name}-nobatch")
        assert router.proc is not None
        router_pid, triton_pid = router.proc.pid, router.triton_pid() or 0
        cells: list[Cell] = []
        for m in chosen:
            x = np.random.default_rng(m.size).random((1, 3, m.size, m.size), dtype=np.float32)
            body, headers = t.binary_request(x)
            path = f"/v2/models/{m.name}/infer"
            nobatch = f"/v2/models/{m.name}-nobatch/infer"
            for c in levels:
                targets: dict[str, HttpTarget | OrtTarget] = {
                    "router": HttpTarget(router.http, path, body, headers),
                    "triton": HttpTarget(router.triton_http, path, body, headers),
                    "ort-inproc": OrtTarget(models[m], x),
                }
                if c == 16:
                    targets["router-nobatch"] = HttpTarget(router.http, nobatch, body, headers)
                    targets["triton-nobatch"] = HttpTarget(
                        router.triton_http, nobatch, body, headers
                    )
                cells += asyncio.run(
                    interleaved(
                        m.label,
                        targets,
                        c,
                        args.warmup,
                        args.duration,
                        args.rounds,
                        router_pid,
                        triton_pid,
                    )
                )
        report(cells, chosen)
    finally:
        if router is not None:
            router.stop()
        stop_process(nats)
        shutil.rmtree(root, ignore_errors=True)
    return 0


def report(cells: list[Cell], models: list[Model]) -> None:
    print(
        f"\n{'model':10} {'conc':>4} {'target':15} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>9} {'errors':>6} {'router us/req':>13} {'triton us/req':>13}"
    )
    for c in cells:
        cpu = (
            ""
            if c.target == "ort-inproc"
            else (f" {c.cpu_us(c.router_cpu_s):13.0f} {c.cpu_us(c.triton_cpu_s):13.0f}")
        )
        print(
            f"{c.model:10} {c.concurrency:4d} {c.target:15} {fmt(c.p50)} {fmt(c.pct(95))} "
            f"{fmt(c.pct(99))} {c.throughput:9.1f} {c.errors:6d}{cpu}"
        )

    def cell(model: str, conc: int, target: str) -> Cell | None:
        return next(
            (c for c in cells if (c.model, c.concurrency, c.target) == (model, conc, target)), None
        )

    print("\nratios (anchors measured in this run):")
    for model in models:
        m = model.label
        r1, d1 = cell(m, 1, "router"), cell(m, 1, "triton")
        if r1 and d1:
            ratio = r1.p50 / d1.p50
            limit = model.p50_limit
            goal = f"target <= {limit}) {verdict(ratio <= limit)}" if limit else "no target)"
            print(
                f"  {m:10} c=1  router p50 / direct Triton p50 = {ratio:5.2f}"
                f"  (+{r1.p50 - d1.p50:.2f} ms; {goal}"
            )
        r16, d16 = cell(m, 16, "router"), cell(m, 16, "triton")
        if r16 and d16:
            ratio = r16.throughput / d16.throughput
            print(
                f"  {m:10} c=16 router req/s / direct Triton req/s = {ratio:5.2f}"
                f"  (target >= 0.9) {verdict(ratio >= 0.9)}"
            )
        nb = cell(m, 16, "router-nobatch")
        if r16 and nb:
            ratio = r16.throughput / nb.throughput
            print(
                f"  {m:10} c=16 dynamic batching / no batching req/s (router) = {ratio:5.2f}"
                f"  (target >= 2) {verdict(ratio >= 2)}"
            )
        dnb = cell(m, 16, "triton-nobatch")
        if d16 and dnb:
            print(
                f"  {m:10} c=16 dynamic batching / no batching req/s (direct) = "
                f"{d16.throughput / dnb.throughput:5.2f}"
            )
        if r16 and d16:
            router_cpu = r16.cpu_us(r16.router_cpu_s)
            triton_cpu = d16.cpu_us(d16.triton_cpu_s)
            print(
                f"  {m:10} c=16 router CPU per request = {router_cpu:.0f} us = "
                f"{router_cpu / triton_cpu:4.2f}x Triton's own ({triton_cpu:.0f} us)"
            )
        o1 = cell(m, 1, "ort-inproc")
        if r1 and o1:
            print(f"  {m:10} c=1  router p50 / in-process ORT p50 = {r1.p50 / o1.p50:5.2f}")
    print("\nseed targets through the router (p95 < 200 ms, p99 < 500 ms, > 10 FPS):")
    for c in cells:
        if c.target != "router":
            continue
        ok = c.pct(95) < 200 and c.pct(99) < 500 and c.throughput > 10
        print(
            f"  {c.model:10} c={c.concurrency:<3d} p95 {c.pct(95):7.1f} ms  p99 {c.pct(99):7.1f} ms"
            f"  {c.throughput:8.1f} FPS  {verdict(ok)}"
        )


if __name__ == "__main__":
    sys.exit(main())
