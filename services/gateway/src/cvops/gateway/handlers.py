"""Pure decisions of the gateway: state + command -> events. No clock, no uuid, no I/O.

Secrets never reach a handler: it gets password hashes and token digests, and the
``Stamp`` that carries the time, the actor and the correlation id.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

import msgspec

from cvops.contracts import Event, Stamp
from cvops.contracts.api import (
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    DatasetView,
    DeploymentView,
    JobStatus,
    ModelVersionView,
    UpdateUser,
)
from cvops.contracts.conversion import (
    CALIBRATION_METHODS,
    CONVERSION_TARGETS,
    BenchmarkRequested,
    ConversionRequested,
)
from cvops.contracts.deployment import (
    ENGINES,
    Canary,
    DeploymentRequested,
    DeploymentRetireRequested,
)
from cvops.contracts.identity import (
    ROLES,
    PasswordSet,
    Role,
    RoleChanged,
    TokenIssued,
    TokenRevoked,
    UserCreated,
    UserDisabled,
    UserEnabled,
)
from cvops.contracts.registry import STAGES, ModelStageChanged, Stage
from cvops.contracts.training import (
    ARCHITECTURES,
    OBJECTIVES,
    Budget,
    ParamSpec,
    TrainingCancelRequested,
    TrainingRequested,
)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_PASSWORD_LENGTH = 8
BOOTSTRAP_ADMIN = "admin"


class Refused(Exception):
    """A command the current state does not allow; ``str(err)`` says why."""


class NotFound(Refused):
    """The command names something that does not exist."""


class Conflict(Refused):
    """The command clashes with the current state (exists already, last admin...)."""


class Invalid(Refused):
    """The command itself is malformed (bad name, short password, unknown role)."""


class Forbidden(Refused):
    """The caller's role allows the command, but not on this thing (someone else's job)."""


class QuotaExceeded(Refused):
    """The caller (or their role) has as many GPU jobs running as the quota allows."""


class UserState(msgspec.Struct, frozen=True, kw_only=True):
    username: str
    role: Role
    password_hash: str
    disabled: bool
    created_at: datetime


class TokenState(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    username: str
    kind: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked: bool


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid user, model or data-set name, else raise ``Invalid``."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise Invalid(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"password must have at least {MIN_PASSWORD_LENGTH} characters")


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise Invalid(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def create_user(
    existing: UserState | None,
    *,
    username: str,
    role: str,
    password_hash: str,
    stamp: Stamp,
) -> list[Event]:
    """A new user; refused when the name is taken or malformed."""
    check_name(username, "username")
    checked_role = _check_role(role)
    if existing is not None:
        raise Conflict(f"user {username!r} exists already")
    return [
        UserCreated(
            **stamp.envelope(f"user-created/{username}"),
            username=username,
            role=checked_role,
            password_hash=password_hash,
        )
    ]


def update_user(
    user: UserState | None,
    change: UpdateUser,
    *,
    password_hash: str | None,
    active_admins: int,
    stamp: Stamp,
) -> list[Event]:
    """Role, password and enabled/disabled changes; the last active admin stays an admin."""
    if user is None:
        raise NotFound("no such user")
    events: list[Event] = []
    new_role = _check_role(change.role) if change.role is not None else user.role
    disables = change.disabled is True and not user.disabled
    loses_admin = user.role == "admin" and not user.disabled and (new_role != "admin" or disables)
    if loses_admin and active_admins <= 1:
        raise Conflict("refused: this is the last active admin")
    if new_role != user.role:
        events.append(
            RoleChanged(
                **stamp.envelope(f"role-changed/{user.username}"),
                username=user.username,
                role=new_role,
            )
        )
    if password_hash is not None:
        events.append(
            PasswordSet(
                **stamp.envelope(f"password-set/{user.username}"),
                username=user.username,
                password_hash=password_hash,
            )
        )
    if disables:
        events.append(
            UserDisabled(**stamp.envelope(f"disabled/{user.username}"), username=user.username)
        )
    elif change.disabled is False and user.disabled:
        events.append(
            UserEnabled(**stamp.envelope(f"enabled/{user.username}"), username=user.username)
        )
    return events


def issue_token(
    user: UserState | None,
    *,
    token_id: str,
    token_sha256: str,
    label: str,
    kind: str,
    expires_at: datetime | None,
    stamp: Stamp,
) -> list[Event]:
    """A session (login) or API token for an active user; only its digest is recorded."""
    if user is None or user.disabled:
        raise NotFound("no such active user")
    if len(label) > 200:
        raise Invalid("token label is longer than 200 characters")
    return [
        TokenIssued(
            **stamp.envelope(f"token-issued/{token_id}"),
            username=user.username,
            token_id=token_id,
            token_sha256=token_sha256,
            label=label,
            kind="session" if kind == "session" else "api",
            expires_at=expires_at.isoformat() if expires_at else None,
        )
    ]


def revoke_token(
    token: TokenState | None, *, username: str, is_admin: bool, stamp: Stamp
) -> list[Event]:
    """Revoke one of your own tokens (an admin may revoke anyone's); revoking twice is a no-op."""
    if token is None or (token.username != username and not is_admin):
        raise NotFound("no such token")
    if token.revoked:
        return []
    return [
        TokenRevoked(
            **stamp.envelope(f"token-revoked/{token.token_id}"),
            username=token.username,
            token_id=token.token_id,
        )
    ]


def bootstrap_admin(
    user_count: int, *, password_hash: str, token_id: str, token_sha256: str, stamp: Stamp
) -> list[Event]:
    """On a platform with no user at all: an ``admin`` with a password and an API token."""
    if user_count > 0:
        return []
    created = create_user(
        None, username=BOOTSTRAP_ADMIN, role="admin", password_hash=password_hash, stamp=stamp
    )
    admin = UserState(
        username=BOOTSTRAP_ADMIN,
        role="admin",
        password_hash=password_hash,
        disabled=False,
        created_at=stamp.now,
    )
    token = issue_token(
        admin,
        token_id=token_id,
        token_sha256=token_sha256,
        label="bootstrap",
        kind="api",
        expires_at=None,
        stamp=stamp,
    )
    return created + token


def change_stage(version: ModelVersionView | None, stage: str, *, stamp: Stamp) -> list[Event]:
    """Move a model version to another stage; asking for the current stage changes nothing."""
    if version is None:
        raise NotFound("no such model version")
    if stage not in STAGES:
        raise Invalid(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if stage == version.stage:
        return []
    new_stage: Stage = stage  # type: ignore[assignment]
    return [
        ModelStageChanged(
            **stamp.envelope(f"stage/{version.model_name}/{version.version}/{stage}"),
            model_name=version.model_name,
            version=version.version,
            stage=new_stage,
            previous=version.stage,
        )
    ]


# -- training jobs -----------------------------------------------------------------------------

TERMINAL_JOB: tuple[JobStatus, ...] = ("completed", "failed", "cancelled")
# What a model version must be before it can be served or converted by the other services.
SERVABLE_FORMATS = ("onnx",)
MAX_BATCH_SIZE = 1024
MAX_INSTANCES = 16


class JobState(msgspec.Struct, frozen=True, kw_only=True):
    """What the gateway decides a cancel from."""

    job_id: str
    owner: str
    status: JobStatus
    cancel_requested: bool
    correlation_id: str


def _positive(value: float | None, what: str, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "positive"
        raise Invalid(f"{what} must be {bound}, got {value!r}")


def _at_least_one(value: int | None, what: str) -> None:
    if value is not None and value < 1:
        raise Invalid(f"{what} must be at least 1, got {value}")


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


def resolve_budget(budget: Budget) -> Budget:
    """Refuse a zero or contradictory budget; fill the missing factor of ``trials``.

    ``trials`` with one of ``population``/``generations`` gets the other (it must divide).
    """
    _at_least_one(budget.trials, "budget trials")
    _at_least_one(budget.population, "budget population")
    _at_least_one(budget.generations, "budget generations")
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


def check_objectives(body: CreateJob) -> list[str]:
    """The objectives without repeats; refused when empty, unknown or without accuracy."""
    objectives = list(dict.fromkeys(body.objectives))
    if not objectives:
        raise Invalid(f"at least one objective is needed ({', '.join(OBJECTIVES)})")
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise Invalid(f"unknown objective {unknown[0]!r}; objectives: {', '.join(OBJECTIVES)}")
    if "accuracy" not in objectives:
        raise Invalid("objectives must include accuracy")
    if body.mode == "weighted":
        extra = sorted(set(body.weights) - set(objectives))
        if extra:
            raise Invalid(f"weights name objectives that are not searched: {', '.join(extra)}")
        for name, weight in body.weights.items():
            _positive(weight, f"weight of {name}", allow_zero=True)
    elif body.weights:
        raise Invalid("weights need mode 'weighted'")
    return objectives


def dataset_refusal(name: str, version: int | None, rejection: str | None) -> str:
    """Why a training or conversion cannot use data set ``name`` (it has no such version)."""
    if version is not None:
        return f"data set {name!r} has no validated version {version}"
    if rejection is not None:
        return f"data set {name!r} failed validation: {rejection}"
    return f"unknown data set {name!r}; upload it first (cvops datasets upload)"


def request_training(
    body: CreateJob,
    *,
    job_id: str,
    role: str,
    dataset: DatasetView | None,
    dataset_rejection: str | None,
    stamp: Stamp,
) -> list[Event]:
    """A training job request, after the checks that need no model code.

    The trainer checks the rest (hyperparameter names and limits, image size) and answers
    ``training.failed`` with the reason.
    """
    check_name(body.arch, "architecture")
    if body.arch not in ARCHITECTURES:
        raise Invalid(
            f"unknown architecture {body.arch!r}; architectures: {', '.join(ARCHITECTURES)}"
        )
    if body.model_name is not None:
        check_name(body.model_name, "model name")
    if dataset is None:
        raise Invalid(dataset_refusal(body.dataset, body.dataset_version, dataset_rejection))
    if body.job_type == "single":
        if body.search_space:
            raise Invalid("a single training run takes hyperparameters, not a search_space")
        budget = Budget(trials=1, population=1, generations=1)
    else:
        budget = resolve_budget(body.budget)
        check_search_space(body.search_space)
    objectives = check_objectives(body)
    for name, value in msgspec.structs.asdict(body.constraints).items():
        _positive(value, f"constraint {name}")
    _at_least_one(body.epochs, "epochs")
    _at_least_one(body.image_size, "image_size")
    _at_least_one(body.max_batches_per_epoch, "max_batches_per_epoch")
    if body.register_limit < 0:
        raise Invalid(f"register_limit must not be negative, got {body.register_limit}")
    if body.seed < 0:
        raise Invalid(f"seed must not be negative, got {body.seed}")
    if not body.target_engine.strip():
        raise Invalid("target_engine must not be empty")
    return [
        TrainingRequested(
            **stamp.envelope(f"training/{job_id}"),
            job_id=job_id,
            dataset=body.dataset,
            arch=body.arch,
            dataset_version=body.dataset_version,
            job_type=body.job_type,
            search_space=body.search_space,
            hyperparameters=body.hyperparameters,
            budget=budget,
            objectives=objectives,  # type: ignore[arg-type]
            mode=body.mode,
            weights=body.weights,
            constraints=body.constraints,
            seed=body.seed,
            image_size=body.image_size,
            epochs=body.epochs,
            target_engine=body.target_engine,
            device=body.device,
            model_name=body.model_name,
            register_limit=body.register_limit,
            role=role,
            max_batches_per_epoch=body.max_batches_per_epoch,
        )
    ]


def check_gpu_quota(
    device: str,
    *,
    username: str,
    role: str,
    user_running: int,
    role_running: int,
    per_user: int,
    per_role: int,
) -> None:
    """Refuse a ``cuda`` job past the per-user or per-role limit (0: no limit)."""
    if device != "cuda":
        return
    hint = "wait for one to finish, cancel one (cvops jobs cancel) or ask for device cpu/auto"
    if per_user and user_running >= per_user:
        raise QuotaExceeded(
            f"GPU quota: {username} has {user_running} GPU job(s) running, the limit per user "
            f"is {per_user}; {hint}"
        )
    if per_role and role_running >= per_role:
        raise QuotaExceeded(
            f"GPU quota: role {role} has {role_running} GPU job(s) running, the limit per role "
            f"is {per_role}; {hint}"
        )


def cancel_training(
    job: JobState | None, *, username: str, is_admin: bool, stamp: Stamp
) -> list[Event]:
    """Ask the trainer to stop a job (yours, or anyone's for an admin); twice is a no-op.

    The request carries the job's correlation id, so the job's event feed shows it.
    """
    if job is None:
        raise NotFound("no such job")
    if job.owner != username and not is_admin:
        raise Forbidden(f"job {job.job_id} belongs to {job.owner}; only they or an admin cancel it")
    if job.status in TERMINAL_JOB:
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


# -- deployments -------------------------------------------------------------------------------

_CANARY = re.compile(r"(?:(?P<model>[^:=\s]+):)?v?(?P<version>\d+)=(?P<percent>[0-9.]+)%?")


def parse_canary(text: str, model_name: str) -> Canary:
    """``"MODEL:VERSION=10%"`` (or ``"VERSION=10%"``) -> a canary of the same model."""
    found = _CANARY.fullmatch(text.strip())
    if found is None:
        raise Invalid(f"canary must look like '{model_name}:2=10%', got {text!r}")
    model = found["model"]
    if model is not None and model != model_name:
        raise Invalid(
            f"a canary is another version of the same model ({model_name}), not {model!r}"
        )
    try:
        percent = float(found["percent"])
    except ValueError as err:
        raise Invalid(f"canary weight {found['percent']!r} is not a number") from err
    if not 0 < percent < 100:
        raise Invalid(f"canary weight must be strictly between 0 and 100 %, got {percent:g}")
    return Canary(model_version=int(found["version"]), weight_percent=percent)


def _servable(name: str, version: int, found: ModelVersionView | None) -> None:
    if found is None:
        raise NotFound(f"model {name!r} has no version {version}")
    if found.format not in SERVABLE_FORMATS:
        raise Invalid(
            f"{name}:{version} is {found.format}; convert it to ONNX first (cvops convert)"
        )


def request_deployment(
    body: CreateDeployment,
    *,
    canary: Canary | None,
    version: ModelVersionView | None,
    canary_version: ModelVersionView | None,
    stamp: Stamp,
) -> list[Event]:
    """Serve a model version (and optionally a canary of another version) under a name."""
    deployment = check_name(body.deployment or body.model_name, "deployment name")
    _servable(body.model_name, body.version, version)
    if canary is not None:
        if canary.model_version == body.version:
            raise Invalid("the canary version must differ from the deployed version")
        _servable(body.model_name, canary.model_version, canary_version)
    if body.engine not in ENGINES:
        raise Invalid(f"unknown engine {body.engine!r}; engines: {', '.join(ENGINES)}")
    if not 0 <= body.max_batch_size <= MAX_BATCH_SIZE:
        raise Invalid(f"max_batch_size must be within 0..{MAX_BATCH_SIZE} (0: no batching)")
    bad = [b for b in body.preferred_batch_sizes if not 0 < b <= body.max_batch_size]
    if bad:
        raise Invalid(
            f"preferred batch sizes {bad} are outside 1..max_batch_size ({body.max_batch_size})"
        )
    if body.max_queue_delay_us < 0:
        raise Invalid("max_queue_delay_us must not be negative")
    if not 1 <= body.instance_count <= MAX_INSTANCES:
        raise Invalid(f"instance_count must be within 1..{MAX_INSTANCES}")
    return [
        DeploymentRequested(
            **stamp.envelope(f"deploy/{deployment}"),
            deployment=deployment,
            model_name=body.model_name,
            version=body.version,
            engine=body.engine,
            canary=canary,
            public=body.public,
            max_batch_size=body.max_batch_size,
            preferred_batch_sizes=list(body.preferred_batch_sizes),
            max_queue_delay_us=body.max_queue_delay_us,
            instance_count=body.instance_count,
        )
    ]


def retire_deployment(current: DeploymentView | None, *, stamp: Stamp) -> list[Event]:
    """Undeploy; retiring what is already being retired changes nothing."""
    if current is None:
        raise NotFound("no such deployment")
    if current.status == "retired":
        raise Conflict(f"deployment {current.deployment} is retired already")
    if current.status == "retiring":
        return []
    return [
        DeploymentRetireRequested(
            **stamp.envelope(f"retire/{current.deployment}"),
            deployment=current.deployment,
            reason=f"retired by {stamp.actor}",
        )
    ]


# -- conversions and benchmarks ----------------------------------------------------------------


def conversion_targets(targets: list[str]) -> list[str]:
    """Known targets without repeats; ``tensorrt`` stands for both TensorRT targets."""
    expanded: list[str] = []
    for raw in targets:
        target = raw.strip().lower()
        expanded.extend(["tensorrt-fp16", "tensorrt-int8"] if target == "tensorrt" else [target])
    unknown = [t for t in expanded if t not in CONVERSION_TARGETS]
    if unknown:
        raise Invalid(
            f"unknown target {unknown[0]!r}; targets: {', '.join(CONVERSION_TARGETS)}, tensorrt"
        )
    if not expanded:
        raise Invalid("at least one target is needed")
    return list(dict.fromkeys(expanded))


def _dataset_named(name: str | None, version: int | None, found: DatasetView | None) -> None:
    if name is not None and found is None:
        raise Invalid(dataset_refusal(name, version, None))


def request_conversion(
    body: CreateConversion,
    *,
    job_id: str,
    version: ModelVersionView | None,
    dataset: DatasetView | None,
    stamp: Stamp,
) -> list[Event]:
    """Convert a model version to engines, each held to the accuracy gate."""
    if version is None:
        raise NotFound(f"model {body.model_name!r} has no version {body.version}")
    targets = conversion_targets(body.targets)
    if body.calibration not in CALIBRATION_METHODS:
        raise Invalid(
            f"unknown calibration method {body.calibration!r}; "
            f"methods: {', '.join(CALIBRATION_METHODS)}"
        )
    _positive(body.max_accuracy_drop, "max_accuracy_drop", allow_zero=True)
    _dataset_named(body.dataset, body.dataset_version, dataset)
    if not (body.dataset or version.lineage.dataset):  # as the converter chooses
        raise Invalid(
            f"model {body.model_name}:{body.version} has no data set in its lineage (it was "
            "uploaded, not trained here): name one to validate and calibrate the engines with "
            "(dataset; cvops convert --dataset NAME)"
        )
    _at_least_one(body.validation_images, "validation_images")
    if body.opset < 7:
        raise Invalid(f"opset must be at least 7, got {body.opset}")
    if body.int8_max_float_layers is not None and body.int8_max_float_layers < 0:
        raise Invalid("int8_max_float_layers must not be negative")
    return [
        ConversionRequested(
            **stamp.envelope(f"conversion/{job_id}"),
            job_id=job_id,
            model_name=body.model_name,
            version=body.version,
            targets=targets,  # type: ignore[arg-type]
            opset=body.opset,
            calibration=body.calibration,  # type: ignore[arg-type]
            max_accuracy_drop=body.max_accuracy_drop,
            dataset=body.dataset,
            dataset_version=body.dataset_version,
            validation_images=body.validation_images,
            int8_max_float_layers=body.int8_max_float_layers,
        )
    ]


def _sizes(values: list[int], what: str, limit: int) -> list[int]:
    if not values:
        raise Invalid(f"at least one {what} is needed")
    bad = [v for v in values if not 1 <= v <= limit]
    if bad:
        raise Invalid(f"{what} must be within 1..{limit}, got {bad}")
    return sorted(set(values))


def request_benchmark(
    body: CreateBenchmark,
    *,
    job_id: str,
    version: ModelVersionView | None,
    dataset: DatasetView | None,
    conversion: tuple[str, int] | None,
    stamp: Stamp,
) -> list[Event]:
    """Measure the engines of a model version and pick one under the SLA.

    ``conversion`` is the (model, version) of ``body.conversion_job`` when it exists.
    """
    if version is None:
        raise NotFound(f"model {body.model_name!r} has no version {body.version}")
    engines = list(dict.fromkeys(e.strip() for e in body.engines))
    if any(not e for e in engines):
        raise Invalid("engine names must not be empty")
    batch_sizes = _sizes(body.batch_sizes, "batch size", 4096)
    concurrency = _sizes(body.concurrency, "concurrency", 1024)
    _positive(body.p95_ms, "p95_ms")
    _positive(body.max_accuracy_drop, "max_accuracy_drop", allow_zero=True)
    _positive(body.time_cap_s, "time_cap_s")
    _at_least_one(body.min_requests, "min_requests")
    _at_least_one(body.validation_images, "validation_images")
    _dataset_named(body.dataset, body.dataset_version, dataset)
    if body.conversion_job is not None:
        if conversion is None:
            raise Invalid(f"unknown conversion job {body.conversion_job!r}")
        if conversion != (body.model_name, body.version):
            model, v = conversion
            raise Invalid(f"conversion job {body.conversion_job} converted {model}:{v}")
    return [
        BenchmarkRequested(
            **stamp.envelope(f"benchmark/{job_id}"),
            job_id=job_id,
            model_name=body.model_name,
            version=body.version,
            engines=engines,
            batch_sizes=batch_sizes,
            concurrency=concurrency,
            p95_ms=body.p95_ms,
            max_accuracy_drop=body.max_accuracy_drop,
            time_cap_s=body.time_cap_s,
            min_requests=body.min_requests,
            dataset=body.dataset,
            dataset_version=body.dataset_version,
            validation_images=body.validation_images,
            conversion_job=body.conversion_job,
        )
    ]
