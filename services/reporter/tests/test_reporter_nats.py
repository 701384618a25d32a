"""The reporter as a process on a real NATS: a new result regenerates its version's report
within seconds and ``report.generated`` announces it (the delay is measured and printed)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType

import msgspec
import numpy as np

from cvops.contracts import Event, decode
from cvops.contracts.conversion import BenchmarkCompleted
from cvops.contracts.deployment import DeploymentReady, DeploymentRequested
from cvops.contracts.registry import DatasetValidated
from cvops.contracts.reporting import ReportGenerated
from cvops.core import ArtifactStore, Bus, Settings
from cvops.testing.core import start_service

# the most a regenerated report may take after its result is acknowledged
MAX_DELAY_S = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def reports(bus: Bus) -> AsyncIterator[list[tuple[float, ReportGenerated]]]:
    """Every ``report.generated`` published while inside, with the time it was received."""
    seen: list[tuple[float, ReportGenerated]] = []

    async def on_msg(msg) -> None:  # type: ignore[no-untyped-def]
        event = decode(msg.data)
        if isinstance(event, ReportGenerated):
            seen.append((time.monotonic(), event))

    sub = await bus.nc.subscribe("cvops.evt.report.>", cb=on_msg)
    try:
        yield seen
    finally:
        await sub.unsubscribe()


async def first(
    seen: list[tuple[float, ReportGenerated]],
    match: Callable[[ReportGenerated], bool],
    timeout: float,
    log: Path,
) -> tuple[float, ReportGenerated]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for at, event in seen:
            if match(event):
                return at, event
        await asyncio.sleep(0.02)
    raise AssertionError(f"no matching report.generated in {timeout} s:\n{log.read_text()[-4000:]}")


async def stored_page(store: ArtifactStore, report: ReportGenerated) -> str:
    """The page the gateway serves: its stored parts, one after the other, which must be
    the bytes ``report.html`` names; the whole page itself is not stored."""
    page = b"".join([await store.get_bytes(part.sha256) for part in report.html_parts])
    assert hashlib.sha256(page).hexdigest() == report.html.sha256
    assert len(page) == report.html.size and len(report.html_parts) == 3
    assert not await store.exists(report.html.sha256)
    return page.decode()


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


async def test_a_completed_benchmark_regenerates_the_report_and_announces_it_within_seconds(
    bus: Bus, settings: Settings, tmp_path: Path, lineage: ModuleType
) -> None:
    # nothing listens on the router's metrics port: the live numbers say so, quickly
    settings = msgspec.structs.replace(
        settings, reporter_metrics_port=_free_port(), router_metrics_port=_free_port()
    )
    npz = tmp_path / "canonical.npz"
    rng = np.random.default_rng(0)
    np.savez(
        npz,
        x=rng.integers(0, 255, (12, 8, 8, 1), dtype=np.uint8),
        y=np.array([0, 1, 2] * 4),
        classes=np.asarray(lineage.CLASSES),
    )
    canonical = await ArtifactStore(bus).put_file(npz, media_type="application/x-npz")
    events: list[Event] = lineage.lineage_events()
    events = [
        msgspec.structs.replace(e, canonical=canonical) if isinstance(e, DatasetValidated) else e
        for e in events
    ]
    completed = next(e for e in events if isinstance(e, BenchmarkCompleted))
    deployment = [e for e in events if isinstance(e, DeploymentRequested | DeploymentReady)]
    before = [e for e in events if e is not completed and e not in deployment]
    key = (lineage.MODEL, lineage.VERSION)

    log = tmp_path / "reporter.log"
    proc = start_service("cvops.reporter", settings, log)
    try:
        async with reports(bus) as seen:
            last = 0
            for e in before:
                last = (await bus.publish(e)).seq
            _, early = await first(
                seen, lambda r: (r.model_name, r.version) == key and r.last_seq >= last, 90, log
            )
            assert "conversion" in early.sections and "benchmark" in early.sections
            missing = {m.section: m.reason for m in early.missing}
            assert set(missing) == {"recommendation", "deployment"}
            assert "has not completed" in missing["recommendation"]

            acked = await bus.publish(completed)
            t0 = time.monotonic()
            at, report = await first(
                seen,
                lambda r: (r.model_name, r.version) == key and r.last_seq >= acked.seq,
                30,
                log,
            )
            delay = at - t0
            built = [ln for ln in log.read_text().splitlines() if "report_generated" in ln]
            print(f"\nreport regenerated {delay:.3f} s after benchmark.completed was acknowledged")
            print("\n".join(built[-1:]))
            assert delay < MAX_DELAY_S
            assert "recommendation" in report.sections, (report.missing, report.last_seq, acked.seq)
            assert report.causation_id == completed.event_id
            assert report.correlation_id == completed.correlation_id
            assert set(report.charts) >= {"latency", "throughput", "memory", "pareto", "samples"}

            store = ArtifactStore(bus)
            page = await stored_page(store, report)
            assert completed.reason in page and report.html.media_type == "text/html"
            assert (await store.get_bytes(report.pdf.sha256)).startswith(b"%PDF")
            png = await store.get_bytes(report.charts["latency"].sha256)
            assert png.startswith(b"\x89PNG")

            for e in deployment:
                last = (await bus.publish(e)).seq
            _, deployed = await first(
                seen, lambda r: (r.model_name, r.version) == key and r.last_seq >= last, 30, log
            )
            assert deployed.missing == [] and deployed.deployments == ["digits"]
            page = await stored_page(store, deployed)
            assert "live numbers unavailable" in page
            # both pages carry Vega's JavaScript; the store holds it once
            assert report.html_parts[1] == deployed.html_parts[1]
            assert report.html_parts[1].size > 500_000 > deployed.html_parts[0].size
    finally:
        rc = stop(proc)
    assert rc == 0, log.read_text()[-4000:]
