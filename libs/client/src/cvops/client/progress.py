"""Live progress of jobs from their event feeds: rich bars, and a line per milestone.

A tracker folds a feed's events ``(type, data)`` into bars of a ``rich.progress.Progress``
(the job, each generation, each running trial's epochs; each conversion target; benchmark
rows) and returns a line for each milestone (a trial ended, a generation completed...).
The CLI prints those lines above the bars, so a log or a CI run tells the same story as a
terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from cvops.client.views import hyperparameters, ms, percent, size

Until = Callable[[str, dict[str, Any]], bool]

TRAINING_ENDS = ("training.completed", "training.failed", "training.cancelled")
CONVERSION_ENDS = ("conversion.completed", "conversion.failed")
BENCHMARK_ENDS = ("benchmark.completed", "benchmark.failed")
DEPLOYMENT_ENDS = ("deployment.ready", "deployment.failed")
RETIREMENT_ENDS = ("deployment.retired",)


def event_name(event_type: str) -> str:
    """``training.started.v1`` -> ``training.started``."""
    return event_type.rsplit(".v", 1)[0]


def ends_with(names: tuple[str, ...], key: str, value: str) -> Until:
    """A feed's end: an event named in ``names`` whose ``key`` field is ``value``."""

    def until(event_type: str, data: dict[str, Any]) -> bool:
        return event_name(event_type) in names and data.get(key) == value

    return until


def bars(console: Any) -> Progress:
    """The bars every tracker draws on (description, bar, m/n, elapsed)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


class TrainingProgress:
    """A training job: one bar for the job, one per generation, one per trial (epochs)."""

    def __init__(self, progress: Progress, job_id: str) -> None:
        self.progress = progress
        self.job_id = job_id
        self.job_task = progress.add_task(f"job {job_id}", total=None)
        self.generations: dict[int, TaskID] = {}
        self.trials: dict[str, TaskID] = {}
        self.labels: dict[str, str] = {}
        self.trial_generation: dict[str, int] = {}
        self.ended: set[str] = set()
        self.total_generations: int | None = None
        self.status = "requested"

    def _generation_label(self, g: int) -> str:
        of = f"/{self.total_generations}" if self.total_generations else ""
        return f"generation {g + 1}{of}"

    def update(self, event_type: str, data: dict[str, Any]) -> str | None:
        """Fold one event of the job's feed; return a milestone line, if it is one."""
        if data.get("job_id") != self.job_id:
            return None
        name = event_name(event_type)
        if name.startswith("trial."):
            return self._trial(name, data)
        match name:
            case "training.requested":
                return f"job {self.job_id}: {data.get('arch')} on {data.get('dataset')}"
            case "training.started":
                plan = data["plan"]
                self.status = "running"
                self.total_generations = int(plan["generations"])
                self.progress.update(self.job_task, total=int(plan["trials"]))
                return (
                    f"plan: population {plan['population']} x {plan['generations']} generations "
                    f"= {plan['trials']} trials of {plan['arch']} on {plan['dataset']} "
                    f"v{plan['dataset_version']}, objectives {', '.join(plan['objectives'])}"
                )
            case "training.generation_started":
                return self._generation_started(int(data["generation"]), data["trials"])
            case "training.generation_completed":
                return self._generation_completed(data)
            case "training.cancel_requested":
                return f"cancel requested ({data.get('reason') or 'by a user'})"
            case "training.completed":
                self.status = "completed"
                self.progress.update(self.job_task, completed=len(self.ended))
                registered = len(data.get("registered_uploads", []))
                return (
                    f"job completed: {data['trials_completed']} trials completed, "
                    f"{data['trials_failed']} failed, {data['trials_pruned']} pruned; "
                    f"{len(data['front'])} on the Pareto front, {registered} registered"
                )
            case "training.failed" | "training.cancelled":
                self.status = name.split(".")[1]
                return f"job {self.status}: {data.get('reason') or 'no reason given'}"
        return None

    def _generation_started(self, g: int, specs: list[dict[str, Any]]) -> str | None:
        if g in self.generations:
            return None
        self.generations[g] = self.progress.add_task(self._generation_label(g), total=len(specs))
        for spec in specs:
            trial_id = spec["trial_id"]
            label = f"  trial {g + 1}.{int(spec['index']) + 1}"
            self.labels[trial_id] = label
            self.trial_generation[trial_id] = g
            self.trials[trial_id] = self.progress.add_task(f"{label} queued", total=None)
        return f"{self._generation_label(g)}: {len(specs)} trials"

    def _generation_completed(self, data: dict[str, Any]) -> str:
        g = int(data["generation"])
        for trial_id, generation in self.trial_generation.items():
            if generation == g and trial_id in self.trials:
                self.progress.remove_task(self.trials.pop(trial_id))
        if g in self.generations:
            task = self.generations[g]
            total = self.progress.tasks[self._index(task)].total or 0
            self.progress.update(task, completed=total)
        best = data.get("best_accuracy")
        return (
            f"{self._generation_label(g)} done: {data['completed']} completed, "
            f"{data['failed']} failed, {data['pruned']} pruned; best accuracy {percent(best)}, "
            f"front of {len(data.get('front', []))}"
        )

    def _index(self, task: TaskID) -> int:
        return next(i for i, t in enumerate(self.progress.tasks) if t.id == task)

    def _trial(self, name: str, data: dict[str, Any]) -> str | None:
        trial_id = data["trial_id"]
        task = self.trials.get(trial_id)
        label = self.labels.get(trial_id, f"  trial {trial_id}")
        if name == "trial.started" and task is not None:
            where = f" on {data.get('host')} ({data.get('device')})" if data.get("host") else ""
            self.progress.update(task, description=f"{label}{where}")
        elif name == "trial.progressed" and task is not None:
            accuracy = percent(data.get("val_accuracy"))
            self.progress.update(
                task,
                total=int(data["epochs"]),
                completed=int(data["epoch"]),
                description=f"{label} epoch {data['epoch']}/{data['epochs']} val {accuracy}",
            )
        elif name in ("trial.completed", "trial.failed", "trial.pruned"):
            return self._trial_ended(name, trial_id, label, task, data)
        return None

    def _trial_ended(
        self, name: str, trial_id: str, label: str, task: TaskID | None, data: dict[str, Any]
    ) -> str | None:
        if trial_id in self.ended:
            return None  # a redelivered trial's second end: counted once
        self.ended.add(trial_id)
        self.progress.advance(self.job_task)
        g = self.trial_generation.get(trial_id, data.get("generation"))
        if g in self.generations:
            self.progress.advance(self.generations[g])
        if name == "trial.completed":
            m = data["metrics"]
            line = (
                f"{label.strip()} completed: accuracy {percent(m['accuracy'])}, "
                f"{ms(m['latency_ms'])} ms, {size(int(m['size_bytes']))}, "
                f"{hyperparameters(data.get('hyperparameters', {}), 60)}"
            )
            outcome = f"{label} done {percent(m['accuracy'])}"
        elif name == "trial.pruned":
            line = f"{label.strip()} pruned at epoch {data['epoch']}: {data['reason']}"
            outcome = f"{label} pruned"
        else:
            line = f"{label.strip()} failed: {data['reason']}"
            outcome = f"{label} failed"
        if task is not None:
            total = self.progress.tasks[self._index(task)].total or 1
            self.progress.update(task, total=total, completed=total, description=outcome)
        return line


class ConversionProgress:
    """A conversion job: one bar per target, finished by its outcome."""

    def __init__(self, progress: Progress, job_id: str, targets: list[str]) -> None:
        self.progress = progress
        self.job_id = job_id
        self.targets = {t: progress.add_task(f"{t} waiting", total=1) for t in targets}
        self.status = "requested"

    def _task(self, target: str) -> TaskID:
        if target not in self.targets:
            self.targets[target] = self.progress.add_task(target, total=1)
        return self.targets[target]

    def update(self, event_type: str, data: dict[str, Any]) -> str | None:
        if data.get("job_id") != self.job_id:
            return None
        name = event_name(event_type)
        target = str(data.get("target", ""))
        match name:
            case "conversion.started":
                self.status = "running"
                for t in data.get("targets", []):
                    self.progress.update(self._task(t), description=f"{t} converting")
                return f"converting on {data.get('host')} (attempt {data.get('attempt')})"
            case "conversion.artifact_produced":
                parity = data["parity"]
                self.progress.update(
                    self._task(target), completed=1, description=f"{target} produced"
                )
                return (
                    f"{target}: produced {data['format']} {data['precision']}, max abs error "
                    f"{parity['max_abs_error']:.2g}, top-1 agreement "
                    f"{percent(parity['top1_agreement'])}"
                )
            case "conversion.artifact_rejected" | "conversion.target_unavailable":
                outcome = "rejected" if name.endswith("rejected") else "unavailable"
                self.progress.update(
                    self._task(target), completed=1, description=f"{target} {outcome}"
                )
                reason = str(data["reason"])
                says = reason if reason.startswith(outcome) else f"{outcome}: {reason}"
                return f"{target}: {says}"
            case "conversion.completed":
                self.status = "completed"
                return "conversion completed"
            case "conversion.failed":
                self.status = "failed"
                op = f" (operator {data['op']})" if data.get("op") else ""
                return f"conversion failed: {data['reason']}{op}"
        return None


class BenchmarkProgress:
    """A benchmark job: one bar of measured cells (engine x precision x batch x concurrency)."""

    def __init__(self, progress: Progress, job_id: str, cells_per_target: int) -> None:
        self.progress = progress
        self.job_id = job_id
        self.cells_per_target = cells_per_target
        self.task = progress.add_task("measuring", total=None)
        self.rows = 0
        self.status = "requested"

    def update(self, event_type: str, data: dict[str, Any]) -> str | None:
        if data.get("job_id") != self.job_id:
            return None
        name = event_name(event_type)
        match name:
            case "benchmark.started":
                self.status = "running"
                targets = list(data.get("targets", []))
                total = max(len(targets) * self.cells_per_target, self.rows)
                self.progress.update(self.task, total=total or None)
                missing = data.get("unavailable") or {}
                skipped = f"; unavailable: {', '.join(sorted(missing))}" if missing else ""
                return f"measuring {', '.join(targets) or 'no engine'} on {data['host']}{skipped}"
            case "benchmark.row_measured":
                self.rows += 1
                self.progress.update(self.task, completed=self.rows)
                r = data["row"]
                cell = f"{r['engine']} {r['precision']} batch {r['batch_size']} x{r['concurrency']}"
                if r.get("error"):
                    return f"{cell}: {r['error']}"
                ips = r.get("throughput_ips") or 0
                return f"{cell}: p95 {ms(r.get('p95_ms'))} ms, {ips:,.0f} img/s"
            case "benchmark.completed":
                self.status = "completed"
                self.progress.update(self.task, total=self.rows, completed=self.rows)
                return f"benchmark completed: {data['reason']}"
            case "benchmark.failed":
                self.status = "failed"
                return f"benchmark failed: {data['reason']}"
        return None


class DeploymentProgress:
    """A deployment request (or retirement): one bar that ends with the router's answer."""

    def __init__(self, progress: Progress, deployment: str) -> None:
        self.progress = progress
        self.deployment = deployment
        self.task = progress.add_task(f"{deployment}: waiting for the inference router", total=None)

    def update(self, event_type: str, data: dict[str, Any]) -> str | None:
        outcome = event_name(event_type).split(".")[-1]
        if data.get("deployment") != self.deployment or outcome.endswith("requested"):
            return None
        self.progress.update(
            self.task, total=1, completed=1, description=f"{self.deployment}: {outcome}"
        )
        reason = f": {data['reason']}" if data.get("reason") else ""
        serving = f" (serving v{data['version']})" if outcome == "ready" else ""
        return f"{self.deployment}: {outcome}{serving}{reason}"
