"""Checks the rules of every context share: names, positive numbers, counts of at least one,
and that every integer of an event fits the storage that projects it."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from cvops.domain.errors import Invalid

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid user, model or data-set name, else raise ``Invalid``."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise Invalid(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def positive(value: float | None, what: str, *, allow_zero: bool = False) -> None:
    """Refuse a number that is not finite or below zero (or zero, unless ``allow_zero``)."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "positive"
        raise Invalid(f"{what} must be {bound}, got {value!r}")


def at_least_one(value: int | None, what: str) -> None:
    """Refuse a count below 1 (None: not given)."""
    if value is not None and value < 1:
        raise Invalid(f"{what} must be at least 1, got {value}")


# SQLite's INTEGER (every projection's storage) is a signed 64-bit number: a larger Python int
# raises OverflowError when a projection writes it, and would stop that projection for good.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def fits_int64(value: int) -> bool:
    """Whether ``value`` fits a signed 64-bit integer (SQLite's INTEGER)."""
    return INT64_MIN <= value <= INT64_MAX


def check_storable(value: Any, what: str = "") -> None:
    """Refuse (``Invalid``, naming the field path) any integer in ``value`` that storage
    cannot hold: ``value`` is an event, a msgspec struct, or a list, tuple, set or dict of
    them (walked recursively, keys included); strings, floats and the like pass."""
    for path, number in _integers(value, what):
        if not fits_int64(number):
            raise Invalid(
                f"{path or 'value'} must be between {INT64_MIN} and {INT64_MAX} "
                f"(a 64-bit integer), got {number}"
            )


def _integers(value: Any, path: str) -> Iterator[tuple[str, int]]:
    """Every int (bool excluded) inside ``value`` with its path, e.g. ``metrics["top1"]``."""
    if isinstance(value, int):
        if not isinstance(value, bool):
            yield path, value
    elif isinstance(value, msgspec.Struct):
        for field in value.__struct_fields__:
            yield from _integers(getattr(value, field), f"{path}.{field}" if path else field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            # a top-level str key reads like a field: ``seed``; deeper: ``metrics['top1']``
            where = key if isinstance(key, str) and not path else f"{path}[{key!r}]"
            yield from _integers(key, where)
            yield from _integers(item, where)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            yield from _integers(item, f"{path}[{index}]")
