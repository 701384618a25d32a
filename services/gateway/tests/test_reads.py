"""Cached reads (``cvops.gateway.reads``): a repeated GET is answered from memory until the
projection commits, a write is seen by the next read, and the guards still run."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from cvops.gateway.reads import ReadCache, read_key, with_fresh_not_found
from cvops.testing.gateway import Platform


def _cache(platform: Platform) -> ReadCache:
    store = platform.gateway.app.response_cache_config.get_store_from_app(platform.gateway.app)
    assert isinstance(store, ReadCache)
    return store


async def test_a_repeated_read_is_answered_from_the_cache_without_the_projection(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    viewer = platform.headers("viewer")
    runner = platform.gateway.service.runner
    opened: list[str] = []
    session = runner.session

    def counted() -> AbstractContextManager[Session]:
        opened.append("session")
        return session()

    monkeypatch.setattr(runner, "session", counted)
    async with httpx.AsyncClient(base_url=platform.url) as client:
        first = await client.get("/models", headers=viewer)
        assert first.status_code == 200
        sessions = len(opened)
        again = [await client.get("/models", headers=viewer) for _ in range(5)]
    assert sessions >= 1  # the first read ran its query
    assert all(r.status_code == 200 and r.content == first.content for r in again)
    # the five repeats opened no session on the projection: they came from the cache
    assert len(opened) == sessions


async def test_a_write_is_seen_by_the_next_read(platform: Platform) -> None:
    path = f"/models/{platform.model}/versions/1"
    viewer, engineer = platform.headers("viewer"), platform.headers("engineer")
    async with httpx.AsyncClient(base_url=platform.url) as client:
        for stage in ("staging", "archived", "staging"):
            before = await client.get(path, headers=viewer)
            assert before.status_code == 200
            moved = await client.post(f"{path}/stage", json={"stage": stage}, headers=engineer)
            assert moved.status_code == 200
            after = await client.get(path, headers=viewer)
            assert after.json()["stage"] == stage
            listed = await client.get(f"/models/{platform.model}/versions", headers=viewer)
            assert [v["stage"] for v in listed.json() if v["version"] == 1] == [stage]


async def test_a_cached_read_still_needs_a_valid_token(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=platform.url) as client:
        assert (await client.get("/jobs", headers=platform.headers("viewer"))).status_code == 200
        anonymous = await client.get("/jobs")
        forged = await client.get("/jobs", headers={"Authorization": "Bearer cvops_forged"})
    assert anonymous.status_code == 401 and forged.status_code == 401


async def test_queries_are_cached_apart(platform: Platform) -> None:
    viewer = platform.headers("viewer")
    async with httpx.AsyncClient(base_url=platform.url) as client:
        every = await client.get("/jobs", headers=viewer)
        none = await client.get("/jobs", params={"status": "cancelled"}, headers=viewer)
        bad = await client.get("/jobs", params={"status": "nonsense"}, headers=viewer)
        bad_again = await client.get("/jobs", params={"status": "nonsense"}, headers=viewer)
    assert every.status_code == none.status_code == 200
    assert len(every.json()) >= 1 and none.json() == []
    assert bad.status_code == bad_again.status_code == 422  # refusals are not cached


@pytest.mark.parametrize("entries", [1, 3])
async def test_the_cache_keeps_only_its_newest_entries(entries: int) -> None:
    cache = ReadCache(max_entries=entries)
    for i in range(5):
        await cache.set(f"k{i}", b"v")
    await cache.get(f"k{5 - entries}")  # read: the newest again
    await cache.set("k5", b"v")
    assert cache.size == entries
    assert await cache.exists("k5") and not await cache.exists("k0")


async def test_the_cache_holds_at_most_its_bytes() -> None:
    cache = ReadCache(max_bytes=100)
    for i in range(10):
        await cache.set(f"k{i}", b"x" * 30)
    await cache.set("k9", b"x" * 40)  # replaced, not added
    assert cache.bytes == 100 and cache.size == 3  # k7, k8 and the new k9
    await cache.set("big", b"x" * 101)  # larger than the whole cache: not kept
    assert cache.bytes == 0 and cache.size == 0


def test_the_key_names_the_commit_path_and_query(platform: Platform) -> None:
    class _Request:  # what read_key reads of a request
        app = platform.gateway.app
        url = httpx.URL("http://x/jobs")
        scope: dict[str, Any] = {"query_string": b"status=running", "state": {}}

    projection = platform.gateway.service.runner.projection
    commits = projection.commits
    request = _Request()
    assert read_key(request) == f"{commits} /jobs?status=running"  # type: ignore[arg-type]
    projection.commits += 1  # a batch commits while the handler runs
    assert read_key(request) == f"{commits} /jobs?status=running"  # type: ignore[arg-type]


async def test_a_response_is_filed_under_the_commit_it_was_read_at(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that commits while a read runs makes that read's response old news: the next
    read must not be answered with it."""
    runner = platform.gateway.service.runner
    session = runner.session
    opened: list[str] = []

    def committing_meanwhile() -> AbstractContextManager[Session]:
        opened.append("session")
        runner.projection.commits += 1
        return session()

    monkeypatch.setattr(runner, "session", committing_meanwhile)
    viewer = platform.headers("viewer")
    async with httpx.AsyncClient(base_url=platform.url) as client:
        first = await client.get("/deployments", headers=viewer)
        second = await client.get("/deployments", headers=viewer)
    assert first.status_code == second.status_code == 200
    assert len(opened) == 2  # the second read ran its query again


class _Behind:
    """A gateway whose projection is behind the log (``refreshed``: it caught up) or not."""

    def __init__(self, behind: bool) -> None:
        self.behind = behind
        self.asked = 0

    async def refreshed(self) -> bool:
        self.asked += 1
        return self.behind


class _State:
    def __init__(self, gateway: _Behind) -> None:
        self.gateway = gateway


def _app_answering(*statuses: int) -> tuple[Any, list[int]]:
    """An ASGI app that answers its calls with ``statuses`` in turn."""
    calls: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        status = statuses[len(calls)]
        calls.append(status)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": str(status).encode()})

    return app, calls


async def _get(app: Any, method: str = "GET") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "state": {}}, receive, send)
    return sent


async def test_a_not_found_read_is_read_again_once_a_worker_behind_the_log_caught_up() -> None:
    app, calls = _app_answering(404, 200)
    gateway = _Behind(behind=True)
    sent = await _get(with_fresh_not_found(app, _State(gateway)))
    assert calls == [404, 200]
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [200]
    assert sent[-1]["body"] == b"200"


async def test_a_not_found_read_of_an_up_to_date_worker_stands_and_others_pass_at_once() -> None:
    app, calls = _app_answering(404)
    gateway = _Behind(behind=False)
    sent = await _get(with_fresh_not_found(app, _State(gateway)))
    assert calls == [404] and sent[-1]["body"] == b"404" and gateway.asked == 1

    for status, method in ((200, "GET"), (404, "POST")):
        app, calls = _app_answering(status)
        gateway = _Behind(behind=True)
        sent = await _get(with_fresh_not_found(app, _State(gateway)), method)
        assert calls == [status] and sent[-1]["body"] == str(status).encode()
        assert gateway.asked == 0
