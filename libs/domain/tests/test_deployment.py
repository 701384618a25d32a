"""Deployment rules on plain structs: the API's status and the router's phase from events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cvops.contracts import Event, Stamp
from cvops.contracts.api import CreateDeployment
from cvops.contracts.deployment import (
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.domain import deployment as rules
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
