"""The one error vocabulary of every context's rules: what a refused command is.

Rules raise these; the gateway maps each to its HTTP status (422, 404, 409, 403, 429) and
services answer a ``*.failed`` event with ``str(err)`` as the reason.
"""

from __future__ import annotations


class Refused(Exception):
    """A command the current state does not allow; ``str(err)`` says why."""


class NotFound(Refused):
    """The command names something that does not exist."""


class Conflict(Refused):
    """The command clashes with the current state (exists already, last admin...)."""


class Invalid(Refused):
    """The command itself is malformed (bad name, short password, unknown role)."""


class Forbidden(Refused):
    """The caller's role allows the command, but not on this thing (someone else's job)."""


class QuotaExceeded(Refused):
    """The caller (or their role) has as many GPU jobs running as the quota allows."""
