"""The gateway's one SQLite projection of the whole log: every context's tables and folds,
combined (``<home>/gateway.sqlite``; the entry point ``cvops.projections: gateway``).

Each context declares ``FOLDS`` (event context -> its fold) beside its tables; an event is
first indexed by correlation id for the feed, then folded by every context that declared
its event context. Every row comes from events only (``occurred_at``, never the clock), and
applying an event again changes nothing: inserts ignore existing keys, and state changes are
guarded by the state they leave (a trial's first end wins), so a rebuild gives the same rows.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from cvops.contracts import Event
from cvops.core import Settings
from cvops.gateway import benchmark, conversion, deployment, feed, reports
from cvops.gateway.catalog import projection as catalog
from cvops.gateway.core import Fold, Generations, metadata
from cvops.gateway.training import projection as training
from cvops.gateway.workers import worker_files

__all__ = ["FOLDS", "GatewayProjection", "copies", "db_path", "metadata", "projection"]

# identity is not here: its events live in their own stream (``gateway.identity.projection``)
CONTEXTS = (catalog, training, deployment, conversion, benchmark, reports)


def _combined() -> dict[str, tuple[Fold, ...]]:
    folds: dict[str, tuple[Fold, ...]] = {}
    for context in CONTEXTS:
        for event_context, fold in context.FOLDS.items():
            folds[event_context] = (*folds.get(event_context, ()), fold)
    return folds


# Event context (``identity``, ``registry``, ``training``...) -> the folds that apply it.
FOLDS = _combined()


class GatewayProjection(Generations):
    """Folds every event of the log into the gateway's read model."""

    name = "gateway"
    metadata = metadata
    # 2: identity, the catalog and deployments as aggregate tables folded by cvops.domain
    # 3: training jobs hold the domain's JobState (``jobs.state``)
    # 4: conversions and benchmarks as aggregate tables folded by cvops.domain
    # 5: catalog and training tables are cvops.core's (the catalog in the registry's layout);
    #    deployments serve artifacts (engine, precision, served, checks)
    # 6: reports (the newest report.generated of each model version, cvops.core.reports)
    # 7: identity in its own stream and file (gateway-identity.sqlite)
    version = 7

    def apply(self, session: Session, event: Event, seq: int) -> None:
        self._touched.add(event.context)
        at = event.occurred_at.isoformat()
        feed.fold_event(session, event, seq, at)
        for fold in FOLDS.get(event.context, ()):
            fold(session, event, seq, at)


projection = GatewayProjection()


def db_path(settings: Settings) -> Path:
    """Where the gateway keeps its projection."""
    return settings.home_path / "gateway.sqlite"


def copies(settings: Settings) -> list[Path]:
    """The other gateway workers' files of the same projection (``cvops projections rebuild``
    deletes them; each worker replays the log into its own at its next start)."""
    return worker_files(db_path(settings))
