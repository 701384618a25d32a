"""The coordinator's decisions without a broker: validation, generations, bookkeeping,
ranking, pruning, cancel and the end of a job."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.registry import ModelUploadReceived
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
    TrainingStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialPruned,
    TrialRequested,
    TrialStarted,
)
from cvops.domain.catalog import DatasetVersionState
from cvops.domain.training import JobState, evolve
from cvops.trainer import handlers, search, space
from cvops.trainer.handlers import ArchInfo, Catalog, next_step

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CANONICAL = ArtifactRef(sha256="a" * 64, size=10, media_type="application/x-npz")
ARCH_SPACE = {
    "lr": ParamSpec(kind="log_float", low=1e-3, high=0.3),
    "batch_size": ParamSpec(kind="categorical", choices=[16, 32]),
    "depth": ParamSpec(kind="int", low=1, high=3),
    "width": ParamSpec(kind="float", low=0.25, high=1.0),
}
CATALOG = Catalog(
    datasets={
        "digits": [
            DatasetVersionState(
                name="digits",
                version=1,
                canonical=CANONICAL,
                classes=[str(i) for i in range(10)],
                channels=1,
                image_size=[16, 16],
            )
        ],
        "tiny": [
            DatasetVersionState(
                name="tiny",
                version=1,
                canonical=CANONICAL,
                classes=["a", "b"],
                channels=3,
                image_size=[8, 8],
            )
        ],
    },
    rejections={"broken": "x must be uint8 (N, H, W, C)"},
    architectures={
        "simple-cnn": ArchInfo("simple-cnn", 8, ARCH_SPACE),
        "resnet-mini": ArchInfo("resnet-mini", 16, ARCH_SPACE),
    },
    engines=("onnxruntime-cpu",),
)


def stamp(key: str = "user") -> Stamp:
    return Stamp(now=NOW, actor="alice", correlation_id=f"req-{key}")


def request(**overrides: Any) -> TrainingRequested:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "dataset": "digits",
        "arch": "simple-cnn",
        "budget": Budget(population=4, generations=2),
        "objectives": ["accuracy", "latency"],
        "epochs": 1,
        "seed": 7,
    }
    fields.update(overrides)
    return TrainingRequested(**stamp().envelope("request"), **fields)


def fold(events: list[Event], view: JobState | None = None) -> JobState:
    for i, e in enumerate(events):
        view = evolve(view, e, seq=i + 1 + (view.last_seq if view else 0))
    assert view is not None
    return view


def started_job(**overrides: Any) -> JobState:
    view = fold([request(**overrides)])
    assert next_step(view).kind == "validate"
    view = fold(handlers.validate_request(view, CATALOG, job_stamp(view)), view)
    assert view.status == "running", view.reason
    return view


def job_stamp(view: JobState) -> Stamp:
    return handlers.job_stamp(view, NOW)


def metrics(acc: float, latency: float, params: int = 1000) -> TrialMetrics:
    return TrialMetrics(accuracy=acc, latency_ms=latency, size_bytes=params * 4, parameters=params)


def completed(
    view: JobState, tid: str, acc: float, latency: float, key: str = ""
) -> TrialCompleted:
    t = view.trials[tid]
    return TrialCompleted(
        **stamp(key or tid).envelope(f"done-{tid}-{key}"),
        trial_id=tid,
        job_id=view.job_id,
        generation=t.generation,
        index=t.index,
        hyperparameters=t.hyperparameters,
        metrics=metrics(acc, latency),
        onnx=ArtifactRef(sha256=tid.ljust(64, "0")[:64], size=100),
        weights=ArtifactRef(sha256="b" * 64, size=100),
        normalization={"mean": [0.5], "std": [0.25]},
    )


def failed(view: JobState, tid: str, reason: str = "training diverged") -> TrialFailed:
    t = view.trials[tid]
    return TrialFailed(
        **stamp(tid).envelope(f"failed-{tid}"),
        trial_id=tid,
        job_id=view.job_id,
        generation=t.generation,
        index=t.index,
        reason=reason,
    )


def run_generation(view: JobState, results: dict[int, tuple[float, float] | None]) -> JobState:
    """Start the next generation and end its trials (None: failed)."""
    step = next_step(view)
    assert step.kind == "start"
    view = fold(handlers.start_generation(view, step.generation, job_stamp(view)), view)
    gen = view.generations[-1]
    for i, tid in enumerate(gen.trial_ids):
        r = results.get(i)
        view = fold([completed(view, tid, *r) if r else failed(view, tid)], view)
    step = next_step(view)
    assert step.kind == "complete"
    return fold(handlers.complete_generation(view, step.generation, None, job_stamp(view)), view)


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"arch": "vgg-huge"}, "unknown architecture 'vgg-huge'"),
        ({"dataset": "nope"}, "unknown data set 'nope'"),
        ({"dataset": "broken"}, "data set 'broken' failed validation: x must be uint8"),
        ({"dataset_version": 3}, "has no validated version 3"),
        ({"budget": Budget(trials=0)}, "budget trials must be at least 1"),
        ({"budget": Budget(population=0, generations=2)}, "population must be at least 1"),
        ({"budget": Budget(trials=10, population=4)}, "not a multiple of the population 4"),
        ({"search_space": {"lr": ParamSpec(kind="float", low=0.1, high=0.01)}}, "inverted range"),
        ({"search_space": {"lr": ParamSpec(kind="float", low=0.1, high=0.1)}}, "empty range"),
        ({"search_space": {"batch_size": ParamSpec(kind="categorical", choices=[])}}, "no choices"),
        ({"search_space": {"lr": ParamSpec(kind="log_float", low=0, high=1)}}, "needs low > 0"),
        ({"search_space": {"colour": ParamSpec(kind="float", low=0, high=1)}}, "unknown hyper"),
        ({"arch": "resnet-mini", "dataset": "tiny"}, "image size 8x8 is too small for resnet"),
        ({"image_size": 4}, "too small for simple-cnn"),
        ({"objectives": ["latency"]}, "must include accuracy"),
        ({"objectives": ["accuracy", "beauty"]}, "unknown objective 'beauty'"),
        ({"target_engine": "abacus"}, "unknown target engine"),
        ({"constraints": Constraints(max_latency_ms=-1)}, "must be positive"),
        ({"hyperparameters": {"dropout": 2.0}}, "dropout must be between"),
    ],
)
def test_bad_requests_fail_with_a_reason(overrides: dict[str, Any], reason: str) -> None:
    view = fold([request(**overrides)])
    [event] = handlers.validate_request(view, CATALOG, job_stamp(view))
    assert isinstance(event, TrainingFailed)
    assert reason in event.reason
    view = fold([event], view)
    assert view.status == "failed" and next_step(view).kind == "done"


def test_plan_fills_defaults_fixes_epochs_and_sizes_the_last_generation() -> None:
    view = started_job(budget=Budget(trials=10))
    plan = view.plan
    assert plan is not None
    assert (plan.population, plan.generations, plan.trials) == (8, 2, 10)
    assert plan.fixed == {"epochs": 1} and "epochs" not in plan.space
    assert plan.dataset_version == 1 and plan.image_size == [16, 16]
    assert handlers.generation_size(plan, 0) == 8 and handlers.generation_size(plan, 1) == 2


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (Budget(trials=12, population=4), (4, 3, 12)),
        (Budget(trials=12, generations=2), (6, 2, 12)),
        (Budget(population=5), (5, 3, 15)),
        (Budget(), (8, 3, 24)),
    ],
)
def test_budget_fills_the_missing_factor(budget: Budget, expected: tuple[int, int, int]) -> None:
    plan = started_job(budget=budget).plan
    assert plan is not None and (plan.population, plan.generations, plan.trials) == expected


def test_single_job_runs_one_trial_with_the_given_hyperparameters() -> None:
    view = started_job(job_type="single", hyperparameters={"lr": 0.01}, budget=Budget())
    view = fold(handlers.start_generation(view, 0, job_stamp(view)), view)
    [trial] = view.trials.values()
    assert trial.hyperparameters == {"epochs": 1, "lr": 0.01}
    assert view.plan is not None and view.plan.trials == 1


# -- generations and bookkeeping ---------------------------------------------------------------


def test_start_generation_publishes_the_population_and_one_request_per_trial() -> None:
    view = started_job()
    events = handlers.start_generation(view, 0, job_stamp(view))
    started, *requests = events
    assert isinstance(started, GenerationStarted) and len(started.trials) == 4
    assert all(isinstance(r, TrialRequested) for r in requests)
    assert [r.trial_id for r in requests] == [s.trial_id for s in started.trials]
    configs = [tuple(sorted(s.hyperparameters.items())) for s in started.trials]
    assert len(set(configs)) == 4
    # same view, same step: the same events (ids included), so a redo is deduplicated
    assert handlers.start_generation(view, 0, job_stamp(view)) == events


def test_generation_completes_only_when_every_trial_ended() -> None:
    view = started_job()
    view = fold(handlers.start_generation(view, 0, job_stamp(view)), view)
    tids = view.generations[0].trial_ids
    view = fold([completed(view, tids[0], 0.5, 1.0), failed(view, tids[1])], view)
    assert next_step(view).kind == "wait" and view.pending(0) == 2
    view = fold([completed(view, tids[2], 0.7, 2.0), completed(view, tids[3], 0.6, 0.5)], view)
    assert next_step(view).kind == "complete"
    [done] = handlers.complete_generation(view, 0, None, job_stamp(view))
    assert isinstance(done, GenerationCompleted)
    assert (done.completed, done.failed, done.pruned) == (3, 1, 0)
    assert set(done.front) == {tids[2], tids[3]}  # 0.5 acc @ 1 ms is dominated by 0.6 @ 0.5 ms
    assert done.best_accuracy == 0.7


def test_redelivered_trial_is_not_counted_twice() -> None:
    view = started_job()
    view = fold(handlers.start_generation(view, 0, job_stamp(view)), view)
    tid = view.generations[0].trial_ids[0]
    first = completed(view, tid, 0.8, 1.0, key="first")
    again = completed(view, tid, 0.3, 9.0, key="again")  # a second run of the same trial
    view = fold([first, again, failed(view, tid)], view)
    assert view.counts(0)["completed"] == 1 and view.counts(0)["failed"] == 0
    metrics_ = view.trials[tid].metrics
    assert metrics_ is not None and metrics_.accuracy == 0.8  # the first result stands
    assert view.pending(0) == 3


def test_trial_gate_skips_finished_trials_and_cancelled_jobs() -> None:
    view = started_job()
    events = handlers.start_generation(view, 0, job_stamp(view))
    view = fold(events, view)
    req = events[1]
    assert isinstance(req, TrialRequested)
    assert handlers.trial_gate(view, req, stamp()) is None
    crashed = [
        TrialStarted(
            **stamp().envelope(f"s{i}"),
            trial_id=req.trial_id,
            job_id=view.job_id,
            generation=0,
            index=0,
            attempt=i + 1,
            host="h",
            device="cpu",
            parameters=10,
        )
        for i in range(handlers.MAX_CRASHED_STARTS)
    ]
    [gave_up] = handlers.trial_gate(fold(crashed, view), req, stamp()) or []
    assert isinstance(gave_up, TrialFailed) and "stopped 3 times" in gave_up.reason
    done = fold([completed(view, req.trial_id, 0.9, 1.0)], view)
    assert handlers.trial_gate(done, req, stamp()) == []
    other = events[2]
    assert isinstance(other, TrialRequested)
    cancel = TrainingCancelRequested(**stamp().envelope("cancel"), job_id=view.job_id)
    [skipped] = handlers.trial_gate(fold([cancel], done), other, stamp()) or []
    assert isinstance(skipped, TrialFailed) and skipped.cancelled


def test_a_restarted_coordinator_requests_only_the_missing_trials() -> None:
    view = started_job()
    started, *requests = handlers.start_generation(view, 0, job_stamp(view))
    view = fold([started, requests[0]], view)  # crashed after the first request
    step = next_step(view)
    assert step.kind == "request"
    missing = handlers.request_planned(view, 0, job_stamp(view))
    assert missing == requests[1:]  # same ids: JetStream drops any that did get out


def test_next_generation_breeds_from_the_best_and_avoids_repeats() -> None:
    view = started_job()
    view = run_generation(view, {0: (0.9, 1.0), 1: (0.2, 1.0), 2: (0.85, 0.4), 3: None})
    step = next_step(view)
    assert step == handlers.Step("start", 1)
    events = handlers.start_generation(view, 1, job_stamp(view))
    started = events[0]
    assert isinstance(started, GenerationStarted) and len(started.trials) == 4
    first = {tuple(sorted(t.hyperparameters.items())) for t in view.trials.values()}
    tried = [t.genome for t in view.trials.values()]
    for spec in started.trials:
        assert tuple(sorted(spec.hyperparameters.items())) not in first
        assert spec.parents and set(spec.parents) <= set(view.trials)
        # no near-copy of a tried genome: each child moves at least MIN_NOVELTY somewhere
        assert all(
            max(abs(a - b) for a, b in zip(spec.genome, g, strict=True)) >= search.MIN_NOVELTY
            for g in tried
        )
    assert handlers.start_generation(view, 1, job_stamp(view)) == events  # seeded


def test_finish_registers_the_front_with_lineage_and_completes() -> None:
    view = started_job(model_name="digits-cnn", register_limit=5)
    view = run_generation(view, {0: (0.9, 2.0), 1: (0.5, 3.0), 2: (0.8, 1.0), 3: (0.6, 0.5)})
    view = run_generation(view, {0: (0.95, 2.5), 1: None, 2: (0.1, 9.0), 3: (0.7, 0.9)})
    assert next_step(view).kind == "finish"
    events = handlers.finish_job(view, job_stamp(view))
    *uploads, done = events
    assert isinstance(done, TrainingCompleted)
    front = {(s.metrics.accuracy, s.metrics.latency_ms) for s in done.front}
    assert front == {(0.95, 2.5), (0.9, 2.0), (0.8, 1.0), (0.7, 0.9), (0.6, 0.5)}
    assert (done.trials_completed, done.trials_failed) == (7, 1)
    assert all(isinstance(u, ModelUploadReceived) for u in uploads) and len(uploads) == 5
    u = uploads[0]
    assert isinstance(u, ModelUploadReceived)
    assert u.model_name == "digits-cnn" and u.architecture == "simple-cnn"
    assert u.num_classes == 10 and u.input_shape == [1, 16, 16]
    assert u.actor == "alice"  # the model belongs to whoever asked for the job
    lin = u.lineage
    assert lin.job_id == "job-1" and lin.trial_id == u.upload_id and lin.generation == 1
    assert lin.hyperparameters["normalization"] == {"mean": [0.5], "std": [0.25]}
    assert lin.hyperparameters["class_names"] == [str(i) for i in range(10)]
    assert lin.metrics["accuracy"] == 0.95 and "latency_ms" in lin.metrics
    assert done.registered_uploads == [x.upload_id for x in uploads]  # type: ignore[attr-defined]
    view = fold(events[-1:], view)
    assert view.status == "completed" and next_step(view).kind == "done"


def test_weighted_mode_registers_the_single_best_score() -> None:
    view = started_job(mode="weighted", weights={"accuracy": 1.0, "latency": 0.0})
    view = run_generation(view, {0: (0.9, 2.0), 1: (0.5, 3.0), 2: (0.8, 1.0), 3: (0.6, 0.5)})
    view = run_generation(view, {0: (0.7, 2.5), 1: (0.4, 1.0), 2: (0.1, 9.0), 3: (0.7, 0.9)})
    *uploads, done = handlers.finish_job(view, job_stamp(view))
    assert len(uploads) == 1 and isinstance(uploads[0], ModelUploadReceived)
    assert uploads[0].lineage.metrics["accuracy"] == 0.9
    assert isinstance(done, TrainingCompleted)


def test_a_job_where_every_trial_failed_ends_failed_with_the_reason() -> None:
    view = started_job(budget=Budget(population=2, generations=1))
    view = run_generation(view, {})
    [event] = handlers.finish_job(view, job_stamp(view))
    assert isinstance(event, TrainingFailed)
    assert "no trial produced a model" in event.reason and "training diverged" in event.reason


def test_constraints_exclude_models_from_the_front() -> None:
    view = started_job(constraints=Constraints(max_latency_ms=1.5), budget=Budget(population=4))
    view = run_generation(view, {0: (0.9, 2.0), 1: (0.5, 3.0), 2: (0.8, 1.0), 3: (0.6, 1.2)})
    front = [t.trial_id for t in handlers.job_front(view)]
    assert front == [view.generations[0].trial_ids[2]]  # 0.9 @ 2 ms breaks the limit


def test_cancel_request_ends_the_job_and_later_trials_change_nothing() -> None:
    view = started_job()
    view = fold(handlers.start_generation(view, 0, job_stamp(view)), view)
    view = fold([TrainingCancelRequested(**stamp().envelope("c"), job_id="job-1")], view)
    assert next_step(view).kind == "cancel"
    [cancelled] = handlers.cancel_job(view, job_stamp(view))
    assert isinstance(cancelled, TrainingCancelled)
    view = fold([cancelled], view)
    tid = view.generations[0].trial_ids[0]
    view = fold([completed(view, tid, 0.9, 1.0)], view)
    assert view.status == "cancelled" and next_step(view).kind == "done"
    assert view.plan is not None
    restarted = TrainingStarted(**stamp().envelope("s2"), job_id="job-1", plan=view.plan)
    assert fold([restarted], view).status == "cancelled"  # a late start does not revive it


# -- ranking, pruning, genomes ---------------------------------------------------------------


def _ev(tid: str, acc: float, lat: float, violation: float = 0.0) -> search.Evaluated:
    return search.Evaluated(tid, [0.5], metrics(acc, lat), violation)


def test_pareto_front_and_utilities_follow_dominance() -> None:
    items = [_ev("a", 0.9, 2.0), _ev("b", 0.8, 1.0), _ev("c", 0.7, 1.5), _ev("d", 0.95, 0.9, 1.0)]
    front = search.pareto_front(items, ["accuracy", "latency"])
    assert [items[i].trial_id for i in front] == ["a", "b"]  # c is dominated, d infeasible
    util = search.rank_utilities(items, ["accuracy", "latency"], "pareto", {})
    assert min(util[0], util[1]) > util[2] > util[3]
    assert [items[i].trial_id for i in search.pareto_front(items, ["accuracy"])] == ["a"]


def test_weighted_scores_scale_each_objective() -> None:
    items = [_ev("a", 0.9, 2.0), _ev("b", 0.5, 1.0)]
    assert search.weighted_scores(items, ["accuracy", "latency"], {"accuracy": 1.0}) == [1.0, 0.0]
    assert search.weighted_scores(items, ["accuracy", "latency"], {"latency": 1.0}) == [0.0, 1.0]


@pytest.mark.parametrize(
    ("acc", "epoch", "peers", "objectives", "prune"),
    [
        (0.30, 2, [0.80, 0.75, 0.85], ["accuracy"], True),
        (0.30, 3, [0.80, 0.75, 0.85], ["accuracy"], True),
        (0.72, 2, [0.80, 0.75, 0.85], ["accuracy"], False),  # within the margin
        (0.30, 1, [0.80, 0.75, 0.85], ["accuracy"], False),  # first half: may be a slow starter
        (0.30, 4, [0.80, 0.75, 0.85], ["accuracy"], False),  # the last epoch: nothing to save
        (0.30, 0, [0.80, 0.75, 0.85], ["accuracy"], False),
        (0.30, 2, [0.80], ["accuracy"], False),  # one peer is not evidence
        (0.30, 2, [0.80, 0.75, 0.85], ["accuracy", "latency"], False),  # peers are bigger
    ],
)
def test_pruning_stops_only_clearly_dominated_trials(
    acc: float, epoch: int, peers: list[float], objectives: list[str], prune: bool
) -> None:
    params = 100 if "latency" in objectives else 1000
    peer_list = [search.PeerProgress(val_accuracy=p, parameters=500) for p in peers]
    reason = search.prune_reason(acc, epoch, 4, params, peer_list, objectives)
    assert (reason is not None) == prune
    if reason:
        assert "below the median" in reason


def test_a_two_epoch_trial_can_still_be_pruned_after_its_first_epoch() -> None:
    peers = [search.PeerProgress(val_accuracy=p, parameters=500) for p in (0.8, 0.75, 0.85)]
    assert search.prune_reason(0.3, 1, 2, 1000, peers, ["accuracy"]) is not None


def test_genomes_decode_into_the_space_and_round_trip() -> None:
    resolved = space.resolve_space(ARCH_SPACE, {}, {"epochs": 2})
    for genome in search.initial_genomes(len(resolved), 16, seed=3):
        config = space.decode(resolved, genome, {"epochs": 2})
        assert 1e-3 <= config["lr"] <= 0.3 and config["batch_size"] in (16, 32)
        assert config["depth"] in (1, 2, 3) and config["epochs"] == 2
        again = [space.encode_value(resolved[k], config[k]) for k in sorted(resolved)]
        assert space.decode(resolved, again, {"epochs": 2}) == config


def test_initial_population_covers_each_gene_evenly() -> None:
    genomes = search.initial_genomes(3, 8, seed=1)
    for d in range(3):
        strata = sorted(int(g[d] * 8) for g in genomes)
        assert strata == list(range(8))


def _uuid() -> str:
    return str(uuid.uuid4())


def test_pruned_trial_counts_as_pruned() -> None:
    view = started_job()
    view = fold(handlers.start_generation(view, 0, job_stamp(view)), view)
    tid = view.generations[0].trial_ids[1]
    pruned = TrialPruned(
        **stamp().envelope("p"),
        trial_id=tid,
        job_id="job-1",
        generation=0,
        index=1,
        epoch=1,
        val_accuracy=0.1,
        reason="below the median",
    )
    view = fold([pruned, completed(view, tid, 0.9, 1.0)], view)
    assert view.counts(0)["pruned"] == 1 and view.counts(0)["completed"] == 0
