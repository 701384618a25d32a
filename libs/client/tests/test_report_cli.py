"""`cvops report` and the SDK's report calls against the stand-in gateway: files written,
sections and missing sections printed, --json, --open and the exit code without a report."""

from __future__ import annotations

import json
import webbrowser
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import Result

from cvops.client import Client, CvopsError
from cvops.testing.client import ADMIN_PASSWORD, FakeGateway

Invoke = Callable[..., Result]


@pytest.fixture
def cvops(cvops: Invoke, gateway: FakeGateway) -> Invoke:
    """Logged in as admin; ``net:1`` has a report, ``net:2`` none yet."""
    assert cvops("login", "--username", "admin", "--password", ADMIN_PASSWORD).exit_code == 0
    gateway.add_model("net", versions=2)
    gateway.add_report("net", 1)
    return cvops


def test_report_writes_the_html_and_lists_present_and_missing_sections(
    cvops: Invoke, gateway: FakeGateway, tmp_path: Path
) -> None:
    result = cvops("report", "net:1", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    story = gateway.reports[("net", 1)]
    html = tmp_path / "out" / "net-v1-report.html"
    assert html.read_bytes() == story.files["/models/net/versions/1/report.html"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == [html.name]  # no PDF, no .part
    lines = result.output.splitlines()
    for section in ("dataset", "training", "benchmark", "recommendation"):
        assert any(line.split()[:3] == ["│", section, "│"] and "yes" in line for line in lines)
    assert "no conversion yet: cvops convert net:1" in result.output
    assert "not deployed: cvops deploy net:1" in result.output
    assert "job-7" in result.output and "bench-9" in result.output
    assert str(html) in result.output


def test_report_pdf_goes_beside_the_html_and_json_prints_the_view(
    cvops: Invoke, gateway: FakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the default directory is the current one
    result = cvops("report", "net:v1", "--pdf", "--json")
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert view["sections"] == ["dataset", "training", "benchmark", "recommendation"]
    assert [m["section"] for m in view["missing"]] == ["conversion", "deployment"]
    assert view["html"] == "/models/net/versions/1/report.html"
    assert (tmp_path / "net-v1-report.pdf").read_bytes() == b"%PDF-1.7 report"
    assert (tmp_path / "net-v1-report.html").exists()


def test_report_open_shows_the_written_html_in_the_browser(
    cvops: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or True)
    result = cvops("report", "net:1", "--open", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert opened == [(tmp_path / "net-v1-report.html").resolve().as_uri()]


def test_a_version_without_a_report_exits_1_with_the_gateways_message(
    cvops: Invoke, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = cvops("report", "net:2", "-o", str(out))
    assert result.exit_code == 1
    assert "error: not_found: no report yet for net:2" in result.stderr
    assert not out.exists()  # nothing written
    assert cvops("report", "net", "-o", str(out)).exit_code == 2  # no version: usage


def test_sdk_downloads_each_report_file_and_refuses_unknown_kinds(
    gateway: FakeGateway, transport: httpx.MockTransport, tmp_path: Path
) -> None:
    story = gateway.add_report("net", 3)
    client = Client(token=gateway.token_for("admin"), transport=transport)
    assert client.report("net", 3) == story.view
    base = "/models/net/versions/3/report"
    for kind, name, path in (
        ("html", "net-v3-report.html", f"{base}.html"),
        ("pdf", "net-v3-report.pdf", f"{base}.pdf"),
        ("json", "net-v3-report.json", f"{base}.json"),
        ("latency.png", "net-v3-latency.png", f"{base}/charts/latency.png"),
    ):
        written = client.download_report("net", 3, kind, tmp_path)
        assert written == tmp_path / name and written.read_bytes() == story.files[path]
    chosen = client.download_report("net", 3, "pdf", tmp_path / "mine.pdf")
    assert chosen.read_bytes() == b"%PDF-1.7 report"
    with pytest.raises(CvopsError) as missing:
        client.download_report("net", 3, "memory.png", tmp_path)
    assert missing.value.status == 404
    assert not (tmp_path / "net-v3-memory.png.part").exists()
    with pytest.raises(ValueError, match="kind must be"):
        client.download_report("net", 3, "svg", tmp_path)
