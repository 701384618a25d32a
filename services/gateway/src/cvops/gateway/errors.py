"""The one error shape, ``{"error": code, "detail": ...}``, for every failure of every route,
and the refusals the rules of every context raise (each mapped to its status here)."""

from __future__ import annotations

from typing import Any

import nats.errors
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ExceptionHandlersMap

from cvops.contracts.api import ErrorBody
from cvops.core import ConcurrencyConflict, TooLarge, get_logger
from cvops.domain.errors import (  # re-exported: the rules raise them, this maps them
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QuotaExceeded,
    Refused,
)
from cvops.gateway.idempotency import KEY_HEADER, WRITE_METHODS, NotWritten
from cvops.gateway.uploads import FormError

log = get_logger(__name__)


ERROR_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> Response:
    code = ERROR_CODES.get(status, "error")
    return Response(
        ErrorBody(error=code, detail=detail),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _http(_request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        errors = exc.extra if isinstance(exc.extra, list) else []
        detail: Any = {"message": exc.detail, "errors": errors} if errors else exc.detail
        return error_response(422, detail)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if exc.headers:
        headers = {**(headers or {}), **exc.headers}
    return error_response(exc.status_code, exc.detail, headers)


def _refused(_request: Request, exc: Refused) -> Response:
    match exc:
        case NotFound():
            status = 404
        case Conflict():
            status = 409
        case Invalid():
            status = 422
        case Forbidden():
            status = 403
        case QuotaExceeded():
            status = 429
        case _:
            status = 400
    return error_response(status, str(exc))


def _form(_request: Request, exc: FormError) -> Response:
    return error_response(400, str(exc))


def _too_large(_request: Request, exc: TooLarge) -> Response:
    return error_response(413, f"{exc}; nothing was stored")


def _conflict(_request: Request, exc: ConcurrencyConflict) -> Response:
    return error_response(409, "changed concurrently by another request; retry")


# a moment for the client to wait before retrying while the event log is away
RETRY_AFTER = {"Retry-After": "1"}


def _not_written(request: Request, exc: NotWritten) -> Response:
    log.warning("nats_disconnected_write_refused", path=request.url.path)
    return error_response(
        503, "the event log is unreachable: nothing was written; retry shortly", RETRY_AFTER
    )


def _nats(request: Request, exc: nats.errors.Error) -> Response:
    correlation_id = request.scope.get("state", {}).get("correlation_id", "")
    log.warning(
        "nats_unavailable", path=request.url.path, error=str(exc), correlation_id=correlation_id
    )
    if request.method not in WRITE_METHODS:
        return error_response(503, "the event log is unreachable; retry shortly", RETRY_AFTER)
    # the publish may have gone out (nats.py sends what it buffered once reconnected)
    keyed = request.headers.get(KEY_HEADER)
    retry = (
        f"retry with the same {KEY_HEADER} ({keyed!r}) to have it happen once"
        if keyed
        else f"check before retrying (correlation id {correlation_id}), or send an {KEY_HEADER}"
    )
    return error_response(
        503,
        f"the event log did not confirm the write: outcome unknown, it may still land; {retry}",
        RETRY_AFTER,
    )


def _too_deep(request: Request, exc: RecursionError) -> Response:
    # msgspec gives up on a JSON body nested deeper than Python's recursion limit: the
    # client's mistake (or attack), answered like any malformed body, without a traceback
    if "deserializing" not in str(exc):
        return _internal(request, exc)
    return error_response(400, "the JSON body is nested too deeply")


def _internal(request: Request, exc: Exception) -> Response:
    correlation_id = request.scope.get("state", {}).get("correlation_id", "")
    log.exception(
        "request_failed", path=request.url.path, correlation_id=correlation_id, error=repr(exc)
    )
    return error_response(500, f"internal error (correlation id {correlation_id})")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    HTTPException: _http,
    Refused: _refused,
    FormError: _form,
    TooLarge: _too_large,
    ConcurrencyConflict: _conflict,
    NotWritten: _not_written,
    nats.errors.Error: _nats,
    RecursionError: _too_deep,
    Exception: _internal,
}
