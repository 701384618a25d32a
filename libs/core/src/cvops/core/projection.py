"""Projection runner: fold the event log into a per-service SQLite file, exactly once.

A ``checkpoint`` row is written in the same transaction as the rows a batch of events
changes; the consumer restarts at checkpoint+1 and skips anything at or below it; the
batch is acknowledged only after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, event, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from cvops.contracts import Event, UnknownEvent, decode
from cvops.core.bus import ALL_EVENTS, STREAM, Bus, ShuttingDown
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


# The runner applies through the SQLite connection itself: the checkpoint and aggregate
# statements are plain SQL text, prepared once by the driver's statement cache.
_GET_CHECKPOINT = "SELECT seq FROM projection_checkpoint WHERE name = ?"
_PUT_CHECKPOINT = (
    "INSERT INTO projection_checkpoint (name, seq) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq"
)
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
        batch: int = 500,
    ) -> None:
        self.bus = bus
        self.projection = projection
        self.db_path = Path(db_path)
        self.subjects = subjects or [ALL_EVENTS]
        self.batch = batch
        self.engine = open_projection_file(self.db_path, projection)
        self._position = self.checkpoint()
        self._moved = asyncio.Condition()
        self._stopping = asyncio.Event()
        self.applied = 0

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

    async def wait_for(self, seq: int, timeout: float = 10.0) -> bool:
        """Wait until the projection has applied everything up to ``seq``."""

        async def _reached() -> None:
            async with self._moved:
                await self._moved.wait_for(lambda: self._position >= seq)

        try:
            await asyncio.wait_for(_reached(), timeout)
        except TimeoutError:
            return False
        return True

    async def reached(self, seq: int, stopping: asyncio.Event) -> None:
        """Wait as long as it takes for ``seq`` (a work handler's read-your-writes), saying
        every 5 s that the projection lags; raises ShuttingDown once ``stopping`` is set."""
        while not await self.wait_for(seq, timeout=5.0):
            if stopping.is_set():
                raise ShuttingDown()
            log.warning("projection_lagging", want=seq, at=self.position)

    async def catch_up(self, timeout: float = 30.0) -> bool:
        assert self.bus is not None
        return await self.wait_for(await self.bus.last_seq(), timeout)

    # -- writing -----------------------------------------------------------------
    def apply_batch(self, items: Sequence[tuple[int, Event | UnknownEvent]]) -> int:
        """Apply events with their stream sequences in one transaction; return the checkpoint."""
        name = self.projection.name
        with Session(self.engine) as s, s.begin():
            # one look-up of the SQLite connection per batch (see ``dbapi``), withdrawn
            # before the commit so nothing outside this transaction can use it
            db = dbapi(s)
            s.info[_DBAPI] = db
            try:
                row = db.execute(_GET_CHECKPOINT, (name,)).fetchone()
                current = last = int(row[0]) if row is not None else 0
                fresh: list[tuple[int, Event]] = []
                for seq, ev in items:
                    if seq <= last:
                        continue  # already applied: redelivery or replay overlap
                    if not isinstance(ev, UnknownEvent):
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
            finally:
                del s.info[_DBAPI]
        committed = getattr(self.projection, "after_commit", None)
        if committed is not None and last != current:
            committed()  # after the commit: a reader never caches uncommitted state as new
        return last

    def _apply_messages(self, msgs: list[Msg]) -> int:
        """Decode a fetched batch and apply it (in a worker thread)."""
        return self.apply_batch([(_stream_seq(m), decode(m.data)) for m in msgs])

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
        return await self.bus.js.pull_subscribe("", stream=STREAM, config=config)

    async def run(self) -> None:
        """Follow the stream until ``stop()``; survives NATS restarts."""
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
                    watermark = await self.bus.last_seq()
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
            with contextlib.suppress(Exception):
                await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch
            await self._advance(last)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


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
    bus: Bus, projection: Projection, db_path: Path | str, subjects: list[str] | None = None
) -> int:
    """Replay the log (``subjects``: the service's filter; None: every event) into a fresh
    file, then swap it in. Returns events applied."""
    db_path = Path(db_path)
    tmp = db_path.with_suffix(db_path.suffix + ".rebuild")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
        p.unlink(missing_ok=True)
    runner = ProjectionRunner(bus, projection, tmp, subjects=subjects)
    task = asyncio.create_task(runner.run())
    try:
        ok = await runner.catch_up(timeout=3600)
        if not ok:
            raise RuntimeError("rebuild did not catch up")
    finally:
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
