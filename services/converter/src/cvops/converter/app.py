"""Wiring of the converter: its projection and the conversion work consumer."""

from __future__ import annotations

import asyncio
import logging
import sys

from cvops.contracts import SUBJECT_PREFIX
from cvops.converter.projection import SUBJECTS, db_path, projection
from cvops.converter.work import Converter
from cvops.core import Bus, ProjectionRunner, Settings, WorkConsumer
from cvops.core.logging import get_logger

log = get_logger(__name__)

DURABLE = "converter-jobs"
WORK_SUBJECTS = [f"{SUBJECT_PREFIX}.conversion.*.requested"]
# the ONNX exporter, the quantizer and NNCF log every pass at INFO/WARNING
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "nncf", "openvino")


def block_runtime_telemetry() -> None:
    """Keep OpenVINO and NNCF from phoning home: on every conversion they fork this (threaded)
    process to post Google Analytics events, which a server must not do (and a fork of a
    threaded process may deadlock). Both fall back to a no-op stub when the telemetry
    package cannot be imported; ``None`` in ``sys.modules`` makes that import fail here only."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


async def main(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop``: a job in flight goes back to the stream and resumes elsewhere."""
    block_runtime_telemetry()
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    runner = ProjectionRunner(bus, projection, db_path(settings), subjects=SUBJECTS)
    converter = Converter(bus, settings, runner)
    consumer = WorkConsumer(
        bus,
        DURABLE,
        WORK_SUBJECTS,
        converter.handle,
        ack_wait=settings.converter_ack_wait_s,
        max_deliver=-1,  # the job itself gives up after MAX_ATTEMPTS, visibly
        nak_delay=2.0,
    )
    runner_task = asyncio.create_task(runner.run())
    consumer_task = asyncio.create_task(consumer.run())
    log.info("converter_ready")
    try:
        await stop.wait()
    finally:
        converter.stop()
        consumer.stop()
        await consumer_task
        runner.stop()
        await runner_task
        runner.engine.dispose()
