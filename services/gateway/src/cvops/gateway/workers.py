"""Which of the gateway's worker processes this one is (``CVOPS_GATEWAY_WORKERS``), and the
projection files each worker keeps: worker 0 today's, worker ``i`` ``<name>-w<i>.sqlite``.

Every worker follows the log into files of its own (SQLite has one writer); only worker 0
runs the first-start bootstrap, and the others serve once it is done (``bootstrapped``), so
the admin's credentials file is written before any worker answers.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path

BOOTSTRAP_POLL_S = 0.1


@dataclass(frozen=True)
class Worker:
    """Worker ``index`` of ``count``; the default is the only one."""

    index: int = 0
    count: int = 1
    # set by worker 0 once its first-start bootstrap is done (None: a single process)
    bootstrapped: ProcessEvent | None = None

    def file(self, path: Path) -> Path:
        """This worker's copy of the projection file ``path`` (worker 0: ``path`` itself)."""
        return worker_file(path, self.index)

    def bootstrap_done(self) -> None:
        """Worker 0: the bootstrap is done (or not needed); the others may serve."""
        if self.index == 0 and self.bootstrapped is not None:
            self.bootstrapped.set()

    async def wait_bootstrap(self, timeout: float) -> bool:
        """Wait until worker 0 has done the bootstrap (at once for worker 0); False on timeout."""
        if self.index == 0 or self.bootstrapped is None:
            return True
        deadline = time.monotonic() + timeout
        while not self.bootstrapped.is_set():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(BOOTSTRAP_POLL_S)
        return True


def worker_file(path: Path, index: int) -> Path:
    """Worker ``index``'s copy of ``path``: ``path`` for worker 0, else ``<stem>-w<i><suffix>``."""
    return path if index == 0 else path.with_name(f"{path.stem}-w{index}{path.suffix}")


def worker_files(path: Path) -> list[Path]:
    """The copies of ``path`` that workers other than 0 left beside it."""
    pattern = re.compile(rf"{re.escape(path.stem)}-w[1-9][0-9]*{re.escape(path.suffix)}")
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if pattern.fullmatch(p.name))
