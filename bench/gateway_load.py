"""Gateway load benchmark: 100 simulated users against a running gateway, with an anchor.

Each user loops without think time over a weighted mix of list models, show data set,
login and a small ONNX model upload, for ``--duration`` seconds. The same generator then
drives a bare Litestar app (one trivial JSON endpoint, uvicorn, a subprocess on this
machine) for the same time: reads/s of the gateway over requests/s of the bare app is the
target ratio (>= 0.5; p99 of reads < 100 ms; 0 errors). A reads-only
phase gives the gateway's read capacity too (users in the mixed run also wait on logins
and uploads).

    ./justw up
    python bench/gateway_load.py --duration 60 [--users 100] [--url http://127.0.0.1:8080]

Credentials come from ``$CVOPS_HOME/admin.credentials`` (``--credentials`` to override).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

READS = ("list_models", "show_dataset")
DEFAULT_MIX = "list_models=45,show_dataset=45,login=5,upload=5"


def tiny_onnx_model() -> bytes:
    """A 4→3 linear classifier as ONNX bytes (built with onnx.helper; a few hundred bytes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def read_credentials(path: Path) -> dict[str, str]:
    """``key=value`` lines of admin.credentials."""
    out = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        mix[kind.strip()] = int(weight)
    unknown = set(mix) - {*READS, "login", "upload", "ping"}
    if unknown:
        raise SystemExit(f"unknown request kinds in --mix: {', '.join(sorted(unknown))}")
    return mix


@dataclass
class Tally:
    """Latencies (seconds) and errors per request kind."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    error_samples: dict[str, str] = field(default_factory=dict)

    def record(self, kind: str, seconds: float, ok: bool, why: str = "") -> None:
        self.latencies[kind].append(seconds)
        if not ok:
            self.errors[kind] += 1
            self.error_samples.setdefault(kind, why)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def summarize(tally: Tally, duration: float, kinds: Sequence[str]) -> dict[str, object]:
    rows = {}
    for kind in kinds:
        lat = sorted(tally.latencies.get(kind, []))
        rows[kind] = {
            "count": len(lat),
            "errors": tally.errors.get(kind, 0),
            "per_s": len(lat) / duration,
            "p50_ms": percentile(lat, 0.50) * 1000,
            "p95_ms": percentile(lat, 0.95) * 1000,
            "p99_ms": percentile(lat, 0.99) * 1000,
        }
    reads = sorted(x for k in READS for x in tally.latencies.get(k, []))
    read_errors = sum(tally.errors.get(k, 0) for k in READS)
    return {
        "duration_s": duration,
        "kinds": rows,
        "reads_per_s": (len(reads) - read_errors) / duration,
        "reads_p99_ms": percentile(reads, 0.99) * 1000,
        "errors": sum(tally.errors.values()),
        "error_samples": dict(tally.error_samples),
    }


Request = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass(frozen=True)
class Plan:
    """What one load-generating process does (picklable: sent to worker processes)."""

    base_url: str
    target: str  # "gateway" or "bare"
    mix: dict[str, int]
    users: int
    duration: float
    start_at: float  # wall clock: every process starts its users at this instant
    creds: dict[str, str] = field(default_factory=dict)
    dataset: str = ""
    model: bytes = b""
    seed: int = 0


def gateway_requests(creds: dict[str, str], dataset: str, model: bytes) -> dict[str, Request]:
    """One coroutine factory per request kind against the gateway's API."""
    auth = {"Authorization": f"Bearer {creds['token']}"}
    counter = iter(range(10**9))

    def list_models(c: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return c.get("/models/", headers=auth)

    def show_dataset(c: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return c.get(f"/datasets/{dataset}", headers=auth)

    def login(c: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        body = {"username": creds["username"], "password": creds["password"]}
        return c.post("/auth/login", json=body)

    def upload(c: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        # a few model names, so versions pile up per name like real re-uploads
        name = f"load-tiny-{next(counter) % 8}"
        return c.post(
            "/models/",
            headers=auth,
            data={"name": name, "description": "gateway_load.py"},
            files={"file": ("tiny.onnx", model, "application/octet-stream")},
        )

    return {
        "list_models": list_models,
        "show_dataset": show_dataset,
        "login": login,
        "upload": upload,
    }


def bare_requests() -> dict[str, Request]:
    def ping(c: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return c.get("/ping")

    return {"ping": ping}


async def drive(plan: Plan, timeout: float = 30.0) -> tuple[Tally, float]:
    """``plan.users`` closed-loop users for ``plan.duration`` s; the tally and elapsed s."""
    if plan.target == "gateway":
        requests = gateway_requests(plan.creds, plan.dataset, plan.model)
    else:
        requests = bare_requests()
    kinds = [k for k in plan.mix if plan.mix[k] > 0]
    weights = [plan.mix[k] for k in kinds]
    tally = Tally()
    # keep-alive shorter than uvicorn's 5 s, so no request races a server-side close
    limits = httpx.Limits(
        max_connections=plan.users, max_keepalive_connections=plan.users, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=plan.base_url, limits=limits, timeout=timeout) as c:
        for kind in kinds:  # warm-up: one of each, not counted
            await requests[kind](c)
        await asyncio.sleep(max(0.0, plan.start_at - time.time()))
        stop_at = time.perf_counter() + plan.duration

        async def user(seed: int) -> None:
            rng = random.Random(seed)
            while time.perf_counter() < stop_at:
                kind = rng.choices(kinds, weights)[0]
                start = time.perf_counter()
                try:
                    resp = await requests[kind](c)
                    ok = resp.status_code < 300
                    why = "" if ok else f"{resp.status_code} {resp.text[:160]}"
                except httpx.HTTPError as err:
                    ok, why = False, f"{type(err).__name__}: {err!r}"
                tally.record(kind, time.perf_counter() - start, ok, why)

        started = time.perf_counter()
        await asyncio.gather(*(user(plan.seed + i) for i in range(plan.users)))
        elapsed = time.perf_counter() - started
    return tally, elapsed


def _worker(plan: Plan) -> tuple[dict[str, list[float]], dict[str, int], dict[str, str], float]:
    tally, elapsed = asyncio.run(drive(plan))
    return dict(tally.latencies), dict(tally.errors), tally.error_samples, elapsed


def run_phase(plan: Plan, procs: int) -> dict[str, object]:
    """Split ``plan.users`` over ``procs`` generator processes and merge what they saw."""
    kinds = [k for k in plan.mix if plan.mix[k] > 0]
    shares = [plan.users // procs + (1 if i < plan.users % procs else 0) for i in range(procs)]
    plans = [
        replace(plan, users=n, seed=sum(shares[:i]), start_at=time.time() + (8 if procs > 1 else 0))
        for i, n in enumerate(shares)
        if n
    ]
    if len(plans) == 1:
        results = [_worker(plans[0])]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(plans), mp_context=ctx) as pool:
            results = list(pool.map(_worker, plans))
    merged = Tally()
    for latencies, errors, samples, _ in results:
        for kind, values in latencies.items():
            merged.latencies[kind].extend(values)
        for kind, count in errors.items():
            merged.errors[kind] += count
        for kind, why in samples.items():
            merged.error_samples.setdefault(kind, why)
    return summarize(merged, max(r[3] for r in results), kinds)


# -- the anchor: a bare Litestar endpoint ----------------------------------------------


def serve_bare(port: int) -> None:
    """Run the anchor app (called in a subprocess through ``--serve-bare``)."""
    import uvicorn
    from litestar import Litestar, get

    @get("/ping")
    async def ping() -> dict[str, object]:
        return {"ok": True, "items": []}

    uvicorn.run(
        Litestar([ping]), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_anchor(users: int, duration: float, procs: int) -> dict[str, object]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/ping").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the bare Litestar app did not start")
            time.sleep(0.2)
        plan = Plan(base, "bare", {"ping": 1}, users, duration, start_at=0.0)
        return run_phase(plan, procs)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- report -----------------------------------------------------------------------------


def table(title: str, summary: dict[str, object]) -> str:
    kinds = summary["kinds"]
    assert isinstance(kinds, dict)
    lines = [
        title,
        f"  {'kind':<14}{'count':>8}{'errors':>8}{'per s':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}",
    ]
    for kind, r in kinds.items():
        lines.append(
            f"  {kind:<14}{r['count']:>8}{r['errors']:>8}{r['per_s']:>9.1f}"
            f"{r['p50_ms']:>9.1f}{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the running gateway")
    parser.add_argument("--credentials", type=Path, default=None)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--mix", default=DEFAULT_MIX, help=f"kind=weight,... ({DEFAULT_MIX})")
    parser.add_argument("--dataset", default="digits", help="data set the 'show' reads")
    parser.add_argument(
        "--procs",
        type=int,
        default=max(1, min(4, (os.cpu_count() or 1) // 4)),
        help="load-generating processes (one Python process tops out near 1k req/s)",
    )
    parser.add_argument("--no-anchor", action="store_true")
    parser.add_argument("--no-reads-only", action="store_true", help="skip the reads-only phase")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("CVOPS_HOME", ".cvops"))
    creds_path = args.credentials or home / "admin.credentials"
    if not creds_path.exists():
        raise SystemExit(f"{creds_path} not found: start the platform first (./justw up)")
    creds = read_credentials(creds_path)
    try:
        ready = httpx.get(f"{args.url}/health/ready", timeout=5)
    except httpx.HTTPError as err:
        raise SystemExit(f"no gateway at {args.url}: {err}") from err
    if ready.status_code != 200:
        raise SystemExit(f"gateway not ready: {ready.status_code} {ready.text[:200]}")
    plan = Plan(
        args.url,
        "gateway",
        parse_mix(args.mix),
        args.users,
        args.duration,
        start_at=0.0,
        creds=creds,
        dataset=args.dataset,
        model=tiny_onnx_model(),
    )
    gateway = run_phase(plan, args.procs)
    reads_only = None
    if not args.no_reads_only:  # read capacity: the same users doing nothing but reads
        reads_only = run_phase(replace(plan, mix={k: 1 for k in READS}), args.procs)
    anchor = None if args.no_anchor else run_anchor(args.users, args.duration, args.procs)
    result: dict[str, object] = {
        "users": args.users,
        "generator_processes": args.procs,
        "gateway": gateway,
        "gateway_reads_only": reads_only,
        "bare": anchor,
    }
    if anchor is not None:
        bare_rate = anchor["kinds"]["ping"]["per_s"]  # type: ignore[index]
        result["reads_vs_bare"] = gateway["reads_per_s"] / bare_rate  # type: ignore[operator]
        if reads_only is not None:
            result["reads_only_vs_bare"] = reads_only["reads_per_s"] / bare_rate  # type: ignore[operator]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    head = f"{args.users} users in {args.procs} generator process(es)"
    print(table(f"gateway {args.url}, {head}, {gateway['duration_s']:.0f} s", gateway))
    print(
        f"  reads: {gateway['reads_per_s']:.1f}/s, p99 {gateway['reads_p99_ms']:.1f} ms"
        f" (target < 100 ms); errors: {gateway['errors']}"
    )
    for kind, sample in gateway["error_samples"].items():  # type: ignore[attr-defined]
        print(f"  first {kind} error: {sample}")
    if reads_only is not None:
        print(table(f"gateway reads only, {head}", reads_only))
        print(
            f"  reads: {reads_only['reads_per_s']:.1f}/s, p99 {reads_only['reads_p99_ms']:.1f} ms"
        )
    if anchor is not None:
        print(table(f"bare Litestar endpoint, {head}", anchor))
        print(f"ratio reads (mixed load) / bare: {result['reads_vs_bare']:.2f} (target >= 0.50)")
        if reads_only is not None:
            print(f"ratio reads (reads only) / bare: {result['reads_only_vs_bare']:.2f}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-bare"]:  # the anchor's subprocess
        serve_bare(int(sys.argv[2]))
    else:
        sys.exit(main())
