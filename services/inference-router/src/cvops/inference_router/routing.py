"""Triton instances and how a request picks one: health, circuit breaker, least outstanding.

The pool knows, per instance, whether it is up, which deployment versions it has loaded
and how many requests it has in flight; ``pick`` returns the healthy instance with the
fewest outstanding requests that serves the wanted version.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit


class CircuitBreaker:
    """Closed → open after ``threshold`` consecutive failures → half-open after a cooldown.

    Half-open lets one probe through; its success closes the breaker, its failure opens it.
    """

    def __init__(
        self,
        threshold: int = 3,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def available(self) -> bool:
        """Whether a request may be sent now (does not claim the half-open probe)."""
        state = self.state
        return state == "closed" or (state == "half-open" and not self.probing)

    def acquire(self) -> None:
        if self.state == "half-open":
            self.probing = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self) -> None:
        self.failures += 1
        if self.probing or self.failures >= self.threshold:
            self.opened_at = self.clock()
        self.probing = False

    def reset(self) -> None:
        self.success()


@dataclass(eq=False)
class Instance:
    """One Triton server the router sends requests to."""

    name: str
    http: str  # host:port
    grpc: str
    metrics: str
    local: bool = False
    up: bool = False
    loaded: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outstanding: int = 0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def serves(self, model: str, version: int | None) -> bool:
        versions = self.loaded.get(model)
        if not versions:
            return False
        return version is None or version in versions

    def mark_down(self) -> None:
        self.up = False
        self.loaded.clear()


def parse_instance(url: str) -> Instance:
    """``http://host:8000`` (gRPC and metrics on Triton's default +1, +2) or
    ``host:http:grpc:metrics``."""
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        host, http = parts.hostname or "127.0.0.1", parts.port or 8000
        return Instance(
            name=text,
            http=f"{host}:{http}",
            grpc=f"{host}:{http + 1}",
            metrics=f"{host}:{http + 2}",
        )
    pieces = text.split(":")
    host = pieces[0] or "127.0.0.1"
    ports = [int(p) for p in pieces[1:]] or [8000]
    http = ports[0]
    grpc = ports[1] if len(ports) > 1 else http + 1
    metrics = ports[2] if len(ports) > 2 else http + 2
    return Instance(
        name=text, http=f"{host}:{http}", grpc=f"{host}:{grpc}", metrics=f"{host}:{metrics}"
    )


class Pool:
    """All Triton instances plus in-flight counts per deployment version."""

    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances
        self.inflight: Counter[tuple[str, int]] = Counter()
        self._turn = 0

    def pick(
        self, model: str, version: int | None, exclude: tuple[Instance, ...] = ()
    ) -> Instance | None:
        """The up instance serving ``model``/``version`` with the fewest requests in flight."""
        best: Instance | None = None
        n = len(self.instances)
        self._turn = (self._turn + 1) % max(n, 1)
        for i in range(n):  # rotate the start so equal loads spread evenly
            inst = self.instances[(self._turn + i) % n]
            if not inst.up or inst in exclude or not inst.serves(model, version):
                continue
            if not inst.breaker.available():
                continue
            if best is None or inst.outstanding < best.outstanding:
                best = inst
        if best is not None:
            best.breaker.acquire()
        return best

    def any_up(self) -> bool:
        return any(i.up for i in self.instances)

    def serving(self, model: str, version: int | None = None) -> bool:
        return any(i.up and i.serves(model, version) for i in self.instances)

    def outstanding(self, model: str, versions: tuple[int, ...]) -> int:
        return sum(self.inflight[(model, v)] for v in versions)
