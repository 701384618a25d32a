"""A model download on a fresh home (no ``spool`` directory yet, nothing uploaded): the whole
file, or an error status before any header — never a 200 that stops short."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cvops.testing.gateway import Platform


@pytest.fixture(scope="module")
def fresh(
    nats_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
    platform_factory: Callable[..., Platform],
) -> Iterator[Platform]:
    running = platform_factory(nats_server.url, tmp_path_factory.mktemp("fresh-home"))
    try:
        yield running
    finally:
        running.gateway.stop()


async def test_a_download_before_the_first_upload_returns_every_byte(fresh: Platform) -> None:
    spool = fresh.gateway.settings.home_path / "spool"
    assert not spool.exists()
    async with httpx.AsyncClient(base_url=fresh.url, timeout=30) as client:
        blob = await client.get(
            f"/models/{fresh.model}/versions/1/artifact", headers=fresh.headers("viewer")
        )
    assert blob.status_code == 200, blob.text
    assert blob.content == fresh.model_bytes
    assert blob.headers["content-length"] == str(len(fresh.model_bytes))


async def test_a_download_that_cannot_be_spooled_is_an_error_not_an_empty_file(
    fresh: Platform,
) -> None:
    spool = fresh.gateway.settings.home_path / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    spool.write_bytes(b"a file where the spool directory should be")
    try:
        async with httpx.AsyncClient(base_url=fresh.url, timeout=30) as client:
            blob = await client.get(
                f"/models/{fresh.model}/versions/1/artifact", headers=fresh.headers("viewer")
            )
        assert blob.status_code == 500
        assert blob.json()["error"] == "internal_error"
    finally:
        spool.unlink()
