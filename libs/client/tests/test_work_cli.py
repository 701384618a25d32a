"""`cvops train / jobs / deploy / deployments / convert / bench` against the stand-in gateway:
request bodies, live progress, result tables, --json and exit codes."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import msgspec
import pytest
from click.testing import Result
from rich.console import Console

from cvops.client import Client, CvopsError, parse_sse, progress
from cvops.contracts.api import (
    BenchmarkView,
    ConversionView,
    CreateJob,
    DeploymentView,
    JobCreated,
    JobView,
)
from cvops.testing.client import ADMIN_PASSWORD, FakeGateway

Invoke = Callable[..., Result]


@pytest.fixture
def cvops(cvops: Invoke, gateway: FakeGateway) -> Invoke:
    """Logged in as admin, with a data set ``shapes`` and a model ``net`` of two versions."""
    assert cvops("login", "--username", "admin", "--password", ADMIN_PASSWORD).exit_code == 0
    gateway._add_dataset("shapes", "admin", {}, "shapes.zip", 100)
    gateway.add_model("net", versions=2)
    return cvops


def _sent(gateway: FakeGateway, method: str, path: str) -> dict[str, object]:
    (request,) = [r for r in gateway.requests if r.method == method and r.url.path == path]
    return msgspec.json.decode(request.content)  # type: ignore[no-any-return]


def test_train_shows_live_progress_then_the_pareto_front_and_the_registered_versions(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    result = cvops(
        "train",
        "--dataset",
        "shapes",
        "--arch",
        "resnet-mini",
        "--budget",
        "6",
        "--population",
        "3",
        "--objectives",
        "accuracy,latency",
        "--max-latency-ms",
        "5",
    )
    assert result.exit_code == 0, result.output
    body = _sent(gateway, "POST", "/jobs")
    assert body["budget"] == {"population": 3, "generations": None, "trials": 6}
    assert body["objectives"] == ["accuracy", "latency"] and body["device"] == "auto"
    assert body["constraints"] == {
        "max_latency_ms": 5.0,
        "max_parameters": None,
        "max_size_bytes": None,
    }

    log = result.stderr
    for line in (
        "plan: population 3 x 2 generations = 6 trials of resnet-mini on shapes v1",
        "generation 1/2: 3 trials",
        "trial 1.1 completed: accuracy 80.00%, 0.500 ms",
        "trial 1.3 failed: loss is NaN",
        "generation 1/2 done: 2 completed, 1 failed, 0 pruned; best accuracy 82.00%",
        "job completed: 5 trials completed, 1 failed, 0 pruned; 2 on the Pareto front",
    ):
        assert line in log
    # the bars as they stand at the end: the job and each generation, every trial done
    assert "6/6" in log and "3/3" in log

    out = result.stdout
    assert "Pareto front" in out and "Registered model versions" in out
    front = [line for line in out.splitlines() if "job-" in line and "%" in line]
    assert "89.00%" in front[0] and "1.00" in front[0] and "54.7 KiB" in front[0]
    assert "14,000" in front[0] and "87.00%" in front[1]
    assert "resnet-mini-shapes" in out and "v2" in out and "validated" in out


def test_train_turns_set_space_and_weights_into_the_request(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    searched = cvops(
        "train",
        "--dataset=shapes",
        "--arch=simple-cnn",
        "--space",
        "lr=log:1e-4:0.1",
        "--space",
        "optimizer=sgd,adamw",
        "--set",
        "depth=2",
        "--weights",
        "accuracy=1,latency=0.2",
        "--seed",
        "7",
        "--device",
        "cuda",
        "--detach",
        "--json",
    )
    assert searched.exit_code == 0, searched.output
    created = msgspec.json.decode(searched.stdout, type=JobCreated)
    assert created.kind == "training" and created.job_id in gateway.jobs
    request = msgspec.convert(_sent(gateway, "POST", "/jobs"), CreateJob)
    assert request.search_space["lr"].kind == "log_float" and request.search_space["lr"].high == 0.1
    assert request.search_space["optimizer"].choices == ["sgd", "adamw"]
    assert request.hyperparameters == {"depth": 2}
    assert (request.mode, request.weights) == ("weighted", {"accuracy": 1.0, "latency": 0.2})
    assert (request.seed, request.device) == (7, "cuda")

    gateway.requests.clear()
    single = cvops(
        "train", "--dataset=shapes", "--arch=simple-cnn", "--single", "--set", "lr=0.01",
        "--set", "amp=true", "--set", "optimizer=sgd", "--detach",
    )  # fmt: skip
    assert single.exit_code == 0 and "cvops jobs watch job-" in single.stdout
    sent = _sent(gateway, "POST", "/jobs")
    assert sent["job_type"] == "single"
    assert sent["hyperparameters"] == {"lr": 0.01, "amp": True, "optimizer": "sgd"}


def test_train_json_prints_the_finished_job_and_no_progress(cvops: Invoke) -> None:
    result = cvops("train", "--dataset", "shapes", "--arch", "resnet-mini", "--json")
    assert result.exit_code == 0, result.output
    job = msgspec.json.decode(result.stdout, type=JobView)
    assert job.status == "completed" and len(job.front) == 2
    assert result.stderr == ""


def test_a_job_the_trainer_refuses_exits_1_with_its_reason(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    gateway.job_outcome = "failed"
    result = cvops("train", "--dataset", "shapes", "--arch", "resnet-mini")
    assert result.exit_code == 1
    assert "job failed: image size 8x8 too small for resnet-mini" in result.stderr
    reason = "image size 8x8 too small for resnet-mini (min 16)"
    assert result.stderr.strip().splitlines()[-1] == f"error: training failed: {reason}"


def test_a_request_the_gateway_refuses_exits_1_and_nothing_is_followed(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    result = cvops("train", "--dataset", "blobs", "--arch", "resnet-mini")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: invalid: unknown data set 'blobs'"
    assert not [r for r in gateway.requests if r.url.path.startswith("/events")]
    zero = cvops("train", "--dataset", "shapes", "--arch", "resnet-mini", "--budget", "0")
    assert zero.exit_code == 1 and "budget trials must be at least 1" in zero.stderr
    # an unknown architecture is refused like a missing data set: at once, nothing followed
    arch = cvops("train", "--dataset", "shapes", "--arch", "nosucharch")
    assert arch.exit_code == 1
    assert arch.stderr.strip() == (
        "error: invalid: unknown architecture 'nosucharch'; "
        "architectures: simple-cnn, resnet-mini, mobilenet-mini"
    )
    assert not [r for r in gateway.requests if r.url.path.startswith("/events")]
    assert gateway.jobs == {}


def test_a_viewer_may_watch_but_not_train(cvops: Invoke, gateway: FakeGateway) -> None:
    gateway.users["val"] = {"password": "val-pw-123", "role": "viewer", "disabled": False}
    assert cvops("login", "-u", "val", "-p", "val-pw-123").exit_code == 0
    refused = cvops("train", "--dataset", "shapes", "--arch", "resnet-mini")
    assert refused.exit_code == 1 and "error: forbidden" in refused.stderr
    assert cvops("jobs", "list").exit_code == 0


def test_jobs_list_show_cancel_and_watch(cvops: Invoke, gateway: FakeGateway) -> None:
    gateway.job_outcome = "running"
    running = cvops("train", "--dataset", "shapes", "--arch", "resnet-mini", "--detach")
    (running_id,) = gateway.jobs
    gateway.job_outcome = "completed"
    cvops("train", "--dataset", "shapes", "--arch", "mobilenet-mini", "--detach")
    assert running.exit_code == 0

    listed = cvops("jobs", "list")
    assert listed.exit_code == 0 and "running" in listed.stdout and "completed" in listed.stdout
    only = msgspec.json.decode(cvops("jobs", "list", "--status", "running", "--json").stdout)
    assert [j["job_id"] for j in only] == [running_id]

    cancelled = cvops("jobs", "cancel", running_id)
    assert cancelled.exit_code == 0
    assert cancelled.stdout.strip() == f"cancel requested for job {running_id} (running)"
    assert "running (cancelling)" in cvops("jobs", "list").stdout

    done_id = next(j for j in gateway.jobs if j != running_id)
    late = cvops("jobs", "cancel", done_id)
    assert late.exit_code == 1 and "error: conflict: job" in late.stderr

    shown = cvops("jobs", "show", done_id)
    assert shown.exit_code == 0
    for part in ("population 2 x 2 generations", "Generations", "Trials", "loss is NaN"):
        assert part in shown.stdout
    watched = cvops("jobs", "watch", done_id)
    assert watched.exit_code == 0 and "Pareto front" in watched.stdout
    assert "job completed" in watched.stderr
    assert cvops("jobs", "show", "job-nope").exit_code == 1


def test_deploy_waits_for_ready_and_retire_for_retired(cvops: Invoke, gateway: FakeGateway) -> None:
    result = cvops("deploy", "net:1", "--canary", "net:2=10%", "--public", "--name", "shapes-net")
    assert result.exit_code == 0, result.output
    body = _sent(gateway, "POST", "/deployments")
    assert (body["model_name"], body["version"], body["deployment"]) == ("net", 1, "shapes-net")
    assert body["canary"] == "net:2=10%" and body["public"] is True
    assert "shapes-net: ready (serving v1)" in result.stderr
    assert "ready" in result.stdout and "v2 10%" in result.stdout

    listed = cvops("deployments", "list", "--json")
    (deployed,) = msgspec.json.decode(listed.stdout, type=list[DeploymentView])
    assert (deployed.deployment, deployed.status, deployed.serving_version) == (
        "shapes-net",
        "ready",
        1,
    )
    assert "shapes-net" in cvops("deployments", "show", "shapes-net").stdout

    retired = cvops("deployments", "retire", "shapes-net")
    assert retired.exit_code == 0 and "shapes-net: retired" in retired.stderr
    again = cvops("deployments", "retire", "shapes-net")
    assert again.exit_code == 1 and "retired already" in again.stderr


def test_deploy_failure_and_bad_references(cvops: Invoke, gateway: FakeGateway) -> None:
    gateway.deploy_outcome = "failed"
    failed = cvops("deploy", "net:2", "--json")
    assert failed.exit_code == 1
    assert msgspec.json.decode(failed.stdout, type=DeploymentView).status == "failed"
    assert "error: deployment failed: failed to load 'model'" in failed.stderr
    missing = cvops("deploy", "net:9")
    assert (
        missing.exit_code == 1
        and "error: not_found: model 'net' has no version 9" in missing.stderr
    )
    assert cvops("deploy", "net").exit_code == 2  # no version: a usage error
    assert cvops("deploy", "net:1", "--engine", "magic").exit_code == 2
    assert cvops("deploy", "net:1", "--precision", "fp8").exit_code == 2
    both = cvops("deploy", "net:1", "--from-benchmark", "b1", "--recommended")
    assert both.exit_code == 2 and "not both" in both.output


def test_deploy_an_engine_at_a_precision_or_a_benchmarks_pick(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    result = cvops("deploy", "net:1", "--engine", "openvino-cpu", "--precision", "int8")
    assert result.exit_code == 0, result.output
    body = _sent(gateway, "POST", "/deployments")
    assert (body["engine"], body["precision"]) == ("openvino-cpu", "int8")
    assert "openvino-cpu int8" in result.stdout
    picked = cvops("deploy", "net:1", "--name", "picked", "--from-benchmark", "bench-1")
    assert picked.exit_code == 0, picked.output
    assert _last_sent(gateway, "/deployments")["from_benchmark"] == "bench-1"
    assert "bench-1" in picked.stdout
    assert cvops("deploy", "net:1", "--name", "rec", "--recommended").exit_code == 0
    assert _last_sent(gateway, "/deployments")["recommended"] is True


def _last_sent(gateway: FakeGateway, path: str) -> dict[str, object]:
    request = [r for r in gateway.requests if r.method == "POST" and r.url.path == path][-1]
    return msgspec.json.decode(request.content)  # type: ignore[no-any-return]


def test_convert_reports_each_target_then_the_parity_table(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    result = cvops(
        "convert", "net:1", "--targets", "onnx,fp16,int8,openvino,tensorrt", "--dataset", "shapes"
    )
    assert result.exit_code == 0, result.output
    body = _sent(gateway, "POST", "/conversions")
    assert body["targets"] == ["onnx", "fp16", "int8", "openvino", "tensorrt"]
    assert body["dataset"] == "shapes"
    log = result.stderr
    assert "onnx: produced onnx fp32, max abs error 1e-05, top-1 agreement 100.00%" in log
    assert "int8: rejected: accuracy drop 3.00 pt > 1.00 pt" in log
    assert "tensorrt-int8: unavailable: the tensorrt package is not importable" in log
    assert "tensorrt-fp16 unavailable" in log  # its bar, finished
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│")}
    assert "produced" in rows["fp16"] and "99.80%" in rows["fp16"] and "+0.10 pt" in rows["fp16"]
    assert "kept in float:" in rows["int8"] and "conv1, fc" in result.stdout
    assert "unavailable" in rows["tensorrt-fp16"]

    (conversion_id,) = gateway.conversions
    shown = cvops("conversions", "show", conversion_id, "--json")
    assert msgspec.json.decode(shown.stdout, type=ConversionView).status == "completed"
    engines = cvops("models", "artifacts", "net:1")
    assert engines.exit_code == 0 and "openvino-ir" in engines.stdout

    gateway.conversion_outcome = "failed"
    failed = cvops("convert", "net:1", "--dataset", "shapes")
    assert failed.exit_code == 1
    assert "error: conversion failed: ONNX export failed at operator aten::unique" in failed.stderr


def test_convert_of_a_model_without_lineage_is_refused_before_any_table(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    result = cvops("convert", "net:1", "--targets", "onnx,openvino")  # uploaded: no lineage
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: invalid: model net:1 has no data set in its lineage")
    assert "--dataset" in line
    assert result.stdout == "" and gateway.conversions == {}


def test_engine_sizes_include_the_files_beside_them(cvops: Invoke, gateway: FakeGateway) -> None:
    converted = cvops("convert", "net:1", "--targets", "onnx,openvino", "--dataset", "shapes")
    assert converted.exit_code == 0, converted.output
    table = {line.split()[1]: line for line in converted.stdout.splitlines() if "│" in line}
    assert "46.9 KiB" in table["onnx"]  # no companions
    assert "5.4 MiB" in table["openvino"]  # 57.6 KiB of .xml + 5.3 MiB of .bin weights
    engines = cvops("models", "artifacts", "net:1")
    rows = {line.split()[1]: line for line in engines.stdout.splitlines() if "│" in line}
    assert "5.4 MiB" in rows["openvino"] and "57.6 KiB" not in rows["openvino"]
    assert "46.9 KiB" in rows["onnx"]


def test_bench_prints_rows_and_the_recommendation_or_the_closest_miss(
    cvops: Invoke, gateway: FakeGateway
) -> None:
    result = cvops(
        "bench", "net:1", "--p95-ms", "20", "--max-accuracy-drop", "1", "--batch-sizes", "1,8",
        "--concurrency", "1,4",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = _sent(gateway, "POST", "/benchmarks")
    assert (body["p95_ms"], body["batch_sizes"], body["concurrency"]) == (20.0, [1, 8], [1, 4])
    assert "onnxruntime-cpu fp32 batch 8 x4: p95" in result.stderr
    assert "8/8" in result.stderr  # 2 engines x 2 batch sizes x 2 concurrency levels
    out = result.stdout
    assert "Measurements" in out and "unavailable: no NVIDIA GPU" in out
    assert "recommended     onnxruntime-cpu fp32 at batch 1, concurrency 1" in out
    assert "max batch 8, preferred 1, queue delay 500 us" in out

    strict = cvops("bench", "net:1", "--p95-ms", "0.5", "--json")
    view = msgspec.json.decode(strict.stdout, type=BenchmarkView)
    assert view.recommendation is not None and not view.recommendation.met_sla
    assert "nothing meets the SLA" in cvops("benchmarks", "show", view.job_id).stdout

    gateway.benchmark_outcome = "failed"
    failed = cvops("bench", "net:1")
    assert failed.exit_code == 1 and "error: benchmark failed:" in failed.stderr
    assert cvops("bench", "net:1", "--batch-sizes", "one").exit_code == 2


# -- the pieces under the commands --------------------------------------------------------


def test_a_batcher_without_preferred_sizes_says_none(cvops: Invoke, gateway: FakeGateway) -> None:
    made = cvops("bench", "net:1", "--p95-ms", "20", "--batch-sizes", "1,8", "--json")
    view = msgspec.json.decode(made.stdout, type=BenchmarkView)
    assert view.recommendation is not None and view.recommendation.batcher is not None
    no_preferred = msgspec.structs.replace(view.recommendation.batcher, preferred_batch_sizes=[])
    view.recommendation = msgspec.structs.replace(view.recommendation, batcher=no_preferred)
    gateway.benchmarks[view.job_id] = view
    shown = cvops("benchmarks", "show", view.job_id)
    assert shown.exit_code == 0, shown.output
    assert "max batch 8, preferred none, queue delay 500 us" in shown.stdout
    assert "preferred ," not in shown.stdout

    deployed = cvops("deploy", "net:1", "--name", "batched", "--max-batch-size", "8")
    assert deployed.exit_code == 0, deployed.output
    assert "max 8, preferred none, queue delay" in cvops("deployments", "show", "batched").stdout


def test_training_progress_draws_a_bar_per_generation_and_trial_and_counts_a_trial_once(
    gateway: FakeGateway, transport: httpx.MockTransport
) -> None:
    gateway._add_dataset("shapes", "admin", {}, "shapes.zip", 100)
    client = Client("http://gw.test", gateway.token_for("admin"), transport=transport)
    created = client.create_job(CreateJob(dataset="shapes", arch="resnet-mini", epochs=3))
    events = list(parse_sse(gateway.events[created.correlation_id].splitlines()))
    bars = progress.bars(Console(file=io.StringIO(), force_terminal=True, width=120))
    tracker = progress.TrainingProgress(bars, created.job_id)

    def feed(until: str) -> None:
        while events:
            _seq, event_type, data = events.pop(0)
            tracker.update(event_type, data)
            if event_type.startswith(until):
                return

    def task(description: str) -> tuple[float, float | None]:
        (found,) = [t for t in bars.tasks if t.description.strip().startswith(description)]
        return found.completed, found.total

    feed("training.generation_started")
    assert [t.description for t in bars.tasks] == [
        f"job {created.job_id}",
        "generation 1/2",
        "  trial 1.1 queued",
        "  trial 1.2 queued",
    ]
    feed("trial.progressed")
    assert task("trial 1.1") == (1, 3)
    feed("trial.completed")
    assert task("trial 1.1 done 80.00%") == (3, 3) and task("generation 1/2") == (1, 2)
    story = parse_sse(gateway.events[created.correlation_id].splitlines())
    twice = next(e for e in story if e.type.startswith("trial.completed"))
    assert tracker.update(twice.type, {**twice.data, "trial_id": f"{created.job_id}-g0-t0"}) is None
    assert task(f"job {created.job_id}") == (1, 4)  # the redelivered end did not count
    feed("training.generation_completed")
    assert not [t for t in bars.tasks if "trial 1." in t.description]
    feed("training.completed")
    assert tracker.status == "completed" and task(f"job {created.job_id}") == (4, 4)


def test_follow_resumes_after_the_last_event_when_the_feed_breaks_off(
    gateway: FakeGateway,
) -> None:
    gateway._add_dataset("shapes", "admin", {}, "shapes.zip", 100)
    seen_last_ids: list[str | None] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/events/"):
            seen_last_ids.append(request.headers.get("last-event-id"))
            full = gateway.handle(request)
            if len(seen_last_ids) == 1:  # the first connection ends after two events
                first_two = full.text.split("\n\n")[:2]
                return httpx.Response(200, content="\n\n".join(first_two) + "\n\n")
            return full
        return gateway.handle(request)

    client = Client(
        "http://gw.test", gateway.token_for("admin"), transport=httpx.MockTransport(flaky)
    )
    created = client.create_job(CreateJob(dataset="shapes", arch="resnet-mini"))
    until = progress.ends_with(progress.TRAINING_ENDS, "job_id", created.job_id)
    types = [t for _seq, t, _data in client.follow(created.correlation_id, until, retry_delay_s=0)]
    assert seen_last_ids == [None, "2"]  # resumed after the last event seen
    assert types[-1] == "training.completed.v1"

    with pytest.raises(CvopsError) as caught:
        nothing = progress.ends_with(("never.happens",), "job_id", "x")
        list(client.follow(created.correlation_id, nothing, reconnects=1, retry_delay_s=0))
    assert caught.value.code == "feed_ended"
