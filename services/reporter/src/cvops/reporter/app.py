"""Wiring of the reporter: its projection and the loop that rebuilds due reports."""

from __future__ import annotations

import asyncio

from cvops.core import Bus, ProjectionRunner, Settings
from cvops.core.logging import get_logger
from cvops.reporter.projection import SUBJECTS, db_path, projection
from cvops.reporter.work import Reporter

log = get_logger(__name__)


async def main(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop``: a report being built is finished; the next start rebuilds any
    version whose newest result has no report yet (``report_due`` survives restarts)."""
    runner = ProjectionRunner(bus, projection, db_path(settings), subjects=SUBJECTS)
    reporter = Reporter(bus, settings, runner)
    runner_task = asyncio.create_task(runner.run())
    reporter_task = asyncio.create_task(reporter.run())
    log.info("reporter_ready")
    try:
        await stop.wait()
    finally:
        reporter.stop()
        await reporter_task
        runner.stop()
        await runner_task
        runner.engine.dispose()
