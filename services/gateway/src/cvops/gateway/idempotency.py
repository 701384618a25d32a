"""Retries without duplicates: the ``Idempotency-Key`` of a write request.

A write request (POST, PUT, PATCH, DELETE) that carries ``Idempotency-Key: <key>`` gets a
correlation id derived from its caller, the key and what it asks for (its fingerprint):
``idem-<sha256(user, key)[:32]>-<fingerprint[:16]>``. Every event id of the request derives
from its correlation id (``Stamp.envelope``) and every id the gateway would otherwise draw at
random (a job's, an upload's, a token's) derives from the key's part of it
(``derived_id``), so a retry of the same request publishes the same event ids, which
JetStream drops as duplicates, and names the same things.

The log remembers a key: the gateway's projection indexes every event by its correlation id
(``correlated_events``). A request whose key's earlier requests are there is a replay
(``replayed``: answered with the outcome of the first, nothing appended) when it asks the
same, and refused (``KeyReused``, 422) when it asks something else; identity's projection
keeps the same index of its own stream (``identity_requests``). A retried token request
issues no second token: its secret was shown once, so it answers 409 (``AlreadyIssued``).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from cvops.domain.errors import Conflict, Invalid

if TYPE_CHECKING:  # (core imports this module)
    from cvops.gateway.core import Gateway

KEY_HEADER = "Idempotency-Key"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PREFIX = "idem-"
MAX_KEY_CHARS = 255
# scope state: the request's raw key, and the running sha256 of its body
STATE_KEY = "idempotency_key"
STATE_BODY = "body_sha256"

# ``fingerprint -> correlation id`` of a request whose fingerprint is known only once its
# body is read (an upload: its form fields and its file's sha256)
Correlate = Callable[[str], str]

KEY_DESCRIPTION = (
    "Makes a write safe to retry. Send a fresh random key (a UUID) with every write and the "
    "same key when you retry it (after a 503, a timeout or a lost connection): the write "
    "happens once, and a retry answers what the first did (the same job, upload or user). "
    "A token or a sign-in retried with its key answers 409 naming the token the first issued "
    "(its secret is shown once only; revoke it if it was lost). The same key with another "
    "body, path or method answers 422. Keys are per user, at most 255 visible ASCII "
    "characters, and honoured as long as the log holds the first request's events. "
    "A 503 with `nothing was written` means no event was appended; a 503 with `outcome "
    "unknown` means the write may still land: retry with the same key."
)


class KeyReused(Invalid):
    """An ``Idempotency-Key`` already named another request of this user (422)."""


class AlreadyIssued(Conflict):
    """A retried token request whose first attempt issued the token (409): its secret was
    shown once (or lost with the first answer) and is not kept, so it is not shown again."""


class NotWritten(Exception):
    """The event log is not connected: the write was refused before anything was sent."""


def valid_key(key: str) -> str:
    """The key, if it is 1 to 255 visible ASCII characters (``Invalid`` otherwise)."""
    if not 0 < len(key) <= MAX_KEY_CHARS or not all(33 <= ord(ch) <= 126 for ch in key):
        raise Invalid(f"{KEY_HEADER} must be 1 to {MAX_KEY_CHARS} visible ASCII characters")
    return key


def key_scope(username: str, key: str) -> str:
    """``idem-<32 hex>``: the part of a correlation id that names the user's key."""
    digest = hashlib.sha256(f"{username}\0{key}".encode()).hexdigest()
    return f"{PREFIX}{digest[:32]}"


def keyed_correlation_id(username: str, key: str, fingerprint: str) -> str:
    """The correlation id of a request with an ``Idempotency-Key``: the same for a retry of
    the same request, another (with the same key scope) for another request."""
    return f"{key_scope(username, key)}-{fingerprint[:16]}"


def is_keyed(correlation_id: str) -> bool:
    return correlation_id.startswith(PREFIX)


def scope_of(correlation_id: str) -> str:
    """The key scope of a keyed correlation id."""
    return correlation_id[: len(PREFIX) + 32]


def fingerprint(*parts: str | bytes) -> str:
    """sha256 (hex) of what a request asks: its method, path, query and body digest."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()


def body_fingerprint(
    method: str, path: str, body: msgspec.Struct, *, secrets: tuple[str, ...] = ()
) -> str:
    """The fingerprint of a request with a JSON body whose ``secrets`` fields (passwords)
    are left out: a correlation id is logged, and must not let anyone test a guess at a
    password (a retry with another password is taken for the same request)."""
    fields = {k: v for k, v in msgspec.to_builtins(body).items() if k not in secrets}
    return fingerprint(method, path, msgspec.json.encode(fields, order="sorted"))


def derived_id(correlation_id: str, kind: str, hex_chars: int = 12) -> str:
    """``hex_chars`` hex digits naming what a request creates (``kind``: ``job``,
    ``upload``...): derived from the key of a keyed request, so a retry names the same
    thing; random otherwise."""
    if not is_keyed(correlation_id):
        return uuid.uuid4().hex[:hex_chars]
    digest = hashlib.sha256(f"{scope_of(correlation_id)}/{kind}".encode()).hexdigest()
    return digest[:hex_chars]


def new_job_id(kind: str, correlation_id: str) -> str:
    """``job-1a2b3c4d5e6f``: derived from the request's key, or random without one."""
    return f"{kind}-{derived_id(correlation_id, kind)}"


# -- what the log remembers ------------------------------------------------------------------


def earlier_requests(s: Session, correlation_id: str, *, identity: bool = False) -> set[str]:
    """Correlation ids in the projection (identity's with ``identity``) that share
    ``correlation_id``'s key scope."""
    # (both modules import core, as the callers of this one do)
    from cvops.gateway.feed import correlated_events
    from cvops.gateway.identity.projection import identity_requests

    scope = scope_of(correlation_id)
    column = (identity_requests if identity else correlated_events).c.correlation_id
    # a range on the indexed column: every ``<scope>-<fingerprint>``
    rows = s.execute(
        select(column).where(column > f"{scope}-", column < f"{scope}.").distinct()
    ).all()
    return {row[0] for row in rows}


def check_key(s: Session, correlation_id: str, *, identity: bool = False) -> bool:
    """Whether a keyed request is a replay (its events are in the projection); ``KeyReused``
    when the key named another request. False for a request without a key."""
    if not is_keyed(correlation_id):
        return False
    earlier = earlier_requests(s, correlation_id, identity=identity)
    if earlier - {correlation_id}:
        raise KeyReused(
            f"this {KEY_HEADER} was used for another request (another body, path or method);"
            " use a fresh key for a new request"
        )
    return correlation_id in earlier


def replayed(gateway: Gateway, correlation_id: str) -> bool:
    """Whether the gateway's projection has this keyed request's events already (then it is
    answered from the projection and nothing is appended)."""
    if not is_keyed(correlation_id):
        return False
    # identity's service works on identity's projection (its events are in their own stream)
    identity = gateway.runner is gateway.identity_runner
    with gateway.session() as s:
        return check_key(s, correlation_id, identity=identity)
