"""Every route the gateway serves, called as every kind of caller, gets the status its guard
implies: read from the app's own route list, not from a hand-written list that can go stale.

For each route the required permissions are the ``Allow`` guards on its layers (none on the
public paths of ``auth.PUBLIC_PATHS``); a role may call it when ``ROLE_PERMISSIONS`` grants
them all. Anonymous and revoked-token callers get 401, a role without the permission 403 (never
a 2xx), a role with it anything but 401/403; nobody ever gets a 5xx. Path parameters name
nothing that exists and no body is sent: the guard decides before either is read.

The hand-written matrix of ``services/gateway/tests/test_api.py`` checks the 2xx of each route
with real bodies; this one checks that no route is left without a guard and that the guards
refuse exactly whom ``ROLE_PERMISSIONS`` says, on the gateway process an operator runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from litestar.routes import HTTPRoute

from cvops.contracts.identity import ROLE_PERMISSIONS, Permission
from cvops.core import load_settings
from cvops.gateway.app import create_app
from cvops.gateway.auth import Allow
from cvops.gateway.openapi import is_public
from cvops.testing.gateway import undeclared_statuses
from cvops.testing.gateway_process import GatewayProcess

CALLERS = [None, "revoked", "viewer", "engineer", "admin"]  # None: no token at all
PATH_VALUES = {int: "1"}  # any other parameter type: a name nothing has


@dataclass(frozen=True)
class Route:
    """One method of one route as the app serves it, and what its guards require."""

    method: str
    template: str  # the path with typed parameters, as Litestar lists it
    path_format: str  # the path as the OpenAPI document writes it
    public: bool
    documented: bool  # in /schema/openapi.json (the API), or a page for people
    needs: frozenset[Permission]
    guarded: bool  # every guard on it is an ``Allow`` (one this test can reason about)
    example_path: str

    @property
    def id(self) -> str:
        return f"{self.method} {self.path_format}"

    def allows(self, caller: str | None) -> bool:
        if self.public:
            return True
        if caller not in ROLE_PERMISSIONS:
            return False
        return self.needs <= ROLE_PERMISSIONS[caller]  # type: ignore[index]


def served_routes() -> list[Route]:
    """Every (method, route) of the app that ``create_app`` builds, with its guards."""
    app = create_app(load_settings({}))
    found: list[Route] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        example = route.path_format
        for name, parameter in route.path_parameters.items():
            value = PATH_VALUES.get(parameter.type, f"nothing-{name}")
            example = example.replace(f"{{{name}}}", value)
        for method, (handler, _) in route.route_handler_map.items():
            if method == "OPTIONS":
                continue
            guards = [g for layer in handler.ownership_layers for g in (layer.guards or [])]
            found.append(
                Route(
                    method=method,
                    template=route.path,
                    path_format=route.path_format,
                    public=is_public(route.path),
                    documented=handler.resolve_include_in_schema(),
                    needs=frozenset(g.permission for g in guards if isinstance(g, Allow)),
                    guarded=bool(guards) and all(isinstance(g, Allow) for g in guards),
                    example_path=example,
                )
            )
    return sorted(found, key=lambda r: (r.path_format, r.method))


ROUTES = served_routes()


@pytest.fixture(scope="module")
def callers(live: GatewayProcess) -> Iterator[GatewayProcess]:
    """The module's gateway, plus a token that was revoked before the matrix runs."""
    with live.client() as client:
        made = client.post("/auth/tokens", json={"label": "revoked"}, headers=live.headers("admin"))
        token = made.json()
        gone = client.delete(f"/auth/tokens/{token['token_id']}", headers=live.headers("admin"))
        assert gone.status_code == 204, gone.text
    live.tokens["revoked"] = token["token"]
    yield live


def test_the_matrix_covers_the_api_and_the_api_is_the_document(live: GatewayProcess) -> None:
    """The routes read from the app are the operations the running gateway documents (so the
    process under test serves what the matrix was derived from), and there are enough of them
    that a broken derivation would show."""
    document = httpx.get(f"{live.url}/schema/openapi.json", timeout=30).json()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch"}
    }
    assert {(r.method, r.path_format) for r in ROUTES if r.documented} == operations
    assert len(operations) >= 40
    assert sum(not r.public for r in ROUTES) >= 35


def test_every_route_that_needs_a_token_names_its_permission() -> None:
    """A route outside the public paths without an ``Allow`` guard would let any signed-in
    user call it: there is none. And the public paths are only probes, metrics, the OpenAPI
    document (and its viewer pages) and the sign-in."""
    unguarded = [r.id for r in ROUTES if not r.public and not (r.guarded and r.needs)]
    assert unguarded == []
    public = {r.id for r in ROUTES if r.public and r.documented}
    assert public == {
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /schema/openapi.json",
        "POST /auth/login",
    }
    assert all(r.path_format.startswith("/schema") for r in ROUTES if r.public and not r.documented)


def test_no_route_that_changes_something_needs_only_read() -> None:
    """``read`` is the permission to look: a route that changes something (any method but
    GET) needs another one — a guard weakened to ``read`` shows here, where the matrix,
    which follows the guards, would agree with it."""
    weak = [
        r.id for r in ROUTES if r.method != "GET" and not r.public and r.needs <= {Permission.READ}
    ]
    assert weak == []


def call(
    client: httpx.Client, live: GatewayProcess, route: Route, caller: str | None
) -> httpx.Response:
    """One call of ``route`` as ``caller``. A role that may make a change there uses a token
    made for this call, so a route that revokes its caller's token (logout) spends only it."""
    headers = live.headers(caller)
    if route.method != "GET" and route.allows(caller) and caller in ROLE_PERMISSIONS:
        made = client.post("/auth/tokens", json={"label": "matrix"}, headers=headers)
        assert made.status_code == 201, made.text
        headers = {"Authorization": f"Bearer {made.json()['token']}"}
    params = {"follow": "false"} if route.path_format.startswith("/events/") else None
    return client.request(route.method, route.example_path, headers=headers, params=params)


OBSERVED: dict[tuple[str, str], set[int]] = {}


@pytest.fixture(scope="module")
def client(callers: GatewayProcess) -> Iterator[httpx.Client]:
    with callers.client() as c:
        yield c


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c or "anonymous")
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.id)
def test_route_answers_each_caller_as_its_guard_says(
    callers: GatewayProcess, client: httpx.Client, route: Route, caller: str | None
) -> None:
    response = call(client, callers, route, caller)
    status = response.status_code
    OBSERVED.setdefault((route.method, route.template), set()).add(status)
    assert status < 500, f"{route.id} as {caller}: {status} {response.text[:500]}"
    if route.allows(caller):
        assert status not in (401, 403), f"{route.id} as {caller}: {response.text[:500]}"
        return
    if caller in ROLE_PERMISSIONS:
        assert status == 403, f"{route.id} as {caller}: {status} {response.text[:500]}"
        body = response.json()
        assert body["error"] == "forbidden"
        assert all(p.value in body["detail"] for p in route.needs - ROLE_PERMISSIONS[caller])  # type: ignore[index]
    elif route.documented:
        assert status == 401, f"{route.id} as {caller}: {status} {response.text[:500]}"
        assert response.json()["error"] == "not_authenticated"
        assert response.headers["www-authenticate"] == "Bearer"
    else:  # a page for people may send the browser to sign in instead
        assert status == 401 or 300 <= status < 400, f"{route.id} as {caller}: {status}"


def test_the_document_declares_every_status_the_matrix_got(live: GatewayProcess) -> None:
    """Run after the matrix: each 401/403 (and what the allowed calls got) is declared."""
    if len(OBSERVED) < len({(r.method, r.template) for r in ROUTES}):
        pytest.skip("needs the whole matrix (run the module, not a selection)")
    document = httpx.get(f"{live.url}/schema/openapi.json", timeout=30).json()
    assert undeclared_statuses(document, OBSERVED) == []


def test_a_role_without_a_permission_is_refused_before_its_body_is_read(
    live: GatewayProcess,
) -> None:
    """A viewer's upload is refused with 403 whatever it sends: a body a guard never reads
    is never stored, however large (here 8 MiB over a 256 KiB limit) or malformed."""
    blob = b"\0" * (8 * 1024 * 1024)
    with live.client() as client:
        for content in (blob, b"--no-boundary\r\n"):
            refused = client.post(
                "/models",
                content=content,
                headers={
                    **live.headers("viewer"),
                    "Content-Type": "multipart/form-data; boundary=x",
                },
            )
            assert refused.status_code == 403, refused.text
    spool = live.settings.home_path / "spool"  # type: ignore[union-attr]
    assert not spool.exists() or not any(spool.iterdir())
