"""The registry as a process on a real NATS: verdicts, bundled sets, kill -9, rebuild, metrics."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ModelRegistered,
    ModelRejected,
    ModelUploadReceived,
    ModelVersionAdded,
)
from cvops.core import (
    ArtifactStore,
    Bus,
    ProjectionRunner,
    Settings,
    dump_rows,
    rebuild_projection,
)
from cvops.registry import projection as view
from cvops.registry.projection import SUBJECTS, db_path, projection
from cvops.testing import registry as samples
from cvops.testing.core import start_service

VERDICTS = (ModelVersionAdded, ModelRejected, DatasetValidated, DatasetRejected)
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """One ``python -m cvops.registry`` child process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_service("cvops.registry", self.settings, self.log)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no clean-up at all
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@pytest.fixture
def service_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, registry_metrics_port=_free_port())


@pytest.fixture
async def registry(service_settings: Settings, tmp_path: Path) -> AsyncIterator[Registry]:
    reg = Registry(service_settings, tmp_path / "registry.log")
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
async def probe(bus: Bus, tmp_path: Path) -> AsyncIterator[ProjectionRunner]:
    """The test's own copy of the registry projection, to watch verdicts arrive."""
    runner = ProjectionRunner(bus, projection, tmp_path / "probe.sqlite", subjects=SUBJECTS)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        runner.stop()
        await task
        runner.engine.dispose()


async def _verdicts(
    probe: ProjectionRunner, upload_ids: list[str], registry: Registry, timeout: float = 90
) -> dict[str, view.UploadRow]:
    """Wait until every upload has a verdict; returns their rows."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await probe.catch_up(10)
        with probe.session() as s:
            rows = {u: view.upload(s, u) for u in upload_ids}
        if all(r is not None and r.status != "pending" for r in rows.values()):
            return rows  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            pending = [u for u, r in rows.items() if r is None or r.status == "pending"]
            raise AssertionError(f"no verdict for {pending}\n{registry.tail()}")
        await asyncio.sleep(0.2)


async def _rebuild_matches(bus: Bus, settings: Settings, tmp_path: Path) -> None:
    """Replaying the log from sequence 1 gives the rows the stopped service had."""
    live = ProjectionRunner(None, projection, db_path(settings))
    before = dump_rows(live.engine, view.metadata)
    live.engine.dispose()
    rebuilt_path = tmp_path / "rebuilt.sqlite"
    await rebuild_projection(bus, projection, rebuilt_path)
    rebuilt = ProjectionRunner(None, projection, rebuilt_path)
    after = dump_rows(rebuilt.engine, view.metadata)
    rebuilt.engine.dispose()
    assert after == before


async def test_registry_validates_uploads_and_seeds_the_bundled_sets(
    bus: Bus, registry: Registry, probe: ProjectionRunner, tmp_path: Path
) -> None:
    registry.start()
    await _verdicts(probe, ["bundled-digits", "bundled-shapes"], registry, timeout=120)
    with probe.session() as s:
        assert {"digits", "shapes"} <= view.dataset_names(s)

    tag = uuid.uuid4().hex[:6]
    marker = tmp_path / "pwned"
    v1 = await samples.announce_model_upload(bus, samples.onnx_model(seed=1), f"m-{tag}")
    v2 = await samples.announce_model_upload(bus, samples.onnx_model(seed=2), f"m-{tag}")
    evil = await samples.announce_model_upload(bus, samples.malicious_pickle(marker), f"m-{tag}")
    good_data = await samples.announce_dataset_upload(bus, samples.image_folder_zip(), f"d-{tag}")
    slip = await samples.announce_dataset_upload(bus, samples.zip_slip(), f"d-{tag}")
    ids = [e.upload_id for e in (v1, v2, evil, good_data, slip)]
    rows = await _verdicts(probe, ids, registry)

    assert [rows[u].status for u in ids] == [
        "validated",
        "validated",
        "rejected",
        "validated",
        "rejected",
    ]
    assert (rows[v1.upload_id].version, rows[v2.upload_id].version) == (1, 2)
    assert "pickle" in (rows[evil.upload_id].reason or "")
    assert "unsafe path" in (rows[slip.upload_id].reason or "")
    assert not marker.exists()
    store = ArtifactStore(bus)
    assert not await store.exists(evil.artifact.sha256)  # refused bytes are not kept
    assert not await store.exists(slip.artifact.sha256)
    assert await store.exists(v1.artifact.sha256)

    events = [
        e
        for e in await samples.registry_events(bus)
        if e.correlation_id == good_data.correlation_id
    ]
    [validated] = [e for e in events if isinstance(e, DatasetValidated)]
    canonical = await store.get_file(validated.canonical.sha256, tmp_path / "canonical.npz")
    with np.load(canonical, allow_pickle=False) as z:
        assert z["x"].shape == (14, 12, 12, 3) and z["classes"].tolist() == ["cat", "dog"]
    assert validated.seed == 1 and validated.splits.calibration == 10

    metrics_url = f"http://127.0.0.1:{registry.settings.registry_metrics_port}/metrics"
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    assert 'cvops_registry_verdicts_total{kind="model",verdict="rejected"}' in text

    assert registry.stop() == 0, registry.tail()  # SIGTERM: a clean exit
    assert '"event":"upload_validated"' in registry.tail().replace(" ", "")
    await _rebuild_matches(bus, registry.settings, tmp_path)


@pytest.mark.faults  # a kill -9 scenario: ./justw faults (tests/faults/README.md)
async def test_kill_9_mid_stream_still_gives_each_upload_exactly_one_verdict(
    bus: Bus, registry: Registry, probe: ProjectionRunner, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    model, data = f"km-{tag}", f"kd-{tag}"
    registry.start()
    uploads: list[ModelUploadReceived | DatasetUploadReceived] = []
    for i in range(6):
        uploads.append(
            await samples.announce_model_upload(bus, samples.onnx_model(seed=100 + i), model)
        )
    uploads.append(
        await samples.announce_model_upload(bus, samples.malicious_pickle(tmp_path / "x"), model)
    )
    uploads.append(await samples.announce_model_upload(bus, samples.safetensors_weights(), model))
    for i in range(2):
        npz = samples.dataset_npz(n=30 + i, classes=3)
        uploads.append(await samples.announce_dataset_upload(bus, npz, data))
    ids = [u.upload_id for u in uploads]

    # kill -9 as soon as the first verdicts are out, while the rest are being handled
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        await probe.catch_up(10)
        with probe.session() as s:
            done = sum(1 for u in ids if (r := view.upload(s, u)) and r.status != "pending")
        if done >= 2:
            break
        assert asyncio.get_running_loop().time() < deadline, registry.tail()
        await asyncio.sleep(0.05)
    registry.kill()
    assert done < len(ids), "the registry finished before it could be killed"
    registry.start()
    rows = await _verdicts(probe, ids, registry)
    assert registry.stop() == 0, registry.tail()

    events = await samples.registry_events(bus)
    verdicts = Counter(e.upload_id for e in events if isinstance(e, VERDICTS))  # type: ignore[attr-defined]
    assert all(verdicts[u] == 1 for u in ids), {u: verdicts[u] for u in ids}
    model_versions = [
        e.version for e in events if isinstance(e, ModelVersionAdded) and e.model_name == model
    ]
    data_versions = [
        e.version for e in events if isinstance(e, DatasetValidated) and e.dataset_name == data
    ]
    assert sorted(model_versions) == [1, 2, 3, 4, 5, 6]  # no number used twice, none skipped
    assert sorted(data_versions) == [1, 2]
    assert sum(isinstance(e, ModelRegistered) and e.model_name == model for e in events) == 1
    assert sum(isinstance(e, DatasetRegistered) and e.dataset_name == data for e in events) == 1
    statuses = Counter(rows[u].status for u in ids)
    assert statuses == {"validated": 8, "rejected": 2}  # the pickle; safetensors w/o architecture
    await _rebuild_matches(bus, registry.settings, tmp_path)
