"""Reports over HTTP on a real NATS: the view of a version's newest report and its files,
streamed from the object store.

The reporter's part is played by hand: the files go into the object store and
``report.generated`` onto the log, as ``cvops.reporter`` would publish them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.reporting import MissingSection, ReportGenerated
from cvops.core import ArtifactStore, Bus, dump_rows, rebuild_projection, sqlite_engine
from cvops.gateway import projection as views
from cvops.gateway.reports import REPORT_CSP
from cvops.testing.gateway import Platform, observed_statuses, undeclared_statuses

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24


@pytest.fixture(scope="module")
def platform(
    nats_server: Any, tmp_path_factory: pytest.TempPathFactory, platform_factory: Any
) -> Iterator[Platform]:
    running = platform_factory(
        nats_server.url, tmp_path_factory.mktemp("gateway-reports"), upload_verdict_timeout_s=0.3
    )
    try:
        yield running
    finally:
        running.gateway.stop()


@pytest.fixture
async def client(platform: Platform) -> Any:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as http:
        yield http


async def wait_for(platform: Platform, seq: int) -> None:
    """Until the gateway's projection has applied ``seq``."""
    runner = platform.gateway.service.runner
    for _ in range(500):
        if runner.position >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the gateway projection did not reach {seq}")


async def announce(
    bus: Bus,
    platform: Platform,
    model: str,
    last_seq: int,
    *,
    html: bytes | None = None,
    store: bool = True,
) -> tuple[ReportGenerated, dict[str, bytes]]:
    """Store a report's files (unless ``store`` is False) and publish ``report.generated``
    as the reporter would; wait until the gateway has it."""
    files = {
        "html": html or f"<!DOCTYPE html><html><body>report {last_seq}</body></html>".encode(),
        "pdf": b"%PDF-1.7\n" + str(last_seq).encode(),
        "json": json.dumps({"model": model, "last_seq": last_seq}).encode(),
        "latency": PNG + str(last_seq).encode(),
        "throughput": PNG + b"t" + str(last_seq).encode(),
    }
    artifacts = ArtifactStore(bus)
    refs: dict[str, ArtifactRef] = {}
    for kind, data in files.items():
        if store:
            refs[kind] = await artifacts.put_bytes(data, filename=kind)
        else:  # a report whose blobs are gone from the store
            refs[kind] = ArtifactRef(sha256=uuid.uuid4().hex * 2, size=len(data))
    stamp = Stamp(
        now=datetime.now(UTC), actor="reporter", correlation_id=f"report-{uuid.uuid4().hex}"
    )
    event = ReportGenerated(
        **stamp.envelope(f"{model}:1@{last_seq}"),
        model_name=model,
        version=1,
        html=refs["html"],
        pdf=refs["pdf"],
        data=refs["json"],
        charts={"latency": refs["latency"], "throughput": refs["throughput"]},
        sections=["dataset", "training", "benchmark"],
        missing=[MissingSection(section="conversion", reason=f"no conversion yet: {model}:1")],
        last_seq=last_seq,
        training_job="job-1",
        conversion_jobs=[],
        benchmark_jobs=["bench-1"],
        deployments=["dep-1"],
    )
    await wait_for(platform, (await bus.publish(event)).seq)
    return event, files


def model_name() -> str:
    return f"reported-{uuid.uuid4().hex[:8]}"


async def test_a_report_is_seen_as_a_view_and_its_files_stream_from_the_object_store(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    model, viewer = model_name(), platform.headers("viewer")
    base = f"/models/{model}/versions/1/report"
    none_yet = await client.get(base, headers=viewer)
    assert none_yet.status_code == 404, none_yet.text
    assert none_yet.json() == {"error": "not_found", "detail": f"no report yet for {model}:1"}
    assert (await client.get(f"{base}.html", headers=viewer)).status_code == 404

    event, files = await announce(bus, platform, model, 40)
    view = (await client.get(base, headers=viewer)).json()
    assert view == {
        "model_name": model,
        "version": 1,
        "generated_at": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "last_seq": 40,
        "html": f"{base}.html",
        "pdf": f"{base}.pdf",
        "data": f"{base}.json",
        "sections": ["dataset", "training", "benchmark"],
        "missing": [{"section": "conversion", "reason": f"no conversion yet: {model}:1"}],
        "charts": ["latency", "throughput"],
        "chart_files": {
            "latency": f"{base}/charts/latency.png",
            "throughput": f"{base}/charts/throughput.png",
        },
        "training_job": "job-1",
        "conversion_jobs": [],
        "benchmark_jobs": ["bench-1"],
        "deployments": ["dep-1"],
    }

    page = await client.get(view["html"], headers=viewer)
    assert page.status_code == 200 and page.content == files["html"]
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == REPORT_CSP
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["content-disposition"].startswith("inline")
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-content-sha256"] == event.html.sha256

    pdf = await client.get(view["pdf"], headers=viewer)
    assert (pdf.status_code, pdf.headers["content-type"]) == (200, "application/pdf")
    assert pdf.content == files["pdf"]
    data = await client.get(view["data"], headers=viewer)
    assert data.headers["content-type"].startswith("application/json")
    assert data.json() == {"model": model, "last_seq": 40}
    for chart in view["charts"]:
        png = await client.get(view["chart_files"][chart], headers=viewer)
        assert (png.status_code, png.headers["content-type"]) == (200, "image/png")
        assert png.content == files[chart]


async def test_unknown_charts_versions_and_gone_blobs_are_404(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    model, viewer = model_name(), platform.headers("viewer")
    base = f"/models/{model}/versions/1/report"
    await announce(bus, platform, model, 41)
    for path, why in (
        (f"{base}/charts/memory.png", "has no chart 'memory.png' (latency.png, throughput.png)"),
        (f"{base}/charts/latency", "has no chart 'latency'"),
        (f"/models/{model}/versions/2/report", f"no report yet for {model}:2"),
        (f"/models/{model}/versions/2/report.pdf", f"no report yet for {model}:2"),
        (f"/models/{model}/versions/2/report/charts/latency.png", "no report yet"),
        (f"/models/{model}/versions/{2**70}/report", "no report yet"),
    ):
        refused = await client.get(path, headers=viewer)
        assert refused.status_code == 404 and why in refused.json()["detail"], (path, refused.text)

    gone = model_name()
    await announce(bus, platform, gone, 42, store=False)
    assert (await client.get(f"/models/{gone}/versions/1/report", headers=viewer)).is_success
    for suffix in (".html", ".pdf", ".json", "/charts/latency.png"):
        refused = await client.get(f"/models/{gone}/versions/1/report{suffix}", headers=viewer)
        assert refused.status_code == 404, refused.text
        assert "no longer in the object store" in refused.json()["detail"]


async def test_a_newer_report_replaces_the_older_and_a_late_older_one_does_not(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    model, viewer = model_name(), platform.headers("viewer")
    base = f"/models/{model}/versions/1/report"
    await announce(bus, platform, model, 50, html=b"<p>first</p>")
    newer, _ = await announce(bus, platform, model, 60, html=b"<p>newer</p>")
    assert (await client.get(base, headers=viewer)).json()["last_seq"] == 60
    assert (await client.get(f"{base}.html", headers=viewer)).content == b"<p>newer</p>"

    # a slower reporter instance announces a report of less of the log after the newer one
    await announce(bus, platform, model, 55, html=b"<p>late</p>")
    view = (await client.get(base, headers=viewer)).json()
    assert view["last_seq"] == 60
    assert view["generated_at"] == newer.occurred_at.isoformat().replace("+00:00", "Z")
    assert (await client.get(f"{base}.html", headers=viewer)).content == b"<p>newer</p>"


async def test_the_rebuilt_projection_has_the_same_reports(
    platform: Platform, bus: Bus, tmp_path: Path
) -> None:
    """Run after the tests above: the reports, replayed from the log, give the same rows."""
    await wait_for(platform, await bus.last_seq())
    live = sqlite_engine(views.db_path(platform.settings))
    before = dump_rows(live, views.metadata)
    live.dispose()
    assert len(before["reports"]) >= 4
    target = tmp_path / "gateway.sqlite"
    await rebuild_projection(bus, views.GatewayProjection(), target)
    rebuilt = sqlite_engine(target)
    assert dump_rows(rebuilt, views.metadata) == before
    rebuilt.dispose()


async def test_the_document_declares_every_status_the_report_routes_answered(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    """Run last in this module: the 404s above are declared in /schema/openapi.json."""
    document = (await client.get("/schema/openapi.json")).json()
    observed = observed_statuses(platform.gateway)
    base = "/models/{name}/versions/{version}/report"
    for route in ("", ".html", ".pdf", "/charts/{chart}"):
        assert 404 in observed[("GET", base + route)], route
    assert undeclared_statuses(document, observed) == []
    html = document["paths"]["/models/{name}/versions/{version}/report.html"]["get"]
    assert "text/html" in html["responses"]["200"]["content"]


async def test_a_page_stored_in_parts_is_served_whole(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    """The reporter stores a page as three blobs (what precedes Vega's JavaScript, the
    JavaScript every page shares, what follows); a reader gets the one page ``html`` names."""
    model, viewer = model_name(), platform.headers("viewer")
    parts = [b"<!DOCTYPE html><html><head><script>", b"var vega = 1;" * 1000, b"</script></html>"]
    page = b"".join(parts)
    event, _ = await announce(bus, platform, model, 70)
    artifacts = ArtifactStore(bus)
    stored = [await artifacts.put_bytes(p, filename=f"part{i}") for i, p in enumerate(parts)]
    whole = ArtifactRef(sha256=hashlib.sha256(page).hexdigest(), size=len(page))
    split = msgspec.structs.replace(
        event,
        event_id=uuid.uuid4(),
        html=whole,
        html_parts=stored,
        last_seq=71,
    )
    await wait_for(platform, (await bus.publish(split)).seq)
    served = await client.get(f"/models/{model}/versions/1/report.html", headers=viewer)
    assert served.status_code == 200 and served.content == page
    assert served.headers["content-length"] == str(len(page))
    assert served.headers["x-content-sha256"] == whole.sha256

    # one part gone from the store: a 404 before any byte, not a page cut short
    gone = model_name()
    event, _ = await announce(bus, platform, gone, 72)
    missing = ArtifactRef(sha256=uuid.uuid4().hex * 2, size=9)
    await wait_for(
        platform,
        (
            await bus.publish(
                msgspec.structs.replace(
                    event,
                    event_id=uuid.uuid4(),
                    html=whole,
                    html_parts=[stored[0], missing, stored[2]],
                    last_seq=73,
                )
            )
        ).seq,
    )
    refused = await client.get(f"/models/{gone}/versions/1/report.html", headers=viewer)
    assert refused.status_code == 404 and "no longer in the object store" in refused.text


async def test_a_corrupt_last_part_is_an_error_status_not_a_page_cut_short(
    platform: Platform, bus: Bus, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    model, viewer = model_name(), platform.headers("viewer")
    artifacts = ArtifactStore(bus)
    head = await artifacts.put_bytes(b"<html><head><script>", filename="part0")
    body = await artifacts.put_bytes(b"var vega = 2;" * 1000, filename="part1")
    # a blob whose bytes are not those its name says (a damaged store)
    damaged = tmp_path / "tail"
    damaged.write_bytes(b"</script></html> but not as stored")
    tail = await artifacts.put_file(damaged, sha256=hashlib.sha256(b"</html>").hexdigest())
    event, _ = await announce(bus, platform, model, 80)
    split = msgspec.structs.replace(
        event,
        event_id=uuid.uuid4(),
        html=ArtifactRef(sha256="0" * 64, size=13_100),
        html_parts=[head, body, tail],
        last_seq=81,
    )
    await wait_for(platform, (await bus.publish(split)).seq)
    served = await client.get(f"/models/{model}/versions/1/report.html", headers=viewer)
    # the damage is found before the status line goes out
    assert served.status_code == 500, served.status_code
    assert b"var vega" not in served.content
