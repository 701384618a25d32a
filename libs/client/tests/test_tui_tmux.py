"""`cvops tui` for real: in a tmux terminal (120 x 40), against the real gateway on a
throwaway NATS, logged in with what `cvops login` stored. Keys go in with send-keys, the
screen comes back with capture-pane. No trainer runs, so the job stays requested and its
event feed stays open: quitting must not wait for it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

pytest.importorskip("cvops.gateway")
if shutil.which("tmux") is None:
    pytest.skip("tmux is not installed", allow_module_level=True)

from cvops.client.config import ClientConfig, save_config
from cvops.contracts import ArtifactRef, Stamp
from cvops.contracts.registry import (
    DatasetUploadReceived,
    DatasetValidated,
    ImageStats,
    SplitCounts,
)
from cvops.core import Bus, Settings, load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.gateway.identity.service import CREDENTIALS_FILE
from cvops.testing.gateway import RunningGateway

pytestmark = pytest.mark.slow

CVOPS = Path(sys.executable).with_name("cvops")


class Tmux:
    """One tmux server of its own (``-L``), so nothing of the developer's is touched."""

    def __init__(self) -> None:
        self.socket = f"cvops-tui-{uuid.uuid4().hex[:8]}"
        self.session = "tui"
        self.socket_path = ""

    def run(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        return done.stdout

    def start(self, command: str, env: dict[str, str]) -> None:
        """A 120 x 40 terminal with a shell, then ``command`` typed into it (``exec``: the
        session ends when the command does). Typed, not given to new-session: a command
        started with the session can see the terminal before it has its size."""
        self.run("new-session", "-d", "-s", self.session, "-x", "120", "-y", "40", "sh")
        size = ""
        deadline = time.monotonic() + 10
        while size != "120x40" and time.monotonic() < deadline:
            size = self.run("display", "-p", "-t", self.session, "#{pane_width}x#{pane_height}")
            size = size.strip()
        assert size == "120x40", f"tmux made a {size} terminal"
        self.socket_path = self.run("display", "-p", "#{socket_path}").strip()
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        self.keys(f"exec env {exports} {command}", "Enter")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.session, *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.session)

    def wait_for(self, *texts: str, timeout: float = 20.0) -> str:
        """The screen once it shows every one of ``texts`` (a redraw may be half done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if all(text in shown for text in texts):
                return shown
            time.sleep(0.1)
        pytest.fail(f"{texts!r} did not appear in {timeout} s; the screen:\n{self.screen()}")

    def alive(self) -> bool:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", self.session], capture_output=True
        )
        return done.returncode == 0

    def pane_pid(self) -> int | None:
        pid = self.run("list-panes", "-t", self.session, "-F", "#{pane_pid}").strip()
        return int(pid) if pid.isdigit() else None

    def kill(self) -> None:
        """Stop the server with every session and process in it; remove its socket file
        (left behind also when the server ended with its last session)."""
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        if self.socket_path:
            Path(self.socket_path).unlink(missing_ok=True)


async def seed_dataset(settings: Settings, name: str) -> None:
    """Given: the registry validated a data set (no registry runs here)."""
    bus = await Bus.connect(settings, name="seed")
    try:
        stamp = Stamp(now=datetime.now(UTC), actor="registry", correlation_id="seed-tui")
        ref = ArtifactRef(sha256="ab" * 32, size=10, filename="shapes.npz")
        await bus.publish(
            DatasetUploadReceived(
                **stamp.envelope("up"), upload_id="up-tui", dataset_name=name, artifact=ref
            )
        )
        await bus.publish(
            DatasetValidated(
                **stamp.envelope("ok"),
                dataset_name=name,
                version=1,
                upload_id="up-tui",
                source=ref,
                canonical=ref,
                classes=["a", "b"],
                class_counts=[5, 5],
                num_images=10,
                images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=3),
                splits=SplitCounts(train=6, val=2, test=2, calibration=2),
            )
        )
    finally:
        await bus.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The real gateway (in a thread) on an empty log: it bootstraps an admin."""
    nats_proc, port = start_nats(tmp_path / "nats", port=-1, log_file=tmp_path / "nats.log")
    running = None
    try:
        settings = load_settings(
            {}, nats_url=f"nats://127.0.0.1:{port}", home=str(tmp_path / "home")
        )
        asyncio.run(seed_dataset(settings, "shapes"))
        running = RunningGateway(settings).start()
        lines = (Path(settings.home) / CREDENTIALS_FILE).read_text().splitlines()
        yield running.url, dict(line.split("=", 1) for line in lines if line)
    finally:
        if running is not None:
            running.stop()
        stop_process(nats_proc)


def test_cvops_tui_in_tmux_shows_users_and_a_live_job_and_quits_on_q_at_once(
    gateway: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, credentials = gateway
    admin = {"Authorization": f"Bearer {credentials['token']}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post(
            "/users",
            json={"username": "alice", "password": "alice-pw-12345", "role": "engineer"},
            headers=admin,
        )
        assert created.status_code == 201, created.text
        job = http.post("/jobs", json={"dataset": "shapes", "arch": "simple-cnn"}, headers=admin)
        assert job.status_code == 201, job.text
    job_id = job.json()["job_id"]
    config = tmp_path / "config.json"
    save_config(ClientConfig(url=url, token=credentials["token"], username="admin"), config)
    env = {"CVOPS_CONFIG": str(config), "TERM": "xterm-256color", "TZ": "UTC"}
    env |= {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    tmux = Tmux()
    pid = None
    try:
        tmux.start(f"{CVOPS} tui --router-metrics http://127.0.0.1:9", env)
        pid = tmux.pane_pid()
        tmux.wait_for("signed in as admin (admin)", "no models yet")
        tmux.wait_for("6 Users")  # the tab only an admin gets

        tmux.keys("6")
        tmux.wait_for("2 users", "alice", "engineer")
        tmux.keys("Enter")
        tmux.wait_for("user admin", f"gateway   {url}")  # the first row's screen
        tmux.keys("Escape")
        tmux.wait_for("2 users", "Enter opens one")

        tmux.keys("3")
        tmux.wait_for("1 training job", job_id, "requested")
        tmux.keys("Enter")
        shown = tmux.wait_for("following its events live", f"job {job_id}: simple-cnn on shapes")
        assert "status          requested" in shown

        tmux.keys("q")  # the feed is open and quiet: quitting cuts it
        quit_at = time.monotonic()
        while tmux.alive() and time.monotonic() - quit_at < 10:
            time.sleep(0.05)
        assert not tmux.alive(), f"q did not quit; the screen:\n{tmux.screen()}"
        assert time.monotonic() - quit_at < 3
    finally:
        tmux.kill()
        if pid is not None:
            _kill(pid)


def _kill(pid: int) -> None:
    """The TUI's process, should it have outlived its terminal (and only it: a pid that was
    reused since belongs to someone else)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return  # gone, as it should be
    if any(part.endswith(b"cvops") for part in command) and b"tui" in command:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
