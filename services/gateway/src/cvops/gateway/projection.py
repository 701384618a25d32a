"""The gateway's projection of the whole log: users, tokens, models, data sets, uploads,
training jobs with their generations and trials, deployments, conversions with the engines
they produced, benchmarks with their rows, and every event indexed by correlation id (for
the SSE feed). Plus the read queries.

Every row comes from events only (``occurred_at``, never the clock), and applying an event
again changes nothing: inserts ignore existing keys, and state changes are guarded by the
state they leave (a trial's first end wins), so a rebuild gives the same rows.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Row
from sqlalchemy.orm import Session

from cvops.contracts import Event, encode
from cvops.contracts.api import (
    BenchmarkRecommendation,
    BenchmarkView,
    ConversionTargetView,
    ConversionView,
    CreateBenchmark,
    CreateConversion,
    CreateJob,
    DatasetView,
    DeploymentView,
    EngineArtifactView,
    GenerationView,
    JobSummary,
    JobView,
    ModelVersionView,
    ModelView,
    RegisteredModel,
    TokenView,
    TrialView,
    UserView,
)
from cvops.contracts.conversion import (
    ArtifactProduced,
    ArtifactRejected,
    BenchmarkCompleted,
    BenchmarkFailed,
    BenchmarkRequested,
    BenchmarkRow,
    BenchmarkRowMeasured,
    BenchmarkStarted,
    ConversionCompleted,
    ConversionFailed,
    ConversionRequested,
    ConversionStarted,
    TargetUnavailable,
)
from cvops.contracts.deployment import (
    Canary,
    DeploymentDegraded,
    DeploymentFailed,
    DeploymentReady,
    DeploymentRequested,
    DeploymentRetired,
    DeploymentRetireRequested,
)
from cvops.contracts.identity import (
    PasswordSet,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.contracts.registry import (
    DatasetRegistered,
    DatasetRejected,
    DatasetUploadReceived,
    DatasetValidated,
    ModelRegistered,
    ModelRejected,
    ModelStageChanged,
    ModelUploadReceived,
    ModelVersionAdded,
)
from cvops.contracts.training import (
    GenerationCompleted,
    GenerationStarted,
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
    TrialStarted,
    TrialSummary,
)
from cvops.core import Settings
from cvops.gateway.handlers import TERMINAL_JOB, JobState, TokenState, UserState

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("username", String, primary_key=True),
    Column("role", String, nullable=False),
    Column("password_hash", String, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", String, nullable=False),
    Column("created_by", String, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token_id", String, primary_key=True),
    Column("username", String, nullable=False, index=True),
    Column("token_sha256", String, nullable=False, unique=True),
    Column("label", String, nullable=False),
    Column("kind", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("expires_at", String),
    Column("revoked", Boolean, nullable=False, default=False),
)

models = Table(
    "models",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer),
)

# ``body`` is a ModelVersionView as JSON; ``stage`` (the only mutable part) is a column.
model_versions = Table(
    "model_versions",
    metadata,
    Column("model_name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("stage", String, nullable=False),
    Column("upload_id", String, nullable=False),
    Column("body", Text, nullable=False),
)

datasets = Table(
    "datasets",
    metadata,
    Column("name", String, primary_key=True),
    Column("owner", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("latest_version", Integer),
)

# ``body`` is a DatasetView as JSON.
dataset_versions = Table(
    "dataset_versions",
    metadata,
    Column("name", String, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("upload_id", String, nullable=False),
    Column("body", Text, nullable=False),
)

uploads = Table(
    "uploads",
    metadata,
    Column("upload_id", String, primary_key=True),
    Column("kind", String, nullable=False),
    Column("name", String, nullable=False),
    Column("status", String, nullable=False),
    Column("version", Integer),
    Column("reason", String),
    Column("correlation_id", String, nullable=False),
    Column("actor", String, nullable=False),
    Column("created_at", String, nullable=False),
)

correlated_events = Table(
    "correlated_events",
    metadata,
    Column("seq", Integer, primary_key=True),
    Column("correlation_id", String, nullable=False, index=True),
    Column("type", String, nullable=False),
    Column("body", Text, nullable=False),
)

# -- training jobs: the job, its generations, its trials --------------------------------------
# JSON columns hold contract structs (request, plan, front, metrics) as the events carry them.

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("correlation_id", String, nullable=False),
    Column("owner", String, nullable=False, index=True),
    Column("role", String, nullable=False),
    Column("job_type", String, nullable=False),
    Column("arch", String, nullable=False),
    Column("dataset", String, nullable=False),
    Column("device", String, nullable=False),
    Column("status", String, nullable=False, index=True),
    Column("reason", String),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", String, nullable=False),
    Column("finished_at", String),
    Column("trials_total", Integer),
    Column("request", Text, nullable=False),
    Column("plan", Text),
    Column("front", Text, nullable=False, default="[]"),
    Column("registered", Text, nullable=False, default="[]"),  # upload ids
    Column("model_name", String),
)

job_generations = Table(
    "job_generations",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("generation", Integer, primary_key=True),
    Column("trial_ids", Text, nullable=False),
    Column("completed", Boolean, nullable=False, default=False),
    Column("trials_completed", Integer, nullable=False, default=0),
    Column("trials_failed", Integer, nullable=False, default=0),
    Column("trials_pruned", Integer, nullable=False, default=0),
    Column("front", Text, nullable=False, default="[]"),
    Column("best_accuracy", Float),
)

job_trials = Table(
    "job_trials",
    metadata,
    Column("trial_id", String, primary_key=True),
    Column("job_id", String, nullable=False, index=True),
    Column("generation", Integer, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("hyperparameters", Text, nullable=False),
    Column("parents", Text, nullable=False, default="[]"),
    Column("attempt", Integer, nullable=False, default=0),
    Column("host", String, nullable=False, default=""),
    Column("device", String, nullable=False, default=""),
    Column("parameters", Integer),
    Column("epoch", Integer, nullable=False, default=0),
    Column("epochs", Integer),
    Column("train_loss", Float),
    Column("val_accuracy", Float),
    Column("metrics", Text),
    Column("reason", String),
)

# -- deployments: the last requested spec, its outcome and what is served ----------------------

deployments = Table(
    "deployments",
    metadata,
    Column("name", String, primary_key=True),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("engine", String, nullable=False),
    Column("canary", Text),
    Column("public", Boolean, nullable=False),
    Column("max_batch_size", Integer, nullable=False),
    Column("preferred_batch_sizes", Text, nullable=False),
    Column("max_queue_delay_us", Integer, nullable=False),
    Column("instance_count", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", String),
    Column("serving_version", Integer),
    Column("instances", Text, nullable=False, default="[]"),
    Column("requested_by", String, nullable=False),
    Column("correlation_id", String, nullable=False),
    Column("requested_at", String, nullable=False),
    Column("updated_at", String, nullable=False),
)

# -- conversions: one row per job, one per target, and the engines produced --------------------

conversions = Table(
    "conversions",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("correlation_id", String, nullable=False),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("requested_by", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", String),
    Column("op", String),
    Column("dataset", String),
    Column("dataset_version", Integer),
    Column("host", String),
    Column("request", Text, nullable=False),
    Column("created_at", String, nullable=False),
    Column("finished_at", String),
)

# ``body`` is a ConversionTargetView as JSON; ``position`` orders the targets as requested.
conversion_targets = Table(
    "conversion_targets",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("target", String, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("status", String, nullable=False),
    Column("body", Text, nullable=False),
)

# ``body`` is an EngineArtifactView as JSON.
engine_artifacts = Table(
    "engine_artifacts",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("target", String, primary_key=True),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("body", Text, nullable=False),
)

# -- benchmarks: one row per job and one per measured cell -------------------------------------

benchmarks = Table(
    "benchmarks",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("correlation_id", String, nullable=False),
    Column("model_name", String, nullable=False),
    Column("version", Integer, nullable=False),
    Column("requested_by", String, nullable=False),
    Column("status", String, nullable=False),
    Column("reason", String),
    Column("host", String),
    Column("planned", Text, nullable=False, default="[]"),
    Column("unavailable", Text, nullable=False, default="{}"),
    Column("recommendation", Text),
    Column("request", Text, nullable=False),
    Column("created_at", String, nullable=False),
    Column("finished_at", String),
)

# ``body`` is a BenchmarkRow as JSON; the key is the row's cell.
benchmark_rows = Table(
    "benchmark_rows",
    metadata,
    Column("job_id", String, primary_key=True),
    Column("engine", String, primary_key=True),
    Column("precision", String, primary_key=True),
    Column("artifact", String, primary_key=True),
    Column("batch_size", Integer, primary_key=True),
    Column("concurrency", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("body", Text, nullable=False),
)


SECRET_FIELDS = ("password_hash", "token_sha256")
TERMINAL_TRIAL = ("completed", "failed", "pruned")


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _request_fields(event: Event, body: type[msgspec.Struct]) -> str:
    """The user's fields of a request event, as the API body ``body`` (JSON)."""
    raw = msgspec.to_builtins(event)
    return _json(msgspec.convert({k: raw[k] for k in body.__struct_fields__ if k in raw}, body))


def public_json(event: Event) -> str:
    """The event as JSON for the SSE feed, without password hashes or token digests."""
    if event.context != "identity":
        return encode(event).decode()
    raw = msgspec.json.decode(encode(event))
    for name in SECRET_FIELDS:
        if name in raw:
            raw[name] = "<redacted>"
    return msgspec.json.encode(raw).decode()


class GatewayProjection:
    """Folds every event of the log into the gateway's read model."""

    name = "gateway"
    metadata = metadata

    def __init__(self) -> None:
        # bumped after a committed batch changed users or tokens: the auth cache's key
        self.identity_generation = 0
        self._identity_touched = False

    def after_commit(self) -> None:
        if self._identity_touched:
            self._identity_touched = False
            self.identity_generation += 1

    def apply(self, session: Session, event: Event, seq: int) -> None:
        if event.context == "identity":
            self._identity_touched = True
        session.execute(
            insert(correlated_events)
            .values(
                seq=seq,
                correlation_id=event.correlation_id,
                type=event.tag(),
                body=public_json(event),
            )
            .on_conflict_do_nothing()
        )
        at = event.occurred_at.isoformat()
        match event:
            case UserCreated(username=u, role=r, password_hash=h):
                session.execute(
                    insert(users)
                    .values(
                        username=u,
                        role=r,
                        password_hash=h,
                        disabled=False,
                        created_at=at,
                        created_by=event.actor,
                    )
                    .on_conflict_do_nothing()
                )
            case RoleChanged(username=u, role=r):
                session.execute(update(users).where(users.c.username == u).values(role=r))
            case PasswordSet(username=u, password_hash=h):
                session.execute(update(users).where(users.c.username == u).values(password_hash=h))
            case UserDisabled(username=u):
                session.execute(update(users).where(users.c.username == u).values(disabled=True))
            case UserEnabled(username=u):
                session.execute(update(users).where(users.c.username == u).values(disabled=False))
            case TokenIssued():
                session.execute(
                    insert(tokens)
                    .values(
                        token_id=event.token_id,
                        username=event.username,
                        token_sha256=event.token_sha256,
                        label=event.label,
                        kind=event.kind,
                        created_at=at,
                        expires_at=event.expires_at,
                        revoked=False,
                    )
                    .on_conflict_do_nothing()
                )
            case TokenRevoked(token_id=t):
                session.execute(update(tokens).where(tokens.c.token_id == t).values(revoked=True))
            case ModelUploadReceived(upload_id=up, model_name=n):
                self._upload(session, event, up, "model", n)
            case DatasetUploadReceived(upload_id=up, dataset_name=n):
                self._upload(session, event, up, "dataset", n)
            case ModelRegistered(model_name=n, owner=o):
                session.execute(
                    insert(models)
                    .values(name=n, owner=o, created_at=at, latest_version=None)
                    .on_conflict_do_nothing()
                )
            case ModelVersionAdded():
                self._model_version(session, event, at)
            case ModelRejected(upload_id=up, reason=why):
                self._verdict(session, up, "rejected", None, why)
            case ModelStageChanged(model_name=n, version=v, stage=s):
                session.execute(
                    update(model_versions)
                    .where(model_versions.c.model_name == n, model_versions.c.version == v)
                    .values(stage=s)
                )
            case DatasetRegistered(dataset_name=n, owner=o):
                session.execute(
                    insert(datasets)
                    .values(name=n, owner=o, created_at=at, latest_version=None)
                    .on_conflict_do_nothing()
                )
            case DatasetValidated():
                self._dataset_version(session, event, at)
            case DatasetRejected(upload_id=up, reason=why):
                self._verdict(session, up, "rejected", None, why)
            case _ if event.context in ("training", "trial"):
                fold_training(session, event, at)
            case _ if event.context == "deployment":
                fold_deployment(session, event, at)
            case _ if event.context == "conversion":
                fold_conversion(session, event, seq, at)
            case _ if event.context == "benchmark":
                fold_benchmark(session, event, seq, at)
            case _:
                pass

    @staticmethod
    def _upload(session: Session, event: Event, upload_id: str, kind: str, name: str) -> None:
        session.execute(
            insert(uploads)
            .values(
                upload_id=upload_id,
                kind=kind,
                name=name,
                status="pending",
                correlation_id=event.correlation_id,
                actor=event.actor,
                created_at=event.occurred_at.isoformat(),
            )
            .on_conflict_do_nothing()
        )

    @staticmethod
    def _verdict(
        session: Session, upload_id: str, status: str, version: int | None, reason: str | None
    ) -> None:
        session.execute(
            update(uploads)
            .where(uploads.c.upload_id == upload_id)
            .values(status=status, version=version, reason=reason)
        )

    def _uploader(self, session: Session, upload_id: str, default: str) -> str:
        actor = session.execute(
            select(uploads.c.actor).where(uploads.c.upload_id == upload_id)
        ).scalar_one_or_none()
        return actor or default

    def _model_version(self, session: Session, e: ModelVersionAdded, at: str) -> None:
        by = self._uploader(session, e.upload_id, e.actor)
        session.execute(
            insert(models)
            .values(name=e.model_name, owner=by, created_at=at, latest_version=None)
            .on_conflict_do_nothing()
        )
        view = ModelVersionView(
            model_name=e.model_name,
            version=e.version,
            stage="none",
            format=e.format,
            artifact=e.artifact,
            inputs=e.inputs,
            outputs=e.outputs,
            parameter_count=e.parameter_count,
            opset=e.opset,
            architecture=e.architecture,
            num_classes=e.num_classes,
            description=e.description,
            lineage=e.lineage,
            created_at=e.occurred_at,
            created_by=by,
        )
        session.execute(
            insert(model_versions)
            .values(
                model_name=e.model_name,
                version=e.version,
                stage="none",
                upload_id=e.upload_id,
                body=msgspec.json.encode(view).decode(),
            )
            .on_conflict_do_nothing()
        )
        session.execute(
            update(models)
            .where(models.c.name == e.model_name)
            .values(latest_version=func.max(func.coalesce(models.c.latest_version, 0), e.version))
        )
        self._verdict(session, e.upload_id, "validated", e.version, None)

    def _dataset_version(self, session: Session, e: DatasetValidated, at: str) -> None:
        by = self._uploader(session, e.upload_id, e.actor)
        session.execute(
            insert(datasets)
            .values(name=e.dataset_name, owner=by, created_at=at, latest_version=None)
            .on_conflict_do_nothing()
        )
        view = DatasetView(
            name=e.dataset_name,
            owner=by,
            version=e.version,
            created_at=e.occurred_at,
            classes=e.classes,
            class_counts=e.class_counts,
            num_images=e.num_images,
            images=e.images,
            splits=e.splits,
            source=e.source,
            canonical=e.canonical,
            seed=e.seed,
            description=e.description,
        )
        session.execute(
            insert(dataset_versions)
            .values(
                name=e.dataset_name,
                version=e.version,
                upload_id=e.upload_id,
                body=msgspec.json.encode(view).decode(),
            )
            .on_conflict_do_nothing()
        )
        session.execute(
            update(datasets)
            .where(datasets.c.name == e.dataset_name)
            .values(latest_version=func.max(func.coalesce(datasets.c.latest_version, 0), e.version))
        )
        self._verdict(session, e.upload_id, "validated", e.version, None)


# -- folding work events -----------------------------------------------------------------------


def _job(job_id: str) -> Any:
    return jobs.c.job_id == job_id


def _job_running(job_id: str) -> Any:
    return (jobs.c.job_id == job_id) & jobs.c.status.not_in(TERMINAL_JOB)


def _trial_open(trial_id: str) -> Any:
    return (job_trials.c.trial_id == trial_id) & job_trials.c.status.not_in(TERMINAL_TRIAL)


def fold_training(session: Session, event: Event, at: str) -> None:
    """Jobs, generations and trials from ``training.*`` and ``trial.*`` events."""
    match event:
        case TrainingRequested():
            session.execute(
                insert(jobs)
                .values(
                    job_id=event.job_id,
                    correlation_id=event.correlation_id,
                    owner=event.actor,
                    role=event.role,
                    job_type=event.job_type,
                    arch=event.arch,
                    dataset=event.dataset,
                    device=event.device,
                    status="requested",
                    cancel_requested=False,
                    created_at=at,
                    request=_request_fields(event, CreateJob),
                    front="[]",
                    registered="[]",
                )
                .on_conflict_do_nothing()
            )
        case TrainingStarted(plan=plan):
            session.execute(
                update(jobs)
                .where(_job(event.job_id), jobs.c.status == "requested")
                .values(status="running", plan=_json(plan), trials_total=plan.trials)
            )
        case GenerationStarted(generation=g, trials=specs):
            session.execute(
                insert(job_generations)
                .values(
                    job_id=event.job_id,
                    generation=g,
                    trial_ids=_json([t.trial_id for t in specs]),
                    completed=False,
                    front="[]",
                )
                .on_conflict_do_nothing()
            )
            for spec in specs:
                session.execute(
                    insert(job_trials)
                    .values(
                        trial_id=spec.trial_id,
                        job_id=event.job_id,
                        generation=g,
                        idx=spec.index,
                        status="planned",
                        hyperparameters=_json(spec.hyperparameters),
                        parents=_json(spec.parents),
                    )
                    .on_conflict_do_nothing()
                )
        case GenerationCompleted(generation=g):
            session.execute(
                update(job_generations)
                .where(
                    job_generations.c.job_id == event.job_id,
                    job_generations.c.generation == g,
                    ~job_generations.c.completed,
                )
                .values(
                    completed=True,
                    trials_completed=event.completed,
                    trials_failed=event.failed,
                    trials_pruned=event.pruned,
                    front=_json(event.front),
                    best_accuracy=event.best_accuracy,
                )
            )
        case TrainingCompleted():
            session.execute(
                update(jobs)
                .where(_job_running(event.job_id))
                .values(
                    status="completed",
                    finished_at=at,
                    front=_json(event.front),
                    registered=_json(event.registered_uploads),
                    model_name=event.model_name,
                )
            )
        case TrainingFailed(reason=why):
            session.execute(
                update(jobs)
                .where(_job_running(event.job_id))
                .values(status="failed", reason=why, finished_at=at)
            )
        case TrainingCancelled(reason=why):
            session.execute(
                update(jobs)
                .where(_job_running(event.job_id))
                .values(status="cancelled", reason=why or "cancelled", finished_at=at)
            )
        case TrainingCancelRequested():
            session.execute(
                update(jobs).where(_job_running(event.job_id)).values(cancel_requested=True)
            )
        case _:
            fold_trial(session, event)


def fold_trial(session: Session, event: Event) -> None:
    """A trial's state; its first end (completed, failed, pruned) wins."""
    match event:
        case TrialRequested():
            session.execute(
                insert(job_trials)
                .values(
                    trial_id=event.trial_id,
                    job_id=event.job_id,
                    generation=event.generation,
                    idx=event.index,
                    status="requested",
                    hyperparameters=_json(event.hyperparameters),
                    parents="[]",
                )
                .on_conflict_do_nothing()
            )
            session.execute(
                update(job_trials)
                .where(job_trials.c.trial_id == event.trial_id, job_trials.c.status == "planned")
                .values(status="requested")
            )
        case TrialStarted():
            # a redelivered trial starts again with a higher attempt; an older start is stale
            values: dict[str, Any] = {
                "status": "running",
                "attempt": event.attempt,
                "host": event.host,
                "device": event.device,
                "parameters": event.parameters,
                "epoch": 0,
                "train_loss": None,
                "val_accuracy": None,
            }
            if event.hyperparameters:
                values["hyperparameters"] = _json(event.hyperparameters)
            session.execute(
                update(job_trials)
                .where(_trial_open(event.trial_id), job_trials.c.attempt < event.attempt)
                .values(**values)
            )
        case TrialProgressed():
            same_attempt = (job_trials.c.attempt == event.attempt) & (
                job_trials.c.epoch <= event.epoch
            )
            session.execute(
                update(job_trials)
                .where(
                    _trial_open(event.trial_id),
                    (job_trials.c.attempt < event.attempt) | same_attempt,
                )
                .values(
                    status="running",
                    attempt=event.attempt,
                    epoch=event.epoch,
                    epochs=event.epochs,
                    train_loss=event.train_loss,
                    val_accuracy=event.val_accuracy,
                )
            )
        case TrialCompleted(metrics=m):
            values = {
                "status": "completed",
                "metrics": _json(m),
                "val_accuracy": m.accuracy,
                "parameters": m.parameters,
                "hyperparameters": _json(event.hyperparameters),
            }
            if m.epochs:
                values.update(epoch=m.epochs, epochs=m.epochs)
            if event.host:
                values.update(host=event.host, device=event.device)
            session.execute(update(job_trials).where(_trial_open(event.trial_id)).values(values))
        case TrialFailed(reason=why):
            session.execute(
                update(job_trials)
                .where(_trial_open(event.trial_id))
                .values(status="failed", reason=why)
            )
        case TrialPruned(reason=why):
            session.execute(
                update(job_trials)
                .where(_trial_open(event.trial_id))
                .values(
                    status="pruned",
                    reason=why,
                    epoch=event.epoch,
                    val_accuracy=event.val_accuracy,
                )
            )
        case _:
            pass


def _serving_spec(event: DeploymentRequested | DeploymentReady) -> dict[str, Any]:
    return {
        "model_name": event.model_name,
        "version": event.version,
        "engine": event.engine,
        "canary": _json(event.canary) if event.canary is not None else None,
        "public": event.public,
        "max_batch_size": event.max_batch_size,
        "preferred_batch_sizes": _json(event.preferred_batch_sizes),
        "max_queue_delay_us": event.max_queue_delay_us,
        "instance_count": event.instance_count,
    }


def fold_deployment(session: Session, event: Event, at: str) -> None:
    """A deployment's state: each event sets it whole, so the last one tells."""
    match event:
        case DeploymentRequested():
            request = {
                **_serving_spec(event),
                "status": "requested",
                "reason": None,
                "requested_by": event.actor,
                "correlation_id": event.correlation_id,
                "requested_at": at,
                "updated_at": at,
            }
            session.execute(
                insert(deployments)
                .values(name=event.deployment, instances="[]", **request)
                .on_conflict_do_update(index_elements=["name"], set_=request)
            )
        case DeploymentReady():
            ready = {
                "status": "ready",
                "reason": None,
                "serving_version": event.version,
                "instances": _json(event.instances),
                "updated_at": at,
            }
            session.execute(
                insert(deployments)
                .values(
                    name=event.deployment,
                    **_serving_spec(event),
                    **ready,
                    requested_by=event.actor,
                    correlation_id=event.correlation_id,
                    requested_at=at,
                )
                .on_conflict_do_update(index_elements=["name"], set_=ready)
            )
        case DeploymentFailed(reason=why) | DeploymentDegraded(reason=why):
            status = "failed" if isinstance(event, DeploymentFailed) else "degraded"
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(status=status, reason=why, updated_at=at)
            )
        case DeploymentRetireRequested(reason=why):
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(
                    status="retiring",
                    reason=why or None,
                    correlation_id=event.correlation_id,
                    updated_at=at,
                )
            )
        case DeploymentRetired(reason=why):
            session.execute(
                update(deployments)
                .where(deployments.c.name == event.deployment)
                .values(
                    status="retired",
                    reason=why or None,
                    serving_version=None,
                    instances="[]",
                    updated_at=at,
                )
            )
        case _:
            pass


def _conversion_open(job_id: str) -> Any:
    return (conversions.c.job_id == job_id) & conversions.c.status.in_(("requested", "running"))


def _target_outcome(session: Session, job_id: str, view: ConversionTargetView) -> None:
    """The first outcome of a target wins (a redelivered job re-announces the same ones)."""
    session.execute(
        insert(conversion_targets)
        .values(
            job_id=job_id, target=view.target, position=1000, status=view.status, body=_json(view)
        )
        .on_conflict_do_update(
            index_elements=["job_id", "target"],
            set_={"status": view.status, "body": _json(view)},
            where=conversion_targets.c.status == "pending",
        )
    )


def fold_conversion(session: Session, event: Event, seq: int, at: str) -> None:
    """Conversion jobs, each target's outcome, and the engines produced per model version."""
    match event:
        case ConversionRequested():
            session.execute(
                insert(conversions)
                .values(
                    job_id=event.job_id,
                    correlation_id=event.correlation_id,
                    model_name=event.model_name,
                    version=event.version,
                    requested_by=event.actor,
                    status="requested",
                    dataset=event.dataset,
                    dataset_version=event.dataset_version,
                    request=_request_fields(event, CreateConversion),
                    created_at=at,
                )
                .on_conflict_do_nothing()
            )
            for position, target in enumerate(event.targets):
                pending = ConversionTargetView(target=target, status="pending")
                session.execute(
                    insert(conversion_targets)
                    .values(
                        job_id=event.job_id,
                        target=target,
                        position=position,
                        status="pending",
                        body=_json(pending),
                    )
                    .on_conflict_do_nothing()
                )
        case ConversionStarted():
            session.execute(
                update(conversions)
                .where(_conversion_open(event.job_id))
                .values(
                    status="running",
                    host=event.host,
                    dataset=event.dataset,
                    dataset_version=event.dataset_version,
                )
            )
        case ArtifactProduced():
            view = ConversionTargetView(
                target=event.target,
                status="produced",
                format=event.format,
                precision=event.precision,
                artifact=event.artifact,
                companions=list(event.companions),
                parity=event.parity,
                gate=event.gate,
                excluded_layers=list(event.excluded_layers),
            )
            _target_outcome(session, event.job_id, view)
            engine = EngineArtifactView(
                job_id=event.job_id,
                target=event.target,
                format=event.format,
                precision=event.precision,
                artifact=event.artifact,
                parity=event.parity,
                gate=event.gate,
                dataset=event.dataset,
                dataset_version=event.dataset_version,
                input_shape=list(event.input_shape),
                companions=list(event.companions),
                excluded_layers=list(event.excluded_layers),
                calibration=event.calibration,
                opset=event.opset,
                created_at=event.occurred_at,
            )
            session.execute(
                insert(engine_artifacts)
                .values(
                    job_id=event.job_id,
                    target=event.target,
                    model_name=event.model_name,
                    version=event.version,
                    seq=seq,
                    body=_json(engine),
                )
                .on_conflict_do_nothing()
            )
        case ArtifactRejected():
            view = ConversionTargetView(
                target=event.target,
                status="rejected",
                reason=event.reason,
                parity=event.parity,
                gate=event.gate,
                excluded_layers=list(event.excluded_layers),
                attempts=list(event.attempts),
            )
            _target_outcome(session, event.job_id, view)
        case TargetUnavailable():
            view = ConversionTargetView(
                target=event.target, status="unavailable", reason=event.reason
            )
            _target_outcome(session, event.job_id, view)
        case ConversionCompleted():
            session.execute(
                update(conversions)
                .where(_conversion_open(event.job_id))
                .values(status="completed", finished_at=at)
            )
        case ConversionFailed():
            session.execute(
                update(conversions)
                .where(_conversion_open(event.job_id))
                .values(status="failed", reason=event.reason, op=event.op, finished_at=at)
            )
        case _:
            pass


def _benchmark_open(job_id: str) -> Any:
    return (benchmarks.c.job_id == job_id) & benchmarks.c.status.in_(("requested", "running"))


def fold_benchmark(session: Session, event: Event, seq: int, at: str) -> None:
    """Benchmark jobs, their measured rows and the recommendation."""
    match event:
        case BenchmarkRequested():
            session.execute(
                insert(benchmarks)
                .values(
                    job_id=event.job_id,
                    correlation_id=event.correlation_id,
                    model_name=event.model_name,
                    version=event.version,
                    requested_by=event.actor,
                    status="requested",
                    planned="[]",
                    unavailable="{}",
                    request=_request_fields(event, CreateBenchmark),
                    created_at=at,
                )
                .on_conflict_do_nothing()
            )
        case BenchmarkStarted():
            session.execute(
                update(benchmarks)
                .where(_benchmark_open(event.job_id))
                .values(
                    status="running",
                    host=event.host,
                    planned=_json(event.targets),
                    unavailable=_json(event.unavailable),
                )
            )
        case BenchmarkRowMeasured(row=row):
            session.execute(
                insert(benchmark_rows)
                .values(
                    job_id=event.job_id,
                    engine=row.engine,
                    precision=row.precision,
                    artifact=row.artifact,
                    batch_size=row.batch_size,
                    concurrency=row.concurrency,
                    seq=seq,
                    body=_json(row),
                )
                .on_conflict_do_nothing()
            )
        case BenchmarkCompleted():
            recommendation = BenchmarkRecommendation(
                met_sla=event.met_sla,
                reason=event.reason,
                pick=event.pick,
                closest=event.closest,
                pareto=list(event.pareto),
                batcher=event.batcher,
                reference_accuracy=event.reference_accuracy,
                p95_ms=event.p95_ms,
                max_accuracy_drop=event.max_accuracy_drop,
                host=dict(event.host),
            )
            session.execute(
                update(benchmarks)
                .where(_benchmark_open(event.job_id))
                .values(
                    status="completed",
                    recommendation=_json(recommendation),
                    unavailable=_json(event.unavailable),
                    finished_at=at,
                )
            )
        case BenchmarkFailed(reason=why):
            session.execute(
                update(benchmarks)
                .where(_benchmark_open(event.job_id))
                .values(status="failed", reason=why, finished_at=at)
            )
        case _:
            pass


projection = GatewayProjection()


def db_path(settings: Settings) -> Path:
    """Where the gateway keeps its projection."""
    return settings.home_path / "gateway.sqlite"


# -- queries -------------------------------------------------------------------------


class UploadState(msgspec.Struct, frozen=True, kw_only=True):
    upload_id: str
    kind: str
    name: str
    status: str
    version: int | None
    reason: str | None
    correlation_id: str


class CorrelatedEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    body: str


def _dt(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _user_state(row: Row) -> UserState:
    return UserState(
        username=row.username,
        role=row.role,
        password_hash=row.password_hash,
        disabled=bool(row.disabled),
        created_at=_dt(row.created_at),
    )


def get_user(s: Session, username: str) -> UserState | None:
    row = s.execute(select(users).where(users.c.username == username)).first()
    return _user_state(row) if row else None


def user_view(user: UserState) -> UserView:
    return UserView(
        username=user.username, role=user.role, created_at=user.created_at, disabled=user.disabled
    )


def list_users(s: Session) -> list[UserView]:
    rows = s.execute(select(users).order_by(users.c.username)).all()
    return [user_view(_user_state(r)) for r in rows]


def count_users(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(users)).scalar_one())


def count_active_admins(s: Session) -> int:
    q = select(func.count()).select_from(users).where(users.c.role == "admin", ~users.c.disabled)
    return int(s.execute(q).scalar_one())


def _token_state(row: Row) -> TokenState:
    return TokenState(
        token_id=row.token_id,
        username=row.username,
        kind=row.kind,
        label=row.label,
        created_at=_dt(row.created_at),
        expires_at=_dt(row.expires_at) if row.expires_at else None,
        revoked=bool(row.revoked),
    )


def token_by_digest(s: Session, digest: str) -> tuple[TokenState, UserState] | None:
    """The token with this sha256 and its user (whatever their state)."""
    row = s.execute(
        select(tokens, users.c.role, users.c.password_hash, users.c.disabled)
        .add_columns(users.c.created_at.label("user_created_at"))
        .join(users, users.c.username == tokens.c.username)
        .where(tokens.c.token_sha256 == digest)
    ).first()
    if row is None:
        return None
    user = UserState(
        username=row.username,
        role=row.role,
        password_hash=row.password_hash,
        disabled=bool(row.disabled),
        created_at=_dt(row.user_created_at),
    )
    return _token_state(row), user


def get_token(s: Session, token_id: str) -> TokenState | None:
    row = s.execute(select(tokens).where(tokens.c.token_id == token_id)).first()
    return _token_state(row) if row else None


def list_tokens(s: Session, username: str) -> list[TokenView]:
    """A user's API tokens (session tokens from logins are not listed)."""
    rows = s.execute(
        select(tokens)
        .where(tokens.c.username == username, tokens.c.kind == "api")
        .order_by(tokens.c.created_at, tokens.c.token_id)
    ).all()
    return [
        TokenView(
            token_id=r.token_id, label=r.label, created_at=_dt(r.created_at), revoked=r.revoked
        )
        for r in rows
    ]


def _model_view(row: Row) -> ModelView:
    return ModelView(
        name=row.name,
        owner=row.owner,
        created_at=_dt(row.created_at),
        latest_version=row.latest_version,
    )


# Hot read statements are built once (bound parameters): building a select per request
# cost more than running it.
_LIST_MODELS = select(models).where(models.c.latest_version.is_not(None)).order_by(models.c.name)
_MODEL_VERSIONS = (
    select(model_versions)
    .where(model_versions.c.model_name == bindparam("name"))
    .order_by(model_versions.c.version)
)
_GET_MODEL = select(models).where(
    models.c.name == bindparam("name"), models.c.latest_version.is_not(None)
)
_GET_VERSION = select(model_versions).where(
    model_versions.c.model_name == bindparam("name"),
    model_versions.c.version == bindparam("version"),
)
_LIST_DATASETS = (
    select(dataset_versions)
    .join(
        datasets,
        (datasets.c.name == dataset_versions.c.name)
        & (datasets.c.latest_version == dataset_versions.c.version),
    )
    .order_by(dataset_versions.c.name)
)
_DATASET_VERSION = select(dataset_versions).where(
    dataset_versions.c.name == bindparam("name"),
    dataset_versions.c.version == bindparam("version"),
)
_DATASET_LATEST = (
    select(dataset_versions)
    .where(dataset_versions.c.name == bindparam("name"))
    .order_by(dataset_versions.c.version.desc())
    .limit(1)
)


def list_models(s: Session) -> list[ModelView]:
    """Models with at least one version."""
    rows = s.execute(_LIST_MODELS).all()
    return [_model_view(r) for r in rows]


def _version_view(row: Row) -> ModelVersionView:
    view = msgspec.json.decode(row.body, type=ModelVersionView)
    return msgspec.structs.replace(view, stage=row.stage)


def list_versions(s: Session, name: str) -> list[ModelVersionView]:
    rows = s.execute(_MODEL_VERSIONS, {"name": name}).all()
    return [_version_view(r) for r in rows]


def get_model(s: Session, name: str) -> ModelView | None:
    row = s.execute(_GET_MODEL, {"name": name}).first()
    if row is None:
        return None
    return msgspec.structs.replace(_model_view(row), versions=list_versions(s, name))


def get_version(s: Session, name: str, version: int) -> ModelVersionView | None:
    row = s.execute(_GET_VERSION, {"name": name, "version": version}).first()
    return _version_view(row) if row else None


def _dataset_view(row: Row) -> DatasetView:
    return msgspec.json.decode(row.body, type=DatasetView)


def list_datasets(s: Session) -> list[DatasetView]:
    """The latest validated version of every data set."""
    rows = s.execute(_LIST_DATASETS).all()
    return [_dataset_view(r) for r in rows]


def get_dataset(s: Session, name: str, version: int | None = None) -> DatasetView | None:
    if version is not None:
        row = s.execute(_DATASET_VERSION, {"name": name, "version": version}).first()
    else:
        row = s.execute(_DATASET_LATEST, {"name": name}).first()
    return _dataset_view(row) if row else None


def get_upload(s: Session, upload_id: str) -> UploadState | None:
    row = s.execute(select(uploads).where(uploads.c.upload_id == upload_id)).first()
    if row is None:
        return None
    return UploadState(
        upload_id=row.upload_id,
        kind=row.kind,
        name=row.name,
        status=row.status,
        version=row.version,
        reason=row.reason,
        correlation_id=row.correlation_id,
    )


def events_after(
    s: Session, correlation_id: str, after_seq: int, limit: int = 500
) -> list[CorrelatedEvent]:
    """Events of one correlation id with a stream sequence above ``after_seq``, oldest first."""
    rows = s.execute(
        select(correlated_events)
        .where(
            correlated_events.c.correlation_id == correlation_id,
            correlated_events.c.seq > after_seq,
        )
        .order_by(correlated_events.c.seq)
        .limit(limit)
    ).all()
    return [CorrelatedEvent(seq=r.seq, type=r.type, body=r.body) for r in rows]


def dataset_rejection(s: Session, name: str) -> str | None:
    """Why the newest rejected upload of data set ``name`` was refused (None: none was)."""
    return s.execute(
        select(uploads.c.reason)
        .where(uploads.c.kind == "dataset", uploads.c.name == name, uploads.c.status == "rejected")
        .order_by(uploads.c.created_at.desc(), uploads.c.upload_id.desc())
        .limit(1)
    ).scalar_one_or_none()


# -- training jobs -------------------------------------------------------------------------------


def _when(value: str | None) -> datetime | None:
    return _dt(value) if value else None


def _trial_counts(s: Session, job_ids: list[str]) -> dict[str, tuple[int, float | None]]:
    """Per job: trials that ended, and the best accuracy of a completed one."""
    done = func.sum(sql_case((job_trials.c.status.in_(TERMINAL_TRIAL), 1), else_=0))
    best = func.max(sql_case((job_trials.c.status == "completed", job_trials.c.val_accuracy)))
    rows = s.execute(
        select(job_trials.c.job_id, done, best)
        .where(job_trials.c.job_id.in_(job_ids))
        .group_by(job_trials.c.job_id)
    ).all()
    return {r[0]: (int(r[1] or 0), r[2]) for r in rows}


def _job_summary(row: Row, counts: dict[str, tuple[int, float | None]]) -> JobSummary:
    done, best = counts.get(row.job_id, (0, None))
    return JobSummary(
        job_id=row.job_id,
        correlation_id=row.correlation_id,
        job_type=row.job_type,
        arch=row.arch,
        dataset=row.dataset,
        owner=row.owner,
        device=row.device,
        status=row.status,
        created_at=_dt(row.created_at),
        finished_at=_when(row.finished_at),
        cancel_requested=bool(row.cancel_requested),
        trials_total=row.trials_total,
        trials_done=done,
        best_accuracy=best,
    )


def list_jobs(s: Session, status: str | None = None, limit: int = 200) -> list[JobSummary]:
    """Training jobs, newest first."""
    q = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.job_id).limit(limit)
    if status is not None:
        q = q.where(jobs.c.status == status)
    rows = s.execute(q).all()
    counts = _trial_counts(s, [r.job_id for r in rows])
    return [_job_summary(r, counts) for r in rows]


def job_state(s: Session, job_id: str) -> JobState | None:
    row = s.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
    if row is None:
        return None
    return JobState(
        job_id=row.job_id,
        owner=row.owner,
        status=row.status,
        cancel_requested=bool(row.cancel_requested),
        correlation_id=row.correlation_id,
    )


def _trial_view(r: Row) -> TrialView:
    return TrialView(
        trial_id=r.trial_id,
        generation=r.generation,
        index=r.idx,
        status=r.status,
        hyperparameters=msgspec.json.decode(r.hyperparameters),
        parents=msgspec.json.decode(r.parents),
        attempt=r.attempt,
        host=r.host,
        device=r.device,
        parameters=r.parameters,
        epoch=r.epoch,
        epochs=r.epochs,
        train_loss=r.train_loss,
        val_accuracy=r.val_accuracy,
        metrics=msgspec.json.decode(r.metrics, type=TrialMetrics) if r.metrics else None,
        reason=r.reason,
    )


def _registered(s: Session, upload_ids: list[str], model_name: str | None) -> list[RegisteredModel]:
    found = {
        r.upload_id: r
        for r in s.execute(select(uploads).where(uploads.c.upload_id.in_(upload_ids))).all()
    }
    out = []
    for upload_id in upload_ids:
        r = found.get(upload_id)
        out.append(
            RegisteredModel(
                upload_id=upload_id,
                model_name=r.name if r is not None else (model_name or ""),
                status=r.status if r is not None else "pending",
                version=r.version if r is not None else None,
                reason=r.reason if r is not None else None,
            )
        )
    return out


def get_job(s: Session, job_id: str) -> JobView | None:
    """A job with its request, plan, generations, trials, front and registered models."""
    row = s.execute(select(jobs).where(jobs.c.job_id == job_id)).first()
    if row is None:
        return None
    summary = _job_summary(row, _trial_counts(s, [job_id]))
    generations = [
        GenerationView(
            generation=g.generation,
            trials=msgspec.json.decode(g.trial_ids),
            completed=bool(g.completed),
            trials_completed=g.trials_completed,
            trials_failed=g.trials_failed,
            trials_pruned=g.trials_pruned,
            front=msgspec.json.decode(g.front),
            best_accuracy=g.best_accuracy,
        )
        for g in s.execute(
            select(job_generations)
            .where(job_generations.c.job_id == job_id)
            .order_by(job_generations.c.generation)
        ).all()
    ]
    trials = s.execute(
        select(job_trials)
        .where(job_trials.c.job_id == job_id)
        .order_by(job_trials.c.generation, job_trials.c.idx, job_trials.c.trial_id)
    ).all()
    return JobView(
        **msgspec.structs.asdict(summary),
        request=msgspec.json.decode(row.request, type=CreateJob),
        reason=row.reason,
        plan=msgspec.json.decode(row.plan, type=TrainingPlan) if row.plan else None,
        generations=generations,
        trials=[_trial_view(t) for t in trials],
        front=msgspec.json.decode(row.front, type=list[TrialSummary]),
        models=_registered(s, msgspec.json.decode(row.registered), row.model_name),
    )


def running_gpu_jobs(s: Session, *, owner: str | None = None, role: str | None = None) -> int:
    """Jobs that asked for ``cuda`` and have not ended, of one user or one role."""
    q = (
        select(func.count())
        .select_from(jobs)
        .where(jobs.c.device == "cuda", jobs.c.status.not_in(TERMINAL_JOB))
    )
    if owner is not None:
        q = q.where(jobs.c.owner == owner)
    if role is not None:
        q = q.where(jobs.c.role == role)
    return int(s.execute(q).scalar_one())


# -- deployments ---------------------------------------------------------------------------------


def _deployment_view(r: Row) -> DeploymentView:
    return DeploymentView(
        deployment=r.name,
        model_name=r.model_name,
        version=r.version,
        engine=r.engine,
        canary=msgspec.json.decode(r.canary, type=Canary) if r.canary else None,
        public=bool(r.public),
        max_batch_size=r.max_batch_size,
        preferred_batch_sizes=msgspec.json.decode(r.preferred_batch_sizes),
        max_queue_delay_us=r.max_queue_delay_us,
        instance_count=r.instance_count,
        status=r.status,
        reason=r.reason,
        serving_version=r.serving_version,
        instances=msgspec.json.decode(r.instances),
        requested_by=r.requested_by,
        correlation_id=r.correlation_id,
        requested_at=_dt(r.requested_at),
        updated_at=_dt(r.updated_at),
    )


def list_deployments(s: Session) -> list[DeploymentView]:
    rows = s.execute(select(deployments).order_by(deployments.c.name)).all()
    return [_deployment_view(r) for r in rows]


def get_deployment(s: Session, name: str) -> DeploymentView | None:
    row = s.execute(select(deployments).where(deployments.c.name == name)).first()
    return _deployment_view(row) if row else None


# -- conversions and benchmarks -----------------------------------------------------------------


def get_conversion(s: Session, job_id: str) -> ConversionView | None:
    row = s.execute(select(conversions).where(conversions.c.job_id == job_id)).first()
    if row is None:
        return None
    targets = s.execute(
        select(conversion_targets.c.body)
        .where(conversion_targets.c.job_id == job_id)
        .order_by(conversion_targets.c.position, conversion_targets.c.target)
    ).scalars()
    return ConversionView(
        job_id=row.job_id,
        correlation_id=row.correlation_id,
        model_name=row.model_name,
        version=row.version,
        status=row.status,
        requested_by=row.requested_by,
        created_at=_dt(row.created_at),
        finished_at=_when(row.finished_at),
        request=msgspec.json.decode(row.request, type=CreateConversion),
        reason=row.reason,
        op=row.op,
        dataset=row.dataset,
        dataset_version=row.dataset_version,
        host=row.host,
        targets=[msgspec.json.decode(b, type=ConversionTargetView) for b in targets],
    )


def list_engine_artifacts(s: Session, name: str, version: int) -> list[EngineArtifactView]:
    """Engines produced from a model version, oldest first."""
    bodies = s.execute(
        select(engine_artifacts.c.body)
        .where(engine_artifacts.c.model_name == name, engine_artifacts.c.version == version)
        .order_by(engine_artifacts.c.seq)
    ).scalars()
    return [msgspec.json.decode(b, type=EngineArtifactView) for b in bodies]


def get_benchmark(s: Session, job_id: str) -> BenchmarkView | None:
    row = s.execute(select(benchmarks).where(benchmarks.c.job_id == job_id)).first()
    if row is None:
        return None
    rows = s.execute(
        select(benchmark_rows.c.body)
        .where(benchmark_rows.c.job_id == job_id)
        .order_by(benchmark_rows.c.seq)
    ).scalars()
    recommendation = (
        msgspec.json.decode(row.recommendation, type=BenchmarkRecommendation)
        if row.recommendation
        else None
    )
    return BenchmarkView(
        job_id=row.job_id,
        correlation_id=row.correlation_id,
        model_name=row.model_name,
        version=row.version,
        status=row.status,
        requested_by=row.requested_by,
        created_at=_dt(row.created_at),
        finished_at=_when(row.finished_at),
        request=msgspec.json.decode(row.request, type=CreateBenchmark),
        reason=row.reason,
        host=row.host,
        planned=msgspec.json.decode(row.planned),
        unavailable=msgspec.json.decode(row.unavailable),
        rows=[msgspec.json.decode(b, type=BenchmarkRow) for b in rows],
        recommendation=recommendation,
    )
