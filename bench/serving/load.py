"""Serving benchmark: the router vs direct Triton vs in-process ONNX Runtime, FP32 and INT8.

Starts a throwaway NATS and a real router (which supervises the pytriton-shipped
tritonserver), deploys each model (random weights) twice — dynamic batching on and off —
and drives each target with a closed-loop load generator (KServe v2 binary-tensor requests
over keep-alive HTTP, what tritonclient sends) at several concurrencies. Models: a 32x32
two-conv CNN and a 224x224 one (both nearly free to compute: they measure serving
overhead), a ResNet-10-shaped 224x224 classifier (a real workload) and a ResNet-18-shaped
one, whose INT8 QDQ artifact (``cvops.engines.convert``, random calibration images) is
stored and deployed as its own deployment, as the converter's artifacts are served. The
targets of one cell are measured in alternating slices, so a noisy host weighs on each
alike. After each slice on a Triton model its per-model statistics are read, so each served
cell shows Triton's own queue / compute input / infer / output time per request and the
mean executed batch next to what the client saw. Prints p50/p95/p99 and throughput per
cell, where the served time goes, then the target ratios against the anchors measured in
the same run (direct Triton; batching off; in-process ONNX Runtime of the same file).

    python bench/serving/load.py --duration 3
    python bench/serving/load.py --models resnet18 --concurrency 1,16 --duration 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

import msgspec
import numpy as np
import onnxruntime as ort
import uvloop

from cvops.contracts.deployment import ServedArtifact
from cvops.core import ArtifactStore, Bus, load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.engines import Artifact, convert
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
    stats: TritonStats | None = None  # None: not served by Triton (in-process)

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies_s) * 1000 if self.latencies_s else float("nan")

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


STAGES = ("queue", "compute_input", "compute_infer", "compute_output", "success")


@dataclass
class TritonStats:
    """Triton's per-model statistics summed over a cell's slices (differences of the
    cumulative counters read before and after each slice)."""

    ns: dict[str, int]
    counts: dict[str, int]
    inferences: int = 0
    executions: int = 0

    @classmethod
    def empty(cls) -> TritonStats:
        return cls({s: 0 for s in STAGES}, {s: 0 for s in STAGES})

    def __sub__(self, other: TritonStats) -> TritonStats:
        return TritonStats(
            {s: self.ns[s] - other.ns[s] for s in STAGES},
            {s: self.counts[s] - other.counts[s] for s in STAGES},
            self.inferences - other.inferences,
            self.executions - other.executions,
        )

    def __add__(self, other: TritonStats) -> TritonStats:
        return TritonStats(
            {s: self.ns[s] + other.ns[s] for s in STAGES},
            {s: self.counts[s] + other.counts[s] for s in STAGES},
            self.inferences + other.inferences,
            self.executions + other.executions,
        )

    def us(self, stage: str) -> float:
        """Mean microseconds per request in a stage (``success``: the whole request)."""
        n = self.counts[stage]
        return self.ns[stage] / n / 1000 if n else float("nan")

    @property
    def mean_batch(self) -> float:
        """Requests per model execution: the batch the dynamic batcher formed."""
        return self.inferences / self.executions if self.executions else float("nan")


def triton_stats(address: str, model: str) -> TritonStats:
    """GET ``/v2/models/<model>/stats`` of one Triton (all versions summed)."""
    status, body = t.http_call("GET", f"http://{address}/v2/models/{model}/stats")
    if status != 200:
        raise RuntimeError(f"Triton stats of {model}: HTTP {status} {body[:200]!r}")
    total = TritonStats.empty()
    for m in json.loads(body)["model_stats"]:
        inference = m["inference_stats"]
        total = total + TritonStats(
            {s: int(inference[s]["ns"]) for s in STAGES},
            {s: int(inference[s]["count"]) for s in STAGES},
            int(m.get("inference_count", 0)),
            int(m.get("execution_count", 0)),
        )
    return total


class HttpTarget:
    """A closed-loop load on one URL over lean keep-alive HTTP/1.1 connections (the client
    must steal little CPU from the servers it measures: this host has 2 cores), inferring
    on ``model`` (a deployment is the Triton model of its name)."""

    def __init__(self, address: str, model: str, body: bytes, headers: dict[str, str]) -> None:
        self.pool = UpstreamPool(address)
        self.path, self.body, self.headers = f"/v2/models/{model}/infer", body, headers
        self.model = model

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

    def __init__(self, model: Path, x: np.ndarray, threads: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ORT's choice, as the served session
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
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
    router_pids: list[int],
    triton_pid: int,
    triton_http: str,
) -> list[Cell]:
    """Measure targets in alternating slices so that a noisy host weighs on each alike;
    also the CPU time the router and Triton spent on each target's requests (a measure
    the host's noise barely moves) and, for served targets, Triton's statistics of the
    model each slice ran on (read outside the timed slice)."""
    got: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in targets}
    # A slice lasts until its last request is answered: at high concurrency on a slow
    # model that is well past duration / rounds, so throughput divides by the real time.
    elapsed = dict.fromkeys(targets, 0.0)
    cpu = {name: [0.0, 0.0] for name in targets}
    stats = {
        name: TritonStats.empty() for name, tg in targets.items() if isinstance(tg, HttpTarget)
    }
    triton = process_group(triton_pid)
    try:
        for target in targets.values():
            await target.run(concurrency, warmup)
        names = list(targets)
        for i in range(rounds):
            for name in names if i % 2 == 0 else reversed(names):
                target = targets[name]
                on = target.model if isinstance(target, HttpTarget) else None
                s0 = triton_stats(triton_http, on) if on else None
                r0, t0 = cpu_seconds(router_pids), cpu_seconds(triton)
                w0 = time.perf_counter()
                lat, err = await target.run(concurrency, duration / rounds)
                elapsed[name] += time.perf_counter() - w0
                cpu[name][0] += cpu_seconds(router_pids) - r0
                cpu[name][1] += cpu_seconds(triton) - t0
                if on and s0 is not None:
                    stats[name] = stats[name] + (triton_stats(triton_http, on) - s0)
                got[name][0].extend(lat)
                got[name] = (got[name][0], got[name][1] + err)
    finally:
        for target in targets.values():
            target.close()
    return [
        Cell(model, concurrency, n, lat, err, elapsed[n], cpu[n][0], cpu[n][1], stats.get(n))
        for n, (lat, err) in got.items()
    ]


def fmt(v: float) -> str:
    return f"{v:8.2f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass(frozen=True)
class Model:
    """One benchmarked model: label, input size, the target its c=1 p50 ratio must meet,
    and whether its INT8 artifact is deployed and measured beside it."""

    label: str
    size: int
    kind: str  # "cnn" (two convs: pure serving overhead) | "resnet" | "resnet18" (real nets)
    p50_limit: float | None
    int8: bool = False

    @property
    def name(self) -> str:
        return f"bench-{self.label}"


MODELS = {
    "cnn32": Model("cnn32", 32, "cnn", 1.3),
    "resnet224": Model("resnet224", 224, "resnet", 1.10),
    "cnn224": Model("cnn224", 224, "cnn", None),
    "resnet18": Model("resnet18", 224, "resnet18", None, int8=True),
}
INT8_SPEEDUP = 2.0  # served FP32 p50 / served INT8 p50 at c=1, ResNet-18 at 224


def resnet_mini(classes: int = 1000) -> Any:
    """A ResNet-10-shaped classifier (ImageNet stem, one basic block per stage)."""
    return resnet((32, 64, 128, 256), 1, classes)


def resnet18(classes: int = 1000) -> Any:
    """A ResNet-18-shaped classifier (ImageNet stem, two basic blocks per stage)."""
    return resnet((64, 128, 256, 512), 2, classes)


def resnet(widths: tuple[int, ...], blocks: int, classes: int) -> Any:
    """ImageNet stem, ``blocks`` basic blocks per stage of ``widths``, random weights."""
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
    layers: list[nn.Module] = [
        nn.Conv2d(3, widths[0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = widths[0]
    for i, w in enumerate(widths):
        for b in range(blocks):
            layers.append(Block(cin, w, 2 if i > 0 and b == 0 else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


def build(model: Model, root: Path) -> Path:
    path = root / f"{model.label}.onnx"
    if model.kind == "resnet":
        return t.export_onnx(resnet_mini(), path, size=model.size)
    if model.kind == "resnet18":
        return t.export_onnx(resnet18(), path, size=model.size)
    return t.build_cnn_onnx(path, size=model.size, seed=model.size)


def build_int8(model: Model, source: Path, root: Path) -> Artifact:
    """The INT8 QDQ artifact the converter would make, calibrated on 32 random images."""
    calibration = np.random.default_rng(1).random((32, 3, model.size, model.size), np.float32)
    artifact = convert(source, "int8", root / f"{model.label}-int8", calibration)
    if not isinstance(artifact, Artifact):
        raise RuntimeError(f"no INT8 artifact of {model.label}: {artifact}")
    return artifact


async def served_int8(bus: Bus, artifact: Artifact) -> ServedArtifact:
    """Store the artifact (and its companions) as the converter does; no parity record or
    probe, so the router skips its served-output check."""
    store = ArtifactStore(bus)
    path = Path(artifact.path)
    companions = [Path(f) for f in artifact.files if Path(f) != path]
    return ServedArtifact(
        target=artifact.target,
        format=artifact.format,
        precision="int8",
        artifact=await store.put_file(path, filename=path.name),
        companions=[await store.put_file(f, filename=f.name) for f in companions],
    )


async def deploy_all(
    settings: object,
    models: dict[Model, Path],
    int8: dict[Model, Artifact],
    queue_delay_us: int = 100,
) -> None:
    bus = await Bus.connect(settings, name="bench")  # type: ignore[arg-type]
    try:
        await t.ensure_user(bus, "bench-admin", "admin")
        for model, path in models.items():
            await t.add_model_version(bus, model.label, 1, path)
            if model in int8:
                await t.request_deployment(
                    bus,
                    f"{model.name}-int8",
                    model.label,
                    1,
                    actor="bench-admin",
                    engine="onnxruntime-cpu",
                    precision="int8",
                    served=await served_int8(bus, int8[model]),
                    max_batch_size=32,
                    max_queue_delay_us=queue_delay_us,
                )
            await t.request_deployment(
                bus,
                model.name,
                model.label,
                1,
                actor="bench-admin",
                max_batch_size=32,
                max_queue_delay_us=queue_delay_us,
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
    ap.add_argument(
        "--data-plane",
        default="auto",
        choices=("auto", "nginx", "python"),
        help="who answers the router's HTTP port (CVOPS_ROUTER_DATA_PLANE)",
    )
    ap.add_argument(
        "--queue-delay-us",
        type=int,
        default=100,
        help="the batched deployments' max_queue_delay_us (direct and routed alike)",
    )
    ap.add_argument(
        "--engine-threads",
        type=int,
        default=0,
        help="each engine's threads, served (CVOPS_ROUTER_ENGINE_THREADS) and in-process "
        "alike; 0: ONNX Runtime's choice (every core)",
    )
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # a cheaper client
    unknown = set(args.models.split(",")) - set(MODELS)
    if unknown:
        ap.error(f"unknown --models {', '.join(sorted(unknown))}; of {', '.join(MODELS)}")
    chosen = [MODELS[m] for m in args.models.split(",")]

    root = Path(tempfile.mkdtemp(prefix="cvops-bench-serving-"))
    nats, port = start_nats(root / "nats", port=-1)
    router = None
    try:
        base = load_settings({}, nats_url=f"nats://127.0.0.1:{port}", log_level="warning")
        settings = msgspec.structs.replace(
            t.router_settings(base, root / "home"),
            router_data_plane=args.data_plane,
            router_engine_threads=args.engine_threads,
        )
        models = {m: build(m, root) for m in chosen}
        int8 = {m: build_int8(m, models[m], root) for m in chosen if m.int8}
        router = t.RouterProcess(settings, root / "router.log").start()
        asyncio.run(deploy_all(settings, models, int8, args.queue_delay_us))
        for m in chosen:
            router.wait_model_ready(m.name)
            router.wait_model_ready(f"{m.name}-nobatch")
            if m in int8:
                router.wait_model_ready(f"{m.name}-int8", timeout=180)
        assert router.proc is not None
        router_pid, triton_pid = router.proc.pid, router.triton_pid() or 0
        nginx_pid = root / "home" / "inference-router" / "nginx" / "nginx.pid"
        plane = process_group(int(nginx_pid.read_text())) if nginx_pid.exists() else []
        print(
            f"router data plane: {'nginx' if plane else 'python'} "
            f"(--data-plane {args.data_plane}); "
            f"engine threads: {args.engine_threads or 'ONNX Runtime default'}"
        )
        cells: list[Cell] = []
        for m in chosen:
            x = np.random.default_rng(m.size).random((1, 3, m.size, m.size), dtype=np.float32)
            body, headers = t.binary_request(x)
            deployments = {"": m.name}
            if m in int8:
                deployments["-int8"] = f"{m.name}-int8"
            for c in levels:
                targets: dict[str, HttpTarget | OrtTarget] = {}
                for suffix, name in deployments.items():
                    targets[f"router{suffix}"] = HttpTarget(router.http, name, body, headers)
                    targets[f"triton{suffix}"] = HttpTarget(router.triton_http, name, body, headers)
                threads = args.engine_threads
                targets["ort-inproc"] = OrtTarget(models[m], x, threads)
                if m in int8:
                    targets["ort-int8-inproc"] = OrtTarget(Path(int8[m].path), x, threads)
                if c == 16:
                    nobatch = f"{m.name}-nobatch"
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
                        [router_pid, *plane],
                        triton_pid,
                        router.triton_http,
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
            if c.stats is None
            else (f" {c.cpu_us(c.router_cpu_s):13.0f} {c.cpu_us(c.triton_cpu_s):13.0f}")
        )
        print(
            f"{c.model:10} {c.concurrency:4d} {c.target:15} {fmt(c.p50)} {fmt(c.pct(95))} "
            f"{fmt(c.pct(99))} {c.throughput:9.1f} {c.errors:6d}{cpu}"
        )

    print(
        "\nwhere the served time goes (us per request; Triton's per-model statistics, means;"
        "\n  outside = client mean - Triton's request time: the router hop, HTTP, the client):"
    )
    print(
        f"{'model':10} {'conc':>4} {'target':15} {'p50':>8} {'mean':>8} {'queue':>7} "
        f"{'c_input':>7} {'c_infer':>8} {'c_output':>8} {'triton':>8} {'outside':>8} "
        f"{'batch':>6}"
    )
    for c in cells:
        if c.stats is None:
            continue
        st = c.stats
        print(
            f"{c.model:10} {c.concurrency:4d} {c.target:15} {c.p50 * 1000:8.0f} "
            f"{c.mean_ms * 1000:8.0f} {st.us('queue'):7.0f} {st.us('compute_input'):7.0f} "
            f"{st.us('compute_infer'):8.0f} {st.us('compute_output'):8.0f} "
            f"{st.us('success'):8.0f} {c.mean_ms * 1000 - st.us('success'):8.0f} "
            f"{st.mean_batch:6.2f}"
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
                f"  ({r1.p50 - d1.p50:+.2f} ms; {goal}"
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
            if r16.stats and nb.stats:
                b, n = r16.stats.mean_batch, nb.stats.mean_batch
                print(
                    f"  {m:10} c=16 mean executed batch (router), batching / none = "
                    f"{b:5.2f} / {n:4.2f} = {b / n:5.2f}"
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
        ri, oi = cell(m, 1, "router-int8"), cell(m, 1, "ort-int8-inproc")
        if ri and oi:
            print(
                f"  {m:10} c=1  router INT8 p50 / in-process ORT INT8 p50 = {ri.p50 / oi.p50:5.2f}"
            )
        if r1 and ri:
            ratio = r1.p50 / ri.p50
            print(
                f"  {m:10} c=1  served FP32 p50 / served INT8 p50 (router) = {ratio:5.2f}"
                f"  ({r1.p50:.2f} / {ri.p50:.2f} ms; target >= {INT8_SPEEDUP}) "
                f"{verdict(ratio >= INT8_SPEEDUP)}"
            )
        di = cell(m, 1, "triton-int8")
        if d1 and di:
            print(
                f"  {m:10} c=1  served FP32 p50 / served INT8 p50 (direct Triton) = "
                f"{d1.p50 / di.p50:5.2f}"
            )
        if o1 and oi:
            print(
                f"  {m:10} c=1  in-process FP32 p50 / INT8 p50 (the anchor) = "
                f"{o1.p50 / oi.p50:5.2f}  ({o1.p50:.2f} / {oi.p50:.2f} ms)"
            )
        for served, inproc in ((r1, o1), (ri, oi)):
            if served and inproc and served.stats:
                print(f"  {m:10} c=1  {breakdown(served, inproc)}")
    print("\nseed targets through the router (p95 < 200 ms, p99 < 500 ms, > 10 FPS):")
    for c in cells:
        if c.target not in ("router", "router-int8"):
            continue
        ok = c.pct(95) < 200 and c.pct(99) < 500 and c.throughput > 10
        print(
            f"  {c.model:10} c={c.concurrency:<3d} {c.target:11} p95 {c.pct(95):7.1f} ms  "
            f"p99 {c.pct(99):7.1f} ms  {c.throughput:8.1f} FPS  {verdict(ok)}"
        )


def breakdown(served: Cell, inproc: Cell) -> str:
    """A served cell's mean latency split by Triton's statistics: its compute_infer (the
    python-backend stub running the engine, with its shared-memory copies; next to it the
    same file's in-process mean), its queue and input/output stages, and what lies outside
    Triton (the router hop, HTTP, the client)."""
    assert served.stats is not None
    st = served.stats
    mean = served.mean_ms * 1000
    infer = st.us("compute_infer")
    rest = st.us("success") - infer
    outside = mean - st.us("success")
    return (
        f"{served.target} mean {mean / 1000:.2f} ms = Triton compute_infer "
        f"{infer / 1000:.2f} ({infer / mean:.0%}; in-process {inproc.mean_ms:.2f}) "
        f"+ Triton queue/input/output {rest / 1000:.2f} ({rest / mean:.0%}) "
        f"+ outside Triton {outside / 1000:.2f} ({outside / mean:.0%})"
    )


if __name__ == "__main__":
    sys.exit(main())
