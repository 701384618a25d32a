"""Catalog use cases: reads of models, versions, engines and data sets; file downloads; stage
changes; uploads (form checked, bytes stored, ``registry.*_upload_received`` appended, then the
registry's verdict awaited).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import nats.js.errors

from cvops.contracts import SUBJECT_PREFIX, ArtifactRef, Event, subject_token
from cvops.contracts.api import (
    DatasetView,
    EngineArtifactView,
    ModelVersionView,
    ModelView,
    UploadResult,
)
from cvops.contracts.registry import DatasetUploadReceived, ModelUploadReceived
from cvops.core import ArtifactStore
from cvops.domain.checks import check_storable, fits_int64
from cvops.gateway.auth import Principal
from cvops.gateway.catalog import projection as views
from cvops.gateway.catalog import rules
from cvops.gateway.catalog.rules import MAX_FIELD_CHARS
from cvops.gateway.core import Gateway
from cvops.gateway.errors import Invalid, NotFound
from cvops.gateway.idempotency import Correlate, derived_id, fingerprint, replayed
from cvops.gateway.uploads import UploadForm, read_form


def _version_number(name: str, version: int) -> None:
    """A version number no projection can hold names no version (not a 500)."""
    if not fits_int64(version):
        raise NotFound(f"model {name!r} has no version {version}")


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """``first``, then the rest of the chunks (closing them however the stream ends)."""
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()


def _resolve(
    correlation_id: str | Correlate, kind: str, form: UploadForm, artifact: ArtifactRef
) -> str:
    """The upload's correlation id; a keyed upload's is known once its form is read: what
    it asks is its fields and its file's bytes (not the multipart framing, whose boundary a
    client may draw afresh when it retries)."""
    if isinstance(correlation_id, str):
        return correlation_id
    fields = sorted(form.fields.items())
    return correlation_id(
        fingerprint(kind, *(f"{k}={v}" for k, v in fields), form.filename, artifact.sha256)
    )


def model_subjects(model_name: str) -> str:
    return f"{SUBJECT_PREFIX}.registry.{subject_token(f'model-{model_name}')}.*"


@dataclass
class Download:
    """A stored file to stream back: its reference, a file name and its bytes, in chunks."""

    artifact: ArtifactRef
    filename: str
    chunks: AsyncIterator[bytes]


@dataclass
class CatalogService:
    """Models, versions, data sets and uploads; the object store holds their bytes."""

    gateway: Gateway
    artifacts: ArtifactStore

    # -- models --------------------------------------------------------------------------------
    def models(self) -> list[ModelView]:
        with self.gateway.session() as s:
            return views.list_models(s)

    def model(self, name: str) -> ModelView:
        with self.gateway.session() as s:
            model = views.get_model(s, name)
        if model is None:
            raise NotFound(f"no model {name!r}")
        return model

    def versions(self, name: str) -> list[ModelVersionView]:
        with self.gateway.session() as s:
            versions = views.list_versions(s, name)
        if not versions:
            raise NotFound(f"no model {name!r}")
        return versions

    def version(self, name: str, version: int) -> ModelVersionView:
        _version_number(name, version)
        with self.gateway.session() as s:
            found = views.get_version(s, name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return found

    def engine_artifacts(self, name: str, version: int) -> list[EngineArtifactView]:
        _version_number(name, version)
        with self.gateway.session() as s:
            found = views.get_version(s, name, version)
            artifacts = views.list_engine_artifacts(s, name, version)
        if found is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return artifacts

    async def download(self, name: str, version: int) -> Download:
        """A version's file, if the object store still has it.

        The blob is fetched, checked and its first chunk read before this returns, so a
        failure is an error status, never a 200 whose body stops short.
        """
        ref = self.version(name, version).artifact
        gone = NotFound("the artifact is no longer in the object store")
        if not await self.artifacts.exists(ref.sha256):
            raise gone
        chunks = self.artifacts.iter_chunks(ref.sha256, self.gateway.settings.home_path / "spool")
        try:
            first = await anext(chunks, b"")
        except (nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError) as err:
            await chunks.aclose()
            raise gone from err
        return Download(
            artifact=ref,
            filename=ref.filename or f"{name}-v{version}",
            chunks=_prepend(first, chunks),
        )

    async def change_stage(
        self, who: Principal, name: str, version: int, stage: str, correlation_id: str
    ) -> ModelVersionView:
        _version_number(name, version)
        stamp = self.gateway.stamp(who.username, correlation_id)

        def decide() -> list[Event]:
            # (after the projection reached the model's last event: a retry's first is in it)
            if replayed(self.gateway, correlation_id):
                return []
            with self.gateway.session() as s:
                current = views.get_version(s, name, version)
            return rules.change_stage(current, stage, stamp=stamp)

        await self.gateway.write_aggregate(model_subjects(name), decide)
        return self.version(name, version)

    # -- data sets -----------------------------------------------------------------------------
    def datasets(self) -> list[DatasetView]:
        with self.gateway.session() as s:
            return views.list_datasets(s)

    def dataset(self, name: str) -> DatasetView:
        with self.gateway.session() as s:
            found = views.get_dataset(s, name)
        if found is None:
            raise NotFound(f"no data set {name!r}")
        return found

    # -- uploads -------------------------------------------------------------------------------
    async def upload_model(
        self,
        who: Principal,
        content_type: str,
        body: AsyncIterator[bytes],
        correlation_id: str | Correlate,
    ) -> UploadResult:
        """Read the form (the file spooled to disk), then ``_model_upload``; the spooled file
        is removed in any case. ``correlation_id`` may be a function of the form's fingerprint
        (an ``Idempotency-Key``'s request: a retry answers the first attempt's upload)."""
        form = await self._read_form(content_type, body)
        try:
            return await self._model_upload(who, form, correlation_id)
        finally:
            form.discard()

    async def upload_dataset(
        self,
        who: Principal,
        content_type: str,
        body: AsyncIterator[bytes],
        correlation_id: str | Correlate,
    ) -> UploadResult:
        """Read the form (the file spooled to disk), then ``_dataset_upload``; the spooled file
        is removed in any case."""
        form = await self._read_form(content_type, body)
        try:
            return await self._dataset_upload(who, form, correlation_id)
        finally:
            form.discard()

    async def _model_upload(
        self, who: Principal, form: UploadForm, correlation_id: str | Correlate
    ) -> UploadResult:
        """Check the form, store the bytes, append ``ModelUploadReceived``, await the verdict."""
        fields = form.fields
        name = rules.required_name(fields)
        architecture = rules.optional_text(fields, "architecture", 128)
        num_classes = rules.optional_int(fields, "num_classes", minimum=1)
        input_shape = rules.input_shape(fields.get("input_shape", ""))
        description = rules.optional_text(fields, "description", MAX_FIELD_CHARS) or ""
        # what the event will carry must be storable before its bytes are (the bus checks
        # the event again; by then the blob would be stored for nothing)
        check_storable({"num_classes": num_classes, "input_shape": input_shape})
        artifact = await self._store(form)
        correlation_id = _resolve(correlation_id, "model", form, artifact)
        upload_id = derived_id(correlation_id, "upload", 32)
        if replayed(self.gateway, correlation_id):
            return self.upload(upload_id)
        stamp = self.gateway.stamp(who.username, correlation_id)
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

    async def _dataset_upload(
        self, who: Principal, form: UploadForm, correlation_id: str | Correlate
    ) -> UploadResult:
        """Check the form, store the bytes, append ``DatasetUploadReceived``, await the verdict."""
        fields = form.fields
        name = rules.required_name(fields)
        description = rules.optional_text(fields, "description", MAX_FIELD_CHARS) or ""
        seed = rules.optional_int(fields, "seed", minimum=0) or 0
        check_storable({"seed": seed})  # before the bytes are stored, as for models
        artifact = await self._store(form)
        correlation_id = _resolve(correlation_id, "dataset", form, artifact)
        upload_id = derived_id(correlation_id, "upload", 32)
        if replayed(self.gateway, correlation_id):
            return self.upload(upload_id)
        stamp = self.gateway.stamp(who.username, correlation_id)
        event = DatasetUploadReceived(
            **stamp.envelope(f"dataset-upload/{upload_id}"),
            upload_id=upload_id,
            dataset_name=name,
            artifact=artifact,
            description=description,
            seed=seed,
        )
        return await self._await_verdict("dataset", name, upload_id, event, correlation_id)

    def upload(self, upload_id: str) -> UploadResult:
        with self.gateway.session() as s:
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

    async def _read_form(self, content_type: str, body: AsyncIterator[bytes]) -> UploadForm:
        settings = self.gateway.settings
        return await read_form(
            content_type,
            body,
            file_field="file",
            limit=settings.max_upload_bytes,
            spool_dir=settings.home_path / "spool",
        )

    async def _store(self, form: UploadForm) -> ArtifactRef:
        if form.file is None:
            raise Invalid("missing file part 'file'")
        if form.file.size == 0:
            raise Invalid("the uploaded file is empty")
        self.gateway.check_connected()  # (the blob's chunks would be buffered too)
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
        runner = self.gateway.runner
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gateway.settings.upload_verdict_timeout_s
        await self.gateway.write([event])
        state = None
        while True:
            with self.gateway.session() as s:
                state = views.get_upload(s, upload_id)
            remaining = deadline - loop.time()
            if (state is not None and state.status != "pending") or remaining <= 0:
                break
            await runner.wait_for(runner.position + 1, remaining)
        return UploadResult(
            upload_id=upload_id,
            kind="model" if kind == "model" else "dataset",
            name=name,
            status=state.status if state else "pending",  # type: ignore[arg-type]
            version=state.version if state else None,
            reason=state.reason if state else None,
            correlation_id=correlation_id,
        )
