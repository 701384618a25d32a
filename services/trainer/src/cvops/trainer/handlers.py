"""The coordinator's decisions as pure functions: what to do next for a job (``next_step``,
from the state the domain's ``evolve`` folds), and the events each step publishes.

No clock, no ids, no I/O: a ``Stamp`` carries the time and the cause, event ids derive from
it and a key, so a coordinator that crashes and redoes a step publishes the same ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp
from cvops.contracts.registry import ModelUploadReceived
from cvops.contracts.training import (
    GenerationCompleted,
    GenerationStarted,
    ParamSpec,
    TrainingCancelled,
    TrainingCompleted,
    TrainingFailed,
    TrainingPlan,
    TrainingRequested,
    TrainingStarted,
    TrialFailed,
    TrialRequested,
    TrialSpec,
    TrialSummary,
)
from cvops.domain.catalog import DatasetVersionState
from cvops.domain.errors import Invalid, Refused
from cvops.domain.training import (
    JobState,
    TrialState,
    check_request,
)
from cvops.trainer import search, space

SERVICE = "trainer"
MAX_CRASHED_STARTS = 3  # a trial that took down its trainer this often is recorded failed


# -- what the coordinator knows besides the job ------------------------------------------


@dataclass(frozen=True)
class ArchInfo:
    name: str
    min_image_size: int
    default_space: dict[str, ParamSpec]


@dataclass(frozen=True)
class Catalog:
    """Data sets, architectures and engines a request is checked against."""

    datasets: Mapping[str, Sequence[DatasetVersionState]]
    rejections: Mapping[str, str]
    architectures: Mapping[str, ArchInfo]
    engines: Sequence[str] = ("onnxruntime-cpu",)


# -- steps ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """What the coordinator does next: one of validate, cancel, start, request, complete,
    finish, wait, done (``generation`` where it applies)."""

    kind: Literal["validate", "cancel", "start", "request", "complete", "finish", "wait", "done"]
    generation: int = 0


def next_step(view: JobState) -> Step:
    """The one thing to do next for this job, given everything its events say."""
    if view.terminal:
        return Step("done")
    if view.cancel_requested:
        return Step("cancel")
    if view.status == "requested" or view.plan is None:
        return Step("validate")
    if not view.generations:
        return Step("start", 0)
    gen = view.generations[-1]
    trials = view.generation_trials(gen.generation)
    if any(t.status == "planned" for t in trials):
        return Step("request", gen.generation)
    if not gen.completed:
        if all(t.terminal for t in trials):
            return Step("complete", gen.generation)
        return Step("wait", gen.generation)
    if gen.generation + 1 < view.plan.generations:
        return Step("start", gen.generation + 1)
    return Step("finish", gen.generation)


def trial_gate(view: JobState | None, req: TrialRequested, stamp: Stamp) -> list[Event] | None:
    """Whether a delivered trial.requested should run: None to run it, else the events that
    settle it instead ([] when it has ended already: a redelivery is not run twice).
    """
    trial = view.trials.get(req.trial_id) if view is not None else None
    if trial is not None and trial.terminal:
        return []
    envelope = stamp.envelope(f"trial/{req.trial_id}/failed")
    common: dict[str, Any] = {
        "trial_id": req.trial_id,
        "job_id": req.job_id,
        "generation": req.generation,
        "index": req.index,
        "hyperparameters": req.hyperparameters,
    }
    if view is None or view.terminal or view.cancel_requested:
        state = "gone" if view is None else ("cancelled" if view.cancel_requested else view.status)
        return [
            TrialFailed(
                **envelope,
                **common,
                reason=f"not run: the job is {state}",
                cancelled=view is not None
                and (view.cancel_requested or view.status == "cancelled"),
            )
        ]
    if trial is not None and trial.starts >= MAX_CRASHED_STARTS:
        return [
            TrialFailed(
                **envelope,
                **common,
                reason=(
                    f"the trainer running this trial stopped {trial.starts} times without a "
                    "result (crash, kill or out of memory); giving up on it"
                ),
            )
        ]
    return None


# -- validate ----------------------------------------------------------------------------------


def _resolve_dataset(req: TrainingRequested, catalog: Catalog) -> DatasetVersionState:
    versions = sorted(catalog.datasets.get(req.dataset, ()), key=lambda d: d.version)
    if not versions:
        if req.dataset in catalog.rejections:
            raise Invalid(
                f"data set {req.dataset!r} failed validation: {catalog.rejections[req.dataset]}"
            )
        raise Invalid(f"unknown data set {req.dataset!r}")
    if req.dataset_version is None:
        return versions[-1]
    for d in versions:
        if d.version == req.dataset_version:
            return d
    have = ", ".join(str(d.version) for d in versions)
    raise Invalid(
        f"data set {req.dataset!r} has no validated version {req.dataset_version} "
        f"(validated: {have})"
    )


def plan_request(req: TrainingRequested, catalog: Catalog) -> TrainingPlan:
    """Check a request against the catalog and fill in every default.

    Raises:
        Invalid: with a reason a user understands.
    """
    checked = check_request(req)  # the checks the gateway ran too (a request may skip it)
    sizes, objectives, weights = checked.sizes, checked.objectives, checked.weights
    if req.arch not in catalog.architectures:
        known = ", ".join(sorted(catalog.architectures))
        raise Invalid(f"unknown architecture {req.arch!r} (known: {known})")
    arch = catalog.architectures[req.arch]
    dataset = _resolve_dataset(req, catalog)
    if req.image_size is not None:
        image_size = [req.image_size, req.image_size]
    else:
        image_size = list(dataset.image_size)
    if min(image_size) < arch.min_image_size:
        h, w = image_size
        raise Invalid(
            f"image size {h}x{w} is too small for {req.arch} (it needs at least "
            f"{arch.min_image_size}x{arch.min_image_size}); pass a larger image_size"
        )
    population, generations, trials = sizes.population, sizes.generations, sizes.trials
    if req.target_engine not in catalog.engines:
        raise Invalid(
            f"unknown target engine {req.target_engine!r} (ONNX engines: "
            f"{', '.join(catalog.engines)})"
        )
    fixed = dict(req.hyperparameters)
    if req.epochs is not None:
        fixed["epochs"] = req.epochs
    try:
        if req.job_type == "single":
            if req.search_space:
                raise space.SpaceError("a single training run takes hyperparameters, no space")
            space.check_fixed(fixed)
            searched: dict[str, ParamSpec] = {}
        else:
            searched = space.resolve_space(arch.default_space, req.search_space, fixed)
    except space.SpaceError as err:
        raise Invalid(str(err)) from err
    if req.job_type == "search" and not searched:
        raise Invalid("nothing to search: every hyperparameter is fixed")
    return TrainingPlan(
        job_type=req.job_type,
        arch=req.arch,
        dataset=dataset.name,
        dataset_version=dataset.version,
        canonical=dataset.canonical,
        classes=list(dataset.classes),
        channels=dataset.channels,
        image_size=image_size,
        space=searched,
        fixed=fixed,
        population=population,
        generations=generations,
        trials=trials,
        objectives=objectives,
        mode=req.mode,
        weights=weights,
        constraints=req.constraints,
        seed=req.seed,
        target_engine=req.target_engine,
        device=req.device,
        model_name=req.model_name or f"{req.arch}-{dataset.name}",
        register_limit=req.register_limit,
        max_batches_per_epoch=req.max_batches_per_epoch,
    )


def validate_request(view: JobState, catalog: Catalog, stamp: Stamp) -> list[Event]:
    """training.started with the plan, or training.failed with the reason."""
    assert view.request is not None
    try:
        plan = plan_request(view.request, catalog)
    except Refused as err:
        return [TrainingFailed(**stamp.envelope("failed"), job_id=view.job_id, reason=str(err))]
    return [TrainingStarted(**stamp.envelope("started"), job_id=view.job_id, plan=plan)]


def cancel_job(view: JobState, stamp: Stamp) -> list[Event]:
    return [
        TrainingCancelled(
            **stamp.envelope("cancelled"), job_id=view.job_id, reason="cancelled on request"
        )
    ]


# -- generations ------------------------------------------------------------------------------


def trial_id(job_id: str, generation: int, index: int) -> str:
    return f"{job_id}-g{generation}-t{index}"


def generation_size(plan: TrainingPlan, generation: int) -> int:
    """The last generation may be smaller so the job runs exactly ``plan.trials`` trials."""
    return max(0, min(plan.population, plan.trials - plan.population * generation))


def _config_key(plan: TrainingPlan) -> Any:
    def key(genome: list[float]) -> tuple[tuple[str, Any], ...]:
        return tuple(space.decode(plan.space, genome, plan.fixed).items())

    return key


def evaluated(view: JobState) -> list[search.Evaluated]:
    """The job's completed trials as the search sees them (with constraint violations)."""
    assert view.plan is not None
    out = []
    for t in sorted(view.trials.values(), key=lambda t: (t.generation, t.index)):
        if t.status == "completed" and t.metrics is not None:
            violation, _ = search.constraint_violation(t.metrics, view.plan.constraints)
            out.append(search.Evaluated(t.trial_id, t.genome, t.metrics, violation))
    return out


def population_specs(view: JobState, generation: int) -> list[TrialSpec]:
    """The individuals of ``generation``: a Latin hypercube first, then the GA's children."""
    plan = view.plan
    assert plan is not None
    count = generation_size(plan, generation)
    dims = len(plan.space)
    seed = search.derive_seed(plan.seed, generation)
    if plan.job_type == "single":
        pairs: list[tuple[list[float], list[str]]] = [([], [])]
    elif generation == 0:
        pairs = [(g, []) for g in search.initial_genomes(dims, count, seed)]
    else:
        tried = [t.genome for t in view.trials.values() if t.status != "completed"]
        pairs = search.next_genomes(
            evaluated(view),
            count,
            dims,
            seed,
            plan.objectives,
            plan.mode,
            plan.weights,
            _config_key(plan),
            tried=tried,
        )
    return [
        TrialSpec(
            trial_id=trial_id(view.job_id, generation, i),
            index=i,
            hyperparameters=space.decode(plan.space, genome, plan.fixed),
            genome=[round(u, 6) for u in genome],
            parents=parents,
        )
        for i, (genome, parents) in enumerate(pairs)
    ]


def trial_requests(
    view: JobState, generation: int, specs: Sequence[TrialSpec], stamp: Stamp
) -> list[Event]:
    """One trial.requested per individual: everything a trainer anywhere needs."""
    plan, req = view.plan, view.request
    assert plan is not None and req is not None
    return [
        TrialRequested(
            **stamp.envelope(f"trial/{s.trial_id}/requested"),
            trial_id=s.trial_id,
            job_id=view.job_id,
            generation=generation,
            index=s.index,
            arch=plan.arch,
            hyperparameters=s.hyperparameters,
            dataset=plan.dataset,
            dataset_version=plan.dataset_version,
            canonical=plan.canonical,
            classes=plan.classes,
            channels=plan.channels,
            image_size=plan.image_size,
            objectives=plan.objectives,
            constraints=plan.constraints,
            target_engine=plan.target_engine,
            device=plan.device,
            seed=search.derive_seed(plan.seed, generation, s.index),
            user=req.actor,
            role=req.role,
            max_batches_per_epoch=plan.max_batches_per_epoch,
        )
        for s in specs
    ]


def start_generation(view: JobState, generation: int, stamp: Stamp) -> list[Event]:
    """generation_started with the population, then one trial.requested per individual."""
    specs = population_specs(view, generation)
    started = GenerationStarted(
        **stamp.envelope(f"generation/{generation}/started"),
        job_id=view.job_id,
        generation=generation,
        trials=specs,
    )
    return [started, *trial_requests(view, generation, specs, stamp)]


def request_planned(view: JobState, generation: int, stamp: Stamp) -> list[Event]:
    """trial.requested for the individuals of a started generation not yet requested
    (the coordinator stopped between the two)."""
    gen = view.generation_state(generation)
    assert gen is not None
    specs = [
        TrialSpec(
            trial_id=t.trial_id,
            index=t.index,
            hyperparameters=t.hyperparameters,
            genome=t.genome,
            parents=t.parents,
        )
        for t in view.generation_trials(generation)
        if t.status == "planned"
    ]
    return trial_requests(view, generation, specs, stamp)


def job_front(view: JobState) -> list[TrialState]:
    """The Pareto front over every completed, feasible trial of the job so far."""
    assert view.plan is not None
    items = evaluated(view)
    front = search.pareto_front(items, view.plan.objectives)
    ids = [items[i].trial_id for i in front]
    return sorted(
        (view.trials[i] for i in ids),
        key=lambda t: (-(t.metrics.accuracy if t.metrics else 0.0), t.generation, t.index),
    )


def population_document(view: JobState, generation: int) -> dict[str, Any]:
    """The population of a generation with its measurements and ranks (saved as JSON)."""
    plan = view.plan
    assert plan is not None
    items = evaluated(view)
    utilities = dict(
        zip(
            (e.trial_id for e in items),
            search.rank_utilities(items, plan.objectives, plan.mode, plan.weights),
            strict=True,
        )
    )
    front = {t.trial_id for t in job_front(view)}
    return {
        "job_id": view.job_id,
        "generation": generation,
        "objectives": list(plan.objectives),
        "mode": plan.mode,
        "space": {k: msgspec.to_builtins(v) for k, v in plan.space.items()},
        "fixed": plan.fixed,
        "individuals": [
            {
                "trial_id": t.trial_id,
                "index": t.index,
                "genome": t.genome,
                "parents": t.parents,
                "hyperparameters": t.hyperparameters,
                "status": t.status,
                "reason": t.reason,
                "metrics": msgspec.to_builtins(t.metrics) if t.metrics else None,
                "utility": utilities.get(t.trial_id),
                "on_front": t.trial_id in front,
            }
            for t in view.generation_trials(generation)
        ],
    }


def complete_generation(
    view: JobState, generation: int, population: ArtifactRef | None, stamp: Stamp
) -> list[Event]:
    """generation_completed with the counts and the job's front so far."""
    counts = view.counts(generation)
    accs = [t.metrics.accuracy for t in view.generation_trials(generation) if t.metrics is not None]
    return [
        GenerationCompleted(
            **stamp.envelope(f"generation/{generation}/completed"),
            job_id=view.job_id,
            generation=generation,
            completed=counts["completed"],
            failed=counts["failed"],
            pruned=counts["pruned"],
            front=[t.trial_id for t in job_front(view)],
            best_accuracy=max(accs) if accs else None,
            population=population,
        )
    ]


# -- finish -----------------------------------------------------------------------------------


def _summary(t: TrialState, score: float | None = None) -> TrialSummary:
    assert t.metrics is not None and t.onnx is not None
    return TrialSummary(
        trial_id=t.trial_id,
        generation=t.generation,
        index=t.index,
        hyperparameters=t.hyperparameters,
        metrics=t.metrics,
        onnx=t.onnx,
        weights=t.weights,
        score=score,
    )


def _spread(items: list[TrialState], limit: int) -> list[TrialState]:
    """At most ``limit`` of a front sorted by accuracy, spread evenly along it (ends kept)."""
    if limit <= 0:
        return []
    if len(items) <= limit:
        return items
    if limit == 1:
        return items[:1]
    picks = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in picks]


def model_upload(view: JobState, t: TrialState, stamp: Stamp) -> ModelUploadReceived:
    """The registry upload of one trial's exported model, with its full lineage."""
    plan, req = view.plan, view.request
    assert plan is not None and req is not None and t.metrics is not None and t.onnx is not None
    metrics = {
        k: float(v)
        for k, v in msgspec.structs.asdict(t.metrics).items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    hyper = {
        **t.hyperparameters,
        "arch": plan.arch,
        "image_size": plan.image_size,
        "channels": plan.channels,
        "normalization": t.normalization,
        "class_names": plan.classes,
        "dataset_version": plan.dataset_version,
        "seed": plan.seed,
    }
    h, w = plan.image_size
    onnx = msgspec.structs.replace(t.onnx, filename=f"{plan.model_name}-{t.trial_id}.onnx")
    return ModelUploadReceived(
        **Stamp(
            now=stamp.now,
            actor=req.actor,
            correlation_id=stamp.correlation_id,
            causation_id=stamp.causation_id,
        ).envelope(f"upload/{t.trial_id}"),
        upload_id=t.trial_id,
        model_name=plan.model_name,
        artifact=onnx,
        architecture=plan.arch,
        num_classes=len(plan.classes),
        input_shape=[plan.channels, h, w],
        description=(
            f"{plan.arch} on {plan.dataset} v{plan.dataset_version}: job {view.job_id}, "
            f"generation {t.generation}, trial {t.index}; val accuracy "
            f"{t.metrics.accuracy:.4f}, {t.metrics.latency_ms:.3f} ms on {t.metrics.engine}"
        ),
        lineage=Lineage(
            job_id=view.job_id,
            generation=t.generation,
            trial_id=t.trial_id,
            dataset=plan.dataset,
            hyperparameters=hyper,
            metrics=metrics,
        ),
    )


def finish_job(view: JobState, stamp: Stamp) -> list[Event]:
    """Register the best models and complete the job (or fail it when nothing qualifies)."""
    plan = view.plan
    assert plan is not None
    counts = view.counts()
    done = [t for t in view.trials.values() if t.status == "completed" and t.metrics]
    if not done:
        failed = [t for t in view.trials.values() if t.status == "failed"]
        first = f": {failed[0].reason}" if failed else ""
        return [
            TrainingFailed(
                **stamp.envelope("failed"),
                job_id=view.job_id,
                reason=f"no trial produced a model ({counts['failed']} failed, "
                f"{counts['pruned']} pruned){first}",
            )
        ]
    front = job_front(view)
    if not front:
        closest = min(
            done,
            key=lambda t: search.constraint_violation(t.metrics, plan.constraints)[0],  # type: ignore[arg-type]
        )
        _, why = search.constraint_violation(closest.metrics, plan.constraints)  # type: ignore[arg-type]
        return [
            TrainingFailed(
                **stamp.envelope("failed"),
                job_id=view.job_id,
                reason=f"no model met the constraints; the closest ({closest.trial_id}) has {why}",
            )
        ]
    scores: dict[str, float] = {}
    if plan.mode == "weighted" or len(plan.objectives) == 1:
        items = evaluated(view)
        weights = plan.weights or {o: 1.0 for o in plan.objectives}
        scores = dict(
            zip(
                (e.trial_id for e in items),
                search.weighted_scores(items, plan.objectives, weights),
                strict=True,
            )
        )
        best = max(front, key=lambda t: scores[t.trial_id])
        register = [best] if plan.register_limit else []
    else:
        register = _spread(front, plan.register_limit)
    uploads = [model_upload(view, t, stamp) for t in register]
    completed = TrainingCompleted(
        **stamp.envelope("completed"),
        job_id=view.job_id,
        front=[_summary(t, scores.get(t.trial_id)) for t in front],
        model_name=plan.model_name,
        trials_completed=counts["completed"],
        trials_failed=counts["failed"],
        trials_pruned=counts["pruned"],
        registered_uploads=[u.upload_id for u in uploads],
    )
    return [*uploads, completed]


def job_stamp(view: JobState, now: Any) -> Stamp:
    """The stamp of every coordinator event of a job: caused by the request, so a redone
    step gets the same event ids."""
    assert view.request is not None
    return Stamp(
        now=now,
        actor=SERVICE,
        correlation_id=view.request.correlation_id,
        causation_id=view.request.event_id,
    )
