"""A 3-node NATS JetStream cluster on loopback for scale-out tests: every node with the users
and permissions the launcher writes (``cvops.core.nats_auth``), fsync always, free ports;
settings for each service (its own NATS user, replicas 3, every port free); a node killed -9
by PID; every node stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvops.core import Settings, load_settings
from cvops.core.nats_auth import authorization_block, load_or_create_passwords
from cvops.core.natsd import nats_server_binary, stop_process
from cvops.testing.gateway_process import free_port


@dataclass
class Node:
    """One ``nats-server`` of the cluster."""

    name: str
    client_port: int
    monitor_port: int
    route_port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.store / "nats.log"

    def healthy(self) -> bool:
        """``/healthz`` answers 200: the server runs and its JetStream is current."""
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class NatsCluster:
    """Three ``nats-server -js`` nodes routed to each other on 127.0.0.1 (cluster ``cvops``).

    Users and passwords: ``nats_auth.authorization_block`` with passwords kept in
    ``<root>/nats/users.json``, as ``./justw up`` writes them for the embedded server.
    """

    def __init__(self, root: Path, size: int = 3) -> None:
        self.root = root
        self.passwords = load_or_create_passwords(root)
        self.nodes = [
            Node(f"n{i + 1}", free_port(), free_port(), free_port(), root / f"n{i + 1}")
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """``CVOPS_NATS_URL``: every node, comma-separated."""
        return ",".join(f"nats://127.0.0.1:{n.client_port}" for n in self.nodes)

    def config(self, node: Node) -> str:
        routes = "\n".join(f"    nats-route://127.0.0.1:{n.route_port}" for n in self.nodes)
        return (
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.client_port}\n"
            f"http: 127.0.0.1:{node.monitor_port}\n"
            "max_payload: 8MB\n"
            "jetstream {\n"
            f'  store_dir: "{node.store / "jetstream"}"\n'
            "  sync_interval: always\n"
            "  max_file_store: 8GB\n"
            "}\n"
            "cluster {\n"
            "  name: cvops\n"
            f"  listen: 127.0.0.1:{node.route_port}\n"
            f"  routes: [\n{routes}\n  ]\n"
            "}\n" + authorization_block(self.passwords)
        )

    def start(self, timeout: float = 60) -> NatsCluster:
        """Start every node; return once each answers ``/healthz`` (a meta leader exists)."""
        for node in self.nodes:
            self.start_node(node)
        self.wait_healthy(self.nodes, timeout)
        return self

    def start_node(self, node: Node) -> None:
        """Start (or start again, on its ports and store) one node."""
        node.store.mkdir(parents=True, exist_ok=True)
        conf = node.store / "nats.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds passwords
        with os.fdopen(fd, "w") as f:
            f.write(self.config(node))
        with open(node.log, "ab") as out:
            node.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )

    def wait_healthy(self, nodes: list[Node], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not all(n.healthy() for n in nodes):
            for n in nodes:
                assert n.alive(), f"{n.name} exited:\n{n.log.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, self.nodes[0].log.read_text()[-2000:]
            time.sleep(0.1)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def kill9(self, node: Node) -> None:
        """SIGKILL by PID: no flush, no goodbye to the clients or the other nodes."""
        assert node.proc is not None and node.alive()
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM each node still running (by PID), SIGKILL after 10 s."""
        for node in self.nodes:
            if node.proc is not None:
                stop_process(node.proc)

    def credentials(self, user: str) -> tuple[str, str]:
        return user, self.passwords[user]

    def settings(self, user: str, home: Path, **overrides: Any) -> Settings:
        """Settings of a process connecting as NATS user ``user`` (a service's name, or
        ``integrator``), home ``home``, stream replicas 3, every ``*_port`` a free port."""
        ports = {f: free_port() for f in Settings.__struct_fields__ if f.endswith("_port")}
        values: dict[str, Any] = {
            **ports,
            "nats_url": self.url,
            "nats_user": user,
            "nats_password": self.passwords[user],
            "stream_replicas": 3,
            "home": str(home),
            "log_json": True,
        }
        values.update(overrides)
        return load_settings({}, **values)
