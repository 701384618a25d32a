"""Deployment rules on plain structs: the API's status and the router's phase from events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.api import CreateDeployment, EngineArtifactView
from cvops.contracts.conversion import (
    BatcherAdvice,
    BenchmarkCompleted,
    BenchmarkRequested,
    BenchmarkRow,
    GateResult,
    ParityNumbers,
)
from cvops.contracts.deployment import (
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
    ServedArtifact,
)
from cvops.domain import deployment as rules
from cvops.domain.benchmark import BenchmarkState
from cvops.domain.errors import Conflict, Forbidden, Invalid, NotFound
from cvops.domain.identity import UserState

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def stamp(i: int = 0) -> Stamp:
    return Stamp(now=T0 + timedelta(seconds=i), actor="ann", correlation_id=f"c{i}")


def requested(version: int, i: int = 0, **kw: Any) -> DeploymentRequested:
    return DeploymentRequested(
        **stamp(i).envelope(f"r{version}"), deployment="d", model_name="m", version=version, **kw
    )


def ready(version: int, i: int = 0) -> DeploymentReady:
    return DeploymentReady(
        **stamp(i).envelope(f"ok{version}"),
        deployment="d",
        model_name="m",
        version=version,
        instances=["t1"],
    )


def failed(version: int, i: int = 0) -> DeploymentFailed:
    return DeploymentFailed(
        **stamp(i).envelope(f"f{version}"),
        deployment="d",
        model_name="m",
        version=version,
        reason="bad",
    )


def given(*events: Event) -> rules.DeploymentState | None:
    state = None
    for event in events:
        state = rules.evolve_deployment(state, event)
    return state


def test_a_request_is_pending_then_ready() -> None:
    state = given(requested(1))
    assert state is not None
    assert (state.status, state.phase, state.pending_version) == ("requested", "pending", 1)
    state = given(requested(1), ready(1, 1))
    assert state is not None
    assert (state.status, state.phase, state.serving_version, state.instances) == (
        "ready",
        "ready",
        1,
        ["t1"],
    )
    assert state.routable and state.updated_at == T0 + timedelta(seconds=1)


def test_a_rolling_update_keeps_serving_until_ready_and_after_a_failure() -> None:
    state = given(requested(1), ready(1), requested(2, 2))
    assert state is not None
    assert state.status == "requested" and state.requested.version == 2
    assert (state.phase, state.serving.version, state.pending_version) == ("ready", 1, 2)
    state = rules.evolve_deployment(state, failed(2, 3))
    assert state is not None
    assert (state.status, state.reason) == ("failed", "bad")
    assert (state.phase, state.serving.version, state.pending_version) == ("ready", 1, None)
    assert state.serving_version == 1


def test_a_first_request_that_fails_is_failed_and_can_be_requested_again() -> None:
    state = given(requested(1), failed(1))
    assert state is not None and (state.status, state.phase) == ("failed", "failed")
    state = rules.evolve_deployment(state, requested(2, 2))
    assert state is not None and (state.phase, state.serving.version) == ("pending", 2)


def test_degraded_only_from_ready_for_the_router() -> None:
    degraded = DeploymentDegraded(**stamp(5).envelope("dg"), deployment="d", reason="down")
    state = given(requested(1), degraded)
    assert state is not None and (state.status, state.phase) == ("degraded", "pending")
    state = given(requested(1), ready(1), degraded)
    assert state is not None and (state.phase, state.serving_reason) == ("degraded", "down")


def test_retiring_then_retired() -> None:
    retire = DeploymentRetireRequested(**stamp(3).envelope("rr"), deployment="d", reason="bye")
    retired = DeploymentRetired(**stamp(4).envelope("rd"), deployment="d", reason="bye")
    state = given(requested(1), ready(1), retire)
    assert state is not None and (state.status, state.phase) == ("retiring", "retiring")
    state = rules.evolve_deployment(state, retired)
    assert state is not None
    assert (state.status, state.phase, state.serving_version, state.instances) == (
        "retired",
        "retired",
        None,
        [],
    )


def test_events_without_a_deployment_change_nothing() -> None:
    assert given(failed(1)) is None
    assert given(DeploymentDegraded(**stamp().envelope("x"), deployment="d", reason="r")) is None


def test_applying_an_event_twice_changes_nothing() -> None:
    log: list[Event] = [
        requested(1),
        ready(1, 1),
        requested(2, 2),
        failed(2, 3),
        DeploymentDegraded(**stamp(4).envelope("dg"), deployment="d", reason="down"),
        DeploymentRetireRequested(**stamp(5).envelope("rr"), deployment="d"),
        DeploymentRetired(**stamp(6).envelope("rd"), deployment="d"),
    ]
    state = None
    for event in log:
        once = rules.evolve_deployment(state, event)
        assert rules.evolve_deployment(once, event) == once
        state = once


def body(**kw: Any) -> CreateDeployment:
    return CreateDeployment(model_name="m", version=1, **kw)


def test_a_request_is_checked_against_the_model_versions() -> None:
    (event,) = rules.request_deployment(body(), canary=None, formats={1: "onnx"}, stamp=stamp())
    assert isinstance(event, DeploymentRequested) and event.deployment == "m"
    with pytest.raises(NotFound, match="no version 1"):
        rules.request_deployment(body(), canary=None, formats={}, stamp=stamp())
    with pytest.raises(Invalid, match="convert it to ONNX"):
        rules.request_deployment(body(), canary=None, formats={1: "torchscript"}, stamp=stamp())
    canary = Canary(model_version=2, weight_percent=10)
    with pytest.raises(NotFound, match="no version 2"):
        rules.request_deployment(body(), canary=canary, formats={1: "onnx"}, stamp=stamp())


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"engine": "magic"}, "unknown engine"),
        ({"preferred_batch_sizes": [16]}, "outside 1..max_batch_size"),
        ({"instance_count": 0}, "instance_count"),
        ({"deployment": "a b"}, "invalid deployment name"),
        ({"deployment": "x" * 65}, "invalid deployment name"),  # the stricter 64
        ({"max_queue_delay_us": 10_000_001}, "max_queue_delay_us"),  # the router's bound
        ({"max_batch_size": 1025}, "max_batch_size"),
    ],
)
def test_bad_requests_are_invalid(change: dict[str, Any], why: str) -> None:
    with pytest.raises(Invalid, match=why):
        rules.request_deployment(body(**change), canary=None, formats={1: "onnx"}, stamp=stamp())


def test_canaries() -> None:
    assert rules.parse_canary("m:2=10%", "m") == Canary(model_version=2, weight_percent=10)
    for bad, why in (("o:2=10%", "same model"), ("m:2=100%", "between 0 and 100"), ("x", "look")):
        with pytest.raises(Invalid, match=why):
            rules.parse_canary(bad, "m")
    same = requested(1, canary=Canary(model_version=1, weight_percent=5))
    with pytest.raises(Invalid, match="must differ"):
        rules.check_request(same, {1: "onnx"})
    heavy = requested(1, canary=Canary(model_version=2, weight_percent=100))
    with pytest.raises(Invalid, match="strictly"):
        rules.check_request(heavy, {1: "onnx", 2: "onnx"})


def test_only_active_engineers_and_admins_deploy() -> None:
    rules.check_deployer(UserState(username="e", role="engineer", created_at=T0), "e")
    with pytest.raises(Forbidden, match="not a known user"):
        rules.check_deployer(None, "x")
    with pytest.raises(Forbidden, match="needs role engineer or admin"):
        rules.check_deployer(UserState(username="v", role="viewer", created_at=T0), "v")
    off = UserState(username="e", role="engineer", disabled=True, created_at=T0)
    with pytest.raises(Forbidden):
        rules.check_deployer(off, "e")


def test_retirement() -> None:
    live = given(requested(1), ready(1))
    (event,) = rules.retire_deployment(live, stamp=stamp(9))
    assert isinstance(event, DeploymentRetireRequested)
    retiring = rules.evolve_deployment(live, event)
    assert rules.retire_deployment(retiring, stamp=stamp(9)) == []
    with pytest.raises(NotFound):
        rules.retire_deployment(None, stamp=stamp())
    gone = rules.evolve_deployment(
        retiring, DeploymentRetired(**stamp(10).envelope("rd"), deployment="d")
    )
    with pytest.raises(Conflict):
        rules.retire_deployment(gone, stamp=stamp())
    rules.check_retirement("ready", "d")
    for phase in (None, "retired", "failed"):
        with pytest.raises(NotFound, match="is served"):
            rules.check_retirement(phase, "d")


# -- serving artifacts -------------------------------------------------------------------------


def ref(sha: str) -> ArtifactRef:
    return ArtifactRef(sha256=sha * 64, size=1)


PARITY = ParityNumbers(
    n_images=100, max_abs_error=0.02, mean_abs_error=0.01, max_rel_error=0.1, top1_agreement=0.97
)


def produced(target: str, sha: str, i: int = 0, job: str = "j1", fmt: str = "onnx") -> Any:
    precision = {"int8": "int8", "openvino-int8": "int8", "fp16": "fp16"}.get(target, "fp32")
    return EngineArtifactView(
        job_id=job,
        target=target,
        format=fmt,
        precision=precision,
        artifact=ref(sha),
        parity=PARITY,
        gate=GateResult(
            passed=True, reason="", basis="accuracy", drop_points=0, max_accuracy_drop=1
        ),
        dataset="d",
        dataset_version=1,
        input_shape=[-1, 3, 8, 8],
        probe=ref("p"),
        created_at=T0 + timedelta(seconds=i),
    )


def choose(engine: str, precision: str, made: list[Any], **kw: Any) -> ServedArtifact:
    return rules.choose_artifact(
        "m", 1, engine, precision, source_format="onnx", source=ref("s"), produced=made, **kw
    )


def test_an_engine_at_a_precision_serves_the_newest_artifact_of_its_target() -> None:
    made = [produced("int8", "a", 0), produced("onnx", "b", 1), produced("int8", "c", 2, "j2")]
    int8 = choose("onnxruntime-cpu", "int8", made)
    assert (int8.target, int8.artifact.sha256[0], int8.conversion_job) == ("int8", "c", "j2")
    assert int8.parity == PARITY and int8.probe == ref("p")
    # of one conversion job, or made before a benchmark started
    assert choose("onnxruntime-cpu", "int8", made, conversion_job="j1").artifact == ref("a")
    assert choose("onnxruntime-cpu", "int8", made, made_by=T0).artifact == ref("a")
    assert choose("onnxruntime-cpu", "fp32", made).target == "onnx"
    # FP32 ONNX Runtime of an ONNX version without a conversion: the version's own file
    source = choose("onnxruntime-cpu", "fp32", [])
    assert (source.target, source.artifact, source.probe) == (rules.SOURCE, ref("s"), None)
    ir = produced("openvino", "o", fmt="openvino-ir")
    assert choose("openvino-cpu", "fp32", [ir, *made]).format == "openvino-ir"


@pytest.mark.parametrize(
    ("engine", "precision", "why"),
    [
        ("onnxruntime-cpu", "int8", "no produced int8 artifact.*cvops convert m:1 --targets int8"),
        ("tensorrt", "fp16", "on a host with TensorRT"),
        ("tensorrt", "fp32", "tensorrt serves fp16, int8, not fp32"),
        ("openvino-cpu", "fp16", "serves fp32, int8"),
        ("magic", "fp32", "unknown engine"),
        ("onnxruntime-cpu", "fp8", "unknown precision"),
    ],
)
def test_what_has_no_artifact_is_refused_naming_what_is_missing(
    engine: str, precision: str, why: str
) -> None:
    with pytest.raises(Invalid, match=why):
        choose(engine, precision, [])


def bench(status: str = "completed", pick: BenchmarkRow | None = None) -> BenchmarkState:
    req = BenchmarkRequested(
        **stamp(5).envelope("b"), job_id="b1", model_name="m", version=1, conversion_job="j1"
    )
    state = BenchmarkState(job_id="b1", request=req, status=status)  # type: ignore[arg-type]
    if status == "completed":
        state.result = BenchmarkCompleted(
            **stamp(9).envelope("end"),
            job_id="b1",
            model_name="m",
            version=1,
            met_sla=pick is not None,
            reason="fastest within the SLA",
            pick=pick,
            batcher=BatcherAdvice(
                preferred_batch_sizes=[4, 8], max_batch_size=8, max_queue_delay_us=700, reason=""
            ),
        )
    return state


ROW = BenchmarkRow(
    engine="onnxruntime-cpu", precision="int8", artifact="int8", device="cpu", batch_size=1,
    concurrency=4,
)  # fmt: skip


def test_a_benchmarks_pick_becomes_the_deployment_settings() -> None:
    rec = rules.recommendation(bench(pick=ROW), "b1", "m", 1)
    assert (rec.engine, rec.precision, rec.conversion_job, rec.made_by) == (
        "onnxruntime-cpu",
        "int8",
        "j1",
        T0 + timedelta(seconds=5),
    )
    b = rules.with_recommendation(body(), rec)
    assert (b.engine, b.precision, b.from_benchmark) == ("onnxruntime-cpu", "int8", "b1")
    assert (b.max_batch_size, b.preferred_batch_sizes, b.max_queue_delay_us) == (8, [4, 8], 700)
    (event,) = rules.request_deployment(
        b,
        canary=None,
        formats={1: "onnx"},
        stamp=stamp(),
        served=choose("onnxruntime-cpu", "int8", [produced("int8", "a")]),
    )
    assert isinstance(event, DeploymentRequested)
    assert (event.benchmark_id, event.precision, event.served.target) == ("b1", "int8", "int8")  # type: ignore[union-attr]
    with pytest.raises(Invalid, match="engine 'openvino-cpu' was given beside"):
        rules.with_recommendation(body(engine="openvino-cpu"), rec)
    assert (
        rules.with_recommendation(body(engine="onnxruntime-cpu"), rec).engine == "onnxruntime-cpu"
    )


def test_a_benchmark_without_a_servable_pick_is_refused() -> None:
    with pytest.raises(NotFound, match="no benchmark"):
        rules.recommendation(None, "b9", "m", 1)
    with pytest.raises(Invalid, match="measured m:1, not m:2"):
        rules.recommendation(bench(pick=ROW), "b1", "m", 2)
    with pytest.raises(Conflict, match="is running"):
        rules.recommendation(bench("running"), "b1", "m", 1)
    with pytest.raises(Conflict, match="nothing within its SLA"):
        rules.recommendation(bench(pick=None), "b1", "m", 1)
    torch = msgspec.structs.replace(ROW, engine="torch-compiled")
    with pytest.raises(Invalid, match="Triton does not serve"):
        rules.recommendation(bench(pick=torch), "b1", "m", 1)


def test_recommended_is_the_newest_completed_benchmark_of_the_version() -> None:
    old, new, other = bench(pick=ROW), bench(pick=ROW), bench(pick=ROW)
    new.job_id, new.finished_at = "b2", T0 + timedelta(hours=1)
    old.finished_at = T0
    other.job_id = "b3"
    other.request = msgspec.structs.replace(other.request, version=2)
    other.finished_at = T0 + timedelta(hours=2)
    assert rules.newest_completed([old, new, other, bench("failed")], "m", 1) == "b2"
    with pytest.raises(NotFound, match="no completed benchmark"):
        rules.newest_completed([bench("running")], "m", 1)


def test_a_canary_of_another_engine_of_the_same_version() -> None:
    canary = rules.parse_canary("m:1@int8=10%", "m")
    assert (canary.model_version, canary.engine, canary.precision) == (1, None, "int8")
    assert rules.parse_canary("m:1@openvino-cpu/int8=5", "m").engine == "openvino-cpu"
    request = requested(1, canary=canary)
    primary, arm = rules.arms(request)
    assert (primary.slot, arm.slot, arm.precision) == (1, rules.CANARY_SLOT + 1, "int8")
    rules.check_request(request, {1: "onnx"})
    other = rules.arms(requested(1, canary=Canary(model_version=2, weight_percent=5)))
    assert [a.slot for a in other] == [1, 2]
    with pytest.raises(Invalid, match="must differ"):
        rules.check_request(
            requested(1, canary=rules.parse_canary("m:1@fp32=5%", "m")), {1: "onnx"}
        )


def test_the_serving_check_allows_the_records_error_and_no_more() -> None:
    served = choose("onnxruntime-cpu", "int8", [produced("int8", "a")])
    ok = rules.serving_check(16, 1.0, 0.025, served)
    assert ok.passed and "matches its record" in ok.reason
    assert (ok.recorded_max_abs_error, ok.recorded_top1_agreement) == (0.02, 0.97)
    assert not rules.serving_check(16, 1.0, 0.05, served).passed  # > 1.5 x 0.02 + 0.001
    low = rules.serving_check(16, 0.75, 0.01, served)  # < 0.97 - 0.1 - 1/16
    assert not low.passed and "top-1 agreement 0.750" in low.reason


def test_ready_carries_the_checks_and_the_view_of_the_state_keeps_them() -> None:
    check = rules.serving_check(
        16, 1.0, 0.0, choose("onnxruntime-cpu", "int8", [produced("int8", "a")])
    )
    event = DeploymentReady(
        **stamp(1).envelope("ok"), deployment="d", model_name="m", version=1,
        precision="int8", checks={"primary": check},
    )  # fmt: skip
    state = given(requested(1, precision="int8"), event)
    assert state is not None and state.checks == {"primary": check}
    assert state.serving.precision == "int8"
