"""Projection runner: fold the event log into a per-service SQLite file, exactly once.

A ``checkpoint`` row is written in the same transaction as the rows a batch of events
changes; the consumer restarts at checkpoint+1 and skips anything at or below it; the
batch is acknowledged only after the commit.

An event the projection cannot apply stops it there, loudly: ``runner.stuck`` (seq, type,
reason), a row in ``projection_stuck``, the ``cvops_projection_stuck`` gauge and one error
line. It neither dies nor skips on its own; the operator's ``cvops projections skip`` records
the sequence in the quarantine file beside the projection (``quarantine_path``), which this
runner and every rebuild then pass over the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from cvops.contracts import Event, UnknownEvent, decode
from cvops.core import metrics
from cvops.core.bus import STREAM, STREAMS, Bus, ShuttingDown
from cvops.core.logging import get_logger

log = get_logger(__name__)


class Projection(Protocol):
    """What a service's ``projection.py`` exposes."""

    name: str
    metadata: MetaData

    def apply(self, session: Session, event: Event, seq: int) -> None: ...

    # optional: ``version`` (int, default 0), the layout of its tables: a file written under
    # another version is thrown away and rebuilt from the log (see ``open_projection_file``);
    # optional: ``apply_many(session, [(seq, event), ...])`` applies a batch's events in order
    # in place of ``apply`` one by one (aggregate tables load and write once per batch);
    # ``after_commit()`` is called once a batch is committed (cache invalidation)


_checkpoint_meta = MetaData()
checkpoint_table = Table(
    "projection_checkpoint",
    _checkpoint_meta,
    Column("name", String, primary_key=True),
    Column("seq", Integer, nullable=False),
)
# the event a projection is stopped at (no row: it is not stuck)
stuck_table = Table(
    "projection_stuck",
    _checkpoint_meta,
    Column("name", String, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("type", String, nullable=False),
    Column("reason", String, nullable=False),
)

# Projection health for Prometheus: the services export the default registry (which this
# one is part of); the gateway adds it to its own ``/metrics``.
PROJECTION_METRICS = CollectorRegistry(auto_describe=True)
_STUCK = Gauge(
    "cvops_projection_stuck",
    "1 while the projection is stopped at an event it cannot apply",
    ["projection"],
    registry=PROJECTION_METRICS,
)
_STUCK_SEQ = Gauge(
    "cvops_projection_stuck_seq",
    "Stream sequence of the event the projection is stopped at (0: not stuck)",
    ["projection"],
    registry=PROJECTION_METRICS,
)
with contextlib.suppress(ValueError):  # already registered (module reloaded)
    REGISTRY.register(PROJECTION_METRICS)  # type: ignore[arg-type]

# a stuck runner looks for a quarantine this often, and tries the event again this often
# (a failure that was not the event's fault, e.g. a full disk, heals without a restart)
QUARANTINE_POLL_S = 1.0
RETRY_STUCK_S = 60.0


@dataclass(frozen=True)
class Stuck:
    """The event a projection could not apply: it stays at ``seq - 1`` until that changes."""

    seq: int
    type: str
    reason: str

    def hint(self, service: str) -> str:
        return (
            f"fix the cause and restart, or skip it: "
            f"cvops projections skip {service} {self.seq} --reason TEXT"
        )


class ProjectionStuck(RuntimeError):
    """A replay stopped at an event it cannot apply."""

    def __init__(self, projection: str, stuck: Stuck) -> None:
        self.projection = projection
        self.stuck = stuck
        super().__init__(
            f"projection {projection} is stuck at seq {stuck.seq} ({stuck.type}): "
            f"{stuck.reason}; {stuck.hint(projection)}"
        )


@dataclass(frozen=True)
class Quarantined:
    """An event the operator chose to pass over (``cvops projections skip``)."""

    seq: int
    reason: str
    type: str = ""
    recorded_at: str = ""


def quarantine_path(db_path: Path | str) -> Path:
    """The quarantine file of a projection file: ``<home>/registry.quarantine.json`` beside
    ``<home>/registry.sqlite``; a rebuild reads the same file, so it skips the same events."""
    db_path = Path(db_path)
    return db_path.with_name(f"{db_path.stem}.quarantine.json")


def read_quarantine(path: Path | str) -> list[Quarantined]:
    """The quarantined events recorded in ``path`` (none when there is no file)."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return []
    return [
        Quarantined(
            seq=int(item["seq"]),
            reason=str(item.get("reason", "")),
            type=str(item.get("type", "")),
            recorded_at=str(item.get("recorded_at", "")),
        )
        for item in raw.get("skipped", [])
    ]


def quarantine_event(db_path: Path | str, seq: int, reason: str, type: str = "") -> Quarantined:
    """Record ``seq`` as skipped for the projection in ``db_path`` (written atomically)."""
    if seq < 1:
        raise ValueError(f"a stream sequence starts at 1, got {seq}")
    if not reason.strip():
        raise ValueError("say why the event is skipped (--reason)")
    path = quarantine_path(db_path)
    entries = {q.seq: q for q in read_quarantine(path)}
    entry = Quarantined(
        seq=seq,
        reason=reason.strip(),
        type=type,
        recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    entries[seq] = entry
    body = {"skipped": [vars(entries[k]) for k in sorted(entries)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)
    return entry


@dataclass(frozen=True)
class ProjectionState:
    """What an operator sees of one projection file without its service running."""

    checkpoint: int
    stuck: Stuck | None
    quarantined: list[Quarantined]


def read_state(
    db_path: Path | str, name: str, quarantine: Path | None = None
) -> ProjectionState | None:
    """Checkpoint, stuck event and quarantine of the projection ``name`` in ``db_path``
    (read-only; None when the file does not exist). ``quarantine``: the quarantine file when
    it is not the one beside ``db_path`` (a gateway worker's copy shares worker 0's)."""
    db_path = Path(db_path)
    if not db_path.exists():
        return None
    quarantined = read_quarantine(quarantine or quarantine_path(db_path))
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute(_GET_CHECKPOINT, (name,)).fetchone()
        try:
            found = conn.execute(
                "SELECT seq, type, reason FROM projection_stuck WHERE name = ?", (name,)
            ).fetchone()
        except sqlite3.OperationalError:  # a file from before the table existed
            found = None
    finally:
        conn.close()
    stuck = Stuck(int(found[0]), str(found[1]), str(found[2])) if found else None
    return ProjectionState(int(row[0]) if row else 0, stuck, quarantined)


# The runner applies through the SQLite connection itself: the checkpoint and aggregate
# statements are plain SQL text, prepared once by the driver's statement cache.
_GET_CHECKPOINT = "SELECT seq FROM projection_checkpoint WHERE name = ?"
_PUT_CHECKPOINT = (
    "INSERT INTO projection_checkpoint (name, seq) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq"
)
_PUT_STUCK = (
    "INSERT INTO projection_stuck (name, seq, type, reason) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq, type = excluded.type, "
    "reason = excluded.reason"
)
_CLEAR_STUCK = "DELETE FROM projection_stuck WHERE name = ? AND seq <= ?"
_DBAPI = "cvops.sqlite"  # Session.info key: the batch's connection, while it applies


def dbapi(session: Session | Connection) -> sqlite3.Connection:
    """The SQLite connection under a session's (or connection's) current transaction."""
    if isinstance(session, Session):
        held: sqlite3.Connection | None = session.info.get(_DBAPI)
        if held is not None:
            return held
        session = session.connection()
    raw = session.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    return raw


def sqlite_engine(path: Path | str) -> Engine:
    """SQLite in WAL mode, safe to share between the event loop and worker threads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30}
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return engine


class ProjectionRunner:
    """Keeps one projection up to date from the stream and lets callers wait for it."""

    def __init__(
        self,
        bus: Bus | None,
        projection: Projection,
        db_path: Path | str,
        *,
        subjects: list[str] | None = None,
        stream: str = STREAM,
        batch: int = 500,
        quarantine: Path | str | None = None,
    ) -> None:
        self.bus = bus
        self.projection = projection
        self.db_path = Path(db_path)
        # the stream it follows (its sequences are the checkpoint's) and its subjects there
        self.stream = stream
        self.subjects = subjects or [STREAMS[stream]]
        self.batch = batch
        # a rebuild writes another file but honours the live file's quarantine
        self.quarantine = Path(quarantine) if quarantine else quarantine_path(self.db_path)
        self.engine = open_projection_file(self.db_path, projection)
        self._position = self.checkpoint()
        self._moved = asyncio.Condition()
        self._stopping = asyncio.Event()
        self.applied = 0
        self._skip = self._read_quarantine()
        # the event this projection cannot apply (None: it follows the log)
        self.stuck: Stuck | None = None
        _STUCK.labels(projection.name).set(0)
        _STUCK_SEQ.labels(projection.name).set(0)

    # -- reading -----------------------------------------------------------------
    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine) as s:
            yield s

    def checkpoint(self) -> int:
        with Session(self.engine) as s:
            seq = s.execute(
                select(checkpoint_table.c.seq).where(
                    checkpoint_table.c.name == self.projection.name
                )
            ).scalar_one_or_none()
        return int(seq or 0)

    @property
    def position(self) -> int:
        """Stream sequence up to which this projection reflects the log."""
        return self._position

    async def wait_for(self, seq: int, timeout: float = 10.0, *, or_stuck: bool = False) -> bool:
        """Wait until the projection has applied everything up to ``seq``; with ``or_stuck``,
        give up as soon as the projection is stuck before it."""

        def _done() -> bool:
            return self._position >= seq or (or_stuck and self.stuck is not None)

        async def _reached() -> None:
            async with self._moved:
                await self._moved.wait_for(_done)

        try:
            await asyncio.wait_for(_reached(), timeout)
        except TimeoutError:
            return False
        return self._position >= seq

    async def reached(self, seq: int, stopping: asyncio.Event) -> None:
        """Wait as long as it takes for ``seq`` (a work handler's read-your-writes), saying
        every 5 s that the projection lags; raises ShuttingDown once ``stopping`` is set."""
        while not await self.wait_for(seq, timeout=5.0):
            if stopping.is_set():
                raise ShuttingDown()
            stuck = self.stuck.seq if self.stuck else None
            log.warning("projection_lagging", want=seq, at=self.position, stuck_at=stuck)

    async def catch_up(self, timeout: float = 30.0) -> bool:
        """Wait until the projection has the stream's last event; False after ``timeout``
        or as soon as it is stuck (``self.stuck`` says where)."""
        assert self.bus is not None
        return await self.wait_for(await self.bus.last_seq(self.stream), timeout, or_stuck=True)

    # -- writing -----------------------------------------------------------------
    def apply_batch(self, items: Sequence[tuple[int, Event | UnknownEvent]]) -> int:
        """Apply events with their stream sequences in one transaction; return the checkpoint."""
        name = self.projection.name
        started = time.perf_counter()
        fresh: list[tuple[int, Event]] = []
        with Session(self.engine) as s, s.begin():
            # one look-up of the SQLite connection per batch (see ``dbapi``), withdrawn
            # before the commit so nothing outside this transaction can use it
            db = dbapi(s)
            s.info[_DBAPI] = db
            try:
                row = db.execute(_GET_CHECKPOINT, (name,)).fetchone()
                current = last = int(row[0]) if row is not None else 0
                skip = self._skip
                for seq, ev in items:
                    if seq <= last:
                        continue  # already applied: redelivery or replay overlap
                    if seq in skip:
                        log.warning("projection_event_quarantined", projection=name, seq=seq)
                    elif not isinstance(ev, UnknownEvent):
                        fresh.append((seq, ev))
                    last = seq
                many = getattr(self.projection, "apply_many", None)
                if many is not None:
                    many(s, fresh)
                else:
                    apply = self.projection.apply
                    for seq, ev in fresh:
                        apply(s, ev, seq)
                self.applied += len(fresh)
                if last != current:
                    db.execute(_PUT_CHECKPOINT, (name, last))
                    db.execute(_CLEAR_STUCK, (name, last))  # passed: no longer stuck there
            finally:
                del s.info[_DBAPI]
        _count_applied(name, fresh, time.perf_counter() - started)
        committed = getattr(self.projection, "after_commit", None)
        if committed is not None and last != current:
            committed()  # after the commit: a reader never caches uncommitted state as new
        return last

    def _apply_messages(self, msgs: list[Msg]) -> int:
        """Decode a fetched batch and apply it (in a worker thread); an event that cannot be
        decoded or applied stops the projection just before it (``self.stuck``)."""
        items: list[tuple[int, Event | UnknownEvent]] = []
        for m in msgs:
            seq = _stream_seq(m)
            try:
                items.append((seq, decode(m.data)))
            except Exception as err:
                if seq in self._skip:
                    items.append((seq, UnknownEvent(type="undecodable", raw=m.data)))
                    continue
                last = self._apply_or_stop(items)
                if self.stuck is None:
                    self._stop_at(seq, "undecodable", err)
                return last
        return self._apply_or_stop(items)

    def _apply_or_stop(self, items: list[tuple[int, Event | UnknownEvent]]) -> int:
        """Apply a batch; when it fails, apply its events one by one up to the failing one."""
        if not items:
            return self.checkpoint()
        try:
            last = self.apply_batch(items)
        except Exception as err:
            if len(items) == 1:
                self._stop_at(items[0][0], _type_of(items[0][1]), err)
                return self.checkpoint()
        else:
            self._resolved()
            return last
        # which event? (rows are the same whether events are applied in batches or singly)
        last = self.checkpoint()
        for seq, ev in items:
            try:
                last = self.apply_batch([(seq, ev)])
            except Exception as err:
                self._stop_at(seq, _type_of(ev), err)
                break
        return last

    def _stop_at(self, seq: int, event_type: str, err: Exception) -> None:
        """Stop at ``seq``: say so in the log (with the traceback the first time), in the
        file, the gauge and ``stuck``."""
        name = self.projection.name
        reason = f"{type(err).__name__}: {err}"[:1000]
        stuck = Stuck(seq=seq, type=event_type, reason=reason)
        again = self.stuck is not None and self.stuck.seq == seq
        self.stuck = stuck
        metrics.EVENTS_FAILED.labels(name, event_type).inc()
        _STUCK.labels(name).set(1)
        _STUCK_SEQ.labels(name).set(seq)
        emit = log.error if again else log.exception
        emit(
            "projection_stuck",
            projection=name,
            seq=seq,
            event_type=event_type,
            error=reason,
            hint=stuck.hint(name),
        )
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(_PUT_STUCK, (name, seq, event_type, reason))
        except Exception as write_err:  # the log line and the gauge still say it
            log.warning("projection_stuck_not_recorded", projection=name, error=str(write_err))

    def _resolved(self) -> None:
        if self.stuck is not None and self.checkpoint() >= self.stuck.seq:
            log.info("projection_resumed", projection=self.projection.name, seq=self.stuck.seq)
            self.stuck = None
            _STUCK.labels(self.projection.name).set(0)
            _STUCK_SEQ.labels(self.projection.name).set(0)

    def _read_quarantine(self) -> frozenset[int]:
        try:
            return frozenset(q.seq for q in read_quarantine(self.quarantine))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("projection_quarantine_unreadable", path=str(self.quarantine), error=str(err))
            return frozenset()

    async def _while_stuck(self) -> None:
        """Wait until the stuck event is quarantined, ``RETRY_STUCK_S`` passed, or stop."""
        stuck = self.stuck
        assert stuck is not None
        async with self._moved:
            self._moved.notify_all()  # a catch_up(or_stuck) gives up now
        since = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), QUARANTINE_POLL_S)
            self._skip = self._read_quarantine()
            if stuck.seq in self._skip:
                name = self.projection.name
                log.info("projection_skipping_quarantined", projection=name, seq=stuck.seq)
                return
            if time.monotonic() - since >= RETRY_STUCK_S:
                return

    async def _advance(self, seq: int) -> None:
        if seq > self._position:
            async with self._moved:
                self._position = seq
                self._moved.notify_all()

    def stop(self) -> None:
        self._stopping.set()

    async def _subscribe(self) -> Any:
        assert self.bus is not None
        start = self.checkpoint() + 1
        config = ConsumerConfig(
            filter_subjects=self.subjects,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=AckPolicy.ALL,
            ack_wait=60,
            inactive_threshold=300,
            max_ack_pending=20_000,
        )
        return await self.bus.js.pull_subscribe("", stream=self.stream, config=config)

    async def run(self) -> None:
        """Follow the stream until ``stop()``; survives NATS restarts."""
        metrics.projections[self.projection.name] = self  # its lag is measured while it runs
        try:
            await self._follow()
        finally:
            if metrics.projections.get(self.projection.name) is self:
                del metrics.projections[self.projection.name]

    async def _follow(self) -> None:
        assert self.bus is not None
        sub = None
        while not self._stopping.is_set():
            try:
                if sub is None:
                    sub = await self._subscribe()
                try:
                    msgs = await sub.fetch(self.batch, timeout=0.25)
                except (nats.errors.TimeoutError, TimeoutError):
                    # Idle. Read the stream's last sequence, then look once more: if nothing
                    # came, every matching event up to that sequence is applied. (No stream
                    # round trip while busy: catch-up runs at the consumer's pace.)
                    watermark = await self.bus.last_seq(self.stream)
                    try:
                        msgs = await sub.fetch(self.batch, timeout=0.05)
                    except (nats.errors.TimeoutError, TimeoutError):
                        await self._advance(max(watermark, self.checkpoint()))
                        continue
            except (
                nats.js.errors.NotFoundError,
                nats.js.errors.ServiceUnavailableError,
                nats.js.errors.APIError,
                nats.errors.Error,
                OSError,
            ) as err:
                log.warning(
                    "projection_resubscribe", projection=self.projection.name, error=str(err)
                )
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                sub = None
                await asyncio.sleep(0.5)
                continue
            # Not overlapped with the next fetch: a worker thread applying while the loop
            # parses messages fights it for the GIL and both run slower (measured).
            last = await asyncio.to_thread(self._apply_messages, msgs)
            await self._advance(last)
            if self.stuck is not None and last < self.stuck.seq:
                # not acknowledged: start again after the checkpoint once it may go on
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
                sub = None
                await self._while_stuck()
                continue
            with contextlib.suppress(Exception):
                await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


def _count_applied(name: str, applied: list[tuple[int, Event]], seconds: float) -> None:
    """Events handled by type (one counter step per type and batch: replay is a hot path)."""
    if not applied:
        return
    by_class: dict[type[Event], int] = {}
    for _seq, ev in applied:
        by_class[type(ev)] = by_class.get(type(ev), 0) + 1
    for cls, n in by_class.items():
        metrics.EVENTS_HANDLED.labels(name, cls.tag()).inc(n)
    metrics.HANDLER_SECONDS.labels(name).observe(seconds)


def _type_of(event: Event | UnknownEvent) -> str:
    return event.type if isinstance(event, UnknownEvent) else event.tag()


def _stream_seq(msg: Msg) -> int:
    """The stream sequence from a JetStream reply subject, without building ``metadata``."""
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9 and tokens[1] == "ACK":
        return int(tokens[5])
    return int(msg.metadata.sequence.stream)  # the longer form with domain and account


def open_projection_file(db_path: Path, projection: Projection) -> Engine:
    """The projection's SQLite file, with its tables; a file whose layout version (SQLite's
    ``user_version``) is not the projection's is deleted first, so the runner replays the
    log into the new layout from sequence 1 — an upgrade that changes tables needs no step."""
    version = int(getattr(projection, "version", 0))
    engine = sqlite_engine(db_path)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
        tables = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar_one()
    if tables and stored != version:
        log.warning(
            "projection_layout_changed", projection=projection.name, stored=stored, now=version
        )
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        engine = sqlite_engine(db_path)
    projection.metadata.create_all(engine)
    _checkpoint_meta.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"PRAGMA user_version = {version}")
    return engine


async def rebuild_projection(
    bus: Bus,
    projection: Projection,
    db_path: Path | str,
    subjects: list[str] | None = None,
    stream: str = STREAM,
) -> int:
    """Replay ``stream`` (``subjects``: the service's filter; None: every event) into a fresh
    file, then swap it in. Returns events applied."""
    db_path = Path(db_path)
    tmp = db_path.with_suffix(db_path.suffix + ".rebuild")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    runner = ProjectionRunner(
        bus, projection, tmp, subjects=subjects, stream=stream, quarantine=quarantine_path(db_path)
    )
    task = asyncio.create_task(runner.run())
    try:
        ok = await runner.catch_up(timeout=3600)
        if runner.stuck is not None:
            raise ProjectionStuck(projection.name, runner.stuck)
        if not ok:
            raise RuntimeError("rebuild did not catch up")
    except BaseException:
        runner.stop()
        await task
        runner.engine.dispose()
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        raise
    runner.stop()
    await task
    runner.engine.dispose()
    for suffix in ("-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db_path)
    return runner.applied


def dump_rows(engine: Engine, metadata: MetaData) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted — for comparing a rebuild with the original."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
