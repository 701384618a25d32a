"""The routing core shared by the HTTP and gRPC front doors.

``RouteTable`` mirrors the projection in memory (deployments that serve, token digests);
``Proxy`` checks a request's bearer token (every per-model route, not only infer),
resolves it to a deployment version and sends the bytes to the least-loaded Triton
instance, retrying once elsewhere on a connection failure or a 503. Tensors are never
decoded here.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

from cvops.core import ProjectionRunner
from cvops.domain.identity import TokenState, UserState, token_refusal
from cvops.inference_router import handlers, identity, projection
from cvops.inference_router.metrics import RouterMetrics
from cvops.inference_router.projection import DeploymentRow, ModelVersionRow
from cvops.inference_router.routing import Instance, Pool
from cvops.inference_router.upstream import Response, UpstreamError, UpstreamPool, UpstreamTimeout

T = TypeVar("T")
INFER_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 2.0
RETRY_AFTER_S = "1"


class RouteError(Exception):
    """A request the router answers itself: 400/401/404/503 with a KServe-style message."""

    def __init__(self, status: int, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.version: int | None = None

    def kserve(self) -> tuple[int, dict[str, str], bytes]:
        """Triton's error shape ``{"error": message}`` with the headers a client needs."""
        headers = {"Content-Type": "application/json"}
        if self.retryable:
            headers["Retry-After"] = RETRY_AFTER_S
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return self.status, headers, json.dumps({"error": self.message}).encode()


class Unavailable(RouteError):
    def __init__(self, message: str) -> None:
        super().__init__(503, message, retryable=True)


class IndexEntry(NamedTuple):
    """One served version in the repository index."""

    name: str
    version: int
    ready: bool
    reason: str


class RouteTable:
    """In-memory view of the projection for the hot path (refreshed on change)."""

    def __init__(self, runner: ProjectionRunner, identity: ProjectionRunner) -> None:
        self.runner = runner
        self.identity = identity  # users and token digests: their own stream and file
        self.deployments: dict[str, DeploymentRow] = {}
        self.all: dict[str, DeploymentRow] = {}
        self.tokens: dict[str, tuple[TokenState, UserState | None]] = {}
        self._versions: dict[tuple[str, int], ModelVersionRow | None] = {}
        self.applied = (-1, -1)

    def refresh(self) -> bool:
        """Reload from SQLite; True when the deployments changed."""
        self.applied = (self.runner.applied, self.identity.applied)
        with self.runner.session() as s:
            rows = projection.all_deployments(s)
        with self.identity.session() as s:
            tokens = identity.all_tokens(s)
        before = self.all
        self.all = {d.name: d for d in rows}
        self.deployments = {d.name: d for d in rows if d.routable}
        self.tokens = {t.token_sha256: (t, u) for t, u in tokens}
        self._versions.clear()
        return before != self.all

    def stale(self) -> bool:
        return (self.runner.applied, self.identity.applied) != self.applied

    def version(self, model_name: str, version: int) -> ModelVersionRow | None:
        key = (model_name, version)
        if key not in self._versions:
            with self.runner.session() as s:
                self._versions[key] = projection.model_version(s, model_name, version)
        return self._versions[key]


class Proxy:
    """Resolve, authorize and forward; shared by HTTP and gRPC."""

    def __init__(self, pool: Pool, routes: RouteTable, metrics: RouterMetrics) -> None:
        self.pool = pool
        self.routes = routes
        self.metrics = metrics
        self._upstreams: dict[str, UpstreamPool] = {}
        self.random = random.Random()

    def upstream(self, address: str) -> UpstreamPool:
        pool = self._upstreams.get(address)
        if pool is None:
            pool = self._upstreams[address] = UpstreamPool(
                address, connect_timeout=CONNECT_TIMEOUT_S
            )
        return pool

    async def close(self) -> None:
        for pool in self._upstreams.values():
            pool.close()

    # -- resolving --------------------------------------------------------------------
    def deployment(self, name: str) -> DeploymentRow:
        d = self.routes.deployments.get(name)
        if d is None:
            raise RouteError(404, f"Request for unknown model: '{name}' is not found")
        return d

    def resolve(self, name: str, pinned: str | None, key: str | None) -> tuple[DeploymentRow, int]:
        """The deployment and the version this request goes to."""
        d = self.deployment(name)
        if pinned:
            try:
                version = int(pinned)
            except ValueError:
                raise RouteError(400, f"invalid model version '{pinned}'") from None
            if version not in d.versions:
                raise RouteError(
                    404, f"Request for unknown model: '{name}' version {version} is not served"
                )
            return d, version
        return d, handlers.choose_version(d, key, self.random.random())

    def authorize(self, name: str, authorization: str | None) -> None:
        """Let a caller at deployment ``name`` (infer, metadata, config, ready, statistics).

        A public deployment is open. Any other name, deployed or not, needs a valid bearer
        token, and is refused the same way without one: an anonymous caller cannot tell a
        private deployment from an unknown name.
        """
        d = self.routes.all.get(name)
        if d is not None and d.public:
            return
        if not authorization:
            raise RouteError(401, f"model '{name}' needs a bearer token")
        self._check_token(authorization)

    def visible(self, authorization: str | None) -> list[DeploymentRow]:
        """The deployments a caller may list (repository index, statistics), retired ones
        left out: the public ones without a token, all with a valid one (401: invalid)."""
        if authorization:
            self._check_token(authorization)
        return [
            d
            for d in self.routes.all.values()
            if d.status != "retired" and (d.public or authorization)
        ]

    def index(self, authorization: str | None) -> list[IndexEntry]:
        """The repository index as this caller may see it: one entry per served version."""
        entries = []
        for d in self.visible(authorization):
            for v in d.versions:
                ready = d.routable and self.pool.serving(d.name, v)
                entries.append(IndexEntry(d.name, v, ready, "" if ready else d.reason))
        return entries

    def _check_token(self, authorization: str) -> None:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise RouteError(401, "the Authorization header must be 'Bearer <token>'")
        digest = hashlib.sha256(secret.strip().encode()).hexdigest()
        token, user = self.routes.tokens.get(digest, (None, None))
        refusal = token_refusal(token, user, datetime.now(UTC))
        if refusal is not None:
            raise RouteError(401, refusal)

    # -- forwarding -------------------------------------------------------------------
    async def call(
        self,
        model: str,
        version: int | None,
        send: Callable[[Instance], Awaitable[T]],
        *,
        failed: Callable[[T], bool] = lambda _r: False,
        transient: Callable[[BaseException], bool] = lambda _e: False,
    ) -> T:
        """Run ``send`` on the least-loaded instance; once more on a transient failure.

        The second try goes to another instance when there is one, else to the same one
        over a fresh connection (a keep-alive connection the server had closed).
        """
        tried: tuple[Instance, ...] = ()
        key = (model, version or 0)
        last_error = "no Triton instance serves it now (starting or restarting); retry"
        for attempt in range(2):
            inst = self.pool.pick(model, version, tried) or (
                self.pool.pick(model, version) if attempt and tried else None
            )
            if inst is None:
                break
            tried = (*tried, inst)
            inst.outstanding += 1
            self.pool.inflight[key] += 1
            try:
                result = await send(inst)
            except Exception as err:
                if not transient(err):
                    raise
                inst.breaker.failure()
                self.metrics.upstream_error(inst.name, type(err).__name__)
                last_error = f"Triton instance {inst.name} failed: {type(err).__name__}"
                if attempt == 0:
                    self.metrics.retry(model)
                continue
            finally:
                inst.outstanding -= 1
                self.pool.inflight[key] -= 1
            if failed(result):
                inst.breaker.failure()
                self.metrics.upstream_error(inst.name, "unavailable")
                last_error = f"Triton instance {inst.name} is unavailable"
                if attempt == 0:
                    self.metrics.retry(model)
                continue
            inst.breaker.success()
            return result
        raise Unavailable(f"model '{model}' is unavailable: {last_error}")

    async def http(
        self,
        model: str,
        version: int | None,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one HTTP request to Triton; returns (status, passed-through headers, body)."""

        async def send(inst: Instance) -> Response:
            return await self.upstream(inst.http).request(
                method, path, body, headers, INFER_TIMEOUT_S
            )

        try:
            r = await self.call(
                model,
                version,
                send,
                failed=lambda r: r.status == 503,
                transient=lambda e: isinstance(e, UpstreamError),
            )
        except UpstreamTimeout as err:
            raise RouteError(504, f"Triton did not answer: {err}") from err
        out = {k: v for k, lk in PASS_BACK if (v := r.headers.get(lk)) is not None}
        return r.status, out, r.body

    async def infer(
        self,
        name: str,
        pinned: str | None,
        key: str | None,
        authorization: str | None,
        body: bytes,
        headers: dict[str, str],
    ) -> tuple[int, int, dict[str, str], bytes]:
        """Route one KServe infer request: (version, status, headers, body) or RouteError."""
        self.authorize(name, authorization)
        _, v = self.resolve(name, pinned, key)
        try:
            status, out, data = await self.http(
                name, v, "POST", f"/v2/models/{name}/versions/{v}/infer", body, headers
            )
        except RouteError as err:
            err.version = v
            raise
        return v, status, out, data

    async def get(self, address: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """A plain GET to one Triton address (metadata, statistics, metrics)."""
        r = await self.upstream(address).request("GET", path, None, {}, timeout)
        return r.status, r.body

    async def any_instance(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` from the first up instance (server metadata, statistics)."""
        for inst in self.pool.instances:
            if not inst.up:
                continue
            try:
                return await self.get(inst.http, path)
            except (UpstreamError, UpstreamTimeout):
                continue
        raise Unavailable("no Triton instance is up; retry")


PASS_BACK = tuple(
    (h, h.lower()) for h in ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding")
)
PASS_ON = ("Content-Type", "Inference-Header-Content-Length", "Content-Encoding", "Accept-Encoding")
