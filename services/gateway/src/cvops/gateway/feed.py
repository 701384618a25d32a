"""The event feed: every event indexed by its correlation id, served as Server-Sent Events.

The ``correlated_events`` table (folded from every event, secrets redacted), its read, the
feed's use case (replay, then follow live) and the route ``GET /events/{correlation_id}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.openapi import ResponseSpec
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from sqlalchemy import Column, Integer, String, Table, Text
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.orm import Session

from cvops.contracts import Event, encode
from cvops.contracts.identity import Permission
from cvops.core.projection import dbapi
from cvops.domain.checks import INT64_MAX
from cvops.gateway.auth import allow
from cvops.gateway.core import Gateway, metadata, provide
from cvops.gateway.errors import Invalid
from cvops.gateway.openapi import refusals

# -- projection --------------------------------------------------------------------------------

correlated_events = Table(
    "correlated_events",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("correlation_id", String, nullable=False, index=True),
    Column("type", String, nullable=False),
    Column("body", Text, nullable=False),
)


def fold_event(session: Session, event: Event, seq: int, at: str) -> None:
    """Every event, under its correlation id (applied before any context's fold)."""
    session.execute(
        insert(correlated_events)
        .values(
            seq=seq,
            correlation_id=event.correlation_id,
            type=event.tag(),
            # identity's events (credentials) are in their own stream: never in a feed
            body=encode(event).decode(),
        )
        .on_conflict_do_nothing()
    )


class CorrelatedEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    body: str


# one prepared statement on the raw connection: a watcher asks after every committed batch
_EVENTS_AFTER = (
    "SELECT seq, type, body FROM correlated_events"
    " WHERE correlation_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)


def events_after(
    s: Session, correlation_id: str, after_seq: int, limit: int = 500
) -> list[CorrelatedEvent]:
    """Events of one correlation id with a stream sequence above ``after_seq``, oldest first."""
    rows = dbapi(s).execute(_EVENTS_AFTER, (correlation_id, after_seq, limit)).fetchall()
    return [CorrelatedEvent(seq=seq, type=type_, body=body) for seq, type_, body in rows]


# -- use case ----------------------------------------------------------------------------------


@dataclass
class FeedService:
    """The events of one correlation id: replayed from the projection, then followed live."""

    gateway: Gateway

    async def correlated(
        self, correlation_id: str, after: int, *, follow: bool, keepalive_s: float = 15.0
    ) -> AsyncIterator[CorrelatedEvent | None]:
        """Events of one correlation id after ``after``; then, if ``follow``, new ones live.

        Yields ``None`` when nothing happened for ``keepalive_s`` (time for a heartbeat).
        """
        runner, stopping_event = self.gateway.runner, self.gateway.stopping
        last = after
        while True:
            position = runner.position
            with self.gateway.session() as s:
                found = events_after(s, correlation_id, last)
            for item in found:
                last = item.seq
                yield item
            if found:
                continue
            if not follow or stopping_event.is_set():
                return
            moved = asyncio.create_task(runner.wait_for(position + 1, keepalive_s))
            stopping = asyncio.create_task(stopping_event.wait())
            try:
                await asyncio.wait({moved, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                moved.cancel()
            if stopping_event.is_set():
                return
            if not moved.cancelled() and moved.done() and not moved.result():
                yield None


# -- routes ------------------------------------------------------------------------------------


class FeedMessage(msgspec.Struct, frozen=True, kw_only=True):
    """One message of the feed, as the OpenAPI (3.1) schema of ``text/event-stream`` describes
    it: each message's fields, not the stream as one string."""

    event: str  # the event type, e.g. ``registry.model_upload_received.v1``
    data: str  # the event as JSON
    id: str  # its stream sequence (send it back as ``Last-Event-ID`` to resume)


EVENT_STREAM = ResponseSpec(
    FeedMessage,
    generate_examples=False,
    media_type="text/event-stream",
    description=(
        "Server-Sent Events: per message `event:` the event type, `data:` the event JSON, "
        "`id:` its stream sequence; comment lines are keep-alives"
    ),
)


class EventsController(Controller):
    path = "/events"
    tags = ["events"]
    guards = [allow(Permission.READ)]
    dependencies = provide("feed")

    @get("/{correlation_id:str}", responses={200: EVENT_STREAM, **refusals(422)})
    async def events(
        self,
        correlation_id: str,
        service: FeedService,
        follow: bool = True,
        last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID")] = None,
    ) -> ServerSentEvent:
        """Server-Sent Events: every event of a request or job, replayed, then live.

        Each message has ``event:`` the event type, ``data:`` the event JSON and ``id:`` its
        stream sequence; reconnect with ``Last-Event-ID`` to resume. ``follow=false`` ends
        the stream after the replay.
        """
        try:
            after = int(last_event_id) if last_event_id else 0
        except ValueError as err:
            raise Invalid("Last-Event-ID must be a stream sequence number") from err
        if not 0 <= after <= INT64_MAX:
            raise Invalid("Last-Event-ID must be a stream sequence number")

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            async for item in service.correlated(correlation_id, after, follow=follow):
                if item is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                else:
                    yield ServerSentEventMessage(id=item.seq, event=item.type, data=item.body)

        return ServerSentEvent(messages())
