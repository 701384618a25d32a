"""The gateway as an operator runs it: ``python -m cvops.gateway`` as a child process.

On a NATS of its own (an empty log, so the gateway bootstraps its admin and writes the
credentials file, as on a first ``./justw up``) or on a given one; its whole output goes to
one log file. Used by the security suite (tests/security) and the fuzzer it runs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from cvops.core import Settings, load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.gateway.identity.service import CREDENTIALS_FILE
from cvops.testing.core import start_service
from cvops.testing.gateway import PASSWORD


def free_port() -> int:
    """A loopback port nothing listens on now (the OS's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """``python -m cvops.gateway`` on a free loopback port, home and log under ``home``.

    Without ``nats_url`` it starts a JetStream server of its own (store under ``home``),
    stopped with the gateway. ``overrides`` are ``Settings`` fields (``log_level="debug"``).
    """

    def __init__(self, home: Path, *, nats_url: str | None = None, **overrides: Any) -> None:
        self.home = home
        self.nats_url = nats_url
        self.overrides = overrides
        self.log = home / "gateway.log"
        self.nats: subprocess.Popen[bytes] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.settings: Settings | None = None
        self.credentials: dict[str, str] = {}  # the bootstrap's file, when it wrote one
        self.users: dict[str, str] = {}  # role -> username (``add_users``)
        self.tokens: dict[str, str] = {}  # role -> bearer token (``add_users``)

    @property
    def url(self) -> str:
        assert self.settings is not None, "not started"
        return f"http://127.0.0.1:{self.settings.gateway_port}"

    @property
    def nats_log(self) -> Path:
        return self.home / "nats" / "nats.log"

    def start(self, timeout: float = 90) -> GatewayProcess:
        """Start NATS (unless given) and the gateway; return once it is ready."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.nats_url is None:
            store = self.home / "nats"
            self.nats, port = start_nats(store, port=-1, log_file=self.nats_log)
            self.nats_url = f"nats://127.0.0.1:{port}"
        self.settings = load_settings(
            {},
            nats_url=self.nats_url,
            home=str(self.home / "gateway"),
            gateway_port=free_port(),
            **self.overrides,
        )
        self.proc = start_service("cvops.gateway", self.settings, self.log)
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited {self.proc.returncode}:\n{self.tail()}")
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready in {timeout:.0f} s:\n{self.tail()}")
                time.sleep(0.1)
        written = self.settings.home_path / CREDENTIALS_FILE
        if written.exists():
            self.credentials = dict(
                line.split("=", 1) for line in written.read_text().splitlines() if "=" in line
            )
        return self

    def admin_headers(self) -> dict[str, str]:
        """The bootstrapped admin's bearer token."""
        return {"Authorization": f"Bearer {self.credentials['token']}"}

    def add_users(self, roles: tuple[str, ...] = ("engineer", "viewer")) -> GatewayProcess:
        """A user per role made through the API (password ``PASSWORD``), each with an API
        token; the bootstrapped admin is role ``admin``."""
        self.users["admin"] = self.credentials["username"]
        self.tokens["admin"] = self.credentials["token"]
        with httpx.Client(base_url=self.url, timeout=60) as client:
            for role in roles:
                username = f"{role}-{uuid.uuid4().hex[:6]}"
                made = client.post(
                    "/users",
                    json={"username": username, "password": PASSWORD, "role": role},
                    headers=self.admin_headers(),
                )
                made.raise_for_status()
                login = client.post(
                    "/auth/login", json={"username": username, "password": PASSWORD}
                )
                login.raise_for_status()
                session = {"Authorization": f"Bearer {login.json()['token']}"}
                token = client.post("/auth/tokens", json={"label": role}, headers=session)
                token.raise_for_status()
                self.users[role], self.tokens[role] = username, token.json()["token"]
        return self

    def headers(self, role: str | None) -> dict[str, str]:
        """The bearer token of ``role`` (``add_users``); None: no header at all."""
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        """SIGTERM the gateway (then its own NATS); SIGKILL whatever outlives the grace."""
        if self.proc is not None:
            stop_process(self.proc, timeout=20)
        if self.nats is not None:
            stop_process(self.nats)
            shutil.rmtree(self.home / "nats" / "jetstream", ignore_errors=True)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
