"""cvops-domain: each context's rules, once — state structs, ``evolve(state, event)``,
validation and decisions. Depends on contracts and msgspec only: no I/O, no clock."""

from cvops.domain.errors import Conflict, Forbidden, Invalid, NotFound, QuotaExceeded, Refused

__all__ = ["Conflict", "Forbidden", "Invalid", "NotFound", "QuotaExceeded", "Refused"]
