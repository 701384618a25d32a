"""Gateway test fixtures: the real app served by uvicorn in a thread, on the session's NATS.

A module gets one gateway (``platform``) whose log is seeded with given events: an admin
with a token, a model with one version and a data set. Engineer and viewer users are made
through the API itself.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cvops.contracts import ArtifactRef, Stamp, TensorSpec
from cvops.contracts.conversion import (
    ArtifactProduced,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    ConversionRequested,
    GateResult,
    ParityNumbers,
)
from cvops.contracts.deployment import DeploymentReady, DeploymentRequested
from cvops.contracts.identity import TokenIssued, UserCreated
from cvops.contracts.registry import (
    DatasetUploadReceived,
    DatasetValidated,
    ImageStats,
    ModelRegistered,
    ModelUploadReceived,
    ModelVersionAdded,
    SplitCounts,
)
from cvops.contracts.reporting import ReportGenerated
from cvops.contracts.training import TrainingRequested
from cvops.core import ArtifactStore, Bus, Settings, load_settings
from cvops.gateway.auth import new_token
from cvops.testing.gateway import FAST_HASHER, PASSWORD, Platform, RunningGateway


def gateway_settings(nats_url: str, home: Path, **overrides: object) -> Settings:
    return load_settings({}, nats_url=nats_url, home=str(home), **overrides)


async def seed_log(settings: Settings, platform: Platform) -> None:
    """Given events: an admin with an API token, a model version, a validated data set."""
    tag = platform.tag
    bus = await Bus.connect(settings, name="seed")
    try:
        admin = f"root-{tag}"
        stamp = Stamp(now=datetime.now(UTC), actor=admin, correlation_id=f"seed-{tag}")
        token_id, secret, digest = new_token()
        created = await bus.publish(
            UserCreated(
                **stamp.envelope("admin"),
                username=admin,
                role="admin",
                password_hash=FAST_HASHER.hash(PASSWORD),
            ),
            expected_last_subject_seq=0,
        )
        await bus.publish(
            TokenIssued(
                **stamp.envelope("token"),
                username=admin,
                token_id=token_id,
                token_sha256=digest,
                label="seed",
            ),
            expected_last_subject_seq=created.seq,
        )
        platform.users["admin"], platform.tokens["admin"] = admin, secret

        store = ArtifactStore(bus)
        platform.model_bytes = b"seeded model bytes " + tag.encode()
        ref = await store.put_bytes(platform.model_bytes, filename="seed.onnx")
        platform.model, platform.upload_id = f"seed-model-{tag}", f"up-{tag}"
        by_registry = Stamp(now=stamp.now, actor="registry", correlation_id=stamp.correlation_id)
        spec = TensorSpec(name="x", shape=[-1, 3, 8, 8], dtype="float32")
        for event in (
            ModelUploadReceived(
                **stamp.envelope("m-up"),
                upload_id=platform.upload_id,
                model_name=platform.model,
                artifact=ref,
            ),
            ModelRegistered(
                **by_registry.envelope("m-reg"), model_name=platform.model, owner=admin
            ),
            ModelVersionAdded(
                **by_registry.envelope("m-v1"),
                model_name=platform.model,
                version=1,
                upload_id=platform.upload_id,
                artifact=ref,
                format="onnx",
                inputs=[spec],
                outputs=[TensorSpec(name="y", shape=[-1, 10], dtype="float32")],
                parameter_count=42,
                opset=18,
            ),
        ):
            await bus.publish(event)

        platform.dataset = f"seed-data-{tag}"
        for event in (
            DatasetUploadReceived(
                **stamp.envelope("d-up"),
                upload_id=f"dup-{tag}",
                dataset_name=platform.dataset,
                artifact=ref,
            ),
            DatasetValidated(
                **by_registry.envelope("d-ok"),
                dataset_name=platform.dataset,
                version=1,
                upload_id=f"dup-{tag}",
                source=ref,
                canonical=ref,
                classes=["a", "b"],
                class_counts=[5, 5],
                num_images=10,
                images=ImageStats(min_hw=[8, 8], max_hw=[8, 8], modal_hw=[8, 8], channels=3),
                splits=SplitCounts(train=6, val=2, test=2, calibration=2),
            ),
        ):
            await bus.publish(event)
        await seed_work(bus, platform, stamp, by_registry, ref)
        await seed_report(bus, store, platform)
    finally:
        await bus.close()


PARITY = ParityNumbers(
    n_images=64,
    max_abs_error=1e-5,
    mean_abs_error=1e-6,
    max_rel_error=1e-4,
    top1_agreement=1.0,
    reference_accuracy=0.9,
    candidate_accuracy=0.9,
    accuracy_drop=0.0,
)
GATE = GateResult(
    passed=True, reason="drop 0.0 <= 1.0", basis="accuracy", drop_points=0.0, max_accuracy_drop=1.0
)


async def seed_work(
    bus: Bus, platform: Platform, stamp: Stamp, by_service: Stamp, ref: ArtifactRef
) -> None:
    """Given events: a training job, a ready deployment, a conversion and a benchmark."""
    tag, model = platform.tag, platform.model
    platform.job_id = f"job-seed-{tag}"
    platform.deployment = f"seed-dep-{tag}"
    platform.conversion_id = f"conv-seed-{tag}"
    platform.benchmark_id = f"bench-seed-{tag}"
    serving = {"deployment": platform.deployment, "model_name": model, "version": 1}
    row = BenchmarkRow(
        engine="onnxruntime-cpu",
        precision="fp32",
        artifact="onnx",
        device="cpu",
        batch_size=1,
        concurrency=1,
        p95_ms=1.5,
        throughput_ips=700.0,
    )
    conversion = {"job_id": platform.conversion_id, "model_name": model, "version": 1}
    benchmark = {"job_id": platform.benchmark_id, "model_name": model, "version": 1}
    for event in (
        TrainingRequested(
            **stamp.envelope("job"),
            job_id=platform.job_id,
            dataset=platform.dataset,
            arch="simple-cnn",
            role="admin",
        ),
        DeploymentRequested(**stamp.envelope("deploy"), **serving),
        DeploymentReady(**by_service.envelope("ready"), **serving, instances=["local"]),
        ConversionRequested(**stamp.envelope("convert"), **conversion, targets=["onnx"]),
        ArtifactProduced(
            **by_service.envelope("produced"),
            **conversion,
            target="onnx",
            artifact=ref,
            format="onnx",
            precision="fp32",
            parity=PARITY,
            gate=GATE,
            source=ref,
            dataset=platform.dataset,
            dataset_version=1,
            input_shape=[-1, 3, 8, 8],
        ),
        BenchmarkRequested(**stamp.envelope("bench"), **benchmark),
        BenchmarkRowMeasured(**by_service.envelope("row"), **benchmark, row=row),
    ):
        await bus.publish(event)


async def seed_report(bus: Bus, store: ArtifactStore, platform: Platform) -> None:
    """Given: the reporter's report of the seeded model version, its files in the store."""
    stamp = Stamp(
        now=datetime.now(UTC), actor="reporter", correlation_id=f"report-seed-{platform.tag}"
    )
    html = await store.put_bytes(b"<!DOCTYPE html><p>seeded report</p>", filename="report.html")
    await bus.publish(
        ReportGenerated(
            **stamp.envelope("report"),
            model_name=platform.model,
            version=1,
            html=html,
            pdf=await store.put_bytes(b"%PDF-1.7 seeded", filename="report.pdf"),
            data=await store.put_bytes(b'{"seeded": true}', filename="report.json"),
            charts={"latency": await store.put_bytes(b"\x89PNG seeded", filename="latency.png")},
            sections=["dataset"],
            last_seq=await bus.last_seq(),
        )
    )


def start_platform(nats_url: str, home: Path, **overrides: object) -> Platform:
    """Seed the log, start a gateway, and make an engineer and a viewer through the API."""
    settings = gateway_settings(nats_url, home, **overrides)
    platform = Platform(gateway=RunningGateway(settings), tag=uuid.uuid4().hex[:8])
    asyncio.run(seed_log(settings, platform))
    platform.gateway.start()
    with httpx.Client(base_url=platform.url, timeout=30) as client:
        for role in ("engineer", "viewer"):
            username = f"{role}-{platform.tag}"
            created = client.post(
                "/users",
                json={"username": username, "password": PASSWORD, "role": role},
                headers=platform.headers("admin"),
            )
            assert created.status_code == 201, created.text
            login = client.post("/auth/login", json={"username": username, "password": PASSWORD})
            assert login.status_code == 200, login.text
            platform.users[role], platform.tokens[role] = username, login.json()["token"]
    return platform


@pytest.fixture(scope="session")
def platform_factory() -> Callable[..., Platform]:
    """``start_platform`` for modules that need a gateway with other settings."""
    return start_platform


@pytest.fixture(scope="module")
def platform(nats_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """One gateway for the module; verdicts time out fast (no registry is expected)."""
    running = start_platform(
        nats_server.url,
        tmp_path_factory.mktemp("gateway"),
        upload_verdict_timeout_s=0.3,
        max_upload_bytes=256 * 1024,
    )
    try:
        yield running
    finally:
        running.gateway.stop()
