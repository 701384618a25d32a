"""One measured cell of an engine benchmark: the row every report, event and pick is made of.

The row is the contracts' ``BenchmarkRow`` (events carry it as is); it is re-exported here for
the harness and the recommender.
"""

from __future__ import annotations

from cvops.contracts.conversion import BenchmarkRow

__all__ = ["BenchmarkRow"]
