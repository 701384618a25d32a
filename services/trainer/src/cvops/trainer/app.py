"""Wiring of the trainer: its projection, the job coordinators and the trial runners."""

from __future__ import annotations

import asyncio
import logging

from cvops.contracts import SUBJECT_PREFIX
from cvops.core import Bus, ProjectionRunner, Settings, WorkConsumer
from cvops.core.bus import Handler
from cvops.core.logging import get_logger
from cvops.trainer.projection import SUBJECTS, db_path, projection
from cvops.trainer.work import Trainer

log = get_logger(__name__)

JOBS_DURABLE = "trainer-jobs"
TRIALS_DURABLE = "trainer-trials"
# the ONNX exporter's optimisers log every pass at INFO: one line per trial is plenty
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")


def trial_slots(settings: Settings) -> int:
    """Trials this instance runs at once: the setting, else one per GPU, else one."""
    if settings.trainer_trial_slots > 0:
        return settings.trainer_trial_slots
    import torch

    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


async def main(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Run until ``stop``: in-flight jobs and trials go back to the stream for another
    instance (a trial resumes from its last epoch checkpoint when it lands here again)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    runner = ProjectionRunner(bus, projection, db_path(settings), subjects=SUBJECTS)
    trainer = Trainer(bus, settings, runner)
    ack_wait = settings.trainer_ack_wait_s

    def consumer(durable: str, name: str, handler: Handler) -> WorkConsumer:
        subjects = [f"{SUBJECT_PREFIX}.{name}.*.requested"]
        # max_deliver -1: a job or trial is never dropped; crash loops end in trial_gate
        return WorkConsumer(
            bus, durable, subjects, handler, ack_wait=ack_wait, max_deliver=-1, nak_delay=2.0
        )

    consumers = [
        consumer(JOBS_DURABLE, "training", trainer.coordinate)
        for _ in range(max(1, settings.trainer_job_slots))
    ]
    consumers += [
        consumer(TRIALS_DURABLE, "trial", trainer.run_trial) for _ in range(trial_slots(settings))
    ]
    tasks = [asyncio.create_task(runner.run())]
    tasks += [asyncio.create_task(c.run()) for c in consumers]
    log.info(
        "trainer_ready",
        job_slots=max(1, settings.trainer_job_slots),
        trial_slots=trial_slots(settings),
    )
    await stop.wait()
    trainer.stop()
    for c in consumers:
        c.stop()
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    runner.stop()
    await tasks[0]
    runner.engine.dispose()
