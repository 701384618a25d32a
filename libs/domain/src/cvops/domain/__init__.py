"""cvops-domain: each context's rules, once — state structs, ``evolve(state, event)``,
validation and decisions. Depends on contracts and msgspec only: no I/O, no clock.

One module per context (``from cvops.domain import training``); the error vocabulary
every rule raises is re-exported here.
"""

from cvops.domain import (
    benchmark,
    catalog,
    checks,
    conversion,
    deployment,
    identity,
    training,
)
from cvops.domain.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, Refused

__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "QuotaExceeded",
    "Refused",
    "benchmark",
    "catalog",
    "checks",
    "conversion",
    "deployment",
    "identity",
    "training",
]
