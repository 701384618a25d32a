"""The registry's job: validate each upload once and publish its verdict; seed bundled sets.

For every ``*UploadReceived`` the validator brings its projection up to date; an upload
with a verdict already (a redelivery after a crash) is acknowledged and left alone. Versions
are numbered by publishing on the model's or data set's aggregate with the expected last
subject sequence, so two instances never hand out the same number.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.js.errors
from prometheus_client import Counter, Histogram

from cvops.contracts import ArtifactRef, Event, Stamp, subject_token
from cvops.contracts.registry import DatasetUploadReceived, ModelUploadReceived
from cvops.core import (
    ArtifactStore,
    Bus,
    ConcurrencyConflict,
    ProjectionRunner,
    Settings,
    append_guarded,
    write_aggregate,
)
from cvops.core.logging import get_logger
from cvops.domain.checks import check_storable
from cvops.domain.errors import Invalid
from cvops.registry import handlers
from cvops.registry import projection as view
from cvops.registry.bundled import BUNDLED
from cvops.registry.inspect_dataset import DatasetFacts, DatasetLimits, inspect_dataset
from cvops.registry.inspect_model import ModelFacts, ModelHints, inspect_model
from cvops.registry.inspector import InspectorProcess
from cvops.registry.safety import Refused

log = get_logger(__name__)

VERDICTS = Counter(
    "cvops_registry_verdicts_total", "Uploads decided by the registry", ["kind", "verdict"]
)
VALIDATION_SECONDS = Histogram(
    "cvops_registry_validation_seconds", "Time to inspect one upload", ["kind"]
)
MAX_PUBLISH_ATTEMPTS = 20
NPZ = "application/x-npz"

Upload = ModelUploadReceived | DatasetUploadReceived
Verdict = ModelFacts | DatasetFacts | str  # the facts of an accepted upload, or why it was refused


class UploadValidator:
    """Handles upload events from the work consumer (one at a time per instance)."""

    def __init__(
        self,
        bus: Bus,
        store: ArtifactStore,
        runner: ProjectionRunner,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.bus = bus
        self.store = store
        self.runner = runner
        self.settings = settings
        self.clock = clock
        self.workdir = settings.home_path / "registry-work"
        self.inspector = InspectorProcess()

    def close(self) -> None:
        """Stop the inspector child process."""
        self.inspector.close()

    async def handle(self, event: Event, _msg: Any) -> None:
        """WorkConsumer handler: validate an upload, or do nothing if it has its verdict."""
        if isinstance(event, ModelUploadReceived | DatasetUploadReceived):
            await self.validate(event)

    async def validate(self, upload: Upload) -> None:
        """Inspect one upload and publish its verdict, unless it has one already."""
        kind = "model" if isinstance(upload, ModelUploadReceived) else "dataset"
        await self._catch_up()
        status = self._status(upload)
        if status != "pending":
            log.info("upload_already_decided", upload_id=upload.upload_id, status=status)
            if status == "rejected":  # idempotent: the bytes of a refused upload stay gone
                await self._discard_blob(upload)
            return
        work = self.workdir / subject_token(upload.upload_id)  # never a path from the event
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        started = time.perf_counter()
        try:
            try:  # an upload that got into the log before values were checked at the gateway
                check_storable(upload)
            except Invalid as err:
                refused: Verdict = f"refused: {err}"
                verdict, canonical = refused, None
            else:
                verdict, canonical = await self._inspect(upload, work)
            VALIDATION_SECONDS.labels(kind).observe(time.perf_counter() - started)
            rejected = isinstance(verdict, str)
            if rejected:  # refused bytes are gone by the time anyone reads the verdict
                await self._discard_blob(upload)
            published = await self._publish_verdict(upload, verdict, canonical)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not published:
            return  # another instance decided it meanwhile
        VERDICTS.labels(kind, "rejected" if rejected else "validated").inc()
        log.info(
            "upload_rejected" if rejected else "upload_validated",
            upload_id=upload.upload_id,
            kind=kind,
            name=_name(upload),
            version=None if rejected else published,
            reason=verdict if rejected else None,
            correlation_id=upload.correlation_id,
        )

    # -- steps --------------------------------------------------------------------------------

    async def _catch_up(self, seq: int | None = None) -> None:
        reached = (
            await self.runner.catch_up(timeout=60)
            if seq is None
            else await self.runner.wait_for(seq, timeout=60)
        )
        if not reached:
            raise RuntimeError("the registry projection did not catch up with the log")

    def _status(self, upload: Upload) -> str:
        with self.runner.session() as s:
            row = view.upload(s, upload.upload_id)
        return "pending" if row is None else row.status

    async def _inspect(self, upload: Upload, work: Path) -> tuple[Verdict, ArtifactRef | None]:
        """The facts (or the refusal reason) and, for data sets, the stored canonical npz."""
        # the size limit guards user uploads; bundled sets are generated here, not uploaded
        bundled = isinstance(upload, DatasetUploadReceived) and upload.bundled
        limit = upload.artifact.size if bundled else self.settings.max_upload_bytes
        problem = handlers.upload_problem(_name(upload), upload.artifact.size, limit)
        if problem:
            return problem, None
        blob = work / "upload"
        try:
            await self.store.get_file(upload.artifact.sha256, blob)
        except (nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError):
            return "the uploaded bytes are not in the artifact store (upload again)", None
        except ValueError as err:  # digest mismatch
            return f"the stored upload is corrupt ({err})", None
        if isinstance(upload, ModelUploadReceived):
            hints = ModelHints(
                architecture=upload.architecture,
                num_classes=upload.num_classes,
                input_shape=upload.input_shape,
            )
            facts = await self._isolated(
                inspect_model, blob, hints, max_expanded_bytes=self.settings.max_upload_bytes
            )
            return facts, None
        limits = DatasetLimits(
            max_expanded_bytes=self.settings.max_dataset_expanded_bytes,
            max_image_pixels=self.settings.max_image_pixels,
        )
        out = work / "canonical.npz"
        facts = await self._isolated(
            inspect_dataset, blob, seed=upload.seed, limits=limits, out=out
        )
        if isinstance(facts, str):
            return facts, None
        canonical = await self.store.put_file(
            out, media_type=NPZ, filename=f"{upload.dataset_name}.npz"
        )
        return facts, canonical

    async def _isolated(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an inspection in the child process; a refusal or a crash becomes a reason."""
        try:
            return await asyncio.to_thread(self.inspector.call, fn, *args, **kwargs)
        except Refused as err:
            return str(err)
        except OSError:
            raise  # the host, not the upload: the job is retried
        except Exception as err:
            log.warning("inspection_failed", error=repr(err))
            return f"the file could not be inspected ({err})"[:500]

    async def _publish_verdict(
        self, upload: Upload, verdict: Verdict, canonical: ArtifactRef | None
    ) -> int | str | None:
        """Publish the verdict; returns the version (or "rejected"), None if decided elsewhere."""
        kind = "model" if isinstance(upload, ModelUploadReceived) else "dataset"
        aggregate = handlers.name_subjects(kind, _name(upload))
        attempt = 0

        async def decide(expected: int) -> list[Event] | None:
            # a projection at least at the aggregate's last sequence: the decision is based on
            # exactly what the guarded append expects
            nonlocal attempt
            attempt += 1
            if attempt > 1:
                log.info("version_conflict_retry", upload_id=upload.upload_id, name=_name(upload))
            await self._catch_up(expected)
            if self._status(upload) != "pending":
                return None
            with self.runner.session() as s:
                state = view.name_state(s, kind, _name(upload))
            stamp = Stamp(
                now=self.clock(), actor=handlers.ACTOR, correlation_id=upload.correlation_id
            ).caused_by(upload, actor=handlers.ACTOR)
            if isinstance(upload, ModelUploadReceived):
                assert not isinstance(verdict, DatasetFacts)
                return handlers.decide_model(state, upload, verdict, stamp)
            assert not isinstance(verdict, ModelFacts)
            return handlers.decide_dataset(state, upload, verdict, canonical, stamp)

        # a rejection lives on the upload (another aggregate): its id makes it idempotent
        try:
            appended = await write_aggregate(
                self.bus, aggregate, decide, attempts=MAX_PUBLISH_ATTEMPTS
            )
        except ConcurrencyConflict as err:
            raise RuntimeError(f"could not number {_name(upload)!r} after many conflicts") from err
        if not appended.events:
            return None
        version = getattr(appended.events[-1], "version", None)
        return version if isinstance(version, int) else "rejected"

    async def _discard_blob(self, upload: Upload) -> None:
        """Delete a refused upload's bytes unless a version or a pending upload still uses them."""
        with self.runner.session() as s:
            in_use = view.blob_in_use(s, upload.artifact.sha256, besides_upload=upload.upload_id)
        if not in_use:
            await self.store.delete(upload.artifact.sha256)

    # -- bundled data sets ----------------------------------------------------------------------

    async def ensure_bundled(self) -> list[str]:
        """Publish the bundled data sets the log lacks; returns the names published."""
        await self._catch_up()
        published = []
        for bundled in BUNDLED:
            upload_id = handlers.bundled_upload_id(bundled.name)
            with self.runner.session() as s:
                known = bundled.name in view.dataset_names(s) or view.upload(s, upload_id)
            if known:
                continue
            # a directory of this call's own: instances sharing a home must not remove
            # each other's file mid-upload
            self.workdir.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f"{subject_token(upload_id)}-", dir=self.workdir))
            try:
                path = await asyncio.to_thread(bundled.write, work / f"{bundled.name}.npz")
                ref = await self.store.put_file(path, media_type=NPZ, filename=path.name)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            stamp = Stamp(now=self.clock(), actor=handlers.ACTOR, correlation_id=upload_id)
            event = handlers.bundled_upload(bundled.name, ref, bundled.description, stamp)
            try:
                await append_guarded(self.bus, event.aggregate_subjects, [event], 0)
            except ConcurrencyConflict:
                continue  # another instance published it first
            published.append(bundled.name)
            log.info("bundled_dataset_published", name=bundled.name, sha256=ref.sha256)
        return published


def _name(upload: Upload) -> str:
    return upload.model_name if isinstance(upload, ModelUploadReceived) else upload.dataset_name
