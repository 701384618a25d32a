"""The service runtime's heap freeze: what a server holds from its start is left out of every
later collection, and what it allocates afterwards is still collected."""

from __future__ import annotations

import json
import subprocess
import sys

# run in a process of its own: freezing this test process would keep its garbage for good
PROGRAM = """
import gc, json
from cvops.core.runtime import YOUNG_GC_THRESHOLD, freeze_startup_heap

class Node:
    def __init__(self):
        self.peer = self

startup = [Node() for _ in range(20_000)]  # what a server builds at start: long-lived
before = len(gc.get_objects())
freeze_startup_heap()
after = len(gc.get_objects())

garbage = [Node() for _ in range(1_000)]  # cycles allocated after the freeze
del garbage
collected = gc.collect()
print(json.dumps({
    "before": before, "after": after, "frozen": gc.get_freeze_count(),
    "collected": collected, "young": gc.get_threshold()[0], "expected_young": YOUNG_GC_THRESHOLD,
}))
"""


def test_the_startup_heap_is_frozen_and_new_garbage_still_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, timeout=60
    )
    r = json.loads(out.stdout)
    # every object alive at the freeze left the collector's generations
    assert r["frozen"] >= 40_000  # 20,000 nodes and their __dict__s
    assert r["after"] < r["before"] - 40_000
    # cycles made after it are found and freed as before
    assert r["collected"] >= 1_000
    assert r["young"] == r["expected_young"] > 700
