"""Wiring of the registry: its projection, the validation consumer, and bundled data sets."""

from __future__ import annotations

import asyncio

from cvops.core import ArtifactStore, Bus, ProjectionRunner, Settings, WorkConsumer
from cvops.core.logging import get_logger
from cvops.registry.projection import SUBJECTS, db_path, projection
from cvops.registry.work import UploadValidator

DURABLE = "registry-validate"
# a crashed instance's upload comes back after this; heartbeats keep a long validation alive
ACK_WAIT_S = 10.0
WORK_SUBJECTS = [
    "cvops.evt.registry.*.model_upload_received",
    "cvops.evt.registry.*.dataset_upload_received",
]

log = get_logger(__name__)


async def main(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop``: keep the projection current and validate every upload."""
    runner = ProjectionRunner(bus, projection, db_path(settings), subjects=SUBJECTS)
    validator = UploadValidator(bus, ArtifactStore(bus), runner, settings)
    consumer = WorkConsumer(bus, DURABLE, WORK_SUBJECTS, validator.handle, ack_wait=ACK_WAIT_S)
    runner_task = asyncio.create_task(runner.run())
    consumer_task: asyncio.Task[None] | None = None
    try:
        try:
            await validator.ensure_bundled()
        except Exception as err:  # the platform still works; the next start tries again
            log.exception("bundled_datasets_failed", error=str(err))
        consumer_task = asyncio.create_task(consumer.run())
        await stop.wait()
    finally:
        consumer.stop()  # the upload in hand is finished (or nak'd) before we return
        if consumer_task is not None:
            await consumer_task
        validator.close()
        runner.stop()
        await runner_task
        runner.engine.dispose()
