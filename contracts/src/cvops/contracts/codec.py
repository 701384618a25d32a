"""One encoder, one decoder for every event ever published, plus upcasters."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from cvops.contracts.envelope import Event

_EVENT_TYPES: list[type[Event]] = []
# tag of an old version -> function turning its raw dict into the next version's raw dict
UPCASTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Any] | None = None
_raw_decoder = msgspec.json.Decoder(dict[str, Any])


class UnknownEvent(msgspec.Struct, frozen=True):
    """An event this reader does not know (a newer type): skipped, never fatal."""

    type: str
    raw: bytes


def register(*types: type[Event]) -> None:
    """Add event classes to the union (each context module calls this once)."""
    global _decoder
    for t in types:
        if t not in _EVENT_TYPES:
            _EVENT_TYPES.append(t)
    _decoder = None


def event_types() -> list[type[Event]]:
    return list(_EVENT_TYPES)


def _get_decoder() -> msgspec.json.Decoder[Any]:
    global _decoder
    if _decoder is None:
        union = _EVENT_TYPES[0] if len(_EVENT_TYPES) == 1 else _union()
        _decoder = msgspec.json.Decoder(union)
    return _decoder


def _union() -> Any:
    from typing import Union

    return Union[tuple(_EVENT_TYPES)]  # noqa: UP007 - built at run time


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes) -> Event | UnknownEvent:
    """Decode one event; upcast old versions; unknown tags come back as UnknownEvent.

    Unknown *fields* are ignored by msgspec, so an older reader survives additive change.
    """
    try:
        return _get_decoder().decode(data)
    except msgspec.ValidationError:
        raw = _raw_decoder.decode(data)
        tag = str(raw.get("type", ""))
        if tag in UPCASTERS:
            while tag in UPCASTERS:
                raw = UPCASTERS[tag](raw)
                tag = str(raw.get("type", ""))
            return msgspec.convert(raw, _union() if len(_EVENT_TYPES) > 1 else _EVENT_TYPES[0])
        known = {t.tag() for t in _EVENT_TYPES}
        if tag in known:
            raise
        return UnknownEvent(type=tag, raw=data)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON schema of every event, keyed by tag (written to contracts/schemas/).

    Descriptions come from docstrings, whose whitespace msgspec has rendered differently
    from one release to the next (indented, then dedented): they are normalised here so
    the generated files depend on the docstrings alone.
    """
    out: dict[str, dict[str, Any]] = {}
    for t in sorted(_EVENT_TYPES, key=lambda t: t.tag()):
        out[t.tag()] = _normalised(msgspec.json.schema(t))
    return out


def normalise_description(text: str) -> str:
    """One line per paragraph, single spaces: the same text whatever the indentation."""
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return "\n\n".join(p for p in paragraphs if p)


def _normalised(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: normalise_description(v)
            if k == "description" and isinstance(v, str)
            else _normalised(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_normalised(v) for v in node]
    return node
