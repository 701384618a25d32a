"""Sign-in throttling through real calls: after too many failures within the window, a
username (existing or not) and a client address get 429 with ``Retry-After`` until the
window passes; a right password clears the username's count."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cvops.gateway.identity.throttle import LoginThrottle, TooManyFailures
from cvops.testing.gateway import PASSWORD, Platform

PER_USER, PER_ADDRESS, WINDOW_S = 3, 8, 3.0


@pytest.fixture(scope="module")
def guarded(
    nats_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
    platform_factory: Callable[..., Platform],
) -> Iterator[Platform]:
    running = platform_factory(
        nats_server.url,
        tmp_path_factory.mktemp("throttle"),
        login_failures_per_user=PER_USER,
        login_failures_per_address=PER_ADDRESS,
        login_failure_window_s=WINDOW_S,
    )
    try:
        yield running
    finally:
        running.gateway.stop()


@pytest.fixture
def window_passed() -> None:
    """Every test here signs in from 127.0.0.1: start each after the last one's window."""
    time.sleep(WINDOW_S)


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password})


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "too_many_requests"
    assert 1 <= int(response.headers["retry-after"]) <= WINDOW_S


async def _user(client: httpx.AsyncClient, platform: Platform) -> str:
    name = f"tt-{uuid.uuid4().hex[:8]}"
    body = {"username": name, "password": PASSWORD, "role": "viewer"}
    created = await client.post("/users", json=body, headers=platform.headers("admin"))
    assert created.status_code == 201, created.text
    return name


@pytest.mark.usefixtures("window_passed")
async def test_a_username_is_refused_after_its_failures_until_the_window_passes(
    guarded: Platform,
) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        name = await _user(client, guarded)
        for _ in range(PER_USER):
            assert (await _login(client, name, "wrong-password")).status_code == 401
        _refused(await _login(client, name, PASSWORD))  # even the right one: not checked
        # a user that does not exist is counted and refused the same way
        for _ in range(PER_USER):
            assert (await _login(client, "nobody-here", "wrong-password")).status_code == 401
        _refused(await _login(client, "nobody-here", "wrong-password"))
        await asyncio.sleep(WINDOW_S)
        assert (await _login(client, name, PASSWORD)).status_code == 200


@pytest.mark.usefixtures("window_passed")
async def test_a_right_password_starts_the_username_afresh(guarded: Platform) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        name = await _user(client, guarded)
        for _ in range(PER_USER - 1):
            assert (await _login(client, name, "wrong-password")).status_code == 401
        assert (await _login(client, name, PASSWORD)).status_code == 200
        for _ in range(PER_USER - 1):
            assert (await _login(client, name, "wrong-password")).status_code == 401
        assert (await _login(client, name, PASSWORD)).status_code == 200


@pytest.mark.usefixtures("window_passed")
async def test_a_burst_of_parallel_guesses_is_counted_one_by_one(guarded: Platform) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        name = await _user(client, guarded)
        answers = await asyncio.gather(*(_login(client, name, f"guess-{i}") for i in range(20)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * PER_USER + [429] * (20 - PER_USER)


@pytest.mark.usefixtures("window_passed")
async def test_an_address_is_refused_after_its_failures_on_any_usernames(
    guarded: Platform,
) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        name = await _user(client, guarded)
        for i in range(PER_ADDRESS):
            assert (await _login(client, f"spray-{i}", "wrong-password")).status_code == 401
        _refused(await _login(client, name, PASSWORD))
        document = (await client.get("/schema/openapi.json")).json()
        await asyncio.sleep(WINDOW_S)
        assert (await _login(client, name, PASSWORD)).status_code == 200
    assert "429" in document["paths"]["/auth/login"]["post"]["responses"]


def test_the_throttle_counts_within_its_window_only() -> None:
    now = [0.0]
    throttle = LoginThrottle(per_user=2, per_address=0, window_s=10, clock=lambda: now[0])
    throttle.failed("ann", "10.0.0.1")
    now[0] = 4.0
    throttle.failed("ann", "10.0.0.1")
    with pytest.raises(TooManyFailures) as refused:
        throttle.check("ann", "10.0.0.1")
    assert refused.value.retry_after_s == 6  # until the first failure leaves the window
    now[0] = 10.0
    throttle.check("ann", "10.0.0.1")  # one failure left in the window
    throttle.check("bob", "10.0.0.1")  # per_address 0: no address limit
