"""Checks the rules of every context share (they live in ``cvops.domain.checks``)."""

from __future__ import annotations

from cvops.domain.checks import NAME_PATTERN, at_least_one, check_name, positive

__all__ = ["NAME_PATTERN", "at_least_one", "check_name", "positive"]
