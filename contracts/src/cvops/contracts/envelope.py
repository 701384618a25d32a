"""The event base: envelope fields, subjects, deterministic ids, and one decoder."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

import msgspec

SUBJECT_PREFIX = "cvops.evt"
# Events that carry credentials (password and token hashes) never travel where integrators
# subscribe: their contexts publish under ``cvops.sec`` into a stream of their own, read only
# by the services that hold identity.
SECRET_PREFIX = "cvops.sec"
SECRET_CONTEXTS = frozenset({"identity"})
# Deterministic ids: an event caused by another gets uuid5(cause, "<tag>/<key>"), so a
# redelivered job re-publishes the same ids and JetStream's duplicate window drops them.
_NS = uuid.UUID("5b0c1f4e-8f0c-4f0e-9c56-2b8f1f7f0c11")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event; subclasses add the facts and name their aggregate."""

    event_id: uuid.UUID
    occurred_at: datetime
    actor: str
    correlation_id: str
    causation_id: uuid.UUID | None = None

    aggregate_field: ClassVar[str] = ""

    @classmethod
    def tag(cls) -> str:
        """The versioned tag, e.g. ``registry.model_registered.v1``."""
        return str(cls.__struct_config__.tag)

    @property
    def context(self) -> str:
        return self.tag().split(".")[0]

    @property
    def name(self) -> str:
        return self.tag().split(".")[1]

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_field))

    @property
    def subject_prefix(self) -> str:
        """``cvops.sec`` for a context that carries credentials, else ``cvops.evt``."""
        return SECRET_PREFIX if self.context in SECRET_CONTEXTS else SUBJECT_PREFIX

    @property
    def subject(self) -> str:
        """``cvops.evt.<context>.<aggregate_id>.<name>`` (``cvops.sec.…`` for identity)."""
        return (
            f"{self.subject_prefix}.{self.context}.{subject_token(self.aggregate_id)}.{self.name}"
        )

    @property
    def aggregate_subjects(self) -> str:
        """Wildcard for every event of this event's aggregate (optimistic concurrency)."""
        return f"{self.aggregate_prefix}.*"

    @property
    def aggregate_prefix(self) -> str:
        """``cvops.evt.<context>.<aggregate_id>``: the subject without the event's name."""
        return f"{self.subject_prefix}.{self.context}.{subject_token(self.aggregate_id)}"


class Stamp(msgspec.Struct, frozen=True, kw_only=True):
    """What a pure handler needs to build envelopes: the clock reading and the cause."""

    now: datetime
    actor: str
    correlation_id: str
    causation_id: uuid.UUID | None = None

    def envelope(self, key: str) -> dict[str, Any]:
        """Envelope fields for an event; ``key`` distinguishes events of one cause."""
        base = self.causation_id or uuid.uuid5(_NS, self.correlation_id)
        return {
            "event_id": uuid.uuid5(base, key),
            "occurred_at": self.now,
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
        }

    def caused_by(self, event: Event, *, actor: str) -> Stamp:
        return Stamp(
            now=self.now,
            actor=actor,
            correlation_id=event.correlation_id,
            causation_id=event.event_id,
        )


def subject_token(value: str) -> str:
    """Make ``value`` safe as one NATS subject token (no dots, spaces or wildcards)."""
    out = []
    for ch in value:
        if ch.isalnum() or ch in "-_":
            out.append(ch)
        else:
            out.append(f"~{ord(ch):x}")
    return "".join(out) or "_"


def stable_id(*parts: str) -> uuid.UUID:
    """A UUID derived from names (idempotent bootstrap events)."""
    return uuid.uuid5(_NS, "/".join(parts))
