"""Aggregate tables (load, evolve, upsert, child rows) and the guarded aggregate writer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, select

from cvops.contracts import Event, Stamp
from cvops.contracts.identity import (
    Role,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
)
from cvops.core import (
    IDENTITY_STREAM,
    Aggregates,
    AggregateTable,
    Bus,
    Children,
    ConcurrencyConflict,
    ProjectionRunner,
    append_guarded,
    dump_rows,
    write_aggregate,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Token(msgspec.Struct, frozen=True):
    token_id: str
    label: str


class UserState(msgspec.Struct, frozen=True):
    username: str
    role: str
    since: datetime
    changes: int = 0
    tokens: list[Token] = []


def evolve(state: UserState | None, event: Event) -> UserState | None:
    """A user is created once, changes role, holds tokens; disabling removes it here."""
    match event:
        case UserCreated(username=u, role=r) if state is None:
            return UserState(username=u, role=r, since=event.occurred_at)
        case RoleChanged(role=r) if state is not None:
            return msgspec.structs.replace(state, role=r, changes=state.changes + 1)
        case TokenIssued(token_id=t, label=label) if state is not None:
            return msgspec.structs.replace(state, tokens=[*state.tokens, Token(t, label)])
        case TokenRevoked(token_id=t) if state is not None:
            kept = [k for k in state.tokens if k.token_id != t]
            return msgspec.structs.replace(state, tokens=kept)
        case UserDisabled():
            return None
    return state


def _key(event: Event) -> tuple[str] | None:
    return (event.aggregate_id,) if event.context == "identity" else None


def users_projection(name: str = "agg-users") -> tuple[Aggregates, AggregateTable[UserState]]:
    metadata = MetaData()
    users = AggregateTable(
        metadata,
        "users",
        UserState,
        key=[Column("username", String)],
        key_of=_key,
        evolve=evolve,
        columns=[
            Column("role", String, nullable=False, index=True),
            Column("since", DateTime, nullable=False),
            (Column("tokens", Integer, nullable=False), lambda s: len(s.tokens)),
        ],
        children=[
            Children(
                "user_tokens",
                lambda s: s.tokens,
                key=[Column("token_id", String)],
                columns=[Column("label", String)],
            )
        ],
    )
    return Aggregates(name, metadata, [users]), users


def _stamp() -> Stamp:
    return Stamp(now=NOW, actor="t", correlation_id=f"c-{uuid.uuid4()}")


def _history(name: str) -> list[Event]:
    e = _stamp().envelope
    return [
        UserCreated(**e(f"{name}-c"), username=name, role="viewer", password_hash="x"),
        TokenIssued(**e(f"{name}-t1"), username=name, token_id="t1", token_sha256="a"),
        TokenIssued(**e(f"{name}-t2"), username=name, token_id="t2", token_sha256="b"),
        RoleChanged(**e(f"{name}-r"), username=name, role="engineer"),
        TokenRevoked(**e(f"{name}-x"), username=name, token_id="t1"),
    ]


def test_states_fold_into_rows_children_and_reads(tmp_path: Path) -> None:
    projection, users = users_projection()
    runner = ProjectionRunner(None, projection, tmp_path / "a.sqlite")
    events = [*_history("ann"), *_history("bob")]
    runner.apply_batch(list(enumerate(events, start=1)))
    with runner.session() as s:
        ann = users.get(s, "ann")
        assert ann == UserState("ann", "engineer", NOW, changes=1, tokens=[Token("t2", "")])
        assert users.get(s, "nobody") is None
        assert [u.username for u in users.states(s)] == ["ann", "bob"]
        assert users.states(s, role="viewer") == []
        row = s.execute(select(users.table).where(users.table.c.username == "bob")).one()
        # index columns as SQLAlchemy reads them (DateTime through its type), computed ones too
        assert (row.role, row.since, row.tokens) == ("engineer", NOW.replace(tzinfo=None), 1)
        [tokens] = [c.table for c in users.children]
        assert sorted(s.execute(select(tokens)).all()) == [("ann", "t2", ""), ("bob", "t2", "")]
    # a state going to None deletes the aggregate and its children
    disabled = UserDisabled(**_stamp().envelope("d"), username="ann")
    runner.apply_batch([(len(events) + 1, disabled)])
    rows = dump_rows(runner.engine, projection.metadata)
    assert [r[0] for r in rows["users"]] == ["bob"]
    assert rows["user_tokens"] == [("bob", "t2", "")]


def test_a_rebuild_and_a_redelivery_leave_identical_rows(tmp_path: Path) -> None:
    events = list(enumerate([*_history("cy"), *_history("di")], start=1))
    dumps = []
    for i, size in enumerate((1, 3, len(events))):
        projection, _ = users_projection()
        runner = ProjectionRunner(None, projection, tmp_path / f"r{i}.sqlite")
        for at in range(0, len(events), size):
            runner.apply_batch(events[at : at + size])
        runner.apply_batch(events)  # redelivered: at or below the checkpoint, skipped
        assert runner.checkpoint() == len(events)
        dumps.append(dump_rows(runner.engine, projection.metadata))
    assert dumps[0] == dumps[1] == dumps[2]


class OneByOne:
    """The same projection without ``apply_many``: the runner folds event by event."""

    def __init__(self, inner: Aggregates) -> None:
        self.name, self.metadata, self.apply = inner.name, inner.metadata, inner.apply


def test_a_batch_folds_to_the_rows_event_by_event_folding_gives(tmp_path: Path) -> None:
    # more aggregates than one load statement takes, keyed by two columns, with deletions
    metadata = MetaData()
    versions = AggregateTable(
        metadata,
        "versions",
        UserState,
        key=[Column("username", String), Column("n", Integer)],
        key_of=lambda e: (e.aggregate_id, len(e.aggregate_id) % 3),
        evolve=evolve,
        columns=[Column("role", String, nullable=False)],
        children=[Children("tokens", lambda s: s.tokens, key=[Column("token_id", String)])],
    )
    events = [e for i in range(150) for e in _history(f"v{i}")]
    events += [
        UserDisabled(**_stamp().envelope(f"d{i}"), username=f"v{i}") for i in range(0, 150, 7)
    ]
    items = list(enumerate(events, start=1))
    dumps = []
    for i, projection in enumerate(
        (
            Aggregates("batch", metadata, [versions]),
            OneByOne(Aggregates("one", metadata, [versions])),
        )
    ):
        runner = ProjectionRunner(None, projection, tmp_path / f"b{i}.sqlite")
        runner.apply_batch(items[:400])
        runner.apply_batch(items[400:])
        dumps.append(dump_rows(runner.engine, metadata))
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["versions"]) == 150 - len(range(0, 150, 7))
    assert len(dumps[0]["tokens"]) == len(dumps[0]["versions"])


def test_an_unchanged_state_is_not_written(tmp_path: Path) -> None:
    projection, users = users_projection()
    runner = ProjectionRunner(None, projection, tmp_path / "u.sqlite")
    created = _history("eve")[0]
    runner.apply_batch([(1, created)])
    with runner.session() as s:
        s.execute(users.table.update().values(role="edited"))  # marks the row
        s.commit()
    e = _stamp().envelope("again")
    again = UserCreated(**e, username="eve", role="admin", password_hash="")
    runner.apply_batch([(2, again)])  # evolve returns the same state: no write
    with runner.session() as s:
        assert s.execute(select(users.table.c.role)).scalar() == "edited"


async def test_the_runner_folds_aggregates_from_the_stream(bus: Bus, tmp_path: Path) -> None:
    projection, users = users_projection("agg-stream")
    # identity's events: their own stream
    runner = ProjectionRunner(
        bus, projection, tmp_path / "s.sqlite", batch=4, stream=IDENTITY_STREAM
    )
    task = asyncio.create_task(runner.run())
    names = [f"s{uuid.uuid4().hex[:6]}" for _ in range(5)]
    for name in names:
        for event in _history(name):
            await bus.publish(event)
    assert await runner.catch_up(10)
    # sequences read from reply subjects
    assert runner.checkpoint() == await bus.last_seq(IDENTITY_STREAM)
    runner.stop()
    await task
    with runner.session() as s:
        for name in names:
            state = users.get(s, name)
            assert state is not None and state.role == "engineer" and len(state.tokens) == 1
    runner.engine.dispose()


# -- the writer ----------------------------------------------------------------------------


def _created(name: str) -> UserCreated:
    return UserCreated(**_stamp().envelope(name), username=name, role="viewer", password_hash="x")


def _role(name: str, role: Role) -> RoleChanged:
    return RoleChanged(**_stamp().envelope(f"{name}-{role}"), username=name, role=role)


async def test_append_guarded_chains_the_aggregate_and_leaves_others_unguarded(bus: Bus) -> None:
    name, other = f"g{uuid.uuid4().hex[:6]}", f"o{uuid.uuid4().hex[:6]}"
    subjects = _created(name).aggregate_subjects
    await bus.publish(_created(other))  # the other aggregate has events: a guard would refuse
    done = await append_guarded(
        bus, subjects, [_created(name), _role(other, "admin"), _role(name, "admin")], 0
    )
    assert done.aggregate_seq == done.seq == await bus.last_subject_seq(subjects)
    with pytest.raises(ConcurrencyConflict):
        await append_guarded(bus, subjects, [_role(name, "engineer")], done.aggregate_seq - 1)
    later = await append_guarded(bus, subjects, [_role(name, "engineer")], done.aggregate_seq)
    assert later.seq > done.seq


async def test_write_aggregate_decides_again_after_a_conflict(bus: Bus, tmp_path: Path) -> None:
    projection, users = users_projection("agg-writer")
    runner = ProjectionRunner(bus, projection, tmp_path / "w.sqlite", stream=IDENTITY_STREAM)
    task = asyncio.create_task(runner.run())
    name = f"w{uuid.uuid4().hex[:6]}"
    subjects = _created(name).aggregate_subjects
    seen: list[tuple[int, int | None]] = []

    async def promote(expected: int) -> list[Event]:
        with runner.session() as s:
            state = users.get(s, name)
        seen.append((expected, state.changes if state else None))
        if state is None:
            return [_created(name)]
        if len(seen) == 2:  # another writer gets in between this read and our append
            await bus.publish(_role(name, "engineer"))
        return [_role(name, "admin")] if state.role != "admin" else []

    created = await write_aggregate(bus, subjects, promote, runner=runner)
    assert created.seq and seen == [(0, None)]
    promoted = await write_aggregate(bus, subjects, promote, runner=runner)
    # the first decision conflicted; the second read the other writer's change
    assert [changes for _, changes in seen[1:]] == [0, 1]
    assert seen[1][0] == created.seq < seen[2][0] < promoted.seq
    nothing = await write_aggregate(bus, subjects, lambda _: [], runner=runner)
    assert nothing.seq == 0 and nothing.aggregate_seq == promoted.seq
    assert await runner.wait_for(promoted.seq)
    with runner.session() as s:
        state = users.get(s, name)
    assert state is not None and (state.role, state.changes) == ("admin", 2)
    runner.stop()
    await task
    runner.engine.dispose()


async def test_write_aggregate_gives_up_after_its_attempts(bus: Bus) -> None:
    name = f"x{uuid.uuid4().hex[:6]}"
    subjects = _created(name).aggregate_subjects
    await bus.publish(_created(name))
    calls = 0

    async def always_beaten(_expected: int) -> list[Event]:
        nonlocal calls
        calls += 1
        await bus.publish(_role(name, "engineer"))
        return [_role(name, "admin")]

    with pytest.raises(ConcurrencyConflict):
        await write_aggregate(bus, subjects, always_beaten, attempts=3)
    assert calls == 3
