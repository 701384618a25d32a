"""GPU leases in the KV bucket ``cvops-leases``: compare-and-set acquire, renew, release.

A lease is one key per resource (``gpu.<host>.<index>``) whose value names the holder and
when the lease expires. Every write is a compare-and-set on the key's revision (``create``
for a free key, ``update`` with the last revision otherwise), so two contenders never both
win. A holder that crashes stops renewing; after ``expires_at`` anyone may take the key.
The decisions (expired? may take? may release?) are pure functions below the I/O.

Expiry compares wall clocks of different hosts: keep them NTP-synced and TTLs well above
the skew (tens of seconds, renewed every third of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Literal

import msgspec
import nats.errors
import nats.js.errors
from nats.js.kv import KeyValue

from cvops.core.bus import LEASE_BUCKET, Bus
from cvops.core.logging import get_logger

log = get_logger(__name__)

_KEY_OK = re.compile(r"^[-/_=.a-zA-Z0-9]+$")
_WRONG_LAST_SEQUENCE = 10071
_CAS_ATTEMPTS = 8


class LeaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON value stored under a resource's key."""

    holder: str
    acquired_at: float
    expires_at: float
    user: str = ""
    role: str = ""


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A lease as read from the bucket, with the KV revision it was read at."""

    resource: str
    holder: str
    acquired_at: float
    expires_at: float
    revision: int
    user: str = ""
    role: str = ""


class LeaseError(Exception):
    """Base of lease refusals."""


class NotLeaseHolder(LeaseError):
    """Only the holder may renew or release a lease."""


class LeaseLost(LeaseError):
    """The lease is gone or held by someone else now (it expired and was taken)."""


class LeaseUnavailable(LeaseError):
    """Someone else holds a live lease on the resource."""


class QuotaExceeded(LeaseError):
    """The user (or role) already holds as many leases as its quota allows."""


# -- pure decisions -----------------------------------------------------------------

AcquireDecision = Literal["create", "take", "extend", "refuse"]


def is_expired(record: LeaseRecord, now: float) -> bool:
    """A lease is expired from ``expires_at`` on."""
    return now >= record.expires_at


def decide_acquire(current: LeaseRecord | None, holder: str, now: float) -> AcquireDecision:
    """What ``holder`` may do with a resource whose lease is ``current`` (None: free).

    create: no lease yet; take: the old lease expired; extend: the holder already has it;
    refuse: someone else holds a live lease.
    """
    if current is None:
        return "create"
    if current.holder == holder:
        return "extend"
    if is_expired(current, now):
        return "take"
    return "refuse"


def may_release(current: LeaseRecord | None, holder: str) -> bool:
    """Only the holder named in the stored lease may release it."""
    return current is not None and current.holder == holder


def quota_allows(held: int, limit: int | None) -> bool:
    """``held`` leases plus one more stay within ``limit`` (None: unlimited)."""
    return limit is None or held + 1 <= limit


def live(records: list[Lease], now: float) -> list[Lease]:
    """The leases that have not expired at ``now``."""
    return [r for r in records if now < r.expires_at]


def gpu_resource(host: str, index: int) -> str:
    """The lease key of GPU ``index`` on ``host``."""
    safe = re.sub(r"[^-_a-zA-Z0-9]", "-", host) or "host"
    return f"gpu.{safe}.{index}"


# -- I/O ------------------------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(LeaseRecord).decode


def _check_key(resource: str) -> None:
    if not _KEY_OK.match(resource) or resource.startswith(".") or resource.endswith("."):
        raise ValueError(f"invalid lease resource {resource!r}: use letters, digits, - _ / = .")


async def _read(kv: KeyValue, resource: str) -> tuple[LeaseRecord | None, int]:
    """The stored record and its revision; (None, 0) when the key was never written or deleted."""
    try:
        entry = await kv.get(resource)
    except nats.js.errors.KeyNotFoundError:
        return None, 0
    if not entry.value:
        return None, int(entry.revision or 0)
    try:
        return _decode(entry.value), int(entry.revision or 0)
    except msgspec.DecodeError:
        # an unreadable value blocks nobody forever: treat it as an expired lease
        return LeaseRecord(holder="?", acquired_at=0, expires_at=0), int(entry.revision or 0)


def _is_cas_conflict(err: Exception) -> bool:
    if isinstance(err, nats.js.errors.KeyWrongLastSequenceError):
        return True
    return isinstance(err, nats.js.errors.APIError) and err.err_code == _WRONG_LAST_SEQUENCE


def _lease(resource: str, rec: LeaseRecord, revision: int) -> Lease:
    return Lease(
        resource=resource,
        holder=rec.holder,
        acquired_at=rec.acquired_at,
        expires_at=rec.expires_at,
        revision=revision,
        user=rec.user,
        role=rec.role,
    )


async def acquire(
    bus: Bus,
    resource: str,
    holder: str,
    ttl_s: float,
    *,
    user: str = "",
    role: str = "",
) -> Lease | None:
    """Take the lease on ``resource`` for ``ttl_s`` seconds, or None if someone else holds it.

    Args:
        bus: connected bus (its ``leases`` KV bucket).
        resource: the key, e.g. ``gpu_resource(host, 0)``.
        holder: who holds it (unique per worker and job, e.g. ``trainer@host:pid/trial``).
        ttl_s: seconds until the lease expires unless renewed.
        user, role: whose quota the lease counts against.

    Returns:
        The lease now held (acquiring a lease one already holds extends it), or None.
    """
    _check_key(resource)
    kv = bus.leases
    for _ in range(_CAS_ATTEMPTS):
        current, revision = await _read(kv, resource)
        now = time.time()
        decision = decide_acquire(current, holder, now)
        if decision == "refuse":
            return None
        acquired_at = current.acquired_at if decision == "extend" and current else now
        record = LeaseRecord(
            holder=holder, acquired_at=acquired_at, expires_at=now + ttl_s, user=user, role=role
        )
        try:
            if decision == "create":
                new_rev = await kv.create(resource, _encode(record))
            else:
                new_rev = await kv.update(resource, _encode(record), last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as err:
            if _is_cas_conflict(err):
                continue  # someone wrote between our read and write: read again
            raise
        log.info("lease_acquired", resource=resource, holder=holder, decision=decision)
        return _lease(resource, record, int(new_rev))
    return None


async def renew(bus: Bus, resource: str, holder: str, ttl_s: float) -> Lease:
    """Push the expiry of ``holder``'s lease ``ttl_s`` seconds from now.

    Raises:
        LeaseLost: the lease is gone or someone else took it after it expired.
    """
    _check_key(resource)
    kv = bus.leases
    for _ in range(_CAS_ATTEMPTS):
        current, revision = await _read(kv, resource)
        if current is None or current.holder != holder:
            raise LeaseLost(f"{resource} is no longer held by {holder}")
        record = msgspec.structs.replace(current, expires_at=time.time() + ttl_s)
        try:
            new_rev = await kv.update(resource, _encode(record), last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as err:
            if _is_cas_conflict(err):
                continue
            raise
        return _lease(resource, record, int(new_rev))
    raise LeaseLost(f"{resource}: renew kept conflicting")


async def release(bus: Bus, resource: str, holder: str) -> bool:
    """Give the lease back; False when there was none.

    Raises:
        NotLeaseHolder: someone else holds the lease (a holder whose lease expired and was
            taken cannot release the new holder's lease).
    """
    _check_key(resource)
    kv = bus.leases
    for _ in range(_CAS_ATTEMPTS):
        current, revision = await _read(kv, resource)
        if current is None:
            return False
        if not may_release(current, holder):
            raise NotLeaseHolder(f"{resource} is held by {current.holder}, not {holder}")
        try:
            await kv.delete(resource, last=revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError) as err:
            if _is_cas_conflict(err):
                continue
            raise
        log.info("lease_released", resource=resource, holder=holder)
        return True
    raise LeaseLost(f"{resource}: release kept conflicting")


async def _keys(bus: Bus) -> list[str]:
    """The bucket's keys, read from the stream's per-subject counts: one API request and no
    consumer (``KeyValue.keys()`` creates a consumer per call; trainers polling for a free
    GPU that way ran a server into its consumer limit)."""
    prefix = f"$KV.{LEASE_BUCKET}."
    info = await bus.js.stream_info(f"KV_{LEASE_BUCKET}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))


async def all_leases(bus: Bus) -> list[Lease]:
    """Every lease stored in the bucket, expired ones included."""
    out: list[Lease] = []
    for key in await _keys(bus):
        rec, rev = await _read(bus.leases, key)
        if rec is not None:
            out.append(_lease(key, rec, rev))
    return out


async def holders(bus: Bus, resource: str | None = None) -> list[Lease]:
    """Live leases on ``resource`` and the resources under it (``gpu.host`` → its GPUs).

    With no ``resource``, every live lease.
    """
    now = time.time()
    leases = live(await all_leases(bus), now)
    if resource is None:
        return leases
    return [
        le for le in leases if le.resource == resource or le.resource.startswith(resource + ".")
    ]


async def count_held_by(bus: Bus, user: str | None = None, *, role: str | None = None) -> int:
    """How many live leases ``user`` (and/or ``role``) holds — for quota checks."""
    return sum(
        1
        for le in await holders(bus)
        if (user is None or le.user == user) and (role is None or le.role == role)
    )


async def check_quota(
    bus: Bus,
    *,
    user: str,
    role: str,
    user_limit: int | None,
    role_limit: int | None,
) -> None:
    """Raise QuotaExceeded when one more lease would pass the user's or the role's limit."""
    if not quota_allows(await count_held_by(bus, user), user_limit):
        raise QuotaExceeded(f"user {user} already holds {user_limit} GPU lease(s)")
    if not quota_allows(await count_held_by(bus, role=role), role_limit):
        raise QuotaExceeded(f"role {role} already holds {role_limit} GPU lease(s)")


@contextlib.asynccontextmanager
async def held(
    bus: Bus,
    resource: str,
    holder: str,
    ttl_s: float,
    *,
    user: str = "",
    role: str = "",
) -> AsyncIterator[Lease]:
    """Hold a lease for the block: renewed every third of ``ttl_s``, released on exit.

    Raises:
        LeaseUnavailable: someone else holds it.
    """
    lease = await acquire(bus, resource, holder, ttl_s, user=user, role=role)
    if lease is None:
        raise LeaseUnavailable(f"{resource} is held by someone else")

    async def _renew_forever() -> None:
        while True:
            await asyncio.sleep(max(ttl_s / 3, 0.1))
            try:
                await renew(bus, resource, holder, ttl_s)
            except LeaseLost:
                log.warning("lease_lost", resource=resource, holder=holder)
                return
            except (nats.errors.Error, OSError, TimeoutError) as err:
                log.warning("lease_renew_failed", resource=resource, error=str(err))

    task = asyncio.create_task(_renew_forever())
    try:
        yield lease
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(LeaseError, nats.errors.Error, OSError):
            await release(bus, resource, holder)
