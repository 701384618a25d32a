"""Checks the rules of every context share: names, positive numbers, counts of at least one."""

from __future__ import annotations

import math
import re

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
