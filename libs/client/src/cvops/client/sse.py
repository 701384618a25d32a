"""Server-sent events: turn the lines of a ``text/event-stream`` body into messages.

Follows the WHATWG event-stream rules the gateway relies on: ``id:`` carries the stream
sequence, ``event:`` the event type, ``data:`` (possibly several lines) the JSON event; a
blank line ends a message; lines starting with ``:`` are keep-alive comments. A message
without data, or with blank data only (the gateway's keep-alive is ``: keep-alive`` plus an
empty ``data:`` line), is not dispatched.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgspec


class ServerSentEvent(NamedTuple):
    """One message of the feed: stream sequence, event type and the decoded event."""

    seq: int
    type: str
    data: dict[str, Any]


def parse_sse(lines: Iterable[str]) -> Iterator[ServerSentEvent]:
    """Yield a message per blank-line-terminated block; an unfinished block is dropped."""
    event_id = ""
    event_type = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if "\n".join(data).strip():  # as WHATWG: an empty data buffer dispatches nothing
                yield ServerSentEvent(_seq(event_id), event_type or "message", _decode(data))
            event_id, event_type, data = "", "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            event_id = value
        elif field == "event":
            event_type = value
        elif field == "data":
            data.append(value)


def _seq(event_id: str) -> int:
    return int(event_id) if event_id.isdigit() else 0


def _decode(data: list[str]) -> dict[str, Any]:
    text = "\n".join(data)
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}
