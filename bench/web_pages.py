"""Web UI page benchmark: server-side time of the models pages with 1,000 versions, against
the JSON API's answer of the same data measured in the same run.

Starts its own nats-server (temp dir) and a real gateway in-process (uvicorn on loopback),
seeds the log with 1,000 model versions (``--models`` models of ``--versions`` versions
each) plus one model of ``--big`` versions, signs in through the login form, and times each
request inside the server (from the request entering the ASGI app to the last body byte):

  models list    GET /ui/models               vs  GET /models        (same rows, as JSON)
  model page     GET /ui/models/<big>         vs  GET /models/<big>  (every version)

and prints medians, p95s and the ratios page / JSON. Target: the models list page's p95
under 200 ms with 1,000 versions.

    python bench/web_pages.py [--models 100] [--versions 10] [--big 1000] [--n 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from cvops.contracts import ArtifactRef, Stamp, TensorSpec
from cvops.contracts.registry import ModelRegistered, ModelVersionAdded
from cvops.core import Bus, load_settings
from cvops.core.logging import configure_logging
from cvops.core.natsd import start_nats, stop_process
from cvops.testing.gateway import RunningGateway

TARGET_MS = 200.0
ARTIFACT = ArtifactRef(sha256="0" * 64, size=1234, media_type="application/octet-stream")
INPUT = TensorSpec(name="x", shape=[-1, 3, 32, 32], dtype="float32")
OUTPUT = TensorSpec(name="y", shape=[-1, 10], dtype="float32")


async def seed(settings: object, models: dict[str, int]) -> int:
    """Register each model with its number of versions; returns the versions added."""
    bus = await Bus.connect(settings, name="bench-seed")  # type: ignore[arg-type]
    added = 0
    try:
        stamp = Stamp(now=datetime.now(UTC), actor="registry", correlation_id="bench-web")
        for name, versions in models.items():
            await bus.publish(ModelRegistered(**stamp.envelope(name), model_name=name, owner="ann"))
            for v in range(1, versions + 1):
                await bus.publish(
                    ModelVersionAdded(
                        **stamp.envelope(f"{name}-{v}"),
                        model_name=name,
                        version=v,
                        upload_id=f"{name}-up-{v}",
                        artifact=ARTIFACT,
                        format="onnx",
                        inputs=[INPUT],
                        outputs=[OUTPUT],
                        parameter_count=1000 + v,
                        opset=18,
                        architecture="simple-cnn",
                        num_classes=10,
                    )
                )
                added += 1
    finally:
        await bus.close()
    return added


class ServerClock:
    """Wraps the gateway's ASGI handler: the server-side seconds of each request, by path."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.seconds: dict[str, list[float]] = {}
        inner = gateway.app.asgi_handler

        async def timed(scope, receive, send):  # type: ignore[no-untyped-def]
            start = time.perf_counter()

            async def send_timed(message):  # type: ignore[no-untyped-def]
                await send(message)
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    took = time.perf_counter() - start
                    self.seconds.setdefault(scope["path"], []).append(took)

            await inner(scope, receive, send_timed)

        gateway.app.asgi_handler = timed


def credentials(home: Path) -> tuple[str, str]:
    text = (home / "admin.credentials").read_text()
    found = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return found["username"], found["password"]


def sign_in(client: httpx.Client, username: str, password: str) -> None:
    form = client.get("/ui/login").text
    token = re.search(r'name="csrf_token" value="([^"]*)"', form)
    assert token, "no form token on the login page"
    done = client.post(
        "/ui/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
    )
    assert done.status_code == 303, done.text


def measure(client: httpx.Client, clock: ServerClock, path: str, n: int, **kw: object) -> dict:
    for _ in range(3):  # warm-up: templates compiled, caches filled
        assert client.get(path, **kw).status_code == 200  # type: ignore[arg-type]
    clock.seconds.pop(path, None)
    for _ in range(n):
        response = client.get(path, **kw)  # type: ignore[arg-type]
        assert response.status_code == 200, response.text[:300]
    ms = sorted(s * 1000 for s in clock.seconds[path])
    return {
        "path": path,
        "n": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": ms[max(0, round(0.95 * len(ms)) - 1)],
        "bytes": len(response.content),
    }


def run(models: int, versions: int, big: int, n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cvops-bench-web-") as tmp:
        root = Path(tmp)
        nats, port = start_nats(root / "nats", sync_always=False)
        try:
            settings = load_settings({}, nats_url=f"nats://127.0.0.1:{port}", home=str(root))
            catalog = {f"model-{i:03d}": versions for i in range(models)}
            catalog["big-model"] = big
            added = asyncio.run(seed(settings, catalog))
            gateway = RunningGateway(settings)
            clock = ServerClock(gateway)
            gateway.start()
            try:
                username, password = credentials(root)
                with httpx.Client(base_url=gateway.url, timeout=60) as web:
                    sign_in(web, username, password)
                    with httpx.Client(base_url=gateway.url, timeout=60) as api:
                        login = api.post(
                            "/auth/login", json={"username": username, "password": password}
                        )
                        api.headers["Authorization"] = f"Bearer {login.json()['token']}"
                        result = {
                            "versions": added,
                            "models": len(catalog),
                            "list_page": measure(web, clock, "/ui/models", n),
                            "list_json": measure(api, clock, "/models", n),
                            "model_page": measure(web, clock, "/ui/models/big-model", n),
                            "model_json": measure(api, clock, "/models/big-model", n),
                        }
            finally:
                gateway.stop()
        finally:
            stop_process(nats)
    lp, lj = result["list_page"], result["list_json"]
    mp, mj = result["model_page"], result["model_json"]
    result["list_page_vs_json"] = lp["median_ms"] / lj["median_ms"]  # type: ignore[index]
    result["model_page_vs_json"] = mp["median_ms"] / mj["median_ms"]  # type: ignore[index]
    result["list_page_under_target"] = lp["p95_ms"] < TARGET_MS  # type: ignore[index]
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100, help="models in the list")
    parser.add_argument("--versions", type=int, default=10, help="versions of each")
    parser.add_argument("--big", type=int, default=1000, help="versions of the one big model")
    parser.add_argument("--n", type=int, default=50, help="timed requests per page")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    configure_logging("bench", "WARNING", False)
    for noisy in ("httpx", "uvicorn", "uvicorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(args.models, args.versions, args.big, args.n)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if result["list_page_under_target"] else 1
    print(
        f"web pages, server-side: the list of {args.models} models x {args.versions} versions, "
        f"the page of one model of {args.big} versions ({result['versions']} versions in all)"
    )
    print(f"{'page':<28}{'median ms':>10}{'p95 ms':>10}{'KiB':>8}")
    for key in ("list_page", "list_json", "model_page", "model_json"):
        row = result[key]
        print(
            f"{row['path']:<28}{row['median_ms']:>10.2f}{row['p95_ms']:>10.2f}"  # type: ignore[index]
            f"{row['bytes'] / 1024:>8.0f}"  # type: ignore[index]
        )
    print(
        f"ratio models list page / JSON: {result['list_page_vs_json']:.2f}; "
        f"p95 {result['list_page']['p95_ms']:.1f} ms (target < {TARGET_MS:.0f} ms: "  # type: ignore[index]
        f"{'met' if result['list_page_under_target'] else 'MISSED'})"
    )
    print(f"ratio model page ({args.big} versions) / JSON: {result['model_page_vs_json']:.2f}")
    return 0 if result["list_page_under_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
