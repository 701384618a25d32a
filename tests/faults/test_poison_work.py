"""A poison message on a work subject (a known event type whose fields no reader can decode)
is terminated and logged, and the work consumer goes on with the next message; before the
fix in ``WorkConsumer._handle`` it ended the consumer's loop and with it, silently, all of a
service's work. Fast (in-process on the session's NATS), so it stays in the default run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from cvops.contracts import Event, Stamp, encode
from cvops.contracts.identity import UserCreated
from cvops.core import Bus, WorkConsumer


def _user(name: str) -> UserCreated:
    stamp = Stamp(now=datetime.now(UTC), actor="t", correlation_id=name)
    return UserCreated(**stamp.envelope(name), username=name, role="viewer", password_hash="x")


async def test_a_poison_work_message_is_terminated_and_the_next_one_is_handled(
    bus: Bus, capsys: pytest.CaptureFixture[str]
) -> None:
    tag = uuid.uuid4().hex[:6]
    seen: list[str] = []
    handled = asyncio.Event()

    async def handle(event: Event, _msg: object) -> None:
        assert isinstance(event, UserCreated)
        seen.append(event.username)
        handled.set()

    poison = _user(f"p{tag}")
    raw = encode(poison).replace(b'"role":"viewer"', b'"role":["not","a","role"]')
    assert raw != encode(poison)
    subjects = [f"cvops.sec.identity.{tag}-poison.>", f"cvops.sec.identity.{tag}-good.>"]
    consumer = WorkConsumer(bus, f"poison-{tag}", subjects, handle, nak_delay=0.1)
    task = asyncio.create_task(consumer.run())
    try:
        ack = await bus.js.publish(
            f"cvops.sec.identity.{tag}-poison.user_created",
            raw,
            headers={"Nats-Msg-Id": str(poison.event_id)},
            stream="CVOPS_IDENTITY",
        )
        good = _user(f"g{tag}")
        await bus.js.publish(
            f"cvops.sec.identity.{tag}-good.user_created",
            encode(good),
            headers={"Nats-Msg-Id": str(good.event_id)},
            stream="CVOPS_IDENTITY",
        )
        await asyncio.wait_for(handled.wait(), 10)
        await asyncio.sleep(0.5)  # a redelivered poison message would reach the handler now
        assert not task.done(), task
    finally:
        consumer.stop()
        await task
    assert seen == [f"g{tag}"]
    out = capsys.readouterr()
    text = (out.out + out.err).replace(" ", "")
    assert "work_undecodable" in text and f"{ack.seq}" in text
