"""What ``/schema/openapi.json`` says about each route: the statuses it answers, who may call it.

Litestar documents the success response from each handler's return type; the refusals are
documented here, in one place, so that clients generated from the document know every status
the gateway really answers, each with the one error shape (component ``ErrorBody``):

* derived from the route itself, by ``document_routes`` when the app is built: 401 on every
  route that needs a token (all but ``auth.PUBLIC_PATHS``), 403 where a guard refuses some
  role, and 400 (malformed JSON), 413 (over the body limit) and 422 (fails validation) on
  every route with a JSON body;
* declared on each route with ``responses=refusals(...)``: what the service itself refuses
  with (lookups 404, conflicts 409, checks 422, quotas 429, the upload form's 400 and 413);
* on every write (POST, PUT, PATCH, DELETE): the optional ``Idempotency-Key`` header, 422
  for a key reused with another request and 503 while the event log is unreachable
  (``cvops.gateway.idempotency``).

Public routes carry ``security: []`` (no token); every other one inherits the document's
global bearer requirement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from litestar import Litestar, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example, OpenAPIType, Operation, Parameter, Schema
from litestar.routes import BaseRoute, HTTPRoute

from cvops.contracts.api import ErrorBody
from cvops.gateway.auth import PUBLIC_PATHS, Allow
from cvops.gateway.errors import ERROR_CODES
from cvops.gateway.idempotency import KEY_DESCRIPTION, KEY_HEADER, MAX_KEY_CHARS, WRITE_METHODS

SCHEMA_PATH = "/schema"
DOCUMENT_PATH = f"{SCHEMA_PATH}/openapi.json"

# What each refusal means on any route; ``detail`` says the particular reason.
REFUSALS: dict[int, str] = {
    400: "Malformed request: the body is not well-formed JSON",
    401: (
        "Not authenticated: no bearer token, or an unknown, revoked or expired one, or a "
        "disabled user"
    ),
    403: "Forbidden: the caller's role (or, for a job, its owner) does not allow this",
    404: "Not found: the thing named in the path or the body does not exist",
    409: "Conflict with the current state (exists already, has ended, changed concurrently)",
    413: "Too large: the body is over the size limit; nothing was stored",
    422: "Invalid: the request fails validation or a check; detail says why",
    429: (
        "Too many: past a quota (running GPU jobs per user or per role), or too many failed "
        "sign-ins (then header `Retry-After` gives the seconds to wait)"
    ),
    503: (
        "Unavailable: the event log is unreachable. `nothing was written`: no event was "
        "appended; `outcome unknown`: the write may still land, retry with the same "
        "`Idempotency-Key`. Header `Retry-After` gives the seconds to wait"
    ),
}
_EXAMPLE_DETAIL: dict[int, Any] = {
    400: "JSON is malformed: invalid character (byte 0)",
    401: "missing bearer token",
    403: "role 'viewer' may not do this (needs 'write')",
    404: "no model 'resnet'",
    409: "job job-1a2b3c4d5e6f has already completed",
    413: "Request Entity Too Large",
    422: {
        "message": "Validation failed for POST /users",
        "errors": [{"message": "Expected `str`, got `int`", "key": "username", "source": "body"}],
    },
    429: "GPU quota: role engineer has 3 GPU job(s) running, the limit per role is 3; ...",
    503: "the event log is unreachable: nothing was written; retry shortly",
}


def refusal(status: int, description: str | None = None, detail: Any = None) -> ResponseSpec:
    """An error response: the one error shape, with an example of its ``error`` code (and
    ``detail``, when given, else the usual one for ``status``)."""
    example = {"error": ERROR_CODES[status], "detail": detail or _EXAMPLE_DETAIL[status]}
    return ResponseSpec(
        data_container=ErrorBody,
        description=description or REFUSALS[status],
        generate_examples=False,
        examples=[Example(summary=ERROR_CODES[status], value=example)],
    )


def refusals(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses=`` for a route decorator: the refusals its service call can answer."""
    return {status: refusal(status) for status in statuses}


def is_public(path: str) -> bool:
    """Whether a route is served without a token (the authentication middleware skips it)."""
    return any(re.search(pattern, path) for pattern in PUBLIC_PATHS)


def is_viewer_page(path: str) -> bool:
    """The pages that render the document for people (HTML and YAML copies): not API routes.

    They are served under ``/schema`` without a token but left out of the document itself;
    ``/schema/openapi.json`` is documented.
    """
    return (path == SCHEMA_PATH or path.startswith(f"{SCHEMA_PATH}/")) and path != DOCUMENT_PATH


def derived_refusals(handler: HTTPRouteHandler, path: str) -> set[int]:
    """The statuses a route answers because of how it is built, not what its service does."""
    statuses: set[int] = set()
    if not is_public(path):
        statuses.add(401)
    guards = [guard for layer in handler.ownership_layers for guard in (layer.guards or [])]
    if any(not (isinstance(guard, Allow) and guard.grants_every_role) for guard in guards):
        statuses.add(403)
    if "data" in handler.parsed_fn_signature.parameters:  # a JSON body Litestar decodes
        statuses |= {400, 422}
        if handler.resolve_request_max_body_size() is not None:
            statuses.add(413)
    if handler.http_methods & WRITE_METHODS:
        statuses |= {422, 503}  # a reused Idempotency-Key; the event log away
    return statuses


IDEMPOTENCY_KEY = Parameter(
    name=KEY_HEADER,
    param_in="header",
    required=False,
    description=KEY_DESCRIPTION,
    schema=Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_KEY_CHARS),
)


@dataclass
class GatewayOperation(Operation):
    """An operation as the gateway documents it (``document_routes`` makes one per route).

    Litestar adds a 400 in its own shape (``status_code``, ``detail``, ``extra``) to every
    route with parameters; this gateway answers failed validation with 422 in the one error
    shape, so only the responses the route declares are kept.
    """

    declared: ClassVar[frozenset[str]] = frozenset()
    public: ClassVar[bool] = False
    writes: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.writes:
            self.parameters = [*(self.parameters or []), IDEMPOTENCY_KEY]
        if self.responses is not None:
            self.responses = {
                status: response
                for status, response in self.responses.items()
                if status in self.declared
            }
        if self.public:
            self.security = []


def document_routes(app: Litestar) -> None:
    """Give every documented route its refusals and its security (call once, after routing).

    Runs before the document is first built (Litestar builds it on the first request for it).
    """
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        handlers = {id(h): h for h, _ in route.route_handler_map.values()}.values()
        for handler in handlers:
            if not handler.resolve_include_in_schema():
                continue
            responses: dict[int, ResponseSpec] = dict(handler.responses or {})
            for status in sorted(derived_refusals(handler, route.path)):
                responses.setdefault(status, refusal(status))
            handler.responses = responses
            declared = frozenset({str(handler.status_code), *map(str, responses)})
            base = handler.operation_class
            if not issubclass(base, GatewayOperation):
                base = GatewayOperation
            handler.operation_class = cast(
                "type[Operation]",
                type(
                    base.__name__,
                    (base,),
                    {
                        "declared": declared,
                        "public": is_public(route.path),
                        "writes": bool(handler.http_methods & WRITE_METHODS),
                    },
                ),
            )


class SchemaRouter(Router):
    """Serves the document and its viewers as Litestar does; the document itself is listed in
    the document (``GET /schema/openapi.json``, no token), the viewer pages are not."""

    def register(self, value: Any) -> list[BaseRoute]:
        routes = super().register(value)
        for route in routes:
            if isinstance(route, HTTPRoute) and route.path == DOCUMENT_PATH:
                for handler in route.route_handlers:
                    if "GET" in handler.http_methods:
                        _describe_document(handler)
        return routes


def _describe_document(handler: HTTPRouteHandler) -> None:
    handler.include_in_schema = True
    handler.tags = ["schema"]
    handler.summary = "OpenAPI document"
    handler.description = "This document: every route, its statuses and its security."
    handler.operation_id = "OpenApiDocument"
    handler.responses = {
        200: ResponseSpec(
            data_container=Mapping[str, Any],
            media_type=handler.media_type,
            description="The OpenAPI 3.1 document",
            generate_examples=False,
        )
    }


def schema_router() -> Router:
    return SchemaRouter(SCHEMA_PATH, route_handlers=[], include_in_schema=False)
