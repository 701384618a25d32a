"""Training rules on plain structs: given events, when one more arrives (or a command), then
the state (or the decision)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.training import (
    Budget,
    Constraints,
    GenerationCompleted,
    GenerationStarted,
    ParamSpec,
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingCompleted,
    TrainingFailed,
    TrainingRequested,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialProgressed,
    TrialPruned,
    TrialRequested,
    TrialSpec,
    TrialStarted,
)
from cvops.domain.errors import Conflict, Forbidden, Invalid, NotFound
from cvops.domain.training import (
    JobState,
    Sizes,
    budget_sizes,
    cancel_training,
    check_request,
    evolve,
    request_training,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REF = ArtifactRef(sha256="ab" * 32, size=3, filename="m.onnx")
TID = "job-1-g0-t0"


def stamp(key: str, actor: str = "ann") -> dict[str, Any]:
    return Stamp(now=NOW, actor=actor, correlation_id="c-1").envelope(key)


def requested(**fields: Any) -> TrainingRequested:
    base: dict[str, Any] = {"job_id": "job-1", "dataset": "shapes", "arch": "simple-cnn"}
    return TrainingRequested(**stamp("req"), **{**base, **fields})


def generation() -> GenerationStarted:
    spec = TrialSpec(trial_id=TID, index=0, hyperparameters={"lr": 0.1}, genome=[0.5])
    return GenerationStarted(**stamp("g0"), job_id="job-1", generation=0, trials=[spec])


def trial(kind: type, key: str, **fields: Any) -> Any:
    common = {"trial_id": TID, "job_id": "job-1", "generation": 0, "index": 0}
    return kind(**stamp(key), **common, **fields)


def started(attempt: int) -> TrialStarted:
    return trial(
        TrialStarted, f"s{attempt}", attempt=attempt, host="h", device="cpu", parameters=10
    )


def progressed(attempt: int, epoch: int, acc: float = 0.5) -> TrialProgressed:
    return trial(
        TrialProgressed,
        f"p{attempt}/{epoch}",
        attempt=attempt,
        epoch=epoch,
        epochs=5,
        train_loss=1.0,
        val_accuracy=acc,
    )


def completed(acc: float = 0.9) -> TrialCompleted:
    metrics = TrialMetrics(accuracy=acc, latency_ms=1.0, size_bytes=10, parameters=10, epochs=5)
    return trial(
        TrialCompleted,
        "done",
        hyperparameters={"lr": 0.1},
        metrics=metrics,
        onnx=REF,
        weights=REF,
        normalization={},
    )


def given(*events: Event) -> JobState:
    state = None
    for e in events:
        state = evolve(state, e)
    assert state is not None
    return state


# -- evolve -----------------------------------------------------------------------------------


def test_events_of_an_unknown_job_change_nothing() -> None:
    assert evolve(None, generation()) is None


def test_redelivered_trial_is_not_counted_twice() -> None:
    state = given(requested(), generation(), started(1), completed(0.9))
    again = evolve(msgspec.structs.replace(state), completed(0.7))
    assert again is not None
    assert again.counts()["completed"] == 1
    assert again.trials[TID].metrics is not None and again.trials[TID].metrics.accuracy == 0.9


def test_a_trial_s_first_end_wins() -> None:
    state = given(requested(), generation(), started(1), completed())
    state = given_more(state, trial(TrialFailed, "f", reason="late"), started(2))
    assert state.trials[TID].status == "completed" and state.trials[TID].reason == ""
    pruned = given(
        requested(),
        generation(),
        trial(TrialPruned, "pr", epoch=2, val_accuracy=0.1, reason="slow"),
    )
    pruned = given_more(pruned, completed())
    assert pruned.trials[TID].status == "pruned" and pruned.trials[TID].epoch == 2


def given_more(state: JobState, *events: Event) -> JobState:
    for e in events:
        out = evolve(state, e)
        assert out is not None
        state = out
    return state


def test_a_newer_attempt_restarts_the_epoch() -> None:
    state = given(requested(), generation(), started(1), progressed(1, 3, 0.6))
    assert (state.trials[TID].epoch, state.trials[TID].starts) == (3, 1)
    state = given_more(state, started(2))
    t = state.trials[TID]
    assert (t.attempt, t.epoch, t.val_accuracy, t.starts, t.status) == (2, 0, None, 2, "running")


def test_progress_of_an_older_attempt_is_stale() -> None:
    state = given(requested(), generation(), started(1), started(2), progressed(2, 1, 0.4))
    state = given_more(state, progressed(1, 4, 0.9), started(1))
    t = state.trials[TID]
    assert (t.attempt, t.epoch, t.val_accuracy, t.starts) == (2, 1, 0.4, 2)


def test_progress_goes_forward_within_an_attempt() -> None:
    state = given(requested(), generation(), started(1), progressed(1, 3, 0.6))
    state = given_more(state, progressed(1, 2, 0.1))  # a late, older epoch
    assert (state.trials[TID].epoch, state.trials[TID].val_accuracy) == (3, 0.6)


def test_progress_of_a_newer_attempt_before_its_start_restarts_the_trial() -> None:
    state = given(requested(), generation(), started(1), progressed(1, 3))
    state = given_more(state, progressed(2, 1, 0.3), started(2))
    t = state.trials[TID]
    assert (t.attempt, t.epoch, t.val_accuracy, t.starts) == (2, 1, 0.3, 2)


def test_a_trial_request_before_its_generation_still_counts() -> None:
    req = trial(TrialRequested, "tr", arch="simple-cnn", hyperparameters={"lr": 0.1},
                dataset="shapes", dataset_version=1, canonical=REF, classes=["a"], channels=3,
                image_size=[8, 8], objectives=["accuracy"], seed=1, user="ann")  # fmt: skip
    state = given(requested(), req, generation())
    t = state.trials[TID]
    assert (t.status, t.genome) == ("requested", [0.5])
    assert state.generation_trials(0) == [t]


def test_a_job_s_end_is_final() -> None:
    state = given(requested(), TrainingFailed(**stamp("f"), job_id="job-1", reason="boom"))
    state = given_more(
        state,
        TrainingCompleted(
            **stamp("c"),
            job_id="job-1",
            front=[],
            model_name="m",
            trials_completed=0,
            trials_failed=0,
            trials_pruned=0,
        ),
        TrainingCancelRequested(**stamp("cr"), job_id="job-1"),
        generation(),
    )
    assert (state.status, state.reason, state.cancel_requested) == ("failed", "boom", False)
    assert state.finished_at == NOW and state.generations == []


def test_a_completed_generation_keeps_its_first_summary() -> None:
    state = given(requested(), generation())
    done = GenerationCompleted(
        **stamp("gc"), job_id="job-1", generation=0, completed=1, failed=0, pruned=0, front=[TID]
    )
    later = msgspec.structs.replace(done, completed=0, front=[])
    state = given_more(state, done, later)
    gen = state.generation_state(0)
    assert gen is not None and (gen.completed, gen.trials_completed, gen.front) == (True, 1, [TID])


def test_cancelled_has_a_reason() -> None:
    state = given(requested(), TrainingCancelled(**stamp("x"), job_id="job-1", reason=""))
    assert (state.status, state.reason) == ("cancelled", "cancelled")


# -- request checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "sizes"),
    [
        (Budget(), Sizes(8, 3, 24)),
        (Budget(trials=10), Sizes(8, 2, 10)),
        (Budget(trials=3), Sizes(3, 1, 3)),
        (Budget(trials=12, population=4), Sizes(4, 3, 12)),
        (Budget(trials=12, generations=4), Sizes(3, 4, 12)),
        (Budget(population=2, generations=5), Sizes(2, 5, 10)),
    ],
)
def test_a_budget_fills_its_defaults(budget: Budget, sizes: Sizes) -> None:
    assert budget_sizes("search", budget) == sizes
    assert budget_sizes("single", budget) == Sizes(1, 1, 1)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"budget": Budget(trials=0)}, "budget trials must be at least 1"),
        ({"budget": Budget(population=0, generations=2)}, "budget population must be at least 1"),
        ({"budget": Budget(trials=10, population=4)}, "not a multiple of the population 4"),
        ({"budget": Budget(trials=9, population=2, generations=4)}, "contradicts"),
        ({"budget": Budget(trials=20_000)}, "over the limit"),
        ({"budget": Budget(population=1, generations=3)}, "population of at least 2"),
        ({"search_space": {"lr": ParamSpec(kind="float", low=0.1, high=0.01)}}, "inverted"),
        ({"search_space": {"lr": ParamSpec(kind="float", low=0.1, high=0.1)}}, "empty range"),
        ({"search_space": {"lr": ParamSpec(kind="log_float", low=0, high=1)}}, "low > 0"),
        ({"search_space": {"lr": ParamSpec(kind="float", low=0, high=float("inf"))}}, "finite"),
        ({"search_space": {"d": ParamSpec(kind="int", low=1.5, high=3)}}, "whole-number"),
        ({"search_space": {"o": ParamSpec(kind="categorical", choices=[])}}, "no choices"),
        ({"objectives": ["accuracy", "speed"]}, "unknown objective 'speed'"),
        ({"objectives": []}, "at least one objective"),
        ({"objectives": ["latency"]}, "must include accuracy"),
        ({"weights": {"accuracy": 1.0}}, "mode 'weighted'"),
        ({"mode": "weighted", "weights": {"size": 1.0}}, "not searched: size"),
        ({"mode": "weighted", "weights": {"accuracy": -1.0}}, "at least 0"),
        ({"mode": "weighted", "weights": {"accuracy": 0.0}}, "not all be zero"),
        ({"constraints": Constraints(max_latency_ms=0)}, "max_latency_ms must be positive"),
        ({"constraints": Constraints(max_latency_ms=float("inf"))}, "must be positive"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"image_size": 0}, "image_size must be at least 1"),
        ({"max_batches_per_epoch": 0}, "max_batches_per_epoch must be at least 1"),
        ({"register_limit": -1}, "register_limit must not be negative"),
        ({"seed": -1}, "seed must not be negative"),
        ({"target_engine": " "}, "target_engine must not be empty"),
        ({"arch": "../x"}, "invalid architecture"),
        ({"arch": "vgg-huge"}, "unknown architecture 'vgg-huge'"),
        ({"model_name": "a b"}, "invalid model name"),
        ({"job_type": "single", "search_space": {"lr": ParamSpec(kind="float")}}, "not a search"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(fields: dict[str, Any], reason: str) -> None:
    with pytest.raises(Invalid, match=reason.replace("(", r"\(")):
        check_request(requested(**fields))


def test_weights_default_to_one_and_missing_ones_to_zero() -> None:
    assert check_request(requested(mode="weighted")).weights == {"accuracy": 1.0, "latency": 1.0}
    got = check_request(requested(mode="weighted", weights={"accuracy": 2.0}))
    assert got.weights == {"accuracy": 2.0, "latency": 0.0}
    assert check_request(requested()).weights == {}


def test_a_request_fills_the_missing_factor_and_drops_repeated_objectives() -> None:
    req = requested(budget=Budget(trials=24, population=6), objectives=["accuracy", "accuracy"])
    (event,) = request_training(req)
    assert isinstance(event, TrainingRequested)
    assert event.budget == Budget(trials=24, population=6, generations=4)
    assert event.objectives == ["accuracy"] and event.event_id == req.event_id
    (as_given,) = request_training(requested(budget=Budget(trials=2)))
    assert isinstance(as_given, TrainingRequested) and as_given.budget == Budget(trials=2)


def test_a_request_without_a_usable_data_set_is_refused() -> None:
    with pytest.raises(Invalid, match="unknown data set"):
        request_training(requested(), dataset_refusal="unknown data set 'shapes'")


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_is_for_the_owner_or_an_admin_and_only_once() -> None:
    job = given(requested())
    cmd = Stamp(now=NOW, actor="ann", correlation_id="other")
    (cancel,) = cancel_training(job, username="ann", is_admin=False, stamp=cmd)
    assert isinstance(cancel, TrainingCancelRequested) and cancel.correlation_id == "c-1"
    assert cancel_training(job, username="root", is_admin=True, stamp=cmd)
    with pytest.raises(Forbidden):
        cancel_training(job, username="bob", is_admin=False, stamp=cmd)
    asked = given_more(job, cancel)
    assert cancel_training(asked, username="ann", is_admin=False, stamp=cmd) == []
    done = given_more(job, TrainingCancelled(**stamp("x"), job_id="job-1"))
    with pytest.raises(Conflict, match="already cancelled"):
        cancel_training(done, username="ann", is_admin=False, stamp=cmd)
    with pytest.raises(NotFound):
        cancel_training(None, username="ann", is_admin=False, stamp=cmd)
