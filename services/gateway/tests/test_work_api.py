"""Jobs, deployments, conversions and benchmarks over HTTP on a real NATS.

The gateway appends the requests; the services' answers are published here by hand, as the
trainer, router, converter and benchmarker would, and must show in the reads and the feeds.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.conversion import (
    ArtifactProduced,
    BenchmarkCompleted,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
    ConversionCompleted,
    ConversionStarted,
    GateResult,
    ParityNumbers,
    TargetUnavailable,
)
from cvops.contracts.deployment import DeploymentReady, DeploymentRetired
from cvops.contracts.registry import ModelUploadReceived, ModelVersionAdded
from cvops.contracts.training import (
    Constraints,
    GenerationCompleted,
    GenerationStarted,
    ParamSpec,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingPlan,
    TrainingStarted,
    TrialCompleted,
    TrialMetrics,
    TrialProgressed,
    TrialRequested,
    TrialSpec,
    TrialStarted,
    TrialSummary,
)
from cvops.core import Bus, dump_rows, rebuild_projection, sqlite_engine
from cvops.gateway import projection as views
from cvops.testing.gateway import (
    PASSWORD,
    Platform,
    observed_statuses,
    undeclared_statuses,
)

REF = ArtifactRef(sha256="cd" * 32, size=2048, filename="trial.onnx")
METRICS = TrialMetrics(accuracy=0.93, latency_ms=0.8, size_bytes=2048, parameters=5000, epochs=1)


@pytest.fixture(scope="module")
def platform(
    nats_server: Any, tmp_path_factory: pytest.TempPathFactory, platform_factory: Any
) -> Iterator[Platform]:
    """A gateway with small GPU quotas: 2 GPU jobs per user, 3 per role."""
    running = platform_factory(
        nats_server.url,
        tmp_path_factory.mktemp("gateway-work"),
        upload_verdict_timeout_s=0.3,
        gpu_trials_per_user=2,
        gpu_trials_per_role=3,
    )
    try:
        yield running
    finally:
        running.gateway.stop()


@pytest.fixture
async def client(platform: Platform) -> Any:
    async with httpx.AsyncClient(base_url=platform.url, timeout=30) as http:
        yield http


async def publish(platform: Platform, bus: Bus, *events: Event) -> None:
    """Publish as a service would, then wait until the gateway's projection has it."""
    seq = 0
    for event in events:
        seq = (await bus.publish(event)).seq
    runner = platform.gateway.service.runner
    for _ in range(500):
        if runner.position >= seq:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the gateway projection did not reach {seq}")


def job_body(p: Platform, **fields: Any) -> dict[str, Any]:
    return {"dataset": p.dataset, "arch": "simple-cnn", "budget": {"trials": 2}, **fields}


def service_stamp(actor: str, correlation_id: str) -> Stamp:
    return Stamp(now=datetime.now(UTC), actor=actor, correlation_id=correlation_id)


async def sse_types(
    client: httpx.AsyncClient, p: Platform, cid: str, *, until: str | None = None
) -> list[str]:
    """Event types of a feed: the replay, or (with ``until``) live until that type arrives."""
    types: list[str] = []
    path = f"/events/{cid}" + ("" if until else "?follow=false")
    async with client.stream("GET", path, headers=p.headers("viewer")) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                types.append(line.removeprefix("event:").strip())
                if types[-1] == until:
                    break
    return types


async def test_a_job_shows_the_trainers_events_in_its_view_and_its_feed(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    engineer = platform.headers("engineer")
    made = await client.post("/jobs", json=job_body(platform, epochs=1), headers=engineer)
    assert made.status_code == 201, made.text
    created = made.json()
    job_id, cid = created["job_id"], created["correlation_id"]
    assert cid == made.headers["x-correlation-id"] and created["status"] == "requested"
    shown = (await client.get(f"/jobs/{job_id}", headers=platform.headers("viewer"))).json()
    assert (shown["status"], shown["owner"]) == ("requested", platform.users["engineer"])
    assert shown["request"]["budget"] == {"population": None, "generations": None, "trials": 2}

    follower = asyncio.create_task(sse_types(client, platform, cid, until="training.completed.v1"))
    trainer = service_stamp("trainer", cid)
    trial = {"job_id": job_id, "generation": 0, "index": 0, "trial_id": f"{job_id}-g0-t0"}
    hp = {"lr": 0.01, "width": 0.5}
    model = f"cnn-{job_id}"
    plan = TrainingPlan(
        job_type="search",
        arch="simple-cnn",
        dataset=platform.dataset,
        dataset_version=1,
        canonical=REF,
        classes=["a", "b"],
        channels=3,
        image_size=[8, 8],
        space={"lr": ParamSpec(kind="log_float", low=1e-3, high=0.1)},
        fixed={"epochs": 1},
        population=1,
        generations=1,
        trials=1,
        objectives=["accuracy", "latency"],
        mode="pareto",
        weights={},
        constraints=Constraints(),
        seed=0,
        target_engine="onnxruntime-cpu",
        device="auto",
        model_name=model,
        register_limit=1,
    )
    summary = TrialSummary(
        trial_id=trial["trial_id"],
        generation=0,
        index=0,
        hyperparameters=hp,
        metrics=METRICS,
        onnx=REF,
    )
    registry = service_stamp("registry", cid)
    await publish(
        platform,
        bus,
        TrainingStarted(**trainer.envelope("started"), job_id=job_id, plan=plan),
        GenerationStarted(
            **trainer.envelope("g0"),
            job_id=job_id,
            generation=0,
            trials=[TrialSpec(trial_id=trial["trial_id"], index=0, hyperparameters=hp)],
        ),
        TrialRequested(
            **trainer.envelope("r0"),
            **trial,
            arch="simple-cnn",
            hyperparameters=hp,
            dataset=platform.dataset,
            dataset_version=1,
            canonical=REF,
            classes=["a", "b"],
            channels=3,
            image_size=[8, 8],
            objectives=["accuracy", "latency"],
        ),
        TrialStarted(
            **trainer.envelope("s0"), **trial, attempt=1, host="h", device="cpu", parameters=5000
        ),
        TrialProgressed(
            **trainer.envelope("p0"),
            **trial,
            attempt=1,
            epoch=1,
            epochs=1,
            train_loss=0.4,
            val_accuracy=0.9,
        ),
        TrialCompleted(
            **trainer.envelope("c0"),
            **trial,
            hyperparameters=hp,
            metrics=METRICS,
            onnx=REF,
            weights=REF,
            normalization={"mean": [0.5], "std": [0.2]},
        ),
        GenerationCompleted(
            **trainer.envelope("g0done"),
            job_id=job_id,
            generation=0,
            completed=1,
            failed=0,
            pruned=0,
            front=[trial["trial_id"]],
            best_accuracy=0.93,
        ),
        ModelUploadReceived(
            **trainer.envelope("upload"),
            upload_id=trial["trial_id"],
            model_name=model,
            artifact=REF,
        ),
        ModelVersionAdded(
            **registry.envelope("v1"),
            model_name=model,
            version=1,
            upload_id=trial["trial_id"],
            artifact=REF,
            format="onnx",
            inputs=[],
            outputs=[],
            parameter_count=5000,
        ),
        TrainingCompleted(
            **trainer.envelope("done"),
            job_id=job_id,
            front=[summary],
            model_name=model,
            trials_completed=1,
            trials_failed=0,
            trials_pruned=0,
            registered_uploads=[trial["trial_id"]],
        ),
    )

    job = (await client.get(f"/jobs/{job_id}", headers=platform.headers("viewer"))).json()
    assert job["status"] == "completed" and job["finished_at"]
    assert (job["trials_total"], job["trials_done"], job["best_accuracy"]) == (1, 1, 0.93)
    assert job["plan"]["model_name"] == model
    (only,) = job["trials"]
    assert (only["status"], only["epoch"], only["metrics"]["latency_ms"]) == ("completed", 1, 0.8)
    assert [t["trial_id"] for t in job["front"]] == [trial["trial_id"]]
    assert job["models"] == [
        {
            "upload_id": trial["trial_id"],
            "model_name": model,
            "status": "validated",
            "version": 1,
            "reason": None,
        }
    ]
    listed = (await client.get("/jobs?status=completed", headers=engineer)).json()
    assert job_id in [j["job_id"] for j in listed]

    live = await asyncio.wait_for(follower, 10)
    replay = await sse_types(client, platform, cid)
    assert live == replay
    assert replay[0] == "training.requested.v1" and replay[-1] == "training.completed.v1"
    assert "trial.progressed.v1" in replay and "registry.model_version_added.v1" in replay


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        ({"dataset": "no-such-data"}, 422, "unknown data set 'no-such-data'"),
        (
            {"arch": "nosucharch"},
            422,
            "unknown architecture 'nosucharch'; architectures: simple-cnn, resnet-mini",
        ),
        ({"budget": {"trials": 0}}, 422, "budget trials must be at least 1"),
        (
            {"search_space": {"lr": {"kind": "float", "low": 0.5, "high": 0.1}}},
            422,
            "inverted range",
        ),
        ({"objectives": ["accuracy", "beauty"]}, 422, "unknown objective 'beauty'"),
        ({"budgett": 3}, 422, "budgett"),
        ({"device": "tpu"}, 422, "device"),
    ],
)
async def test_bad_job_requests_get_422_with_the_reason(
    platform: Platform, client: httpx.AsyncClient, change: dict[str, Any], status: int, reason: str
) -> None:
    response = await client.post(
        "/jobs", json=job_body(platform, **change), headers=platform.headers("engineer")
    )
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == "invalid" and reason in msgspec.json.encode(body["detail"]).decode()


async def _engineer(client: httpx.AsyncClient, p: Platform) -> dict[str, str]:
    name = f"eng-{uuid.uuid4().hex[:8]}"
    creds = {"username": name, "password": PASSWORD}
    made = await client.post(
        "/users", json={**creds, "role": "engineer"}, headers=p.headers("admin")
    )
    assert made.status_code == 201
    token = (await client.post("/auth/login", json=creds)).json()["token"]
    return {"Authorization": f"Bearer {token}"}


async def test_gpu_jobs_past_the_user_or_role_quota_get_429(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    first, second = await _engineer(client, platform), await _engineer(client, platform)
    gpu = job_body(platform, device="cuda")
    jobs = []
    for _ in range(2):
        made = await client.post("/jobs", json=gpu, headers=first)
        assert made.status_code == 201, made.text
        jobs.append(made.json())
    over_user = await client.post("/jobs", json=gpu, headers=first)
    assert over_user.status_code == 429, over_user.text
    assert over_user.json()["error"] == "too_many_requests"
    assert "limit per user is 2" in over_user.json()["detail"]
    cpu = await client.post("/jobs", json=job_body(platform, device="cpu"), headers=first)
    assert cpu.status_code == 201  # CPU jobs do not count

    assert (await client.post("/jobs", json=gpu, headers=second)).status_code == 201
    over_role = await client.post("/jobs", json=gpu, headers=second)
    assert over_role.status_code == 429 and "role engineer has 3" in over_role.json()["detail"]

    ended = jobs[0]
    trainer = service_stamp("trainer", ended["correlation_id"])
    await publish(
        platform,
        bus,
        TrainingFailed(**trainer.envelope("f"), job_id=ended["job_id"], reason="no GPU lease"),
    )
    again = await client.post("/jobs", json=gpu, headers=second)
    assert again.status_code == 201, again.text


async def test_cancel_is_the_owners_or_an_admins_and_reaches_the_jobs_feed(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    owner, other = await _engineer(client, platform), await _engineer(client, platform)
    made = (await client.post("/jobs", json=job_body(platform), headers=owner)).json()
    cancel = f"/jobs/{made['job_id']}/cancel"
    assert (await client.post(cancel, headers=other)).status_code == 403
    asked = await client.post(cancel, headers=owner)
    assert asked.status_code == 202 and asked.json()["cancel_requested"] is True
    assert (await client.post(cancel, headers=platform.headers("admin"))).status_code == 202
    feed = await sse_types(client, platform, made["correlation_id"])
    assert feed == ["training.requested.v1", "training.cancel_requested.v1"]

    trainer = service_stamp("trainer", made["correlation_id"])
    await publish(
        platform, bus, TrainingCancelled(**trainer.envelope("c"), job_id=made["job_id"], reason="x")
    )
    late = await client.post(cancel, headers=owner)
    assert late.status_code == 409 and "already cancelled" in late.json()["detail"]
    missing = await client.post("/jobs/job-nope/cancel", headers=owner)
    assert missing.status_code == 404


async def test_deploy_ready_retire_and_the_refusals(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    engineer = platform.headers("engineer")
    name = f"svc-{uuid.uuid4().hex[:8]}"
    body = {"model_name": platform.model, "version": 1, "deployment": name, "public": True}
    for change, status in (
        ({"version": 7}, 404),
        ({"model_name": "ghost"}, 404),
        ({"canary": f"{platform.model}:2=10%"}, 404),
        ({"canary": "other:2=10%"}, 422),
        ({"engine": "onnx-magic"}, 422),
    ):
        refused = await client.post("/deployments", json={**body, **change}, headers=engineer)
        assert refused.status_code == status, (change, refused.text)

    made = await client.post("/deployments", json=body, headers=engineer)
    assert made.status_code == 202, made.text
    requested = made.json()
    assert (requested["status"], requested["serving_version"]) == ("requested", None)
    assert requested["correlation_id"] == made.headers["x-correlation-id"]
    router = service_stamp("inference-router", requested["correlation_id"])
    serving = {"deployment": name, "model_name": platform.model, "version": 1, "public": True}
    await publish(platform, bus, DeploymentReady(**router.envelope("r"), **serving))
    ready = (await client.get(f"/deployments/{name}", headers=platform.headers("viewer"))).json()
    assert (ready["status"], ready["serving_version"], ready["public"]) == ("ready", 1, True)
    assert name in [
        d["deployment"] for d in (await client.get("/deployments", headers=engineer)).json()
    ]

    retiring = await client.delete(f"/deployments/{name}", headers=engineer)
    assert retiring.status_code == 202 and retiring.json()["status"] == "retiring"
    done = service_stamp("inference-router", retiring.json()["correlation_id"])
    await publish(platform, bus, DeploymentRetired(**done.envelope("gone"), deployment=name))
    retired = (await client.get(f"/deployments/{name}", headers=engineer)).json()
    assert (retired["status"], retired["serving_version"]) == ("retired", None)
    assert (await client.delete(f"/deployments/{name}", headers=engineer)).status_code == 409
    assert (await client.delete("/deployments/none-such", headers=engineer)).status_code == 404


async def test_conversion_targets_and_a_benchmark_show_their_results(
    platform: Platform, bus: Bus, client: httpx.AsyncClient
) -> None:
    engineer, model = platform.headers("engineer"), platform.model
    for body, status in (
        ({"model_name": model, "version": 1, "targets": ["tflite"]}, 422),
        ({"model_name": model, "version": 9}, 404),
        ({"model_name": model, "version": 1, "dataset": "nope"}, 422),
    ):
        assert (
            await client.post("/conversions", json=body, headers=engineer)
        ).status_code == status
    # the seeded model was uploaded: no data set in its lineage, so the request must name one
    no_lineage = await client.post(
        "/conversions", json={"model_name": model, "version": 1}, headers=engineer
    )
    assert no_lineage.status_code == 422, no_lineage.text
    assert no_lineage.json()["error"] == "invalid"
    assert "no data set in its lineage" in no_lineage.json()["detail"]
    assert "--dataset" in no_lineage.json()["detail"]

    made = await client.post(
        "/conversions",
        json={
            "model_name": model,
            "version": 1,
            "targets": ["onnx", "tensorrt"],
            "dataset": platform.dataset,
        },
        headers=engineer,
    )
    assert made.status_code == 201, made.text
    job = made.json()
    pending = (await client.get(f"/conversions/{job['job_id']}", headers=engineer)).json()
    assert [(t["target"], t["status"]) for t in pending["targets"]] == [
        ("onnx", "pending"),
        ("tensorrt-fp16", "pending"),
        ("tensorrt-int8", "pending"),
    ]
    conv = {"job_id": job["job_id"], "model_name": model, "version": 1}
    converter = service_stamp("converter", job["correlation_id"])
    parity = ParityNumbers(
        n_images=8, max_abs_error=2e-5, mean_abs_error=1e-6, max_rel_error=1e-4, top1_agreement=1.0
    )
    gate = GateResult(
        passed=True, reason="ok", basis="accuracy", drop_points=0.0, max_accuracy_drop=1.0
    )
    await publish(
        platform,
        bus,
        ConversionStarted(
            **converter.envelope("s"),
            **conv,
            attempt=1,
            host="h",
            source_format="onnx",
            dataset=platform.dataset,
            dataset_version=1,
            targets=["onnx", "tensorrt-fp16", "tensorrt-int8"],
            input_shape=[-1, 3, 8, 8],
        ),
        ArtifactProduced(
            **converter.envelope("onnx"),
            **conv,
            target="onnx",
            artifact=REF,
            format="onnx",
            precision="fp32",
            parity=parity,
            gate=gate,
            source=REF,
            dataset=platform.dataset,
            dataset_version=1,
            input_shape=[-1, 3, 8, 8],
        ),
        *(
            TargetUnavailable(
                **converter.envelope(t), **conv, target=t, reason="unavailable: no tensorrt"
            )
            for t in ("tensorrt-fp16", "tensorrt-int8")
        ),
        ConversionCompleted(
            **converter.envelope("done"),
            **conv,
            produced=["onnx"],
            rejected=[],
            unavailable=["tensorrt-fp16", "tensorrt-int8"],
        ),
    )
    result = (await client.get(f"/conversions/{job['job_id']}", headers=engineer)).json()
    assert result["status"] == "completed"
    assert [t["status"] for t in result["targets"]] == ["produced", "unavailable", "unavailable"]
    assert result["targets"][0]["parity"]["max_abs_error"] == 2e-5
    engines = (await client.get(f"/models/{model}/versions/1/artifacts", headers=engineer)).json()
    assert job["job_id"] in [e["job_id"] for e in engines]

    wrong = {"model_name": model, "version": 1, "conversion_job": "conv-ghost"}
    assert (await client.post("/benchmarks", json=wrong, headers=engineer)).status_code == 422
    started = await client.post(
        "/benchmarks",
        json={
            "model_name": model,
            "version": 1,
            "batch_sizes": [1],
            "concurrency": [1],
            "p95_ms": 20,
            "conversion_job": job["job_id"],
        },
        headers=engineer,
    )
    assert started.status_code == 201, started.text
    bench = started.json()
    ids = {"job_id": bench["job_id"], "model_name": model, "version": 1}
    benchmarker = service_stamp("benchmarker", bench["correlation_id"])
    row = BenchmarkRow(
        engine="onnxruntime-cpu",
        precision="fp32",
        artifact="onnx",
        device="cpu",
        batch_size=1,
        concurrency=1,
        p95_ms=0.9,
        throughput_ips=1100.0,
    )
    await publish(
        platform,
        bus,
        BenchmarkStarted(**benchmarker.envelope("s"), **ids, attempt=1, host="h", targets=["ort"]),
        BenchmarkRowMeasured(**benchmarker.envelope("r"), **ids, row=row),
        BenchmarkCompleted(
            **benchmarker.envelope("d"), **ids, met_sla=True, reason="meets p95 20 ms", pick=row
        ),
    )
    measured = (await client.get(f"/benchmarks/{bench['job_id']}", headers=engineer)).json()
    assert measured["status"] == "completed" and measured["request"]["p95_ms"] == 20
    assert [r["p95_ms"] for r in measured["rows"]] == [0.9]
    assert measured["recommendation"]["pick"]["engine"] == "onnxruntime-cpu"
    assert (await client.get("/benchmarks/bench-nope", headers=engineer)).status_code == 404

    # serve what was benchmarked: the pick's engine, precision and artifact, by its sha256
    deploy = {"model_name": model, "version": 1, "deployment": f"picked-{bench['job_id'][-6:]}"}
    for extra in ({"from_benchmark": bench["job_id"]}, {"recommended": True}):
        picked = await client.post("/deployments", json={**deploy, **extra}, headers=engineer)
        assert picked.status_code == 202, picked.text
        shown = picked.json()
        assert (shown["engine"], shown["precision"], shown["benchmark_id"]) == (
            "onnxruntime-cpu",
            "fp32",
            bench["job_id"],
        )
        assert (shown["artifact_target"], shown["artifact_sha256"]) == ("onnx", REF.sha256)
    for extra, status, why in (
        ({"from_benchmark": "bench-nope"}, 404, "no benchmark"),
        ({"from_benchmark": bench["job_id"], "engine": "openvino-cpu"}, 422, "beside"),
        ({"precision": "int8"}, 422, "--targets int8"),
        ({"engine": "tensorrt", "precision": "fp16"}, 422, "host with TensorRT"),
    ):
        refused = await client.post("/deployments", json={**deploy, **extra}, headers=engineer)
        assert refused.status_code == status and why in refused.json()["detail"], refused.text


async def test_the_rebuilt_projection_has_the_same_jobs_deployments_and_engines(
    platform: Platform, bus: Bus, tmp_path: Path
) -> None:
    """Run last in this module: everything above, replayed from the log, gives the same rows."""
    runner = platform.gateway.service.runner
    last = await bus.last_seq()
    for _ in range(500):
        if runner.position >= last:
            break
        await asyncio.sleep(0.01)
    live = sqlite_engine(views.db_path(platform.settings))
    before = dump_rows(live, views.metadata)
    live.dispose()
    assert before["job_trials"] and before["engine_artifacts"] and before["benchmark_rows"]
    target = tmp_path / "gateway.sqlite"
    await rebuild_projection(bus, views.GatewayProjection(), target)
    rebuilt = sqlite_engine(target)
    assert dump_rows(rebuilt, views.metadata) == before
    rebuilt.dispose()


async def test_the_document_declares_every_status_this_module_observed(
    platform: Platform, client: httpx.AsyncClient
) -> None:
    """Run last in this module: every status the gateway answered the tests above (404, 409,
    422, 429...) is declared for its operation in /schema/openapi.json."""
    document = (await client.get("/schema/openapi.json")).json()
    observed = observed_statuses(platform.gateway)
    assert 409 in observed[("POST", "/jobs/{job_id}/cancel")]
    assert 429 in observed[("POST", "/jobs")]
    assert undeclared_statuses(document, observed) == []
