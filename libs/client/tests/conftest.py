"""Fixtures of the client tests: the stand-in gateway and an in-process ``cvops``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from cvops.client.cli import CliState, cli
from cvops.testing.client import FakeGateway


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def transport(gateway: FakeGateway) -> httpx.MockTransport:
    return httpx.MockTransport(gateway.handle)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config path; no CVOPS_* variable of the developer's shell leaks in."""
    path = tmp_path / "cfg" / "config.json"
    monkeypatch.setenv("CVOPS_CONFIG", str(path))
    for name in ("CVOPS_URL", "CVOPS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return path


Invoke = Callable[..., Result]


@pytest.fixture
def cvops(transport: httpx.MockTransport, config_file: Path) -> Iterator[Invoke]:
    """Run the CLI in-process against the fake gateway: ``cvops("models", "list")``."""

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(cli, list(args), obj=CliState(transport=transport), input=input)

    yield invoke
