"""Artifacts in the JetStream object store ``cvops-artifacts``, named by their sha256.

Bytes are spooled to disk and streamed in chunks both ways: a 2 GiB upload is never held
in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import nats.js.errors
from nats.js.api import ObjectMeta

from cvops.contracts import ArtifactRef
from cvops.core.bus import Bus

CHUNK = 1024 * 1024


class TooLarge(Exception):
    """An upload went past the size limit while streaming."""


class SpooledUpload:
    """A file on disk being written from a stream, hashed on the way in."""

    def __init__(self, directory: Path | None = None, limit: int | None = None) -> None:
        fd, name = tempfile.mkstemp(prefix="upload-", dir=directory)
        self.path = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        self.limit = limit

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(f"upload exceeds the limit of {self.limit} bytes")
        self._hash.update(chunk)
        self._fh.write(chunk)

    def close(self) -> str:
        self._fh.close()
        return self._hash.hexdigest()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        self.path.unlink(missing_ok=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    """Content-addressed blobs on top of the bus's object store."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @property
    def _store(self):  # type: ignore[no-untyped-def]
        return self.bus.artifacts_store

    async def exists(self, sha256: str) -> bool:
        try:
            info = await self._store.get_info(sha256)
        except nats.js.errors.ObjectNotFoundError:
            return False
        except nats.js.errors.NotFoundError:
            return False
        return not info.deleted

    async def put_file(
        self,
        path: Path,
        *,
        media_type: str = "application/octet-stream",
        filename: str = "",
        sha256: str | None = None,
    ) -> ArtifactRef:
        """Store a file under its sha256 (no-op when that blob exists already)."""
        digest = sha256 or sha256_file(path)
        size = path.stat().st_size
        if not await self.exists(digest):
            with open(path, "rb") as fh:
                await self._store.put(
                    digest, fh, meta=ObjectMeta(name=digest, description=filename or None)
                )
        return ArtifactRef(sha256=digest, size=size, media_type=media_type, filename=filename)

    async def put_bytes(self, data: bytes, **kw: str) -> ArtifactRef:
        with tempfile.NamedTemporaryFile(delete=False) as fh:
            fh.write(data)
        try:
            return await self.put_file(Path(fh.name), **kw)
        finally:
            os.unlink(fh.name)

    async def get_file(self, sha256: str, target: Path) -> Path:
        """Stream a blob to ``target`` and check its digest."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with open(tmp, "wb") as fh:
            await self._store.get(sha256, writeinto=fh)
        if sha256_file(tmp) != sha256:
            tmp.unlink(missing_ok=True)
            raise ValueError(f"artifact {sha256[:12]} is corrupt")
        os.replace(tmp, target)
        return target

    async def get_bytes(self, sha256: str) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            p = await self.get_file(sha256, Path(d) / "blob")
            return p.read_bytes()

    async def delete(self, sha256: str) -> None:
        with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.ObjectNotFoundError):
            await self._store.delete(sha256)

    async def iter_chunks(
        self, sha256: str, spool_dir: Path | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Yield a blob in chunks (spooled through a temp file in ``spool_dir``, made if
        missing, never all in memory).

        The blob is fetched and checked before the first chunk: a caller that must not
        start a response it cannot finish awaits the first chunk before sending headers.
        """
        if spool_dir is not None:
            spool_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=spool_dir) as d:
            p = await self.get_file(sha256, Path(d) / "blob")
            for chunk in _read_chunks(p):
                yield chunk


def _read_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
