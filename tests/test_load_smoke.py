"""The load suite's locustfile runs: a few seconds, a handful of users, against the in-process
gateway on a NATS of its own (empty log: the gateway bootstraps its admin, whose token the
setup uses), with no failure and its CSV statistics written.

No registry or router runs: uploads answer 202 pending and there are no inference users; the
model and the data set the readers and job submissions need are given as events.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from cvops.contracts import Stamp, TensorSpec
from cvops.contracts.registry import (
    DatasetUploadReceived,
    DatasetValidated,
    ImageStats,
    ModelRegistered,
    ModelUploadReceived,
    ModelVersionAdded,
    SplitCounts,
)
from cvops.core import ArtifactStore, Bus, Settings, load_settings
from cvops.core.natsd import start_nats, stop_process
from cvops.gateway.identity.service import CREDENTIALS_FILE
from cvops.testing.gateway import RunningGateway

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "bench" / "load" / "locustfile.py"


async def given_model_and_dataset(settings: Settings) -> None:
    """``load-tiny-0`` v1 and ``load-tiny-data`` v1, validated (the names the setup uses)."""
    bus = await Bus.connect(settings, name="seed")
    try:
        ref = await ArtifactStore(bus).put_bytes(b"tiny", filename="tiny.onnx")
        user = Stamp(now=datetime.now(UTC), actor="admin", correlation_id="seed-load")
        registry = Stamp(now=user.now, actor="registry", correlation_id="seed-load")
        model = {"model_name": "load-tiny-0"}
        for event in (
            ModelUploadReceived(**user.envelope("m-up"), **model, upload_id="up-m", artifact=ref),
            ModelRegistered(**registry.envelope("m-reg"), **model, owner="admin"),
            ModelVersionAdded(
                **registry.envelope("m-v1"),
                **model,
                version=1,
                upload_id="up-m",
                artifact=ref,
                format="onnx",
                inputs=[TensorSpec(name="x", shape=[-1, 4], dtype="float32")],
                outputs=[TensorSpec(name="logits", shape=[-1, 3], dtype="float32")],
                parameter_count=15,
                opset=17,
            ),
            DatasetUploadReceived(
                **user.envelope("d-up"),
                dataset_name="load-tiny-data",
                upload_id="up-d",
                artifact=ref,
            ),
            DatasetValidated(
                **registry.envelope("d-ok"),
                dataset_name="load-tiny-data",
                version=1,
                upload_id="up-d",
                source=ref,
                canonical=ref,
                classes=["a", "b"],
                class_counts=[20, 20],
                num_images=40,
                images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=3),
                splits=SplitCounts(train=24, val=8, test=8, calibration=8),
            ),
        ):
            await bus.publish(event)
    finally:
        await bus.close()


def test_locustfile_runs_headless_without_failures(tmp_path: Path) -> None:
    nats, port = start_nats(tmp_path / "nats", port=-1, log_file=tmp_path / "nats.log")
    settings = load_settings(
        {},
        nats_url=f"nats://127.0.0.1:{port}",
        home=str(tmp_path / "home"),
        upload_verdict_timeout_s=0.2,
        max_upload_bytes=256 * 1024,
    )
    try:
        asyncio.run(given_model_and_dataset(settings))
        gateway = RunningGateway(settings).start()
        try:
            credentials = Path(settings.home) / CREDENTIALS_FILE
            prefix, summary = tmp_path / "load", tmp_path / "summary.json"
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "locust",
                    "-f",
                    str(LOCUSTFILE),
                    "--headless",
                    "--only-summary",
                    "--host",
                    gateway.url,
                    "-u",
                    "6",
                    "-r",
                    "6",
                    "-t",
                    "4s",
                    "--csv",
                    str(prefix),
                    "--cvops-credentials",
                    str(credentials),
                    "--cvops-mix",
                    "reader=3,engineer=2,watcher=1",
                    "--cvops-think",
                    "0.2",
                    "--cvops-hold",
                    "0.5",
                    "--cvops-summary",
                    str(summary),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
                env={**os.environ, "CVOPS_HOME": settings.home},
            )
        finally:
            gateway.stop()
    finally:
        stop_process(nats)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with Path(f"{prefix}_stats.csv").open() as f:
        rows = {r["Name"]: r for r in csv.DictReader(f)}
    total = rows.pop("Aggregated")
    assert int(total["Request Count"]) > 20
    assert int(total["Failure Count"]) == 0, Path(f"{prefix}_failures.csv").read_text()
    assert {"/models", "/jobs/{id}", "/events/{id}"} <= set(rows)
    groups = json.loads(summary.read_text())["groups"]
    assert groups["reads"]["requests"] > 0
    # two engineers pick a submission 1 time in 10 and an upload waits out its verdict here
    # (no registry runs): in 4 s a run may have made none, so each group that ran is checked
    assert {name: g["failures"] for name, g in groups.items()} == dict.fromkeys(groups, 0)
