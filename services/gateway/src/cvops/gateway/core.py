"""What every context shares: the plumbing of a write (stamp, append, the core aggregate
writer, read-your-write wait) and of a read (a session on the projection), the tables' metadata
and JSON columns, and how a controller reaches its context's service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy import MetaData
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp
from cvops.core import Bus, ProjectionRunner, Settings, get_logger, write_aggregate
from cvops.domain.benchmark import BenchmarkState
from cvops.domain.checks import check_storable
from cvops.domain.conversion import ConversionState
from cvops.gateway import idempotency
from cvops.gateway.auth import Principal
from cvops.gateway.metrics import GatewayMetrics

log = get_logger(__name__)

WRITE_ATTEMPTS = 3


# how long a read that found nothing waits for events this process has not applied yet
FRESH_WAIT_S = 2.0


@dataclass
class Gateway:
    """What every context's service works with: settings, the bus, the projection, metrics."""

    settings: Settings
    bus: Bus
    runner: ProjectionRunner
    metrics: GatewayMetrics
    # identity's projection (its own stream); the identity service's Gateway has it as runner
    identity_runner: ProjectionRunner | None = None
    caught_up: bool = False
    # set when the server shuts down: open event feeds end so the shutdown is not held up
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def session(self) -> AbstractContextManager[Session]:
        """A read session on the projection (the one read path of every context)."""
        return self.runner.session()

    def generation(self, event_context: str) -> int:
        """Moves after every committed batch with an event of ``event_context`` (a cache key)."""
        return self.runner.projection.generation(event_context)  # type: ignore[attr-defined,no-any-return]

    def stamp(self, actor: str, correlation_id: str) -> Stamp:
        return Stamp(now=datetime.now(UTC), actor=actor, correlation_id=correlation_id)

    async def refreshed(self, timeout: float = FRESH_WAIT_S) -> bool:
        """Wait until this process's projections have what the log held a moment ago; False
        when they already had it (an answer from them stands as it is).

        A write waits for the projection of the process that took it; another gateway worker,
        or a service's event, may not be applied here yet when the next request asks."""
        moved = False
        for runner in (self.runner, self.identity_runner):
            if runner is None or runner.bus is None:
                continue
            last = await runner.bus.last_seq(runner.stream)
            if runner.position < last:
                moved = await runner.wait_for(last, timeout) or moved
        return moved

    def check_connected(self) -> None:
        """Refuse a write at once while NATS is disconnected (``NotWritten``): the client
        would buffer the publish and send it on reconnect, after the request has failed."""
        if not self.bus.nc.is_connected:
            raise idempotency.NotWritten("the event log is not connected")

    async def append(self, events: list[Event]) -> int:
        """Publish events in order, unguarded (each one's ``Nats-Msg-Id`` dedupes a re-publish);
        all of them are checked storable first, so none goes out when one is refused."""
        check_storable(events)
        if events:
            self.check_connected()
        seq = 0
        for event in events:
            seq = (await self.bus.publish(event)).seq
        return seq

    async def settle(self, seq: int) -> None:
        """Wait until the projection has applied ``seq`` (read-your-write)."""
        if seq and not await self.runner.wait_for(seq, self.settings.read_your_write_timeout_s):
            log.warning("read_your_write_timeout", seq=seq, position=self.runner.position)

    async def write(self, events: list[Event]) -> None:
        """Append, then wait until the projection has the write."""
        await self.settle(await self.append(events))

    async def write_aggregate(self, subjects: str, decide: Callable[[], list[Event]]) -> int:
        """Optimistic write (``cvops.core.write_aggregate``): read the aggregate at its last
        sequence, wait for the projection, decide, append guarded, then read-your-write.

        ``decide`` reads the projection (which is at least at the aggregate's last event);
        when another writer got in between, the whole read-decide-append is retried. A
        projection that does not reach the aggregate in time fails the write (TimeoutError).
        """
        self.check_connected()
        appended = await write_aggregate(
            self.bus,
            subjects,
            lambda _expected: decide(),
            runner=self.runner,
            attempts=WRITE_ATTEMPTS,
            wait_s=self.settings.read_your_write_timeout_s,
        )
        await self.settle(appended.seq)
        return appended.seq


def new_job_id(kind: str, correlation_id: str = "") -> str:
    """``job-1a2b3c4d5e6f``: short enough to type, random enough not to collide; derived from
    the ``Idempotency-Key`` of a keyed request (``correlation_id``), so a retry names the
    same job."""
    return idempotency.new_job_id(kind, correlation_id)


# -- controllers -------------------------------------------------------------------------------


def correlation_id(
    request: Request[Any, Any, Any],
    *,
    fingerprint: str | None = None,
    username: str | None = None,
) -> str:
    """The id of this request, which every event it appends carries (header X-Correlation-Id).

    A write with an ``Idempotency-Key`` gets one derived from the caller (``username`` where
    no one is signed in yet), the key and ``fingerprint`` (default: its method, path, query
    and body), so a retry of it gets the same (``cvops.gateway.idempotency``).
    """
    state = request.scope["state"]
    key = state.get(idempotency.STATE_KEY)
    if key is None:
        return str(state["correlation_id"])
    if username is None:
        user = request.scope.get("user")
        username = user.username if isinstance(user, Principal) else ""
    if fingerprint is None:
        body = state[idempotency.STATE_BODY].hexdigest()
        fingerprint = idempotency.fingerprint(
            request.method, request.url.path, request.url.query or "", body
        )
    keyed = idempotency.keyed_correlation_id(username, idempotency.valid_key(key), fingerprint)
    state["correlation_id"] = keyed  # the response's X-Correlation-Id
    return keyed


def provide(key: str) -> dict[str, Provide]:
    """``dependencies`` of a context's controllers: ``service``, its service in ``app.state``."""

    def service(state: State) -> Any:
        return state[key]

    return {"service": Provide(service, sync_to_thread=False)}


# -- projection --------------------------------------------------------------------------------


class Generations:
    """A projection's cache keys: per event context, the committed batches that had one of
    its events (``apply`` adds the context to ``_touched``); ``commits`` moves after every
    committed batch (``cvops.gateway.reads``)."""

    def __init__(self) -> None:
        self._generations: dict[str, int] = {}
        self._touched: set[str] = set()
        self.commits = 0

    def generation(self, event_context: str) -> int:
        """Moves after every committed batch with an event of ``event_context``."""
        return self._generations.get(event_context, 0)

    def after_commit(self) -> None:
        for event_context in self._touched:
            self._generations[event_context] = self.generation(event_context) + 1
        self._touched.clear()
        self.commits += 1


# Every context's tables, in the one SQLite file (``projection.db_path``).
metadata = MetaData()

# A context's fold: apply one event (with its stream sequence and ``occurred_at`` as ISO text).
Fold = Callable[[Session, Event, int, str], None]


def as_json(value: object) -> str:
    """A contract struct (or plain data) as the JSON text a column holds."""
    return msgspec.json.encode(value).decode()


def request_fields(event: Event, body: type[msgspec.Struct]) -> str:
    """The user's fields of a request event, as the API body ``body`` (JSON)."""
    raw = msgspec.to_builtins(event)
    return as_json(msgspec.convert({k: raw[k] for k in body.__struct_fields__ if k in raw}, body))


def job_fields(
    state: ConversionState | BenchmarkState, body: type[msgspec.Struct]
) -> dict[str, Any]:
    """What the API body of a conversion or benchmark job shows about the job itself: its
    request (as ``body``), who asked, when, its status and end."""
    req = state.request
    return {
        "job_id": state.job_id,
        "correlation_id": req.correlation_id,
        "model_name": req.model_name,
        "version": req.version,
        "status": state.status,
        "requested_by": req.actor,
        "created_at": req.occurred_at,
        "finished_at": state.finished_at,
        "request": msgspec.json.decode(request_fields(req, body), type=body),
        "reason": state.reason or None,
        "host": state.host,
    }


def parse_dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def parse_optional_dt(value: str | None) -> datetime | None:
    return parse_dt(value) if value else None
