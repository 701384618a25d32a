"""The gateway as worker processes on one port (``CVOPS_GATEWAY_WORKERS``): each follows the
log into its own files, all of them serve, and SIGTERM stops every one of them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cvops.core import load_settings
from cvops.core.projection import read_state
from cvops.gateway import projection
from cvops.gateway.identity import projection as identity_projection
from cvops.gateway.identity.throttle import worker_share
from cvops.gateway.server import SHUTDOWN_GRACE_S
from cvops.gateway.workers import worker_file
from cvops.testing.gateway import PASSWORD
from cvops.testing.gateway_process import GatewayProcess


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _is_worker(pid: int) -> bool:
    """A spawned worker (not multiprocessing's resource tracker, also a child)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in cmdline


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_worker_files_are_named_apart_and_listed_as_copies(tmp_path: Path) -> None:
    settings = load_settings({}, home=str(tmp_path))
    main, identity = projection.db_path(settings), identity_projection.db_path(settings)
    assert worker_file(main, 0) == main
    names = ["gateway.sqlite", "gateway-w1.sqlite", "gateway-w1.sqlite-wal", "gateway-w12.sqlite"]
    names += ["gateway-wx.sqlite", "gateway-identity.sqlite", "gateway-identity-w1.sqlite"]
    for name in names:
        (tmp_path / name).touch()

    assert projection.copies(settings) == [worker_file(main, 1), worker_file(main, 12)]
    assert identity_projection.copies(settings) == [worker_file(identity, 1)]


def test_each_worker_allows_its_share_of_the_login_limits() -> None:
    assert [worker_share(5, n) for n in (1, 2, 3, 5, 8)] == [5, 3, 2, 1, 1]
    assert worker_share(0, 4) == 0  # off stays off


def test_two_workers_serve_one_port_follow_the_log_and_stop_on_sigterm(tmp_path: Path) -> None:
    gateway = GatewayProcess(tmp_path, gateway_workers=2).start()
    try:
        assert gateway.proc is not None and gateway.settings is not None
        parent = gateway.proc.pid
        workers = [p for p in _children(parent) if _is_worker(p)]
        assert len(workers) == 2, gateway.tail()
        home = gateway.settings.home_path
        # worker 0 bootstrapped once (its credentials file); both keep their own files
        assert gateway.credentials["username"] == "admin"
        for index in (0, 1):
            assert worker_file(projection.db_path(gateway.settings), index).exists()
            assert worker_file(identity_projection.db_path(gateway.settings), index).exists()
        assert (home / "gateway-w1.sqlite").exists()
        assert not (home / "gateway-w2.sqlite").exists()

        # a write through one connection is read at once through fresh connections, whichever
        # worker takes each: one that is behind the log reads again once it has caught up
        for _ in range(8):
            name = f"worker-{uuid.uuid4().hex[:6]}"
            with gateway.client() as client:
                made = client.post(
                    "/users",
                    json={"username": name, "password": PASSWORD, "role": "viewer"},
                    headers=gateway.admin_headers(),
                )
            assert made.status_code == 201, made.text
            for _ in range(3):
                with httpx.Client(base_url=gateway.url, timeout=30) as fresh:
                    read = fresh.get(f"/users/{name}", headers=gateway.admin_headers())
                assert read.status_code == 200, read.text
        files = [worker_file(identity_projection.db_path(gateway.settings), i) for i in (0, 1)]
        assert _checkpoint(files[0]) > 0 and _checkpoint(files[1]) > 0
        with httpx.Client(base_url=gateway.url, timeout=30) as fresh:  # a real 404 stays one
            missing = fresh.get("/users/nobody-at-all", headers=gateway.admin_headers())
        assert missing.status_code == 404

        # each worker is an instance of its own in GET /system
        def both_present() -> bool:
            with gateway.client() as client:
                system = client.get("/system", headers=gateway.admin_headers()).json()
            (service,) = [s for s in system["services"] if s["name"] == "gateway"]
            return {i["pid"] for i in service["instances"]} == set(workers)

        assert _eventually(both_present), "both workers in GET /system"

        # open event feeds (on whichever workers take them) must not hold the shutdown up
        opened: list[int] = []
        feeds = [threading.Thread(target=_follow_feed, args=(gateway, opened)) for _ in range(4)]
        for feed in feeds:
            feed.start()
        assert _eventually(lambda: len(opened) == len(feeds)) and set(opened) == {200}
        started = time.monotonic()
        os.kill(parent, signal.SIGTERM)
        try:
            returncode = gateway.proc.wait(timeout=SHUTDOWN_GRACE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the gateway outlived its grace period:\n{gateway.tail()}")
        assert returncode == 0, gateway.tail()
        assert time.monotonic() - started < SHUTDOWN_GRACE_S
        assert _eventually(lambda: not any(_alive(p) for p in workers), 2.0)
        for feed in feeds:
            feed.join(5.0)
            assert not feed.is_alive()
    finally:
        gateway.stop()


def _follow_feed(gateway: GatewayProcess, opened: list[int]) -> None:
    """Read an event feed until the gateway ends it (its status goes into ``opened``)."""
    with contextlib.suppress(httpx.HTTPError), httpx.Client(base_url=gateway.url) as client:
        url = f"/events/feed-{uuid.uuid4().hex[:6]}"
        with client.stream("GET", url, headers=gateway.admin_headers(), timeout=30) as feed:
            opened.append(feed.status_code)
            for _ in feed.iter_lines():
                pass


def _checkpoint(path: Path) -> int:
    state = read_state(path, identity_projection.projection.name)
    return 0 if state is None else state.checkpoint
