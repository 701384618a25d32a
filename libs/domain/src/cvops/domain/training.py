"""Training: a job, its generations and trials — their state, ``evolve``, the checks of a
training request, and the request and cancel decisions.

No clock, no ids, no I/O: times come from the events, ids and stamps are passed in. Applying
an event again changes nothing: a trial's first end (completed, failed, pruned) wins, a job's
end is final, and a trial's progress is ordered by attempt (a restart resets the epoch; a
stale start or progress of an older attempt is ignored).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

import msgspec

from cvops.contracts import ArtifactRef, Event, Stamp
from cvops.contracts.training import (
    ARCHITECTURES,
    OBJECTIVES,
    Budget,
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
from cvops.domain.checks import at_least_one, check_name
from cvops.domain.errors import Conflict, Forbidden, Invalid, NotFound

DEFAULT_POPULATION = 8
DEFAULT_GENERATIONS = 3
MAX_TRIALS = 10_000

JobStatus = Literal["requested", "running", "completed", "failed", "cancelled"]
TrialStatus = Literal["planned", "requested", "running", "completed", "failed", "pruned"]
TERMINAL_JOB: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")
TERMINAL_TRIAL: tuple[TrialStatus, ...] = ("completed", "failed", "pruned")
TRIAL_STATUSES: tuple[TrialStatus, ...] = (
    "planned",
    "requested",
    "running",
    "completed",
    "failed",
    "pruned",
)


# -- state ------------------------------------------------------------------------------------


class TrialState(msgspec.Struct, kw_only=True):
    """One trial: its individual (genome, parents), its current attempt and its result."""

    trial_id: str
    generation: int
    index: int
    hyperparameters: dict[str, Any]
    genome: list[float] = []
    parents: list[str] = []
    status: TrialStatus = "planned"
    starts: int = 0  # attempts seen (a trainer that crashes mid-trial starts it again)
    attempt: int = 0
    host: str = ""
    device: str = ""
    parameters: int | None = None
    epoch: int = 0
    epochs: int | None = None
    train_loss: float | None = None
    val_accuracy: float | None = None
    metrics: TrialMetrics | None = None
    onnx: ArtifactRef | None = None
    weights: ArtifactRef | None = None
    normalization: dict[str, list[float]] = {}
    reason: str = ""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_TRIAL


class GenerationState(msgspec.Struct, kw_only=True):
    generation: int
    trial_ids: list[str]
    completed: bool = False
    trials_completed: int = 0
    trials_failed: int = 0
    trials_pruned: int = 0
    front: list[str] = []
    best_accuracy: float | None = None
    population: ArtifactRef | None = None


class JobState(msgspec.Struct, kw_only=True):
    """A job folded from its events."""

    job_id: str
    status: JobStatus = "requested"
    request: TrainingRequested | None = None
    plan: TrainingPlan | None = None
    cancel_requested: bool = False
    reason: str = ""
    generations: list[GenerationState] = []
    trials: dict[str, TrialState] = {}
    front: list[TrialSummary] = []
    registered: list[str] = []  # upload ids
    model_name: str | None = None
    finished_at: datetime | None = None
    last_seq: int = 0  # stream sequence of the job's newest training.* event (for OCC)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_JOB

    @property
    def owner(self) -> str:
        return self.request.actor if self.request is not None else ""

    @property
    def correlation_id(self) -> str:
        return self.request.correlation_id if self.request is not None else ""

    def generation_trials(self, generation: int) -> list[TrialState]:
        gen = self.generation_state(generation)
        return [self.trials[t] for t in gen.trial_ids if t in self.trials] if gen else []

    def generation_state(self, generation: int) -> GenerationState | None:
        for g in self.generations:
            if g.generation == generation:
                return g
        return None

    def counts(self, generation: int | None = None) -> dict[str, int]:
        """Trials by status (of one generation, or of the whole job)."""
        trials = self.trials.values() if generation is None else self.generation_trials(generation)
        out: dict[str, int] = dict.fromkeys(TRIAL_STATUSES, 0)
        for t in trials:
            out[t.status] += 1
        return out

    def pending(self, generation: int) -> int:
        """Trials of ``generation`` that have not ended yet."""
        return sum(1 for t in self.generation_trials(generation) if not t.terminal)


def evolve(state: JobState | None, event: Event, seq: int = 0) -> JobState | None:
    """Fold one event into a job's state; duplicates and late arrivals change nothing.

    The first end of a trial wins (a redelivered trial is not counted twice; a completed
    trial cannot fail afterwards). A start or progress of an attempt older than the trial's
    current one is stale; a newer attempt restarts the trial's progress from epoch 0.
    """
    if isinstance(event, TrainingRequested):
        if state is None:
            state = JobState(job_id=event.job_id)
        if state.request is None:
            state.request = event
        state.last_seq = max(state.last_seq, seq)
        return state
    if state is None:
        return None
    if event.context == "training":
        state.last_seq = max(state.last_seq, seq)
    match event:
        case TrainingStarted(plan=plan):
            if state.status == "requested":
                state.status, state.plan = "running", plan
        case GenerationStarted(generation=g, trials=specs):
            if state.generation_state(g) is None and not state.terminal:
                state.generations.append(
                    GenerationState(generation=g, trial_ids=[s.trial_id for s in specs])
                )
                for s in specs:
                    _plan_trial(state, g, s)
        case GenerationCompleted(generation=g):
            gen = state.generation_state(g)
            if gen is not None and not gen.completed:
                gen.completed = True
                gen.trials_completed, gen.trials_failed = event.completed, event.failed
                gen.trials_pruned, gen.front = event.pruned, list(event.front)
                gen.best_accuracy, gen.population = event.best_accuracy, event.population
        case TrainingCompleted():
            if not state.terminal:
                state.status, state.front = "completed", list(event.front)
                state.registered = list(event.registered_uploads)
                state.model_name = event.model_name
                state.finished_at = event.occurred_at
        case TrainingFailed(reason=reason):
            if not state.terminal:
                state.status, state.reason = "failed", reason
                state.finished_at = event.occurred_at
        case TrainingCancelRequested():
            if not state.terminal:
                state.cancel_requested = True
        case TrainingCancelled(reason=reason):
            if not state.terminal:
                state.status, state.reason = "cancelled", reason or "cancelled"
                state.finished_at = event.occurred_at
        case TrialRequested():
            _evolve_requested(state, event)
        case TrialStarted() | TrialProgressed() | TrialCompleted() | TrialFailed() | TrialPruned():
            trial = state.trials.get(event.trial_id)
            if trial is not None and not trial.terminal:
                _evolve_trial(trial, event)
        case _:
            pass
    return state


def _plan_trial(state: JobState, generation: int, spec: TrialSpec) -> None:
    trial = state.trials.get(spec.trial_id)
    if trial is None:
        state.trials[spec.trial_id] = TrialState(
            trial_id=spec.trial_id,
            generation=generation,
            index=spec.index,
            hyperparameters=dict(spec.hyperparameters),
            genome=list(spec.genome),
            parents=list(spec.parents),
        )
    elif not trial.genome and not trial.parents:  # its request arrived first
        trial.genome, trial.parents = list(spec.genome), list(spec.parents)


def _evolve_requested(state: JobState, event: TrialRequested) -> None:
    trial = state.trials.get(event.trial_id)
    if trial is None:  # the request arrived before its generation_started
        state.trials[event.trial_id] = TrialState(
            trial_id=event.trial_id,
            generation=event.generation,
            index=event.index,
            hyperparameters=dict(event.hyperparameters),
            status="requested",
        )
    elif trial.status == "planned":
        trial.status = "requested"


def _new_attempt(trial: TrialState, attempt: int) -> None:
    """A newer attempt: the trial runs again from the start."""
    trial.status, trial.attempt, trial.starts = "running", attempt, trial.starts + 1
    trial.epoch, trial.train_loss, trial.val_accuracy = 0, None, None


def _evolve_trial(trial: TrialState, event: Event) -> None:
    """One event of a trial that has not ended."""
    match event:
        case TrialStarted(attempt=attempt):
            if attempt > trial.attempt:
                _new_attempt(trial, attempt)
                trial.host, trial.device = event.host, event.device
                trial.parameters = event.parameters
                if event.hyperparameters:
                    trial.hyperparameters = dict(event.hyperparameters)
        case TrialProgressed(attempt=attempt, epoch=epoch):
            if attempt > trial.attempt:
                _new_attempt(trial, attempt)
            if attempt == trial.attempt and epoch >= trial.epoch:
                trial.status, trial.epoch, trial.epochs = "running", epoch, event.epochs
                trial.train_loss, trial.val_accuracy = event.train_loss, event.val_accuracy
        case TrialCompleted(metrics=m):
            trial.status, trial.metrics = "completed", m
            trial.onnx, trial.weights = event.onnx, event.weights
            trial.normalization = dict(event.normalization)
            trial.parameters, trial.val_accuracy = m.parameters, m.accuracy
            trial.hyperparameters = dict(event.hyperparameters)
            if m.epochs:
                trial.epoch = trial.epochs = m.epochs
            if event.host:
                trial.host, trial.device = event.host, event.device
        case TrialFailed(reason=reason):
            trial.status, trial.reason = "failed", reason
        case TrialPruned(reason=reason):
            trial.status, trial.reason = "pruned", reason
            trial.epoch, trial.val_accuracy = event.epoch, event.val_accuracy
        case _:
            pass


# -- the checks of a training request ---------------------------------------------------------


class Sizes(msgspec.Struct, frozen=True):
    """A request's budget resolved: how many individuals, generations and trials."""

    population: int
    generations: int
    trials: int


def _positive(value: float | None, what: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "positive"
        raise Invalid(f"{what} must be {bound}, got {value!r}")


def request_budget(budget: Budget) -> Budget:
    """Refuse a zero or contradictory budget; fill the missing factor of ``trials``.

    ``trials`` with one of ``population``/``generations`` gets the other (it must divide);
    otherwise the budget stays as given (``budget_sizes`` fills the defaults).
    """
    at_least_one(budget.trials, "budget trials")
    at_least_one(budget.population, "budget population")
    at_least_one(budget.generations, "budget generations")
    trials, population, generations = budget.trials, budget.population, budget.generations
    if trials is None or (population is None and generations is None):
        return budget
    if population is not None and generations is not None:
        if population * generations != trials:
            raise Invalid(
                f"budget of {trials} trials contradicts population {population} x generations "
                f"{generations} = {population * generations}; give one or the other"
            )
        return budget
    given, name = (
        (population, "population") if population is not None else (generations, "generations")
    )
    assert given is not None
    if trials % given:
        raise Invalid(f"budget of {trials} trials is not a multiple of the {name} {given}")
    other = trials // given
    if population is not None:
        return Budget(trials=trials, population=population, generations=other)
    return Budget(trials=trials, population=other, generations=given)


def budget_sizes(job_type: str, budget: Budget) -> Sizes:
    """Population, generations and trials of a request, defaults filled in."""
    if job_type == "single":
        return Sizes(1, 1, 1)
    b = request_budget(budget)
    if b.trials is not None and b.population is None and b.generations is None:
        population = min(b.trials, DEFAULT_POPULATION)
        sizes = Sizes(population, math.ceil(b.trials / population), b.trials)
    else:
        population = b.population or DEFAULT_POPULATION
        generations = b.generations or DEFAULT_GENERATIONS
        sizes = Sizes(population, generations, population * generations)
    if sizes.trials > MAX_TRIALS:
        raise Invalid(f"budget of {sizes.trials} trials is over the limit of {MAX_TRIALS}")
    if sizes.population < 2 and sizes.generations > 1:
        raise Invalid("a search over several generations needs a population of at least 2")
    return sizes


def check_search_space(space: dict[str, ParamSpec]) -> None:
    """Refuse categorical entries without choices and empty, inverted or open ranges."""
    for name, spec in space.items():
        where = f"search_space {name!r}"
        if spec.kind == "categorical":
            if not spec.choices:
                raise Invalid(f"{where}: categorical with no choices")
            continue
        if spec.low is None or spec.high is None:
            raise Invalid(f"{where}: a {spec.kind} range needs low and high")
        if not (math.isfinite(spec.low) and math.isfinite(spec.high)):
            raise Invalid(f"{where}: bounds must be finite numbers")
        if spec.low > spec.high:
            raise Invalid(f"{where}: inverted range (low {spec.low:g} > high {spec.high:g})")
        if spec.low == spec.high:
            raise Invalid(
                f"{where}: empty range (low = high = {spec.low:g}); "
                "fix the value in hyperparameters instead"
            )
        if spec.kind == "log_float" and spec.low <= 0:
            raise Invalid(f"{where}: a log range needs low > 0, got {spec.low:g}")
        if spec.kind == "int" and (spec.low != int(spec.low) or spec.high != int(spec.high)):
            raise Invalid(f"{where}: an int range needs whole-number bounds")


def check_objectives(
    objectives: list[Any], mode: str, weights: dict[str, float]
) -> tuple[list[Any], dict[str, float]]:
    """The objectives without repeats and the weight of each (empty unless ``weighted``)."""
    objectives = list(dict.fromkeys(objectives))
    if not objectives:
        raise Invalid(f"at least one objective is needed ({', '.join(OBJECTIVES)})")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise Invalid(f"unknown objective {unknown[0]!r}; objectives: {', '.join(OBJECTIVES)}")
    if "accuracy" not in objectives:
        raise Invalid("objectives must include accuracy")
    if mode != "weighted":
        if weights:
            raise Invalid("weights need mode 'weighted'")
        return objectives, {}
    extra = sorted(set(weights) - set(objectives))
    if extra:
        raise Invalid(f"weights name objectives that are not searched: {', '.join(extra)}")
    for name, weight in weights.items():
        _positive(weight, f"weight of {name}", allow_zero=True)
    resolved = {o: float(weights.get(o, 0.0 if weights else 1.0)) for o in objectives}
    if sum(resolved.values()) <= 0:
        raise Invalid("weights must not all be zero")
    return objectives, resolved


def check_constraints(constraints: Constraints) -> None:
    for name, value in msgspec.structs.asdict(constraints).items():
        _positive(value, f"constraint {name}")


class Checked(msgspec.Struct, frozen=True, kw_only=True):
    """A training request that passed the checks: its sizes, objectives and weights."""

    sizes: Sizes
    budget: Budget  # as requested, the missing factor of ``trials`` filled in
    objectives: list[Any]
    weights: dict[str, float]


def check_request(req: TrainingRequested) -> Checked:
    """Every check of a training request that needs no catalog and no model code.

    The gateway runs it before it appends ``training.requested``, the trainer again before
    it plans the job (it adds the data set, architecture code, image size and engine).
    """
    check_name(req.arch, "architecture")
    if req.arch not in ARCHITECTURES:
        raise Invalid(
            f"unknown architecture {req.arch!r}; architectures: {', '.join(ARCHITECTURES)}"
        )
    if req.model_name is not None:
        check_name(req.model_name, "model name")
    if req.job_type == "single":
        if req.search_space:
            raise Invalid("a single training run takes hyperparameters, not a search_space")
        budget = Budget(trials=1, population=1, generations=1)
    else:
        budget = request_budget(req.budget)
        check_search_space(req.search_space)
    sizes = budget_sizes(req.job_type, req.budget)
    objectives, weights = check_objectives(list(req.objectives), req.mode, req.weights)
    check_constraints(req.constraints)
    at_least_one(req.epochs, "epochs")
    at_least_one(req.image_size, "image_size")
    at_least_one(req.max_batches_per_epoch, "max_batches_per_epoch")
    if req.register_limit < 0:
        raise Invalid(f"register_limit must not be negative, got {req.register_limit}")
    if req.seed < 0:
        raise Invalid(f"seed must not be negative, got {req.seed}")
    if not req.target_engine.strip():
        raise Invalid("target_engine must not be empty")
    return Checked(sizes=sizes, budget=budget, objectives=objectives, weights=weights)


# -- decisions --------------------------------------------------------------------------------


def request_training(req: TrainingRequested, *, dataset_refusal: str | None = None) -> list[Event]:
    """``training.requested`` after the checks; ``dataset_refusal`` is why the data set cannot
    be used (None: it can).

    The event is ``req`` with its budget's missing factor filled in and its objectives
    without repeats.
    """
    checked = check_request(req)
    if dataset_refusal is not None:
        raise Invalid(dataset_refusal)
    return [msgspec.structs.replace(req, budget=checked.budget, objectives=checked.objectives)]


def cancel_training(
    job: JobState | None, *, username: str, is_admin: bool, stamp: Stamp
) -> list[Event]:
    """Ask the trainer to stop a job (yours, or anyone's for an admin); twice is a no-op.

    The request carries the job's correlation id, so the job's event feed shows it.
    """
    if job is None or job.request is None:
        raise NotFound("no such job")
    if job.owner != username and not is_admin:
        raise Forbidden(f"job {job.job_id} belongs to {job.owner}; only they or an admin cancel it")
    if job.terminal:
        raise Conflict(f"job {job.job_id} has already {job.status}")
    if job.cancel_requested:
        return []
    job_stamp = msgspec.structs.replace(stamp, correlation_id=job.correlation_id)
    return [
        TrainingCancelRequested(
            **job_stamp.envelope(f"cancel/{job.job_id}"),
            job_id=job.job_id,
            reason=f"cancelled by {username}",
        )
    ]
