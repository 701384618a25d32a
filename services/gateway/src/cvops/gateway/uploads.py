"""Streaming multipart/form-data: small text fields in memory, the one file part spooled to
disk (hashed on the way in, stopped at the size limit). A 2 GiB upload is never in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from multipart import MultipartError, MultipartSegment, PushMultipartParser, parse_options_header

from cvops.core import SpooledUpload, TooLarge

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32
# After an oversize upload, read (and drop) at most this much more so the client gets the
# 413 on a clean connection instead of a reset.
DRAIN_BYTES = 64 * 1024 * 1024


class FormError(Exception):
    """The request is not a well-formed multipart form."""


@dataclass
class UploadForm:
    """What a form held: text fields and, if sent, the spooled file part."""

    fields: dict[str, str] = field(default_factory=dict)
    file: SpooledUpload | None = None
    filename: str = ""
    content_type: str = ""
    sha256: str = ""

    def discard(self) -> None:
        """Remove the spooled file (call when the upload is refused or stored)."""
        if self.file is not None:
            self.file.discard()


async def read_form(
    content_type: str,
    body: AsyncIterator[bytes],
    *,
    file_field: str,
    limit: int,
    spool_dir: Path,
) -> UploadForm:
    """Parse a multipart body as it arrives.

    Args:
        content_type: the request's Content-Type header.
        body: the request body chunks.
        file_field: name of the one file part.
        limit: most bytes the file part may have (``TooLarge`` beyond it).
        spool_dir: where the file part is written.

    Returns:
        The form; the caller must ``discard()`` it when done.
    """
    mime, options = parse_options_header(content_type or "")
    boundary = options.get("boundary")
    if mime != "multipart/form-data" or not boundary:
        raise FormError("expected a multipart/form-data body with a boundary")
    spool_dir.mkdir(parents=True, exist_ok=True)
    form = UploadForm()
    segment: MultipartSegment | None = None
    text = bytearray()
    try:
        parser = PushMultipartParser(boundary, max_segment_count=MAX_PARTS)
        async for chunk in body:
            if not chunk:
                continue
            for part in parser.parse(chunk):
                segment, text = _feed(form, part, segment, text, file_field, limit, spool_dir)
            if parser.closed:
                break
        parser.close()
    except TooLarge:
        form.discard()
        await _drain(body)
        raise
    except MultipartError as err:
        form.discard()
        raise FormError(f"malformed multipart body: {err}") from err
    except BaseException:
        form.discard()
        raise
    if form.file is not None:
        form.sha256 = form.file.close()
    return form


def _feed(
    form: UploadForm,
    part: MultipartSegment | bytearray | bytes | None,
    segment: MultipartSegment | None,
    text: bytearray,
    file_field: str,
    limit: int,
    spool_dir: Path,
) -> tuple[MultipartSegment | None, bytearray]:
    """Handle one parser event; returns the current segment and its text buffer."""
    if isinstance(part, MultipartSegment):
        if part.name == file_field:
            if form.file is not None:
                raise FormError(f"more than one {file_field!r} part")
            form.file = SpooledUpload(spool_dir, limit=limit)
            form.filename = Path(part.filename or "").name
            form.content_type = part.content_type or "application/octet-stream"
        return part, bytearray()
    if segment is None:
        return None, text
    if part is None:  # end of the segment
        if segment.name != file_field and segment.name:
            try:
                form.fields[segment.name] = bytes(text).decode("utf-8")
            except UnicodeDecodeError as err:
                raise FormError(f"field {segment.name!r} is not UTF-8 text") from err
        return None, bytearray()
    if segment.name == file_field:
        assert form.file is not None
        form.file.write(bytes(part))
    else:
        text.extend(part)
        if len(text) > MAX_FIELD_BYTES:
            raise FormError(f"field {segment.name!r} is longer than {MAX_FIELD_BYTES} bytes")
    return segment, text


async def _drain(body: AsyncIterator[bytes]) -> None:
    seen = 0
    try:
        async for chunk in body:
            seen += len(chunk)
            if seen > DRAIN_BYTES:
                return
    except Exception:
        return
