"""Pure parts of the router: deployment plans, canary choice, tokens, the projection,
the circuit breaker, least-outstanding picking, the gRPC wire rewrite, metrics merging
and image preprocessing. No broker, no Triton."""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp, TensorSpec
from cvops.contracts.deployment import (
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.contracts.identity import TokenIssued, TokenRevoked, UserCreated
from cvops.contracts.registry import ModelVersionAdded
from cvops.core import ProjectionRunner, dump_rows
from cvops.domain.deployment import DeploymentSpec, arms
from cvops.domain.identity import UserState
from cvops.inference_router import handlers, identity, predict, projection
from cvops.inference_router.grpc_api import scan, string_field, with_version
from cvops.inference_router.metrics import relabel_triton
from cvops.inference_router.projection import RouterProjection
from cvops.inference_router.routing import CircuitBreaker, Instance, Pool, parse_instance

T0 = datetime(2026, 5, 1, tzinfo=UTC)
SPEC = [TensorSpec(name="input", shape=[-1, 3, 8, 8], dtype="float32")]
OUT = [TensorSpec(name="logits", shape=[-1, 4], dtype="float32")]
ADMIN = UserState(username="ann", role="admin", created_at=T0, created_by="ann")


def stamp(i: int = 0, actor: str = "ann") -> Stamp:
    return Stamp(now=T0 + timedelta(seconds=i), actor=actor, correlation_id=f"c{i}")


def version_added(v: int, fmt: str = "onnx") -> ModelVersionAdded:
    return ModelVersionAdded(
        **stamp(v, "registry").envelope(f"v{v}"),
        model_name="cnn",
        version=v,
        upload_id=f"u{v}",
        artifact=ArtifactRef(sha256=f"{v}" * 64, size=10),
        format=fmt,  # type: ignore[arg-type]
        inputs=SPEC,
        outputs=OUT,
        parameter_count=1,
        lineage=Lineage(hyperparameters={"classes": ["a", "b", "c", "d"]}),
    )


def requested(version: int = 1, **kw: object) -> DeploymentRequested:
    values: dict[str, object] = {"deployment": "digits", "model_name": "cnn", "version": version}
    values.update(kw)
    return DeploymentRequested(**stamp(10 + version).envelope("req"), **values)  # type: ignore[arg-type]


def rows(*versions: int, fmt: str = "onnx") -> dict[int, projection.ModelVersionRow | None]:
    out: dict[int, projection.ModelVersionRow | None] = {}
    for v in versions:
        e = version_added(v, fmt)
        out[v] = projection.ModelVersionRow(
            model_name="cnn",
            version=v,
            format=e.format,
            artifact_sha256=e.artifact.sha256,
            artifact_size=10,
            artifact_filename="",
            inputs=SPEC,
            outputs=OUT,
            hyperparameters={},
        )
    return out


# -- deployment decisions ---------------------------------------------------------------


def test_a_first_deployment_loads_only_the_wanted_versions() -> None:
    plan = handlers.plan_deployment(
        requested(1, canary=Canary(model_version=2, weight_percent=10)),
        None,
        rows(1, 2),
        ADMIN,
        stamp(),
    )
    assert isinstance(plan, handlers.DeployPlan)
    assert plan.versions == (1, 2) and plan.transition == (1, 2) and plan.retiring == ()


def test_a_rolling_update_loads_old_and_new_side_by_side() -> None:
    current = _row(version=1)
    plan = handlers.plan_deployment(requested(2), current, rows(2), ADMIN, stamp())
    assert isinstance(plan, handlers.DeployPlan)
    assert plan.transition == (1, 2) and plan.versions == (2,) and plan.retiring == (1,)


@pytest.mark.parametrize(
    ("request_kw", "versions", "actor", "needle"),
    [
        ({}, {}, ADMIN, "has no version 1"),
        ({}, rows(1, fmt="safetensors"), ADMIN, "convert it to ONNX"),
        ({}, rows(1), UserState(username="vic", role="viewer", created_at=T0), "forbidden"),
        ({}, rows(1), None, "not a known user"),
        ({"engine": "magic"}, rows(1), ADMIN, "unknown engine"),
        ({"deployment": "bad name"}, rows(1), ADMIN, "invalid deployment name"),
        ({"preferred_batch_sizes": [64]}, rows(1), ADMIN, "outside 1..max_batch_size"),
        ({"canary": Canary(model_version=1, weight_percent=5)}, rows(1), ADMIN, "must differ"),
        ({"canary": Canary(model_version=2, weight_percent=100)}, rows(1, 2), ADMIN, "strictly"),
    ],
)
def test_bad_deployment_requests_are_refused_with_a_reason(
    request_kw: dict[str, object],
    versions: dict[int, projection.ModelVersionRow | None],
    actor: UserState | None,
    needle: str,
) -> None:
    verdict = handlers.plan_deployment(requested(1, **request_kw), None, versions, actor, stamp())
    assert isinstance(verdict, DeploymentFailed)
    assert needle in verdict.reason


def test_verdicts_have_deterministic_ids() -> None:
    r = requested(1)
    s = stamp().caused_by(r, actor=handlers.ACTOR)
    assert handlers.deployment_ready(r, ["local"], s) == handlers.deployment_ready(r, ["local"], s)


def test_retiring_an_unknown_deployment_is_refused() -> None:
    r = DeploymentRetireRequested(**stamp().envelope("r"), deployment="ghost")
    assert isinstance(handlers.plan_retirement(r, None, ADMIN, stamp()), DeploymentFailed)
    assert isinstance(handlers.plan_retirement(r, _row(1), ADMIN, stamp()), DeploymentRetired)


def test_tritons_python_traceback_is_trimmed() -> None:
    msg = "load failed for model 'm': Internal: bad\n\nAt:\n  /x/model.py(3): initialize\n"
    assert handlers.triton_message(msg) == "load failed for model 'm': Internal: bad"


# -- canary and tokens ----------------------------------------------------------------------


def test_canary_choice_is_sticky_per_key_and_weighted_overall() -> None:
    d = _row(version=1, canary_version=2, canary_weight_bp=2500)
    assert {handlers.choose_version(d, "alice", 0.0) for _ in range(10)} == {
        handlers.choose_version(d, "alice", 0.99)
    }
    keyed = Counter(handlers.choose_version(d, f"user-{i}", 0.0) for i in range(20_000))
    assert abs(keyed[2] / 20_000 - 0.25) < 0.02
    rng = np.random.default_rng(0)
    drawn = Counter(handlers.choose_version(d, None, float(rng.random())) for _ in range(20_000))
    assert abs(drawn[2] / 20_000 - 0.25) < 0.02
    assert handlers.choose_version(_row(version=3), None, 0.0) == 3


# -- projection -------------------------------------------------------------------------


def history() -> list[Event]:
    r1 = requested(1)
    r2 = requested(2, canary=Canary(model_version=1, weight_percent=10), public=True)
    s = stamp(30, handlers.ACTOR)
    return [
        UserCreated(**stamp(0).envelope("u"), username="ann", role="admin", password_hash="x"),
        TokenIssued(
            **stamp(1).envelope("t"),
            username="ann",
            token_id="t1",
            token_sha256="ab" * 32,
            kind="session",
            expires_at="2030-01-01T00:00:00Z",
        ),
        version_added(1),
        version_added(2),
        r1,
        handlers.deployment_ready(r1, ["local"], s),
        r2,
        DeploymentDegraded(**s.envelope("d"), deployment="digits", reason="triton died"),
        handlers.deployment_ready(r2, ["local"], stamp(31, handlers.ACTOR)),
        TokenRevoked(**stamp(40).envelope("rv"), username="ann", token_id="t1"),
    ]


def test_projection_rows_after_a_rolling_update(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, RouterProjection(), tmp_path / "r.sqlite")
    # identity's events come from their own stream, into their own file
    who = ProjectionRunner(None, identity.projection, tmp_path / "identity.sqlite")
    log = list(enumerate(history(), start=1))
    runner.apply_batch([(seq, e) for seq, e in log if e.context != "identity"])
    who.apply_batch([(seq, e) for seq, e in log if e.context == "identity"])
    with who.session() as s:
        ((token, user),) = identity.all_tokens(s)
        assert token.revoked and token.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
        assert user == ADMIN
    with runner.session() as s:
        d = projection.deployment(s, "digits")
        assert d is not None
        assert (d.status, d.version, d.canary_version, d.canary_weight_bp) == ("ready", 2, 1, 1000)
        assert d.versions == (2, 1) and d.public and d.pending_version is None
        mv = projection.model_version(s, "cnn", 2)
        assert mv is not None and mv.inputs == SPEC and mv.hyperparameters["classes"][0] == "a"


def test_a_failed_update_keeps_the_serving_spec(tmp_path: Path) -> None:
    runner = ProjectionRunner(None, RouterProjection(), tmp_path / "r.sqlite")
    r1, r3 = requested(1), requested(3)
    events: list[Event] = [
        r1,
        handlers.deployment_ready(r1, [], stamp(20)),
        r3,
        handlers.deployment_failed(r3, "bad onnx", stamp(21)),
    ]
    runner.apply_batch(list(enumerate(events, start=1)))
    with runner.session() as s:
        d = projection.deployment(s, "digits")
    assert d is not None and (d.status, d.version, d.reason) == ("ready", 1, "bad onnx")


def test_applying_the_same_events_twice_leaves_identical_rows(tmp_path: Path) -> None:
    once = ProjectionRunner(None, RouterProjection(), tmp_path / "a.sqlite")
    once.apply_batch(list(enumerate(history(), start=1)))
    twice = ProjectionRunner(None, RouterProjection(), tmp_path / "b.sqlite")
    twice.apply_batch(list(enumerate(history(), start=1)))
    twice.apply_batch(list(enumerate(history(), start=1)))
    assert dump_rows(once.engine, projection.metadata) == dump_rows(
        twice.engine, projection.metadata
    )


# -- routing ------------------------------------------------------------------------------


def test_circuit_breaker_opens_then_lets_one_probe_through() -> None:
    now = [0.0]
    b = CircuitBreaker(threshold=3, cooldown_s=1.0, clock=lambda: now[0])
    for _ in range(3):
        b.failure()
    assert b.state == "open" and not b.available()
    now[0] = 1.5
    assert b.available()
    b.acquire()
    assert not b.available()  # the probe is in flight
    b.failure()
    assert b.state == "open"
    now[0] = 3.0
    b.acquire()
    b.success()
    assert b.state == "closed" and b.available()


def test_pool_picks_the_least_outstanding_instance_that_serves_the_version() -> None:
    a, b, c = (Instance(name=n, http=n, grpc=n, metrics=n, up=True) for n in "abc")
    a.loaded["m"], b.loaded["m"], c.loaded["m"] = (1,), (1, 2), (2,)
    pool = Pool([a, b, c])
    a.outstanding, b.outstanding = 5, 1
    assert pool.pick("m", 1) is b
    b.outstanding = 9
    assert pool.pick("m", 1) is a
    assert pool.pick("m", 1, exclude=(a,)) is b
    assert pool.pick("m", 2) is c
    c.mark_down()
    assert pool.pick("m", 2) is b
    assert pool.pick("other", None) is None


def test_instances_parse_from_urls() -> None:
    i = parse_instance("http://triton:8000")
    assert (i.http, i.grpc, i.metrics) == ("triton:8000", "triton:8001", "triton:8002")
    j = parse_instance("10.0.0.2:9000:9100:9200")
    assert (j.http, j.grpc, j.metrics) == ("10.0.0.2:9000", "10.0.0.2:9100", "10.0.0.2:9200")


def test_external_tritons_get_the_backend_the_setting_names() -> None:
    from cvops.core import load_settings
    from cvops.inference_router.app import external_backend

    assert external_backend(load_settings({})) == "onnxruntime"  # the NGC image's native one
    env = {"CVOPS_TRITON_BACKEND": "python"}  # tritonservers with only the python backend
    assert external_backend(load_settings(env)) == "python"
    with pytest.raises(ValueError, match="CVOPS_TRITON_BACKEND"):
        external_backend(load_settings({"CVOPS_TRITON_BACKEND": "pytorch"}))


def test_grpc_rewrite_sets_the_version_and_keeps_the_tensors() -> None:
    req = service_pb2.ModelInferRequest(model_name="digits", id="req-7")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 2])
    req.raw_input_contents.append(np.arange(2, dtype=np.float32).tobytes())
    raw = req.SerializeToString()
    fields = scan(raw)
    assert string_field(raw, fields, 1) == "digits" and string_field(raw, fields, 3) == "req-7"
    assert string_field(raw, fields, 2) == ""
    for body in (raw, with_version(raw, fields, "2")):
        again = with_version(body, scan(body), "3")
        parsed = service_pb2.ModelInferRequest.FromString(again)
        assert parsed.model_version == "3" and parsed.model_name == "digits"
        assert parsed.raw_input_contents == req.raw_input_contents
        assert parsed.inputs == req.inputs and parsed.id == "req-7"


def test_triton_metrics_are_merged_with_an_instance_label() -> None:
    text = (
        "# HELP nv_x Some counter\n# TYPE nv_x counter\n"
        'nv_x{model="m",version="1"} 3\nnv_x{} 1\n'
        "# HELP nv_up gauge\n# TYPE nv_up gauge\nnv_up 1\n"
    )
    merged = relabel_triton([("a", text), ("b", text)])
    lines = merged.splitlines()
    assert lines.count("# TYPE nv_x counter") == 1
    assert 'nv_x{triton_instance="a",model="m",version="1"} 3' in lines
    assert 'nv_x{triton_instance="b"} 1' in lines
    assert 'nv_up{triton_instance="b"} 1' in lines
    assert lines.index("# TYPE nv_up gauge") > lines.index('nv_x{triton_instance="b"} 1')


# -- predict --------------------------------------------------------------------------------


def test_images_are_resized_and_normalised_in_the_model_layout() -> None:
    png = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(png, format="PNG")
    img = predict.decode_image(png.getvalue())
    spec = predict.image_input(SPEC[0], {})
    x = predict.preprocess(img, spec, {})
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32 and np.allclose(x, 1.0)
    hwc = predict.image_input(TensorSpec(name="i", shape=[-1, 8, 8, 1], dtype="FP16"), {})
    y = predict.preprocess(img, hwc, {"mean": [0.5], "std": [0.5]})
    assert y.shape == (1, 8, 8, 1) and y.dtype == np.float16 and np.allclose(y, 1.0)
    with pytest.raises(predict.NotAnImage):
        predict.decode_image(b"GIF89a-but-not-really")


def test_top_k_ranks_by_probability_with_class_names() -> None:
    best = predict.top_k(np.array([0.1, 3.0, 2.0]), ["a", "b", "c"], 2)
    assert [p["label"] for p in best] == ["b", "c"]
    assert 0 < best[1]["score"] < best[0]["score"] < 1
    assert predict.top_k(np.array([0.2, 0.8]), None, 5)[0] == {
        "index": 1,
        "label": "1",
        "score": pytest.approx(0.8),
    }


def _row(
    version: int = 1, canary_version: int | None = None, canary_weight_bp: int = 0
) -> projection.DeploymentRow:
    canary = None
    if canary_version is not None:
        canary = Canary(model_version=canary_version, weight_percent=canary_weight_bp / 100)
    spec = DeploymentSpec(
        model_name="cnn", version=version, engine="onnxruntime-cpu", canary=canary
    )
    return projection.DeploymentRow(
        name="digits",
        status="ready",
        pending_version=None,
        reason="",
        spec=spec,
        arms=tuple(arms(spec)),
    )


def test_ready_event_round_trips_the_spec() -> None:
    r = requested(2, canary=Canary(model_version=1, weight_percent=12.5), max_batch_size=4)
    ready = handlers.deployment_ready(r, ["local"], stamp())
    assert isinstance(ready, DeploymentReady)
    assert ready.canary == r.canary and ready.max_batch_size == 4 and ready.instances == ["local"]
