"""The gateway's use cases: read the projection, decide with ``handlers``, append to the log,
then wait until the own projection has the write (a client always reads its own write).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cvops.contracts import SUBJECT_PREFIX, ArtifactRef, Event, Stamp, subject_token
from cvops.contracts.api import (
    CreateBenchmark,
    CreateConversion,
    CreateDeployment,
    CreateJob,
    CreateUser,
    DeploymentView,
    JobCreated,
    JobView,
    LoginResponse,
    ModelVersionView,
    TokenCreated,
    UpdateUser,
    UploadResult,
    UserView,
)
from cvops.contracts.registry import DatasetUploadReceived, ModelUploadReceived
from cvops.core import (
    ArtifactStore,
    Bus,
    ConcurrencyConflict,
    ProjectionRunner,
    Settings,
    get_logger,
)
from cvops.gateway import handlers
from cvops.gateway import projection as views
from cvops.gateway.auth import Passwords, Principal, new_token
from cvops.gateway.handlers import Invalid, NotFound, check_name
from cvops.gateway.metrics import GatewayMetrics
from cvops.gateway.uploads import UploadForm

log = get_logger(__name__)

WRITE_ATTEMPTS = 3
MAX_FIELD_CHARS = 2000


class NotAuthenticated(Exception):
    """Wrong username or password (the reason is not told apart, on purpose)."""


def user_subjects(username: str) -> str:
    return f"{SUBJECT_PREFIX}.identity.{subject_token(username)}.*"


def model_subjects(model_name: str) -> str:
    return f"{SUBJECT_PREFIX}.registry.{subject_token(f'model-{model_name}')}.*"


_TOKEN_CACHE_MAX = 10_000


@dataclass
class GatewayService:
    """Everything a request handler can reach: settings, bus, projection, artifacts."""

    settings: Settings
    bus: Bus
    runner: ProjectionRunner
    artifacts: ArtifactStore
    passwords: Passwords
    metrics: GatewayMetrics
    caught_up: bool = False
    # set when the server shuts down: open event feeds end so the shutdown is not held up
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # token digest -> (identity generation it was read at, the token and its user, or None)
    _tokens: dict[str, tuple[int, tuple[views.TokenState, views.UserState] | None]] = field(
        default_factory=dict
    )

    # -- plumbing ----------------------------------------------------------------
    def token_owner(self, digest: str) -> tuple[views.TokenState, views.UserState] | None:
        """The token with this sha256 and its user, cached until users or tokens change.

        The cache key is the projection's identity generation, which moves after every
        committed change to users or tokens: a revocation is seen by the next request.
        """
        generation = self.runner.projection.identity_generation  # type: ignore[attr-defined]
        hit = self._tokens.get(digest)
        if hit is not None and hit[0] == generation:
            return hit[1]
        with self.runner.session() as s:
            found = views.token_by_digest(s, digest)
        if len(self._tokens) >= _TOKEN_CACHE_MAX:
            self._tokens.clear()
        self._tokens[digest] = (generation, found)
        return found

    def stamp(self, actor: str, correlation_id: str) -> Stamp:
        return Stamp(now=datetime.now(UTC), actor=actor, correlation_id=correlation_id)

    async def append(self, events: list[Event], *, expected: int | None = None) -> int:
        """Publish events in order; with ``expected``, each one guards the aggregate."""
        seq = 0
        for event in events:
            published = await self.bus.publish(event, expected_last_subject_seq=expected)
            seq = published.seq
            if expected is not None:
                expected = seq
        return seq

    async def settle(self, seq: int) -> None:
        """Wait until the projection has applied ``seq`` (read-your-write)."""
        if seq and not await self.runner.wait_for(seq, self.settings.read_your_write_timeout_s):
            log.warning("read_your_write_timeout", seq=seq, position=self.runner.position)

    async def write_aggregate(self, subjects: str, decide: Callable[[], list[Event]]) -> int:
        """Optimistic write: read the aggregate at its last sequence, decide, append guarded.

        ``decide`` reads the projection (which is at least at the aggregate's last event);
        when another writer got in between, the whole read-decide-append is retried.
        """
        for _ in range(WRITE_ATTEMPTS):
            expected = await self.bus.last_subject_seq(subjects)
            await self.runner.wait_for(expected, self.settings.read_your_write_timeout_s)
            events = decide()
            if not events:
                return 0
            try:
                seq = await self.append(events, expected=expected)
            except ConcurrencyConflict:
                continue
            await self.settle(seq)
            return seq
        raise ConcurrencyConflict(subjects)

    # -- identity ----------------------------------------------------------------
    async def login(self, username: str, password: str, correlation_id: str) -> LoginResponse:
        with self.runner.session() as s:
            user = views.get_user(s, username)
        known = user.password_hash if user is not None and not user.disabled else None
        ok = await self.passwords.verify(known, password)
        if not ok or user is None:
            raise NotAuthenticated("invalid username or password")
        token_id, secret, digest = new_token()
        stamp = self.stamp(username, correlation_id)
        expires_at = stamp.now + timedelta(seconds=self.settings.session_ttl_s)
        events = handlers.issue_token(
            user,
            token_id=token_id,
            token_sha256=digest,
            label="login",
            kind="session",
            expires_at=expires_at,
            stamp=stamp,
        )
        await self.settle(await self.append(events))
        return LoginResponse(
            token=secret, expires_at=expires_at, username=user.username, role=user.role
        )

    async def create_token(self, who: Principal, label: str, correlation_id: str) -> TokenCreated:
        token_id, secret, digest = new_token()
        stamp = self.stamp(who.username, correlation_id)
        with self.runner.session() as s:
            user = views.get_user(s, who.username)
        events = handlers.issue_token(
            user,
            token_id=token_id,
            token_sha256=digest,
            label=label,
            kind="api",
            expires_at=None,
            stamp=stamp,
        )
        await self.settle(await self.append(events))
        return TokenCreated(token_id=token_id, token=secret, label=label)

    async def revoke_token(self, who: Principal, token_id: str, correlation_id: str) -> None:
        with self.runner.session() as s:
            token = views.get_token(s, token_id)
        events = handlers.revoke_token(
            token,
            username=who.username,
            is_admin=who.role == "admin",
            stamp=self.stamp(who.username, correlation_id),
        )
        await self.settle(await self.append(events))

    async def create_user(self, who: Principal, body: CreateUser, correlation_id: str) -> UserView:
        check_name(body.username, "username")
        handlers.check_password(body.password)
        password_hash = await self.passwords.hash(body.password)
        stamp = self.stamp(who.username, correlation_id)

        def decide() -> list[Event]:
            with self.runner.session() as s:
                existing = views.get_user(s, body.username)
            return handlers.create_user(
                existing,
                username=body.username,
                role=body.role,
                password_hash=password_hash,
                stamp=stamp,
            )

        try:
            await self.write_aggregate(user_subjects(body.username), decide)
        except ConcurrencyConflict as err:
            raise handlers.Conflict(f"user {body.username!r} exists already") from err
        return self.user(body.username)

    async def update_user(
        self, who: Principal, username: str, body: UpdateUser, correlation_id: str
    ) -> UserView:
        password_hash = None
        if body.password is not None:
            handlers.check_password(body.password)
            password_hash = await self.passwords.hash(body.password)
        stamp = self.stamp(who.username, correlation_id)

        def decide() -> list[Event]:
            with self.runner.session() as s:
                user = views.get_user(s, username)
                admins = views.count_active_admins(s)
            return handlers.update_user(
                user, body, password_hash=password_hash, active_admins=admins, stamp=stamp
            )

        await self.write_aggregate(user_subjects(username), decide)
        return self.user(username)

    def user(self, username: str) -> UserView:
        with self.runner.session() as s:
            user = views.get_user(s, username)
        if user is None:
            raise NotFound(f"no user {username!r}")
        return views.user_view(user)

    # -- models ------------------------------------------------------------------
    async def change_stage(
        self, who: Principal, name: str, version: int, stage: str, correlation_id: str
    ) -> ModelVersionView:
        stamp = self.stamp(who.username, correlation_id)

        def decide() -> list[Event]:
            with self.runner.session() as s:
                current = views.get_version(s, name, version)
            return handlers.change_stage(current, stage, stamp=stamp)

        await self.write_aggregate(model_subjects(name), decide)
        with self.runner.session() as s:
            view = views.get_version(s, name, version)
        if view is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return view

    async def upload_model(
        self, who: Principal, form: UploadForm, correlation_id: str
    ) -> UploadResult:
        """Check the form, store the bytes, append ``ModelUploadReceived``, await the verdict."""
        name = _required_name(form)
        architecture = _optional_text(form, "architecture", 128)
        num_classes = _optional_int(form, "num_classes", minimum=1)
        input_shape = _input_shape(form.fields.get("input_shape", ""))
        description = _optional_text(form, "description", MAX_FIELD_CHARS) or ""
        artifact = await self._store(form)
        upload_id = uuid.uuid4().hex
        stamp = self.stamp(who.username, correlation_id)
        event = ModelUploadReceived(
            **stamp.envelope(f"model-upload/{upload_id}"),
            upload_id=upload_id,
            model_name=name,
            artifact=artifact,
            architecture=architecture,
            num_classes=num_classes,
            input_shape=input_shape,
            description=description,
        )
        return await self._await_verdict("model", name, upload_id, event, correlation_id)

    async def upload_dataset(
        self, who: Principal, form: UploadForm, correlation_id: str
    ) -> UploadResult:
        """Check the form, store the bytes, append ``DatasetUploadReceived``, await the verdict."""
        name = _required_name(form)
        description = _optional_text(form, "description", MAX_FIELD_CHARS) or ""
        seed = _optional_int(form, "seed", minimum=0) or 0
        artifact = await self._store(form)
        upload_id = uuid.uuid4().hex
        stamp = self.stamp(who.username, correlation_id)
        event = DatasetUploadReceived(
            **stamp.envelope(f"dataset-upload/{upload_id}"),
            upload_id=upload_id,
            dataset_name=name,
            artifact=artifact,
            description=description,
            seed=seed,
        )
        return await self._await_verdict("dataset", name, upload_id, event, correlation_id)

    async def _store(self, form: UploadForm) -> ArtifactRef:
        if form.file is None:
            raise Invalid("missing file part 'file'")
        if form.file.size == 0:
            raise Invalid("the uploaded file is empty")
        filename = form.filename[:200]
        media_type = form.content_type
        if media_type in ("", "application/octet-stream") and filename.endswith(".zip"):
            media_type = "application/zip"
        return await self.artifacts.put_file(
            form.file.path, media_type=media_type, filename=filename, sha256=form.sha256
        )

    async def _await_verdict(
        self, kind: str, name: str, upload_id: str, event: Event, correlation_id: str
    ) -> UploadResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.upload_verdict_timeout_s
        await self.settle(await self.append([event]))
        state = None
        while True:
            with self.runner.session() as s:
                state = views.get_upload(s, upload_id)
            remaining = deadline - loop.time()
            if (state is not None and state.status != "pending") or remaining <= 0:
                break
            await self.runner.wait_for(self.runner.position + 1, remaining)
        return UploadResult(
            upload_id=upload_id,
            kind="model" if kind == "model" else "dataset",
            name=name,
            status=state.status if state else "pending",  # type: ignore[arg-type]
            version=state.version if state else None,
            reason=state.reason if state else None,
            correlation_id=correlation_id,
        )

    def upload(self, upload_id: str) -> UploadResult:
        with self.runner.session() as s:
            state = views.get_upload(s, upload_id)
        if state is None:
            raise NotFound(f"no upload {upload_id!r}")
        return UploadResult(
            upload_id=state.upload_id,
            kind="model" if state.kind == "model" else "dataset",
            name=state.name,
            status=state.status,  # type: ignore[arg-type]
            version=state.version,
            reason=state.reason,
            correlation_id=state.correlation_id,
        )

    # -- training jobs ---------------------------------------------------------------
    async def create_job(self, who: Principal, body: CreateJob, correlation_id: str) -> JobCreated:
        """Check the request and the GPU quotas, then append ``training.requested``."""
        job_id = new_job_id("job")
        with self.runner.session() as s:
            dataset = views.get_dataset(s, body.dataset, body.dataset_version)
            rejection = views.dataset_rejection(s, body.dataset) if dataset is None else None
            user_running = views.running_gpu_jobs(s, owner=who.username)
            role_running = views.running_gpu_jobs(s, role=who.role)
        events = handlers.request_training(
            body,
            job_id=job_id,
            role=who.role,
            dataset=dataset,
            dataset_rejection=rejection,
            stamp=self.stamp(who.username, correlation_id),
        )
        handlers.check_gpu_quota(
            body.device,
            username=who.username,
            role=who.role,
            user_running=user_running,
            role_running=role_running,
            per_user=self.settings.gpu_trials_per_user,
            per_role=self.settings.gpu_trials_per_role,
        )
        await self.settle(await self.append(events))
        return JobCreated(job_id=job_id, kind="training", correlation_id=correlation_id)

    def job(self, job_id: str) -> JobView:
        with self.runner.session() as s:
            found = views.get_job(s, job_id)
        if found is None:
            raise NotFound(f"no job {job_id!r}")
        return found

    async def cancel_job(self, who: Principal, job_id: str, correlation_id: str) -> JobView:
        with self.runner.session() as s:
            state = views.job_state(s, job_id)
        events = handlers.cancel_training(
            state,
            username=who.username,
            is_admin=who.role == "admin",
            stamp=self.stamp(who.username, correlation_id),
        )
        await self.settle(await self.append(events))
        return self.job(job_id)

    # -- deployments -------------------------------------------------------------------
    async def deploy(
        self, who: Principal, body: CreateDeployment, correlation_id: str
    ) -> DeploymentView:
        """Append ``deployment.requested``; the router answers ready or failed."""
        canary = handlers.parse_canary(body.canary, body.model_name) if body.canary else None
        with self.runner.session() as s:
            version = views.get_version(s, body.model_name, body.version)
            canary_version = (
                views.get_version(s, body.model_name, canary.model_version) if canary else None
            )
        events = handlers.request_deployment(
            body,
            canary=canary,
            version=version,
            canary_version=canary_version,
            stamp=self.stamp(who.username, correlation_id),
        )
        await self.settle(await self.append(events))
        return self.deployment(body.deployment or body.model_name)

    def deployment(self, name: str) -> DeploymentView:
        with self.runner.session() as s:
            found = views.get_deployment(s, name)
        if found is None:
            raise NotFound(f"no deployment {name!r}")
        return found

    async def retire(self, who: Principal, name: str, correlation_id: str) -> DeploymentView:
        with self.runner.session() as s:
            current = views.get_deployment(s, name)
        events = handlers.retire_deployment(current, stamp=self.stamp(who.username, correlation_id))
        await self.settle(await self.append(events))
        return self.deployment(name)

    # -- conversions and benchmarks ----------------------------------------------------
    async def convert(
        self, who: Principal, body: CreateConversion, correlation_id: str
    ) -> JobCreated:
        job_id = new_job_id("conv")
        with self.runner.session() as s:
            version = views.get_version(s, body.model_name, body.version)
            dataset = (
                views.get_dataset(s, body.dataset, body.dataset_version) if body.dataset else None
            )
        events = handlers.request_conversion(
            body,
            job_id=job_id,
            version=version,
            dataset=dataset,
            stamp=self.stamp(who.username, correlation_id),
        )
        await self.settle(await self.append(events))
        return JobCreated(job_id=job_id, kind="conversion", correlation_id=correlation_id)

    async def benchmark(
        self, who: Principal, body: CreateBenchmark, correlation_id: str
    ) -> JobCreated:
        job_id = new_job_id("bench")
        with self.runner.session() as s:
            version = views.get_version(s, body.model_name, body.version)
            dataset = (
                views.get_dataset(s, body.dataset, body.dataset_version) if body.dataset else None
            )
            conversion = (
                views.get_conversion(s, body.conversion_job) if body.conversion_job else None
            )
        events = handlers.request_benchmark(
            body,
            job_id=job_id,
            version=version,
            dataset=dataset,
            conversion=(conversion.model_name, conversion.version) if conversion else None,
            stamp=self.stamp(who.username, correlation_id),
        )
        await self.settle(await self.append(events))
        return JobCreated(job_id=job_id, kind="benchmark", correlation_id=correlation_id)

    # -- event feed --------------------------------------------------------------
    async def correlated(
        self, correlation_id: str, after: int, *, follow: bool, keepalive_s: float = 15.0
    ) -> AsyncIterator[views.CorrelatedEvent | None]:
        """Events of one correlation id after ``after``; then, if ``follow``, new ones live.

        Yields ``None`` when nothing happened for ``keepalive_s`` (time for a heartbeat).
        """
        last = after
        while True:
            position = self.runner.position
            with self.runner.session() as s:
                found = views.events_after(s, correlation_id, last)
            for item in found:
                last = item.seq
                yield item
            if found:
                continue
            if not follow or self.stopping.is_set():
                return
            moved = asyncio.create_task(self.runner.wait_for(position + 1, keepalive_s))
            stopping = asyncio.create_task(self.stopping.wait())
            try:
                await asyncio.wait({moved, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                moved.cancel()
            if self.stopping.is_set():
                return
            if not moved.cancelled() and moved.done() and not moved.result():
                yield None

    # -- health ------------------------------------------------------------------
    async def projection_lag(self) -> int | None:
        try:
            last = await asyncio.wait_for(self.bus.last_seq(), 2.0)
        except Exception:
            return None
        lag = max(0, last - self.runner.position)
        self.metrics.projection_lag.set(lag)
        self.metrics.projection_position.set(self.runner.position)
        return lag


def new_job_id(kind: str) -> str:
    """``job-1a2b3c4d5e6f``: short enough to type, random enough not to collide."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def _required_name(form: UploadForm) -> str:
    name = form.fields.get("name", "").strip()
    if not name:
        raise Invalid("missing form field 'name'")
    return check_name(name)


def _optional_text(form: UploadForm, field: str, max_chars: int) -> str | None:
    value = form.fields.get(field, "").strip()
    if len(value) > max_chars:
        raise Invalid(f"field {field!r} is longer than {max_chars} characters")
    return value or None


def _optional_int(form: UploadForm, field: str, *, minimum: int) -> int | None:
    raw = form.fields.get(field, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise Invalid(f"field {field!r} must be an integer, got {raw!r}") from err
    if value < minimum:
        raise Invalid(f"field {field!r} must be at least {minimum}")
    return value


def _input_shape(raw: str) -> list[int] | None:
    """``"3,32,32"`` -> ``[3, 32, 32]``; 1 to 5 positive dimensions."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        dims = [int(d) for d in raw.replace("x", ",").split(",")]
    except ValueError as err:
        raise Invalid(f"input_shape must look like '3,32,32', got {raw!r}") from err
    if not 1 <= len(dims) <= 5 or any(d < 1 for d in dims):
        raise Invalid(f"input_shape must have 1 to 5 positive dimensions, got {raw!r}")
    return dims
