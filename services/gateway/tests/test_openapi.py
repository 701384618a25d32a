"""The OpenAPI document clients are generated from (``/schema/openapi.json``): every route, the
statuses each one answers (refusals in the one error shape), and which routes need a token.

That the document declares every status the routes really answer is checked where the
routes are exercised, by the last test of ``test_api.py`` (the permission matrix, every role
and anonymous), ``test_work_api.py`` and ``test_uploads_with_registry.py``.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest

from cvops.gateway.openapi import is_viewer_page
from cvops.testing.gateway import Platform, undeclared_statuses

ERROR_BODY = "#/components/schemas/ErrorBody"
REFUSAL_STATUSES = {400, 401, 403, 404, 409, 413, 422, 429}
PUBLIC = {
    ("POST", "/auth/login"),
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/schema/openapi.json"),
}
# A few operations declared in full: the guard (403), the JSON body (400, 413, 422), what
# the service refuses with, on writes a reused Idempotency-Key (422) and the event log away
# (503), and nothing more.
DECLARED = {
    ("GET", "/models"): {200, 401},
    ("GET", "/models/{name}"): {200, 401, 404},
    ("GET", "/users"): {200, 401, 403},
    ("POST", "/auth/tokens"): {201, 400, 401, 409, 413, 422, 503},
    ("POST", "/auth/login"): {200, 400, 401, 409, 413, 422, 429, 503},
    ("POST", "/jobs"): {201, 400, 401, 403, 413, 422, 429, 503},
    ("POST", "/jobs/{job_id}/cancel"): {202, 401, 403, 404, 409, 422, 503},
    ("DELETE", "/deployments/{name}"): {202, 401, 403, 404, 409, 422, 503},
    ("POST", "/models"): {201, 202, 400, 401, 403, 413, 422, 503},
    ("GET", "/events/{correlation_id}"): {200, 401, 422},
    ("GET", "/health/ready"): {200, 503},
}


@pytest.fixture(scope="module")
def document(platform: Platform) -> dict[str, Any]:
    response = httpx.get(f"{platform.url}/schema/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in methods
    }


def test_every_route_of_the_app_is_an_operation_of_the_document(
    platform: Platform, document: dict[str, Any]
) -> None:
    served = {
        (method, route.path_format)
        for route in platform.gateway.app.routes
        for method in getattr(route, "methods", ())
        if method != "OPTIONS" and not is_viewer_page(route.path_format)
    }
    assert ("GET", "/schema/openapi.json") in served
    assert set(operations(document)) == served


def test_every_operation_has_its_success_and_refusals_in_the_one_error_shape(
    document: dict[str, Any],
) -> None:
    body = document["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]) == {"error", "detail"} and body["required"] == ["error"]
    for (method, path), operation in operations(document).items():
        statuses = {int(status) for status in operation["responses"]}
        assert any(200 <= s < 300 for s in statuses), (method, path)
        refusals = {s for s in statuses if 400 <= s < 500}
        assert refusals <= REFUSAL_STATUSES, (method, path)
        for status in refusals:
            schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
            shapes = [schema, *schema.get("oneOf", [])]
            assert ERROR_BODY in [s.get("$ref") for s in shapes], (method, path, status)


def test_declared_statuses_follow_guards_bodies_and_refusals(document: dict[str, Any]) -> None:
    declared = {
        key: {int(status) for status in operations(document)[key]["responses"]} for key in DECLARED
    }
    assert declared == DECLARED


def test_public_routes_need_no_token_and_the_others_the_bearer_token(
    document: dict[str, Any],
) -> None:
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    found = operations(document)
    assert set(found) >= PUBLIC
    for key, operation in found.items():
        if key in PUBLIC:
            assert operation["security"] == [], key
        else:
            assert operation.get("security", document["security"]) == [{"bearer": []}], key
            assert "401" in operation["responses"], key


def test_the_event_feed_is_a_server_sent_event_stream(document: dict[str, Any]) -> None:
    feed = operations(document)[("GET", "/events/{correlation_id}")]
    assert list(feed["responses"]["200"]["content"]) == ["text/event-stream"]
    download = operations(document)[("GET", "/models/{name}/versions/{version}/artifact")]
    assert list(download["responses"]["200"]["content"]) == ["application/octet-stream"]


def test_a_status_the_document_does_not_declare_is_reported(document: dict[str, Any]) -> None:
    observed = {
        ("GET", "/models/{name:str}"): {200, 401, 404},  # a template as the matrix writes it
        ("POST", "/jobs"): {201, 429, 503},  # a server failure is not held to the document
        ("DELETE", "unmatched"): {405},
        ("GET", "/schema"): {200},  # the page that renders the document
    }
    assert undeclared_statuses(document, observed) == []

    doctored = copy.deepcopy(document)
    del doctored["paths"]["/models/{name}"]["get"]["responses"]["404"]
    del doctored["paths"]["/jobs"]["post"]
    assert undeclared_statuses(doctored, observed) == [
        "GET /models/{name}: 404",
        "POST /jobs: not in the document",
    ]
