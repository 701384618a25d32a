"""Sign-in throttling: failed logins counted per username and per client address.

After ``limit`` failures within ``window_s`` seconds, a username (whether or not such a user
exists, so the answer tells nothing about it) or a client address is refused until its
oldest counted failure leaves the window. A successful login clears the username's count.

The counts live in this gateway process's memory, and a restart forgets them. The workers of
one gateway (``CVOPS_GATEWAY_WORKERS``) each allow their share of the limit,
``ceil(limit / workers)`` (``worker_share``), so one gateway allows at most the limit rounded
up to a multiple of its workers, and may refuse a client whose failures all land on one
worker after its share (a successful login clears the count of the worker it landed on);
separate gateways each count on their own (N gateways allow up to N times the limit).
Attempts on one username take turns, so a burst of parallel guesses is counted one by one;
attempts from one address on different usernames run side by side, so a burst can pass the
address limit by the attempts already in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

# Keys kept per window before the oldest are dropped (memory stays bounded under a spray of
# made-up usernames; the address limit stops one address from spraying).
MAX_KEYS = 100_000


def worker_share(limit: int, workers: int) -> int:
    """One worker's part of a limit that ``workers`` processes count apart (0 stays off)."""
    return math.ceil(limit / max(1, workers)) if limit > 0 else limit


class TooManyFailures(Exception):
    """Refused without looking at the password; ``retry_after_s`` until the window passes."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class FailureWindow:
    """Failure times per key within a sliding window of ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again (None: it may now)."""
        if self.limit <= 0 or not key:
            return None
        now = self.clock()
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return None
        return times[-self.limit] + self.window_s - now

    def add(self, key: str) -> None:
        if self.limit <= 0 or not key:
            return
        now = self.clock()
        times = self._recent(key, now)
        if times is None:
            if len(self._failures) >= MAX_KEYS:
                self._forget_oldest(now)
            times = self._failures[key] = deque(maxlen=self.limit)
        times.append(now)

    def clear(self, key: str) -> None:
        self._failures.pop(key, None)

    def _forget_oldest(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= MAX_KEYS:
            del self._failures[next(iter(self._failures))]


class LoginThrottle:
    """Failed sign-ins per username and per client address (``0``: that limit is off)."""

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.users = FailureWindow(per_user, window_s, clock)
        self.addresses = FailureWindow(per_address, window_s, clock)
        # username -> (its turn lock, attempts holding or waiting for it)
        self._turns: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def check(self, username: str, address: str) -> None:
        """Raise ``TooManyFailures`` while the username or the address is refused."""
        waits = (self.users.retry_after(username), self.addresses.retry_after(address))
        longest = max((w for w in waits if w is not None), default=None)
        if longest is not None:
            raise TooManyFailures(max(1, math.ceil(longest)))

    @contextlib.asynccontextmanager
    async def turn(self, username: str, address: str) -> AsyncIterator[None]:
        """One attempt on ``username`` at a time, each checked when its turn comes."""
        lock, holders = self._turns.setdefault(username, (asyncio.Lock(), [0]))
        holders[0] += 1
        try:
            async with lock:
                self.check(username, address)
                yield
        finally:
            holders[0] -= 1
            if holders[0] == 0:
                del self._turns[username]

    def failed(self, username: str, address: str) -> None:
        """A wrong password (or no such user, or a disabled one)."""
        self.users.add(username)
        self.addresses.add(address)

    def succeeded(self, username: str) -> None:
        """A right password: the username starts afresh."""
        self.users.clear(username)
