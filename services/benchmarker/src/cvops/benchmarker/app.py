"""Wiring of the benchmarker: its projection and the benchmark work consumer."""

from __future__ import annotations

import asyncio
import logging
import sys

from cvops.benchmarker.projection import SUBJECTS, db_path, projection
from cvops.benchmarker.work import Benchmarker
from cvops.contracts import SUBJECT_PREFIX
from cvops.core import Bus, ProjectionRunner, Settings, WorkConsumer
from cvops.core.logging import get_logger

log = get_logger(__name__)

DURABLE = "benchmarker-jobs"
WORK_SUBJECTS = [f"{SUBJECT_PREFIX}.benchmark.*.requested"]
QUIET_LOGGERS = ("torch._inductor", "torch._dynamo", "openvino")


def block_runtime_telemetry() -> None:
    """Keep OpenVINO from phoning home (it forks this threaded process to post analytics);
    its tools fall back to a no-op stub when the telemetry package cannot be imported."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


async def main(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop``: a sweep in flight stops after its current cell and resumes
    elsewhere from its last published row."""
    block_runtime_telemetry()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    runner = ProjectionRunner(bus, projection, db_path(settings), subjects=SUBJECTS)
    benchmarker = Benchmarker(bus, settings, runner)
    # one benchmark at a time per instance: two sweeps on one host would measure each other
    consumer = WorkConsumer(
        bus,
        DURABLE,
        WORK_SUBJECTS,
        benchmarker.handle,
        ack_wait=settings.benchmarker_ack_wait_s,
        max_deliver=-1,  # the job itself gives up after MAX_ATTEMPTS, visibly
        nak_delay=2.0,
    )
    runner_task = asyncio.create_task(runner.run())
    consumer_task = asyncio.create_task(consumer.run())
    log.info("benchmarker_ready")
    try:
        await stop.wait()
    finally:
        benchmarker.stop()
        consumer.stop()
        await consumer_task
        runner.stop()
        await runner_task
        runner.engine.dispose()
