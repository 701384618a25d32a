"""Aggregate tables and the aggregate writer: one msgspec state per key, folded by a pure
``evolve(state | None, event)``, and appends guarded by the aggregate's last sequence.
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, TypeVar

import msgspec
from sqlalchemy import Column, MetaData, Table, Text, bindparam, delete, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core.bus import Bus, ConcurrencyConflict
from cvops.core.projection import ProjectionRunner, dbapi
from cvops.domain.checks import check_storable, fits_int64

S = TypeVar("S")

Key = tuple[Any, ...]
Getter = Callable[[Any], Any]
# A column whose value is the state's (or child's) attribute of the same name, or a column
# with the function that computes its value.
ColumnSpec = Column[Any] | tuple[Column[Any], Getter]

_DIALECT = sqlite.dialect(paramstyle="qmark")
_LOAD_SIZES = (1, 8, 64)  # keys per batch-load statement: 64 x a 15-column key < 999 variables


def _spec(spec: ColumnSpec) -> tuple[Column[Any], Getter]:
    if isinstance(spec, tuple):
        return spec
    return spec, attrgetter(str(spec.name))


def _getter(column: Column[Any], get: Getter) -> Getter:
    """``get`` followed by the column type's bind conversion (most types have none)."""
    convert = column.type.dialect_impl(_DIALECT).bind_processor(_DIALECT)
    if convert is None:
        return get
    return lambda obj: convert(get(obj))


def _sql(statement: Any, order: Sequence[str]) -> str:
    """Compile once to SQLite text with ``?`` placeholders in ``order``."""
    compiled = statement.compile(dialect=_DIALECT)
    if list(compiled.positiontup or ()) != list(order):
        raise AssertionError(f"parameter order {compiled.positiontup} != {list(order)}")
    return str(compiled)


class Children:
    """Child rows of an aggregate: a table with one row per item of a list in its state."""

    def __init__(
        self,
        name: str,
        items: Callable[[Any], Iterable[Any]],
        *,
        key: Sequence[ColumnSpec],
        columns: Sequence[ColumnSpec] = (),
    ) -> None:
        self.name = name
        self.items = items
        self.key = [_spec(c) for c in key]
        self.columns = [_spec(c) for c in columns]


class _ChildTable:
    """A ``Children`` bound to its parent: keyed by the parent's key, then the item's."""

    def __init__(self, spec: Children, metadata: MetaData, parent_key: list[Column[Any]]) -> None:
        self.items = spec.items
        parent = [Column(str(c.name), c.type, primary_key=True) for c in parent_key]
        own = [Column(str(c.name), c.type, primary_key=True) for c, _ in spec.key]
        values = [c for c, _ in spec.columns]
        self.table = Table(spec.name, metadata, *parent, *own, *values)
        self.key_of = [_getter(c, g) for c, g in spec.key]
        self.values_of = [_getter(c, g) for c, g in spec.columns]
        pk = [str(c.name) for c in (*parent, *own)]
        names = [*pk, *(str(c.name) for c in values)]
        t = self.table
        stmt = insert(t).values({n: bindparam(n) for n in names})
        if values:
            stmt = stmt.on_conflict_do_update(
                index_elements=pk, set_={str(c.name): stmt.excluded[str(c.name)] for c in values}
            )
        else:
            stmt = stmt.on_conflict_do_nothing()
        self.upsert = _sql(stmt, names)
        where = [t.c[n] == bindparam(n) for n in pk]
        self.delete = _sql(delete(t).where(*where), pk)
        parent_names = [str(c.name) for c in parent]
        self.delete_all = _sql(
            delete(t).where(*(t.c[n] == bindparam(n) for n in parent_names)), parent_names
        )

    def rows(self, state: Any) -> dict[Key, Key]:
        """Child key → column values, for each item of ``state``."""
        if state is None:
            return {}
        key_of, values_of = self.key_of, self.values_of
        return {
            tuple(g(item) for g in key_of): tuple(g(item) for g in values_of)
            for item in self.items(state)
        }


class _ChildWrites:
    """A batch's writes to one child table, made with one statement each."""

    def __init__(self) -> None:
        self.cleared: list[Key] = []
        self.gone: list[Key] = []
        self.changed: list[Key] = []

    def add(self, child: _ChildTable, key: Key, before: Any, after: Any) -> None:
        """Rows to delete and to upsert for aggregate ``key`` going from before to after."""
        if after is None:
            self.cleared.append(key)
            return
        old, new = child.rows(before), child.rows(after)
        self.gone += [(*key, *k) for k in old.keys() - new.keys()]
        self.changed += [(*key, *k, *v) for k, v in new.items() if old.get(k) != v]

    def flush(self, db: sqlite3.Connection, child: _ChildTable) -> None:
        """Run the batch's deletes, then its upserts."""
        for sql, rows in (
            (child.delete_all, self.cleared),
            (child.delete, self.gone),
            (child.upsert, self.changed),
        ):
            if rows:
                db.executemany(sql, rows)


class AggregateTable(Generic[S]):
    """A table holding one aggregate per key: a msgspec ``state`` struct as JSON, the key
    columns, index columns computed from the state, and optional child tables.

    ``key_of(event)`` names the aggregate an event belongs to as a tuple of plain key values
    (str, int; None: not this table's); ``evolve(state | None, event)`` returns the next
    state — the same object when nothing changed (no write), None when there is no aggregate
    (its rows are deleted). Applying is load → evolve → upsert in the caller's transaction,
    through SQL compiled once; a batch (``fold_many``) loads and writes with a few statements.

    ``sequence`` names the state's attribute that holds the stream sequence of the aggregate's
    newest event (writers append guarded by it): given an event's sequence, the fold skips an
    event at or below it (a redelivery) and records it after every later one, even one that
    changes nothing else. A domain fold that records the sequence itself is given as
    ``evolve_at(state | None, event, seq)`` instead of ``evolve``.
    """

    def __init__(
        self,
        metadata: MetaData,
        name: str,
        state: type[S],
        *,
        key: Sequence[Column[Any]],
        key_of: Callable[[Event], Key | None],
        evolve: Callable[[S | None, Event], S | None] | None = None,
        evolve_at: Callable[[S | None, Event, int], S | None] | None = None,
        columns: Sequence[ColumnSpec] = (),
        state_column: str = "state",
        children: Sequence[Children] = (),
        sequence: str | None = None,
    ) -> None:
        self.state_type = state
        self.key_of = key_of
        self._evolve_at = evolve_at
        if evolve is not None and evolve_at is None:
            self.evolve = evolve
        elif evolve_at is not None and evolve is None:
            self.evolve = lambda state, event: evolve_at(state, event, 0)
        else:
            raise TypeError(f"{name}: give one of evolve and evolve_at")
        self.sequence = sequence
        key_cols = [Column(str(c.name), c.type, primary_key=True) for c in key]
        specs = [_spec(c) for c in columns]
        self.table = Table(
            name,
            metadata,
            *key_cols,
            *(c for c, _ in specs),
            Column(state_column, Text, nullable=False),
        )
        self.children = [_ChildTable(c, metadata, key_cols) for c in children]
        self._values_of = [_getter(c, g) for c, g in specs]
        self._decode = msgspec.json.Decoder(state).decode
        self._encode = msgspec.json.Encoder().encode
        t = self.table
        pk = [str(c.name) for c in key_cols]
        self._key_names = pk
        values = [str(c.name) for c, _ in specs] + [state_column]
        stmt = insert(t).values({n: bindparam(n) for n in (*pk, *values)})
        stmt = stmt.on_conflict_do_update(
            index_elements=pk, set_={n: stmt.excluded[n] for n in values}
        )
        self._upsert = _sql(stmt, [*pk, *values])
        where = [t.c[n] == bindparam(n) for n in pk]
        self._state = t.c[state_column]
        self._load = _sql(select(self._state).where(*where), pk)
        self._delete = _sql(delete(t).where(*where), pk)
        # a batch loads its aggregates with a few statements, keys padded to a size class
        q = _DIALECT.identifier_preparer.quote
        cols = ", ".join(q(n) for n in pk)
        row = f"({', '.join('?' for _ in pk)})"
        self._load_many = {
            size: f"SELECT {cols}, {q(state_column)} FROM {q(name)} WHERE "
            + (
                f"{cols} IN ({', '.join('?' for _ in range(size))})"
                if len(pk) == 1
                else f"({cols}) IN (VALUES {', '.join(row for _ in range(size))})"
            )
            for size in _LOAD_SIZES
        }

    # -- folding -------------------------------------------------------------------------
    def apply(self, session: Session, event: Event, seq: int | None = None) -> bool:
        """Fold ``event`` (stream sequence ``seq``) into its aggregate; False when the event
        has none in this table."""
        key = self.key_of(event)
        if key is None:
            return False
        self.fold(dbapi(session), key, event, seq)
        return True

    def fold(self, db: sqlite3.Connection, key: Key, event: Event, seq: int | None = None) -> None:
        """Load the aggregate ``key``, evolve it by ``event`` and write what changed."""
        row = db.execute(self._load, key).fetchone()
        before = self._decode(row[0]) if row is not None else None
        self._write(db, {key: before}, {key: self._next(before, event, seq)})

    def fold_many(
        self,
        db: sqlite3.Connection,
        keyed: Sequence[tuple[Key, Event]],
        seqs: Sequence[int] | None = None,
    ) -> None:
        """Fold events in order (``seqs``: their stream sequences): load their aggregates at
        once, evolve, write what changed."""
        if not keyed:
            return
        before = self.load_many(db, list(dict.fromkeys(k for k, _ in keyed)))
        after = dict(before)
        at: Sequence[int | None] = seqs if seqs is not None else [None] * len(keyed)
        for (key, event), seq in zip(keyed, at, strict=True):
            after[key] = self._next(after[key], event, seq)
        self._write(db, before, after)

    def _next(self, state: S | None, event: Event, seq: int | None) -> S | None:
        """``evolve``; with a ``sequence`` attribute and ``seq``, a seen event skipped and a
        new one's sequence recorded."""
        if self._evolve_at is not None:
            return self._evolve_at(state, event, seq or 0)
        attr = self.sequence
        if attr is None or seq is None:
            return self.evolve(state, event)
        if state is not None and seq <= getattr(state, attr):
            return state
        after = self.evolve(state, event)
        if after is None:
            return None
        return msgspec.structs.replace(after, **{attr: seq})  # type: ignore[type-var]

    def load_many(self, db: sqlite3.Connection, keys: Sequence[Key]) -> dict[Key, S | None]:
        """The states of ``keys`` (None where there is no aggregate)."""
        found: dict[Key, S | None] = dict.fromkeys(keys)
        width, decode, most = len(self._key_names), self._decode, _LOAD_SIZES[-1]
        for at in range(0, len(keys), most):
            chunk = keys[at : at + most]
            size = next(n for n in _LOAD_SIZES if n >= len(chunk))
            padded = [*chunk, *(chunk[-1] for _ in range(size - len(chunk)))]
            for row in db.execute(self._load_many[size], [v for k in padded for v in k]):
                key = tuple(row[:width])
                if key not in found:  # SQLite matched it by converting a value's type
                    raise TypeError(f"{self.table.name}: key_of gave a key not typed as {key!r}")
                found[key] = decode(row[width])
        return found

    def _write(
        self, db: sqlite3.Connection, before: dict[Key, S | None], after: dict[Key, S | None]
    ) -> None:
        """Upsert the aggregates whose state changed, delete those that went; their children."""
        upserts: list[Key] = []
        deletes: list[Key] = []
        children = [_ChildWrites() for _ in self.children]
        values_of, encode = self._values_of, self._encode
        for key, new in after.items():
            old = before.get(key)
            if new is old or (new is not None and old is not None and new == old):
                continue  # unchanged: nothing to write
            if new is None:
                deletes.append(key)
            else:
                upserts.append((*key, *(g(new) for g in values_of), encode(new).decode()))
            for child, writes in zip(self.children, children, strict=True):
                writes.add(child, key, old, new)
        if deletes:
            db.executemany(self._delete, deletes)
        if upserts:
            db.executemany(self._upsert, upserts)
        for child, writes in zip(self.children, children, strict=True):
            writes.flush(db, child)

    # -- reading -------------------------------------------------------------------------
    def get(self, session: Session | Connection, *key: Any) -> S | None:
        """The state of aggregate ``key``, or None."""
        if not _storable(key):
            return None  # no row holds it (and SQLite would raise OverflowError on it)
        row = dbapi(session).execute(self._load, key).fetchone()
        return self._decode(row[0]) if row is not None else None

    def states(self, session: Session | Connection, **where: Any) -> list[S]:
        """Every state (those whose key or index columns equal ``where``), in key order."""
        if not _storable(where.values()):
            return []
        t = self.table
        query = select(self._state).where(*(t.c[n] == v for n, v in where.items()))
        query = query.order_by(*(t.c[n] for n in self._key_names))
        return [self._decode(value) for (value,) in session.execute(query)]


def _storable(values: Iterable[Any]) -> bool:
    """Whether every int among ``values`` fits SQLite's INTEGER: a key beyond 64 bits (a
    version number in a request, say) names no row."""
    return all(fits_int64(v) for v in values if isinstance(v, int))


class Aggregates:
    """A projection made only of aggregate tables (see ``ProjectionRunner``)."""

    def __init__(self, name: str, metadata: MetaData, tables: Sequence[AggregateTable[Any]]):
        self.name = name
        self.metadata = metadata
        self.tables = list(tables)

    def apply(self, session: Session, event: Event, seq: int) -> None:
        """Fold ``event`` into each table that holds its aggregate."""
        for table in self.tables:
            key = table.key_of(event)
            if key is not None:
                table.fold(dbapi(session), key, event, seq)

    def apply_many(self, session: Session, items: Sequence[tuple[int, Event]]) -> None:
        """Fold a batch's events in order, each table loading and writing once."""
        db = dbapi(session)
        for table in self.tables:
            key_of = table.key_of
            mine = [(k, e, seq) for seq, e in items if (k := key_of(e)) is not None]
            table.fold_many(db, [(k, e) for k, e, _ in mine], [seq for _, _, seq in mine])


# -- the write side ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Appended:
    """What an append did: the last sequence written and the aggregate's last sequence."""

    seq: int  # 0: nothing appended
    aggregate_seq: int  # expect this on the aggregate's next append
    events: list[Event]


async def append_guarded(
    bus: Bus, subjects: str, events: Sequence[Event], expected: int
) -> Appended:
    """Append in order, each event of aggregate ``subjects`` guarded by its last sequence
    (all checked storable first: none goes out when one is refused)."""
    check_storable(list(events))
    # ``expected`` for the first (0: no event yet), then each one's own sequence
    seq = 0
    for event in events:
        if event.aggregate_subjects == subjects:
            seq = (await bus.publish(event, expected_last_subject_seq=expected)).seq
            expected = seq
        else:  # another aggregate's event: its Nats-Msg-Id makes a re-publish a no-op
            seq = (await bus.publish(event)).seq
    return Appended(seq=seq, aggregate_seq=expected, events=list(events))


Decide = Callable[[int], Awaitable[Sequence[Event] | None] | Sequence[Event] | None]


async def write_aggregate(
    bus: Bus,
    subjects: str,
    decide: Decide,
    *,
    runner: ProjectionRunner | None = None,
    attempts: int = 5,
    wait_s: float = 10.0,
) -> Appended:
    """Read the aggregate's sequence, decide, append guarded; on a conflict, again."""
    # ``decide(expected)`` (sync or async) returns the events, or none for nothing to do;
    # after ``attempts`` conflicts in a row, ConcurrencyConflict is the caller's to answer
    for _ in range(attempts):
        expected = await bus.last_subject_seq(subjects)
        # a decision read from a projection behind the expected sequence would be appended
        # as if it had seen the events it missed
        if runner is not None and not await runner.wait_for(expected, wait_s):
            raise TimeoutError(f"projection {runner.projection.name} did not reach {expected}")
        decided = decide(expected)
        events = await decided if inspect.isawaitable(decided) else decided
        if not events:
            return Appended(seq=0, aggregate_seq=expected, events=[])
        try:
            return await append_guarded(bus, subjects, events, expected)
        except ConcurrencyConflict:
            continue
    raise ConcurrencyConflict(subjects)
