"""A full disk under NATS: its JetStream store on a size-limited tmpfs (``mount -t tmpfs -o
size=...``; needs root, skipped with the reason otherwise). Uploads (blob + event, as the
gateway makes them) go on until the disk is full: the failing publish raises (loud, never a
silent ack); once the tmpfs is given room and the server restarted on its store, every
acknowledged event is there exactly once and new events are accepted."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from cvops.contracts.registry import ModelUploadReceived
from cvops.core import Bus
from cvops.testing import registry as samples
from cvops.testing.faults import (
    KillableNats,
    can_mount_tmpfs,
    read_log,
    repeated_ids,
    resize_tmpfs,
    tmpfs,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

DISK = "24m"
BLOB = 512 * 1024


async def _connect(nats: KillableNats, home: Path) -> Bus:
    return await asyncio.wait_for(Bus.connect(nats.settings(home), name="fault-test"), 30)


async def test_a_full_nats_store_refuses_loudly_and_loses_nothing_acknowledged(
    tmp_path: Path,
) -> None:
    why = can_mount_tmpfs(tmp_path)
    if why:
        pytest.skip(why)
    t0 = time.monotonic()
    with tmpfs(tmp_path / "disk", DISK) as disk:
        nats = KillableNats(disk / "nats").start()
        bus: Bus | None = None
        try:
            bus = await _connect(nats, tmp_path / "client")
            acked: list[ModelUploadReceived] = []
            refusal: BaseException | None = None
            for i in range(200):  # 100 MB of uploads: far past the 24 MB disk
                try:
                    event = await asyncio.wait_for(
                        samples.announce_model_upload(bus, os.urandom(BLOB), f"m{i}"), 30
                    )
                except Exception as err:  # what the gateway would turn into a 503/507
                    refusal = err
                    break
                acked.append(event)
            assert refusal is not None, "24 MB took 100 MB of uploads without a refusal"
            full_at = time.monotonic() - t0
            used = _used_mb(disk)

            await bus.close()
            bus = None
            resize_tmpfs(disk, "256m")  # room again
            nats.stop()  # SIGTERM; a server that disabled JetStream needs a restart
            nats.start()
            bus = await _connect(nats, tmp_path / "client")
            log = await read_log(bus)
            ids = {str(e.event_id) for _, e in log}
            lost = [e.upload_id for e in acked if str(e.event_id) not in ids]
            assert not lost, f"{len(lost)} acknowledged uploads lost: {lost}"
            assert not repeated_ids(log)
            store_ok = [await _blob_ok(bus, e) for e in acked]
            assert all(store_ok), "an acknowledged upload's blob is gone"
            after = await samples.announce_model_upload(bus, os.urandom(BLOB), "after")
            assert str(after.event_id) in {str(e.event_id) for _, e in await read_log(bus)}
        finally:
            if bus is not None:
                await bus.close()
            nats.stop()
    print(
        f"\nFAULT full disk: NATS store on a {DISK} tmpfs; {len(acked)} uploads acked, "
        f"refused at {full_at:.1f} s with {type(refusal).__name__}: {str(refusal)[:80]!r} "
        f"({used:.1f} MB used); after resize + restart: {len(log)} events, lost 0, "
        f"duplicate ids 0, blobs intact; total {time.monotonic() - t0:.1f} s"
    )


def _used_mb(path: Path) -> float:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize / 1e6


async def _blob_ok(bus: Bus, event: ModelUploadReceived) -> bool:
    from cvops.core import ArtifactStore

    data = await ArtifactStore(bus).get_bytes(event.artifact.sha256)
    return len(data) == event.artifact.size


async def test_the_gateway_answers_503_on_a_full_store_and_accepts_the_upload_once_room_is_back(
    tmp_path: Path,
) -> None:
    """Through HTTP: ``python -m cvops.gateway`` on the full store refuses an upload with a
    retryable 503 (nothing is acknowledged); the same upload succeeds once there is room."""
    why = can_mount_tmpfs(tmp_path)
    if why:
        pytest.skip(why)
    from cvops.testing.gateway_process import GatewayProcess

    t0 = time.monotonic()
    with tmpfs(tmp_path / "disk", DISK) as disk:
        nats = KillableNats(disk / "nats").start()
        gateway = GatewayProcess(tmp_path / "gw", nats_url=nats.url, upload_verdict_timeout_s=0.3)
        bus: Bus | None = None
        try:
            gateway.start().add_users()
            bus = await _connect(nats, tmp_path / "client")
            for i in range(200):  # fill the disk behind the gateway's back
                try:
                    await asyncio.wait_for(
                        samples.announce_model_upload(bus, os.urandom(BLOB), f"fill{i}"), 30
                    )
                except Exception:
                    break
            blob = samples.onnx_model(seed=7)
            with gateway.client() as client:
                refused = client.post(
                    "/models",
                    data={"name": "after-full"},
                    files={"file": ("m.onnx", blob)},
                    headers=gateway.headers("engineer"),
                )
            assert refused.status_code in (503, 507), refused.text
            assert refused.headers.get("Retry-After"), refused.headers
            refused_at = time.monotonic() - t0
            await bus.close()
            bus = None
            resize_tmpfs(disk, "256m")
            nats.stop()
            nats.start()
            deadline = time.monotonic() + 60
            with gateway.client() as client:
                while True:
                    accepted = client.post(
                        "/models",
                        data={"name": "after-full"},
                        files={"file": ("m.onnx", blob)},
                        headers=gateway.headers("engineer"),
                    )
                    if accepted.status_code < 500 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(1.0)
            assert accepted.status_code in (200, 201, 202), accepted.text
            bus = await _connect(nats, tmp_path / "client")
            log = await read_log(bus)
            uploads = [
                e
                for _, e in log
                if isinstance(e, ModelUploadReceived) and e.model_name == "after-full"
            ]
            assert len(uploads) == 1, uploads  # the refused try left nothing, the retry one
            assert not repeated_ids(log)
        finally:
            if bus is not None:
                await bus.close()
            gateway.stop()
            nats.stop()
    print(
        f"\nFAULT full disk via gateway: upload refused {refused.status_code} "
        f"(Retry-After {refused.headers.get('Retry-After')}) at {refused_at:.1f} s; after "
        f"resize + NATS restart accepted {accepted.status_code}, 1 upload event, duplicate ids "
        f"0; total {time.monotonic() - t0:.1f} s"
    )
