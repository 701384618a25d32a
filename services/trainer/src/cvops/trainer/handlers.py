"""The coordinator's decisions as pure functions: a job's state folded from its events
(``evolve``), what to do next (``next_step``), and the events each step publishes.

No clock, no ids, no I/O: a ``Stamp`` carries the time and the cause, event ids derive from
it and a key, so a coordinator that crashes and redoes a step publishes the same ids.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from cvops.contracts import ArtifactRef, Event, Lineage, Stamp
from cvops.contracts.registry import ModelUploadReceived
from cvops.contracts.training import (
    OBJECTIVES,
    Constraints,
    GenerationCompleted,
    GenerationStarted,
    ParamSpec,
    TrainingCancelled,
    TrainingCancelRequested,
    TrainingCompleted,
    TrainingFailed,
    TrainingPlan,
    TrainingRequested,
    TrainingStarted,
    TrialCompleted,
    TrialFailed,
    TrialMetrics,
    TrialProgressed,
    TrialPruned,
    TrialRequested,
    TrialSpec,
    TrialStarted,
    TrialSummary,
)
from cvops.trainer import search, space

SERVICE = "trainer"
DEFAULT_POPULATION = 8
DEFAULT_GENERATIONS = 3
MAX_TRIALS = 10_000
MAX_CRASHED_STARTS = 3  # a trial that took down its trainer this often is recorded failed

JobStatus = Literal["requested", "running", "completed", "failed", "cancelled"]
TrialStatus = Literal["planned", "requested", "running", "completed", "failed", "pruned"]
TERMINAL_JOB: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")
TERMINAL_TRIAL: tuple[TrialStatus, ...] = ("completed", "failed", "pruned")


# -- state --------------------------------------------------------------------------------


class TrialView(msgspec.Struct, kw_only=True):
    """One trial as the coordinator knows it."""

    trial_id: str
    generation: int
    index: int
    hyperparameters: dict[str, Any]
    genome: list[float] = []
    parents: list[str] = []
    status: TrialStatus = "planned"
    starts: int = 0
    parameters: int | None = None
    epoch: int = 0
    val_accuracy: float | None = None
    metrics: TrialMetrics | None = None
    onnx: ArtifactRef | None = None
    weights: ArtifactRef | None = None
    normalization: dict[str, list[float]] = {}
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_TRIAL


class GenerationView(msgspec.Struct, kw_only=True):
    generation: int
    trial_ids: list[str]
    completed: bool = False
    front: list[str] = []
    population: ArtifactRef | None = None


class JobView(msgspec.Struct, kw_only=True):
    """A job folded from its events: what the coordinator decides from."""

    job_id: str
    status: JobStatus = "requested"
    request: TrainingRequested | None = None
    plan: TrainingPlan | None = None
    cancel_requested: bool = False
    reason: str = ""
    generations: list[GenerationView] = []
    trials: dict[str, TrialView] = {}
    front: list[TrialSummary] = []
    registered: list[str] = []
    last_seq: int = 0  # stream sequence of the job's newest training.* event (for OCC)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB

    def generation_trials(self, generation: int) -> list[TrialView]:
        gen = self.generation_view(generation)
        return [self.trials[t] for t in gen.trial_ids] if gen else []

    def generation_view(self, generation: int) -> GenerationView | None:
        for g in self.generations:
            if g.generation == generation:
                return g
        return None

    def counts(self, generation: int | None = None) -> dict[str, int]:
        """Trials by status (of one generation, or of the whole job)."""
        trials = self.trials.values() if generation is None else self.generation_trials(generation)
        out = {s: 0 for s in ("planned", "requested", "running", "completed", "failed", "pruned")}
        for t in trials:
            out[t.status] += 1
        return out

    def pending(self, generation: int) -> int:
        """Trials of ``generation`` that have not ended yet."""
        return sum(1 for t in self.generation_trials(generation) if not t.terminal)


def evolve(view: JobView | None, event: Event, seq: int = 0) -> JobView | None:
    """Fold one event into a job's state; duplicates and late arrivals change nothing.

    The first terminal event of a trial wins: a redelivered trial's second completion is
    not counted twice, and a trial that completed cannot fail afterwards.
    """
    if isinstance(event, TrainingRequested):
        if view is None:
            view = JobView(job_id=event.job_id)
        if view.request is None:
            view.request = event
        view.last_seq = max(view.last_seq, seq)
        return view
    if view is None:
        return None
    if event.context == "training":
        view.last_seq = max(view.last_seq, seq)
    match event:
        case TrainingStarted(plan=plan):
            if view.status == "requested":
                view.status, view.plan = "running", plan
        case GenerationStarted(generation=g, trials=specs):
            if view.generation_view(g) is None and not view.terminal:
                view.generations.append(
                    GenerationView(generation=g, trial_ids=[s.trial_id for s in specs])
                )
                for s in specs:
                    view.trials.setdefault(s.trial_id, _trial_from_spec(g, s))
        case TrialRequested(trial_id=tid):
            trial = view.trials.get(tid)
            if trial is not None and trial.status == "planned":
                trial.status = "requested"
        case TrialStarted(trial_id=tid, parameters=params):
            trial = view.trials.get(tid)
            if trial is not None and not trial.terminal:
                trial.status = "running"
                trial.starts += 1
                trial.parameters = params
        case TrialProgressed(trial_id=tid, epoch=epoch, val_accuracy=acc):
            trial = view.trials.get(tid)
            if trial is not None and not trial.terminal and epoch >= trial.epoch:
                trial.epoch, trial.val_accuracy = epoch, acc
        case TrialCompleted(trial_id=tid):
            trial = view.trials.get(tid)
            if trial is not None and not trial.terminal:
                trial.status = "completed"
                trial.metrics = event.metrics
                trial.onnx, trial.weights = event.onnx, event.weights
                trial.normalization = event.normalization
                trial.parameters = event.metrics.parameters
                trial.val_accuracy = event.metrics.accuracy
        case TrialFailed(trial_id=tid, reason=reason):
            trial = view.trials.get(tid)
            if trial is not None and not trial.terminal:
                trial.status, trial.reason = "failed", reason
        case TrialPruned(trial_id=tid, reason=reason, epoch=epoch, val_accuracy=acc):
            trial = view.trials.get(tid)
            if trial is not None and not trial.terminal:
                trial.status, trial.reason = "pruned", reason
                trial.epoch, trial.val_accuracy = epoch, acc
        case GenerationCompleted(generation=g, front=front, population=population):
            gen = view.generation_view(g)
            if gen is not None and not gen.completed:
                gen.completed, gen.front, gen.population = True, front, population
        case TrainingCompleted(front=front, registered_uploads=uploads):
            if not view.terminal:
                view.status, view.front, view.registered = "completed", front, uploads
        case TrainingFailed(reason=reason):
            if not view.terminal:
                view.status, view.reason = "failed", reason
        case TrainingCancelRequested():
            if not view.terminal:
                view.cancel_requested = True
        case TrainingCancelled(reason=reason):
            if not view.terminal:
                view.status, view.reason = "cancelled", reason or "cancelled"
    return view


def _trial_from_spec(generation: int, spec: TrialSpec) -> TrialView:
    return TrialView(
        trial_id=spec.trial_id,
        generation=generation,
        index=spec.index,
        hyperparameters=dict(spec.hyperparameters),
        genome=list(spec.genome),
        parents=list(spec.parents),
    )


# -- what the coordinator knows besides the job ------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    """A validated data-set version (from ``registry.dataset_validated``)."""

    name: str
    version: int
    canonical: ArtifactRef
    classes: list[str]
    channels: int
    image_size: list[int]  # H, W of the canonical images


@dataclass(frozen=True)
class ArchInfo:
    name: str
    min_image_size: int
    default_space: dict[str, ParamSpec]


@dataclass(frozen=True)
class Catalog:
    """Data sets, architectures and engines a request is checked against."""

    datasets: Mapping[str, Sequence[DatasetInfo]]
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


def next_step(view: JobView) -> Step:
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


def trial_gate(view: JobView | None, req: TrialRequested, stamp: Stamp) -> list[Event] | None:
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


class RequestRefused(ValueError):
    """The request cannot run; the message is the reason shown to the user."""


def _resolve_dataset(req: TrainingRequested, catalog: Catalog) -> DatasetInfo:
    versions = sorted(catalog.datasets.get(req.dataset, ()), key=lambda d: d.version)
    if not versions:
        if req.dataset in catalog.rejections:
            raise RequestRefused(
                f"data set {req.dataset!r} failed validation: {catalog.rejections[req.dataset]}"
            )
        raise RequestRefused(f"unknown data set {req.dataset!r}")
    if req.dataset_version is None:
        return versions[-1]
    for d in versions:
        if d.version == req.dataset_version:
            return d
    have = ", ".join(str(d.version) for d in versions)
    raise RequestRefused(
        f"data set {req.dataset!r} has no validated version {req.dataset_version} "
        f"(validated: {have})"
    )


def _resolve_budget(req: TrainingRequested) -> tuple[int, int, int]:
    """(population, generations, trials)."""
    if req.job_type == "single":
        return 1, 1, 1
    b = req.budget
    for name, value in (("population", b.population), ("generations", b.generations)):
        if value is not None and value < 1:
            raise RequestRefused(f"budget {name} must be at least 1, got {value}")
    if b.trials is not None and b.trials < 1:
        raise RequestRefused(f"budget must be at least 1 trial, got {b.trials}")
    if b.trials is not None and b.population is None and b.generations is None:
        population = min(b.trials, DEFAULT_POPULATION)
        generations = math.ceil(b.trials / population)
        trials = b.trials
    elif b.trials is not None and (b.population is None) != (b.generations is None):
        given = b.population or b.generations or 1
        name = "population" if b.population is not None else "generations"
        if b.trials % given:
            raise RequestRefused(
                f"budget of {b.trials} trials is not a multiple of the {name} {given}"
            )
        population = given if b.population is not None else b.trials // given
        generations = b.trials // given if b.population is not None else given
        trials = b.trials
    else:
        population = b.population or DEFAULT_POPULATION
        generations = b.generations or DEFAULT_GENERATIONS
        trials = population * generations
        if b.trials is not None and b.trials != trials:
            raise RequestRefused(
                f"budget of {b.trials} trials contradicts population {population} x "
                f"generations {generations} = {trials}; give one or the other"
            )
    if trials > MAX_TRIALS:
        raise RequestRefused(f"budget of {trials} trials is over the limit of {MAX_TRIALS}")
    if population < 2 and generations > 1:
        raise RequestRefused("a search over several generations needs a population of at least 2")
    return population, generations, trials


def _resolve_objectives(req: TrainingRequested) -> tuple[list[Any], dict[str, float]]:
    objectives = list(dict.fromkeys(req.objectives))
    if not objectives:
        raise RequestRefused("at least one objective is needed (accuracy, latency, size)")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise RequestRefused(f"unknown objectives {unknown} (known: {', '.join(OBJECTIVES)})")
    if "accuracy" not in objectives:
        raise RequestRefused("objectives must include accuracy")
    weights: dict[str, float] = {}
    if req.mode == "weighted":
        extra = sorted(set(req.weights) - set(objectives))
        if extra:
            raise RequestRefused(f"weights name objectives not searched: {extra}")
        if any(w < 0 or not math.isfinite(w) for w in req.weights.values()):
            raise RequestRefused("weights must be finite and not negative")
        weights = {o: float(req.weights.get(o, 0.0 if req.weights else 1.0)) for o in objectives}
        if sum(weights.values()) <= 0:
            raise RequestRefused("weights must not all be zero")
    return objectives, weights


def _check_constraints(c: Constraints) -> None:
    for name, value in msgspec.structs.asdict(c).items():
        if value is not None and not value > 0:
            raise RequestRefused(f"constraint {name} must be positive, got {value}")


def plan_request(req: TrainingRequested, catalog: Catalog) -> TrainingPlan:
    """Check a request against the catalog and fill in every default.

    Raises:
        RequestRefused: with a reason a user understands.
    """
    if req.arch not in catalog.architectures:
        known = ", ".join(sorted(catalog.architectures))
        raise RequestRefused(f"unknown architecture {req.arch!r} (known: {known})")
    arch = catalog.architectures[req.arch]
    dataset = _resolve_dataset(req, catalog)
    if req.image_size is not None:
        if req.image_size < 1:
            raise RequestRefused(f"image size must be positive, got {req.image_size}")
        image_size = [req.image_size, req.image_size]
    else:
        image_size = list(dataset.image_size)
    if min(image_size) < arch.min_image_size:
        h, w = image_size
        raise RequestRefused(
            f"image size {h}x{w} is too small for {req.arch} (it needs at least "
            f"{arch.min_image_size}x{arch.min_image_size}); pass a larger image_size"
        )
    population, generations, trials = _resolve_budget(req)
    objectives, weights = _resolve_objectives(req)
    _check_constraints(req.constraints)
    if req.target_engine not in catalog.engines:
        raise RequestRefused(
            f"unknown target engine {req.target_engine!r} (ONNX engines: "
            f"{', '.join(catalog.engines)})"
        )
    if req.epochs is not None and req.epochs < 1:
        raise RequestRefused(f"epochs must be at least 1, got {req.epochs}")
    if req.max_batches_per_epoch is not None and req.max_batches_per_epoch < 1:
        raise RequestRefused("max_batches_per_epoch must be at least 1")
    if req.register_limit < 0:
        raise RequestRefused("register_limit must not be negative")
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
        raise RequestRefused(str(err)) from err
    if req.job_type == "search" and not searched:
        raise RequestRefused("nothing to search: every hyperparameter is fixed")
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


def validate_request(view: JobView, catalog: Catalog, stamp: Stamp) -> list[Event]:
    """training.started with the plan, or training.failed with the reason."""
    assert view.request is not None
    try:
        plan = plan_request(view.request, catalog)
    except RequestRefused as err:
        return [TrainingFailed(**stamp.envelope("failed"), job_id=view.job_id, reason=str(err))]
    return [TrainingStarted(**stamp.envelope("started"), job_id=view.job_id, plan=plan)]


def cancel_job(view: JobView, stamp: Stamp) -> list[Event]:
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


def evaluated(view: JobView) -> list[search.Evaluated]:
    """The job's completed trials as the search sees them (with constraint violations)."""
    assert view.plan is not None
    out = []
    for t in sorted(view.trials.values(), key=lambda t: (t.generation, t.index)):
        if t.status == "completed" and t.metrics is not None:
            violation, _ = search.constraint_violation(t.metrics, view.plan.constraints)
            out.append(search.Evaluated(t.trial_id, t.genome, t.metrics, violation))
    return out


def population_specs(view: JobView, generation: int) -> list[TrialSpec]:
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
    view: JobView, generation: int, specs: Sequence[TrialSpec], stamp: Stamp
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


def start_generation(view: JobView, generation: int, stamp: Stamp) -> list[Event]:
    """generation_started with the population, then one trial.requested per individual."""
    specs = population_specs(view, generation)
    started = GenerationStarted(
        **stamp.envelope(f"generation/{generation}/started"),
        job_id=view.job_id,
        generation=generation,
        trials=specs,
    )
    return [started, *trial_requests(view, generation, specs, stamp)]


def request_planned(view: JobView, generation: int, stamp: Stamp) -> list[Event]:
    """trial.requested for the individuals of a started generation not yet requested
    (the coordinator stopped between the two)."""
    gen = view.generation_view(generation)
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


def job_front(view: JobView) -> list[TrialView]:
    """The Pareto front over every completed, feasible trial of the job so far."""
    assert view.plan is not None
    items = evaluated(view)
    front = search.pareto_front(items, view.plan.objectives)
    ids = [items[i].trial_id for i in front]
    return sorted(
        (view.trials[i] for i in ids),
        key=lambda t: (-(t.metrics.accuracy if t.metrics else 0.0), t.generation, t.index),
    )


def population_document(view: JobView, generation: int) -> dict[str, Any]:
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
    view: JobView, generation: int, population: ArtifactRef | None, stamp: Stamp
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


def _summary(t: TrialView, score: float | None = None) -> TrialSummary:
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


def _spread(items: list[TrialView], limit: int) -> list[TrialView]:
    """At most ``limit`` of a front sorted by accuracy, spread evenly along it (ends kept)."""
    if limit <= 0:
        return []
    if len(items) <= limit:
        return items
    if limit == 1:
        return items[:1]
    picks = sorted({round(i * (len(items) - 1) / (limit - 1)) for i in range(limit)})
    return [items[i] for i in picks]


def model_upload(view: JobView, t: TrialView, stamp: Stamp) -> ModelUploadReceived:
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


def finish_job(view: JobView, stamp: Stamp) -> list[Event]:
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


def job_stamp(view: JobView, now: Any) -> Stamp:
    """The stamp of every coordinator event of a job: caused by the request, so a redone
    step gets the same event ids."""
    assert view.request is not None
    return Stamp(
        now=now,
        actor=SERVICE,
        correlation_id=view.request.correlation_id,
        causation_id=view.request.event_id,
    )
