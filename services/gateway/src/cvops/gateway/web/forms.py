"""What a page's form sent: its fields once its CSRF token is checked, and the request bodies
the contexts' use cases take (``CreateJob``, ``CreateConversion``...), built from those fields.

An upload form streams on to the catalog's use case as it arrives; its CSRF token is read on
the way (the page puts it first, so a wrong one stops the upload before the file is read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import msgspec
from litestar import Request
from litestar.datastructures import State
from multipart import MultipartSegment, PushMultipartParser, parse_options_header

from cvops.gateway.errors import Invalid
from cvops.gateway.uploads import FormError
from cvops.gateway.web.session import CSRF_FIELD, CsrfRefused, WebSession, check_csrf

Body = TypeVar("Body", bound=msgspec.Struct)
# A CSRF token is 64 hex digits; a longer field is not one.
_TOKEN_MAX = 256


class FormFields:
    """The text fields of a submitted form (repeated names kept, as checkboxes send them)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self.items = items

    def text(self, name: str) -> str:
        """The field's value, stripped ('' when absent)."""
        for key, value in self.items:
            if key == name:
                return value.strip()
        return ""

    def texts(self, name: str) -> list[str]:
        return [value.strip() for key, value in self.items if key == name and value.strip()]

    def number(self, name: str) -> int | None:
        """An optional whole number (``Invalid`` when it is not one)."""
        value = self.text(name)
        if not value:
            return None
        try:
            return int(value)
        except ValueError as err:
            raise Invalid(f"{name} must be a whole number, not {value!r}") from err

    def decimal(self, name: str) -> float | None:
        value = self.text(name)
        if not value:
            return None
        try:
            return float(value)
        except ValueError as err:
            raise Invalid(f"{name} must be a number, not {value!r}") from err

    def flag(self, name: str) -> bool:
        return self.text(name) in ("on", "true", "1", "yes")


async def checked_form(request: Request[Any, Any, State]) -> FormFields:
    """The fields of a urlencoded form POST whose CSRF token is this session's."""
    form = await request.form()
    fields = FormFields([(k, v) for k, v in form.multi_items() if isinstance(v, str)])
    auth = request.scope.get("auth")
    check_csrf(fields.text(CSRF_FIELD), auth.csrf_token if isinstance(auth, WebSession) else "")
    return fields


def request_body(kind: type[Body], fields: dict[str, Any]) -> Body:
    """A use case's request body from form fields (None: the body's default), or ``Invalid``
    with what is wrong, in the API's words."""
    given = {name: value for name, value in fields.items() if value is not None}
    try:
        return msgspec.convert(given, kind)
    except msgspec.ValidationError as err:
        raise Invalid(str(err)) from err


async def csrf_checked_stream(
    content_type: str, body: AsyncIterator[bytes], expected: str
) -> AsyncIterator[bytes]:
    """The chunks of a multipart body, passed on as they come, while its ``csrf_token`` field
    is read on the side: ``CsrfRefused`` as soon as the field is wrong, or at the end when it
    never came (before the use case stores anything, since it reads the whole form first).
    """
    _mime, options = parse_options_header(content_type or "")
    boundary = options.get("boundary")
    if not boundary:
        raise FormError("expected a multipart/form-data body with a boundary")
    parser: PushMultipartParser | None = PushMultipartParser(boundary)
    current: MultipartSegment | None = None
    token = bytearray()
    async for chunk in body:
        if parser is not None:
            for part in parser.parse(chunk):
                if isinstance(part, MultipartSegment):
                    current = part
                elif current is not None and current.name == CSRF_FIELD:
                    if part is None:  # the field ended: check it, stop looking
                        check_csrf(token.decode("utf-8", "replace").strip(), expected)
                        parser = None
                        break
                    token.extend(part)
                    if len(token) > _TOKEN_MAX:
                        raise CsrfRefused()
        yield chunk
    if parser is not None:
        raise CsrfRefused()
