"""``./justw load``: the platform under locust's load mix, headless, against a running ``up``.

Runs ``bench/load/locustfile.py`` with ``--csv`` for ``--duration``, samples the resident
memory of every process named by ``$CVOPS_HOME/run/*.pid`` before the run, once every user is
spawned, every 10 s from ``--warmup`` later (default 60 s: caches such as the reporter's chart
renderer fill in the first minute) and at the end, then measures saturation throughput:
closed-loop users without think time on the gateway's reads and on a bare Litestar endpoint
(uvicorn, a subprocess started here), one after the other with the same client. Prints per
class of request rate, p50/p95/p99 and failures, each process's memory growth (the last
minute's mean over the first minute's after the warm-up), the CPU each process and the client
used, and the ratio of reads to the bare endpoint.

    ./justw up
    ./justw load --users 1000 --duration 10m --spawn-rate 50 [--json]

Targets (docs/reliability.md): 0 failures, p99 of reads < 100 ms, each process's memory
growth < 10 % after the warm-up, saturated reads >= 0.5x the bare endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
SATURATE = HERE / "saturate.py"
TARGET_READS_P99_MS = 100.0
TARGET_GROWTH = 0.10
TARGET_RATIO = 0.5


def seconds(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h30m`` -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (like 90s, 10m, 1h)")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


# -- memory ---------------------------------------------------------------------------------


def cvops_pids(home: Path) -> dict[str, int]:
    """Every process with a pid file under ``<home>/run`` that is alive."""
    pids = {}
    for path in sorted((home / "run").glob("*.pid")):
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(pid):
            pids[path.stem] = pid
    return pids


def rss(pids: dict[str, int]) -> dict[str, int]:
    """Resident bytes of each process and of each of its children, as ``<name>/<pid>``
    (the gateway's workers, tritonserver's python-backend stubs); those gone are left out."""
    out = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            out[name] = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    out[f"{name}/{child.pid}"] = child.memory_info().rss
        except psutil.Error:
            continue
    return out


SAMPLE_S = 10.0  # memory samples after the warm-up, this often
WINDOW = 6  # samples averaged at each end (a minute): a garbage collector's sawtooth (NATS's
# Go heap swings +-15 % within seconds) must not read as growth


def window_growth(samples: list[dict[str, int]], name: str) -> float:
    """The mean resident memory of the last minute over that of the first minute after the
    warm-up, minus one."""
    values = [s[name] for s in samples if name in s]
    first, last = values[:WINDOW], values[-WINDOW:]
    return (sum(last) / len(last)) / (sum(first) / len(first)) - 1


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process and its children so far (tritonserver's
    python-backend stubs are its children)."""
    out = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            out[name] = sum(q.cpu_times().user + q.cpu_times().system for q in procs)
        except psutil.Error:
            continue
    return out


# -- locust -----------------------------------------------------------------------------------


@dataclass
class LocustRun:
    """One headless locust process: its command, output files and when all users ran."""

    argv: list[str]
    prefix: Path
    spawned_at: float | None = None
    lines: list[str] = field(default_factory=list)

    def run(self, env: dict[str, str], when_spawned: object = None) -> int:
        proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip())
            if self.spawned_at is None and "All users spawned" in line:
                self.spawned_at = time.monotonic()
                if callable(when_spawned):
                    when_spawned()
        return proc.wait()

    def stats(self) -> list[dict[str, str]]:
        path = Path(f"{self.prefix}_stats.csv")
        with path.open() as f:
            return list(csv.DictReader(f))


def locust_argv(
    prefix: Path, locustfile: Path, host: str, users: int, rate: float, duration: float
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "--headless",
        "--only-summary",
        "--host",
        host,
        "-u",
        str(users),
        "-r",
        str(rate),
        "-t",
        f"{int(duration)}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(prefix),
        "--exit-code-on-error",
        "0",
    ]


def per_name(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """locust's CSV rows as numbers: per request name its count, failures, rate, percentiles."""
    out: list[dict[str, object]] = []
    for r in rows:
        out.append(
            {
                "type": r["Type"],
                "name": r["Name"],
                "requests": int(r["Request Count"]),
                "failures": int(r["Failure Count"]),
                "per_s": float(r["Requests/s"]),
                "p50_ms": float(r["50%"] or 0),
                "p95_ms": float(r["95%"] or 0),
                "p99_ms": float(r["99%"] or 0),
            }
        )
    return out


# -- saturation -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_bare(port: int) -> None:
    """The anchor: one trivial JSON endpoint on Litestar under uvicorn's defaults (as the
    gateway's: uvloop, httptools)."""
    import uvicorn
    from litestar import Litestar, get

    @get("/ping")
    async def ping() -> dict[str, object]:
        return {"ok": True, "items": []}

    uvicorn.run(
        Litestar([ping]), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


def saturate(
    out: Path, label: str, host: str, paths: str, token: str, users: int, duration: float
) -> dict[str, float]:
    """Closed-loop users without think time on ``paths``: requests/s, p50/p99, failures."""
    prefix = out / f"saturate-{label}"
    argv = locust_argv(prefix, SATURATE, host, users, users, duration)
    env = {**os.environ, "CVOPS_SATURATE_PATHS": paths, "CVOPS_SATURATE_TOKEN": token}
    run = LocustRun(argv, prefix)
    run.run(env)
    total = next(r for r in per_name(run.stats()) if r["name"] == "Aggregated")
    return {
        "per_s": float(total["per_s"]),  # type: ignore[arg-type]
        "p50_ms": float(total["p50_ms"]),  # type: ignore[arg-type]
        "p99_ms": float(total["p99_ms"]),  # type: ignore[arg-type]
        "failures": float(total["failures"]),  # type: ignore[arg-type]
    }


def bare_anchor(out: Path, users: int, duration: float) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-bare", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ping").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("the bare Litestar app did not start")
            time.sleep(0.2)
        return saturate(out, "bare", url, "/ping", "", users, duration)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- report -----------------------------------------------------------------------------------


def report(result: dict[str, object]) -> str:
    lines = [
        f"{result['users']} users, {result['duration_s']:.0f} s, "
        f"think time ~{result['think_s']} s, mix {result['mix']}"
    ]
    lines.append(
        f"  {'class':<18}{'requests':>10}{'fails':>7}{'per s':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    )
    groups = result["groups"]
    assert isinstance(groups, dict)
    for name, g in groups.items():
        lines.append(
            f"  {name:<18}{g['requests']:>10}{g['failures']:>7}{g['per_s']:>9.1f}"
            f"{g['p50_ms']:>9.0f}{g['p95_ms']:>9.0f}{g['p99_ms']:>9.0f}"
        )
    lines.append("  per request name:")
    for r in result["requests"]:  # type: ignore[attr-defined]
        lines.append(
            f"    {r['type']:<5}{r['name']:<26}{r['requests']:>9}{r['failures']:>7}"
            f"{r['per_s']:>9.1f}{r['p50_ms']:>9.0f}{r['p95_ms']:>9.0f}{r['p99_ms']:>9.0f}"
        )
    for err in result["errors"]:  # type: ignore[attr-defined]
        lines.append(
            f"  error x{err['count']}: {err['method']} {err['name']}: {err['error'][:160]}"
        )
    lines.append(
        f"memory (RSS MiB): start -> all spawned -> warm ({result['warmup_s']:.0f} s later) -> end;"
        " growth: the last minute's mean over the first minute's after the warm-up"
        " (start->end)"
    )
    for name, m in result["memory"].items():  # type: ignore[attr-defined]
        lines.append(
            f"  {name:<26}{m['start'] / 2**20:>8.0f}{(m['spawned'] or 0) / 2**20:>8.0f}"
            f"{(m['warm'] or 0) / 2**20:>8.0f}{m['end'] / 2**20:>8.0f}"
            f"   {m['growth_after_warmup'] * 100:+6.1f} % ({m['growth'] * 100:+.1f} %)"
        )
    cpu = result["cpu_s"]
    assert isinstance(cpu, dict)
    wall, cores = result["wall_s"], result["cores"]
    assert isinstance(wall, float) and isinstance(cores, int)
    lines.append(
        f"CPU during the run ({wall:.0f} s x {cores} cores = {wall * cores:.0f} core-s): "
        f"{sum(cpu.values()):.0f} core-s used"
    )
    for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<22}{seconds:>8.0f} s  {seconds / wall * 100:>5.0f} % of a core")
    sat = result.get("saturation")
    if isinstance(sat, dict):
        lines.append(
            f"saturation, {sat['users']} users without think time, {sat['duration_s']:.0f} s each:"
        )
        for label in ("reads", "bare"):
            s = sat[label]
            lines.append(
                f"  {label:<6}{s['per_s']:>9.1f} req/s  p50 {s['p50_ms']:.0f} ms  "
                f"p99 {s['p99_ms']:.0f} ms  failures {s['failures']:.0f}"
            )
        lines.append(f"  reads / bare = {sat['ratio']:.2f} (target >= {TARGET_RATIO})")
    verdict = result["verdict"]
    assert isinstance(verdict, dict)
    lines.append(
        "verdict: " + ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in verdict.items())
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=seconds, default=600.0, help="like 10m, 120s")
    parser.add_argument("--spawn-rate", type=float, default=50.0, help="users started per s")
    parser.add_argument("--mix", default="", help="user class weights (the locustfile's default)")
    parser.add_argument("--think", type=float, default=1.0, help="mean think time, s")
    parser.add_argument("--hold", type=float, default=30.0, help="s a watcher holds a feed")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("CVOPS_HOME", ".cvops")))
    parser.add_argument("--url", default="", help="the gateway (default: from the settings)")
    parser.add_argument("--router", default="", help="the router (default: from the settings)")
    parser.add_argument("--no-inference", action="store_true")
    parser.add_argument(
        "--warmup",
        type=seconds,
        default=60.0,
        help="memory growth is measured from this long after every user is spawned",
    )
    parser.add_argument("--out", type=Path, default=None, help="CSV folder (default <home>/load)")
    parser.add_argument("--saturation-users", type=int, default=64)
    parser.add_argument("--saturation-duration", type=seconds, default=30.0)
    parser.add_argument("--no-saturation", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    from cvops.core import load_settings

    settings = load_settings()
    home = args.home.resolve()
    url = args.url or f"http://127.0.0.1:{settings.gateway_port}"
    router = (
        ""
        if args.no_inference
        else (args.router or f"http://127.0.0.1:{settings.router_http_port}")
    )
    credentials = home / "admin.credentials"
    if not credentials.exists():
        raise SystemExit(f"{credentials} not found: start the platform first (./justw up)")
    token = dict(
        line.split("=", 1) for line in credentials.read_text().splitlines() if "=" in line
    )["token"]
    try:
        ready = httpx.get(f"{url}/health/ready", timeout=5)
    except httpx.HTTPError as err:
        raise SystemExit(f"no gateway at {url}: {err}") from err
    if ready.status_code != 200:
        raise SystemExit(f"gateway not ready: {ready.status_code} {ready.text[:200]}")
    out = (args.out or home / "load" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)

    pids = cvops_pids(home)
    before = rss(pids)
    spawned: dict[str, int] = {}
    warm: dict[str, int] = {}
    prefix = out / "load"
    summary = out / "summary.json"
    cmd = locust_argv(prefix, LOCUSTFILE, url, args.users, args.spawn_rate, args.duration)
    cmd += ["--cvops-token", token, "--cvops-summary", str(summary)]
    cmd += ["--cvops-think", str(args.think), "--cvops-hold", str(args.hold)]
    cmd += ["--cvops-router", router] if router else []
    cmd += ["--cvops-mix", args.mix] if args.mix else []
    if not args.json:
        print("running:", " ".join(cmd[2:]).replace(token, "<admin token>"), flush=True)
    run = LocustRun(cmd, prefix)

    samples: list[dict[str, int]] = []  # every SAMPLE_S after the warm-up
    sampling = threading.Event()

    def sample_after_warmup() -> None:
        # a process's caches (the reporter's chart renderer, ~30 reports) fill in the first
        # minute; what grows after that is what a leak would look like
        if sampling.wait(args.warmup):
            return
        warm.update(rss(pids))
        while not sampling.is_set():
            samples.append(rss(pids))
            sampling.wait(SAMPLE_S)

    def when_spawned() -> None:
        spawned.update(rss(pids))
        threading.Thread(target=sample_after_warmup, daemon=True).start()

    cpu_before = cpu_seconds(pids)
    load_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    code = run.run(dict(os.environ), when_spawned)
    wall = time.monotonic() - started
    sampling.set()
    load_cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after = cpu_seconds(pids)
    after = rss(pids)
    if code != 0 or not summary.exists():
        print("\n".join(run.lines[-40:]), file=sys.stderr)
        raise SystemExit(f"locust exited {code}")
    found = json.loads(summary.read_text())
    memory = {
        name: {
            "pid": pids.get(name) or int(name.rsplit("/", 1)[-1]),
            "start": before[name],
            "spawned": spawned.get(name),
            "end": after[name],
            "growth": after[name] / before[name] - 1,
            "growth_after_spawn": after[name] / spawned.get(name, before[name]) - 1,
            "warm": warm.get(name),
            "growth_after_warmup": window_growth(samples, name)
            if len(samples) >= 2 * WINDOW
            else after[name] / warm.get(name, before[name]) - 1,
        }
        for name in before
        if name in after
    }
    cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_before if name in cpu_after}
    cpu["locust (the client)"] = (load_cpu_after.ru_utime + load_cpu_after.ru_stime) - (
        load_cpu.ru_utime + load_cpu.ru_stime
    )
    result: dict[str, object] = {
        "users": args.users,
        "warmup_s": args.warmup,
        "wall_s": wall,
        "cores": psutil.cpu_count(),
        "cpu_s": cpu,
        "duration_s": args.duration,
        "think_s": args.think,
        "mix": args.mix or "default",
        "csv": str(prefix),
        "groups": found["groups"],
        "requests": per_name(run.stats()),
        "errors": found["errors"],
        "memory": memory,
    }
    ratio_ok = True
    if not args.no_saturation:
        reads = ",".join(
            [
                "/models/",
                "/datasets/",
                "/jobs/",
                "/deployments/",
                "/models/load-tiny-0",
                "/datasets/load-tiny-data",
            ]
        )
        sat_users, sat_s = args.saturation_users, args.saturation_duration
        gateway = saturate(out, "reads", url, reads, token, sat_users, sat_s)
        bare = bare_anchor(out, sat_users, sat_s)
        ratio = gateway["per_s"] / bare["per_s"] if bare["per_s"] else 0.0
        result["saturation"] = {
            "users": sat_users,
            "duration_s": sat_s,
            "reads": gateway,
            "bare": bare,
            "ratio": ratio,
        }
        ratio_ok = ratio >= TARGET_RATIO
    groups = found["groups"]
    reads_p99 = float(groups.get("reads", {}).get("p99_ms", float("inf")))
    failures = sum(int(g["failures"]) for g in groups.values())
    result["verdict"] = {
        "0 failures": failures == 0,
        f"reads p99 < {TARGET_READS_P99_MS:.0f} ms": reads_p99 < TARGET_READS_P99_MS,
        "memory growth < 10 % after the warm-up": all(
            float(m["growth_after_warmup"] or 0) < TARGET_GROWTH for m in memory.values()
        ),
        f"reads/bare >= {TARGET_RATIO}": ratio_ok,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve-bare"]:  # the anchor's subprocess
        serve_bare(int(sys.argv[2]))
    else:
        sys.exit(main())
