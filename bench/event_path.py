"""Event path benchmark: append + project N events vs raw JetStream publish + consume.

Starts its own nats-servers in a temp dir — one with ``sync_interval: always`` (what cvops
runs), one with the server default (fsync every two minutes) — and measures on each:

  raw publish     js.publish of the pre-encoded payloads, a window of outstanding acks
  raw consume     pull fetch in batches of the same stream, one ack per batch
  Bus.publish     cvops append (encode, Nats-Msg-Id dedupe header, expected stream)
  projection      ProjectionRunner catch-up from seq 1 of a small SQLite projection: an
                  aggregate table (cvops.core.aggregates: load, evolve, upsert), and for
                  comparison the same rows written by hand per event (statement built per
                  event, or one prebuilt statement bound per event through the Session)

and prints the ratios: aggregate-table catch-up / raw consume (target >= 0.5) and the cost
of durability (publish rate with fsync always / server default).

    python bench/event_path.py --n 20000 [--window 256] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.orm import Session

from cvops.contracts import Event, Stamp, decode, encode
from cvops.contracts.identity import UserCreated
from cvops.core import (
    Aggregates,
    AggregateTable,
    Bus,
    Projection,
    ProjectionRunner,
    load_settings,
)
from cvops.core.accel import host_fingerprint
from cvops.core.logging import configure_logging
from cvops.core.natsd import start_nats, stop_process

RAW_STREAM = "BENCH_RAW"
RAW_PREFIX = "bench.raw"


class UserState(msgspec.Struct, frozen=True):
    """The aggregate the bench folds: one per user."""

    username: str
    role: str


def evolve_user(state: UserState | None, event: Event) -> UserState | None:
    match event:
        case UserCreated(username=u, role=r):
            return UserState(username=u, role=r)
    return state


def aggregate_projection() -> Aggregates:
    """The projection under test: users as an aggregate table, keyed by name, role indexed."""
    metadata = MetaData()
    users = AggregateTable(
        metadata,
        "users",
        UserState,
        key=[Column("username", String)],
        key_of=lambda e: (e.username,) if isinstance(e, UserCreated) else None,
        evolve=evolve_user,
        columns=[Column("role", String, index=True)],
    )
    return Aggregates("bench-users-aggregate", metadata, [users])


class UsersProjection:
    """The same rows written by hand: ``insert().values(...)`` built per event, the way
    services wrote their projections before aggregate tables."""

    name = "bench-users"

    def __init__(self) -> None:
        self.metadata = MetaData()
        self.users = Table(
            "users",
            self.metadata,
            Column("username", String, primary_key=True),
            Column("role", String),
            Column("seq", Integer),
        )

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case UserCreated(username=u, role=r):
                session.execute(self.users.insert().values(username=u, role=r, seq=seq))


class PreparedUsersProjection(UsersProjection):
    """The same rows through one prebuilt INSERT bound per event through the Session."""

    name = "bench-users-prepared"

    def __init__(self) -> None:
        super().__init__()
        self.insert_user = self.users.insert()

    def apply(self, session: Session, event: Event, seq: int) -> None:
        match event:
            case UserCreated(username=u, role=r):
                session.execute(self.insert_user, {"username": u, "role": r, "seq": seq})


def make_events(n: int) -> list[UserCreated]:
    stamp = Stamp(now=datetime(2026, 1, 1, tzinfo=UTC), actor="bench", correlation_id="bench")
    return [
        UserCreated(
            **stamp.envelope(f"u{i}"),
            username=f"user-{i:06d}",
            role="viewer",
            password_hash="$argon2id$v=19$m=65536,t=3,p=4$" + "x" * 64,
        )
        for i in range(n)
    ]


async def windowed(calls: Sequence[Callable[[], Awaitable[Any]]], window: int) -> float:
    """Run ``calls`` with at most ``window`` outstanding; return elapsed seconds."""
    sem = asyncio.Semaphore(window)

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        async with sem:
            await call()

    start = time.perf_counter()
    # tasks are created in bounded chunks so 20k pending coroutines are never all alive
    chunk = window * 8
    for i in range(0, len(calls), chunk):
        await asyncio.gather(*(one(c) for c in calls[i : i + chunk]))
    return time.perf_counter() - start


async def raw_round(
    url: str, events: list[UserCreated], window: int, batch: int
) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    await js.add_stream(
        StreamConfig(name=RAW_STREAM, subjects=[f"{RAW_PREFIX}.>"], storage=StorageType.FILE)
    )
    payloads = [(f"{RAW_PREFIX}.{e.subject}", encode(e)) for e in events]

    def pub(subject: str, data: bytes) -> Callable[[], Awaitable[Any]]:
        return lambda: js.publish(subject, data)

    publish_s = await windowed([pub(s, d) for s, d in payloads], window)

    async def consume(decode_too: bool) -> float:
        sub = await js.pull_subscribe(
            "",
            stream=RAW_STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_policy=AckPolicy.ALL,
                max_ack_pending=20_000,
                inactive_threshold=60,
            ),
        )
        got = 0
        start = time.perf_counter()
        while got < len(events):
            msgs = await sub.fetch(batch, timeout=5)
            if decode_too:
                for m in msgs:
                    decode(m.data)
            got += len(msgs)
            await msgs[-1].ack()
        elapsed = time.perf_counter() - start
        await sub.unsubscribe()
        return elapsed

    consume_s = await consume(decode_too=False)
    consume_decode_s = await consume(decode_too=True)
    await nc.drain()
    n = len(events)
    return {
        "raw_publish": n / publish_s,
        "raw_consume": n / consume_s,
        "raw_consume_decode": n / consume_decode_s,
    }


async def cvops_round(
    url: str, events: list[UserCreated], window: int, batch: int, db_dir: Path
) -> dict[str, float]:
    settings = load_settings({}, nats_url=url, home=str(db_dir), log_json=True)
    bus = await Bus.connect(settings, name="bench")

    def pub(e: UserCreated) -> Callable[[], Awaitable[Any]]:
        return lambda: bus.publish(e)

    publish_s = await windowed([pub(e) for e in events], window)
    last = await bus.last_seq()
    assert last == len(events), f"stream holds {last} events, expected {len(events)}"

    out = {"bus_publish": len(events) / publish_s}
    projections: tuple[tuple[str, Projection], ...] = (
        ("", aggregate_projection()),
        ("_per_event", UsersProjection()),
        ("_prepared", PreparedUsersProjection()),
    )
    for key, projection in projections:
        out[f"projection_apply_only{key}"], out[f"projection_catch_up{key}"] = await _project(
            bus, projection, events, last, batch, db_dir
        )
    await bus.close()
    return out


async def _project(
    bus: Bus,
    projection: Projection,
    events: list[UserCreated],
    last: int,
    batch: int,
    db_dir: Path,
) -> tuple[float, float]:
    """(events/s applying in batches with no NATS, events/s catching up from the stream)."""
    n = len(events)
    offline = ProjectionRunner(None, projection, db_dir / f"{projection.name}-offline.sqlite")
    items = list(enumerate(events, start=1))
    start = time.perf_counter()
    for i in range(0, n, batch):
        offline.apply_batch(items[i : i + batch])
    apply_s = time.perf_counter() - start
    offline.engine.dispose()

    runner = ProjectionRunner(bus, projection, db_dir / f"{projection.name}.sqlite", batch=batch)
    start = time.perf_counter()
    task = asyncio.create_task(runner.run())
    caught_up = await runner.wait_for(last, timeout=600)
    project_s = time.perf_counter() - start
    runner.stop()
    await task
    runner.engine.dispose()
    assert caught_up and runner.applied == n, "projection did not catch up"
    return n / apply_s, n / project_s


async def run_mode(
    sync_always: bool, events: list[UserCreated], window: int, batch: int
) -> dict[str, float]:
    store = Path(tempfile.mkdtemp(prefix="cvops-bench-"))
    proc, port = start_nats(store / "nats", port=-1, sync_always=sync_always)
    try:
        url = f"nats://127.0.0.1:{port}"
        raw = await raw_round(url, events, window, batch)
        ours = await cvops_round(url, events, window, batch, store / "home")
        return raw | ours
    finally:
        stop_process(proc)
        shutil.rmtree(store, ignore_errors=True)


ROWS = (
    ("raw_publish", "raw publish (js.publish)"),
    ("raw_consume", "raw consume (pull fetch)"),
    ("raw_consume_decode", "raw consume + decode"),
    ("bus_publish", "Bus.publish (append)"),
    ("projection_apply_only", "aggregate: apply, no NATS"),
    ("projection_catch_up", "aggregate: catch-up"),
    ("projection_apply_only_per_event", "per-event: apply, no NATS"),
    ("projection_catch_up_per_event", "per-event: catch-up"),
    ("projection_apply_only_prepared", "prepared: apply, no NATS"),
    ("projection_catch_up_prepared", "prepared: catch-up"),
)


def ratios(res: dict[str, dict[str, float]]) -> dict[str, float]:
    a, d = res["always"], res["default"]
    return {
        "projection_vs_raw_consume_always": a["projection_catch_up"] / a["raw_consume"],
        "projection_vs_raw_consume_default": d["projection_catch_up"] / d["raw_consume"],
        "per_event_vs_raw_consume_always": a["projection_catch_up_per_event"] / a["raw_consume"],
        "per_event_vs_raw_consume_default": d["projection_catch_up_per_event"] / d["raw_consume"],
        "prepared_vs_raw_consume_always": a["projection_catch_up_prepared"] / a["raw_consume"],
        "prepared_vs_raw_consume_default": d["projection_catch_up_prepared"] / d["raw_consume"],
        "bus_publish_vs_raw_publish_always": a["bus_publish"] / a["raw_publish"],
        "bus_publish_vs_raw_publish_default": d["bus_publish"] / d["raw_publish"],
        "raw_publish_always_vs_default": a["raw_publish"] / d["raw_publish"],
        "bus_publish_always_vs_default": a["bus_publish"] / d["bus_publish"],
    }


def report(n: int, size: int, window: int, batch: int, res: dict[str, dict[str, float]]) -> str:
    r = ratios(res)
    lines = [
        f"event path: N={n} events of ~{size} B, publish window {window}, fetch batch {batch}",
        "",
        f"{'events/s':<28}{'fsync always':>14}{'server default':>16}",
    ]
    for key, label in ROWS:
        lines.append(f"{label:<28}{res['always'][key]:>14,.0f}{res['default'][key]:>16,.0f}")
    proj_a, proj_d = r["projection_vs_raw_consume_always"], r["projection_vs_raw_consume_default"]
    bus_a, bus_d = r["bus_publish_vs_raw_publish_always"], r["bus_publish_vs_raw_publish_default"]
    verdict = "ok" if min(proj_a, proj_d) >= 0.5 else "BELOW TARGET"
    lines += [
        "",
        f"{'ratios':<38}{'always':>8}{'default':>9}",
        f"{'aggregate catch-up / raw consume':<38}{proj_a:>8.2f}{proj_d:>9.2f}"
        f"   target >= 0.50: {verdict}",
        f"{'per-event catch-up / raw consume':<38}{r['per_event_vs_raw_consume_always']:>8.2f}"
        f"{r['per_event_vs_raw_consume_default']:>9.2f}",
        f"{'prepared catch-up / raw consume':<38}{r['prepared_vs_raw_consume_always']:>8.2f}"
        f"{r['prepared_vs_raw_consume_default']:>9.2f}",
        f"{'Bus.publish / raw publish':<38}{bus_a:>8.2f}{bus_d:>9.2f}",
        "",
        "durability (publish rate, fsync always / server default; 1.00 = free)",
        f"  raw js.publish {r['raw_publish_always_vs_default']:.2f}"
        f"   Bus.publish {r['bus_publish_always_vs_default']:.2f}",
    ]
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000, help="events per measurement")
    parser.add_argument("--window", type=int, default=256, help="outstanding publishes")
    parser.add_argument("--batch", type=int, default=500, help="fetch batch (as ProjectionRunner)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    configure_logging("bench", "error", json=False)
    events = make_events(args.n)
    size = len(encode(events[0]))
    res = {
        "always": await run_mode(True, events, args.window, args.batch),
        "default": await run_mode(False, events, args.window, args.batch),
    }
    if args.json:
        out = {
            "n": args.n,
            "event_bytes": size,
            "window": args.window,
            "batch": args.batch,
            "events_per_s": res,
            "ratios": ratios(res),
            "host": host_fingerprint(),
        }
        print(json.dumps(out, indent=2))
    else:
        fp = host_fingerprint()
        print(f"host: {fp['cpu_model']}, {fp['usable_cores']} usable cores, python {fp['python']}")
        print(report(args.n, size, args.window, args.batch, res))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
