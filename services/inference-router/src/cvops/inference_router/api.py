"""HTTP front door: the KServe v2 protocol (what Triton speaks) plus ``/v1/predict``.

aiohttp rather than Litestar here: the infer route is a byte-for-byte proxy on the hot
path (binary-tensor bodies are passed through with their ``Inference-Header-Content-
Length``, never decoded) and every microsecond counts against direct Triton. Errors on
``/v2`` keep Triton's shape ``{"error": "<message>"}`` so tritonclient reads them; the
``/v1`` routes use cvops's ``{"error": code, "detail": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from cvops.contracts.api import ErrorBody
from cvops.inference_router import predict
from cvops.inference_router.metrics import MetricsExporter
from cvops.inference_router.proxy import PASS_ON, RETRY_AFTER_S, Proxy, RouteError, Unavailable
from cvops.inference_router.triton import LocalTriton

MAX_BODY = 512 * 1024 * 1024
REQUEST_KEY = "X-Request-Key"
AUTHORIZATION = "Authorization"
JSON = "application/json"


def kserve_error(err: RouteError) -> web.Response:
    status, headers, body = err.kserve()
    return web.Response(status=status, body=body, headers=headers)


def cvops_error(status: int, code: str, detail: str) -> web.Response:
    body = msgspec.json.encode(ErrorBody(error=code, detail=detail))
    headers = {"Retry-After": RETRY_AFTER_S} if status == 503 else {}
    return web.Response(status=status, body=body, content_type=JSON, headers=headers)


class KServeHttp:
    """The router's HTTP routes."""

    def __init__(
        self, proxy: Proxy, exporter: MetricsExporter, local: LocalTriton | None = None
    ) -> None:
        self.proxy = proxy
        self.exporter = exporter
        self.metrics = proxy.metrics
        self.local = local
        # who answers the HTTP port (the router sets it once its listener runs)
        self.data_plane: Callable[[], dict[str, Any]] = lambda: {"kind": "python"}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        r = app.router
        r.add_get("/v2/health/live", self.live)
        r.add_get("/v2/health/ready", self.ready)
        r.add_get("/v2", self.server_metadata)
        r.add_post("/v2/models/{name}/infer", self.infer)
        r.add_post("/v2/models/{name}/versions/{version}/infer", self.infer)
        r.add_get("/v2/models/stats", self.all_stats)
        r.add_get("/v2/models/{name}", self.model_get)
        r.add_get("/v2/models/{name}/versions/{version}", self.model_get)
        r.add_get("/v2/models/{name}/ready", self.model_ready)
        r.add_get("/v2/models/{name}/versions/{version}/ready", self.model_ready)
        r.add_get("/v2/models/{name}/config", self.model_get)
        r.add_get("/v2/models/{name}/versions/{version}/config", self.model_get)
        r.add_get("/v2/models/{name}/stats", self.model_get)
        r.add_get("/v2/models/{name}/versions/{version}/stats", self.model_get)
        r.add_post("/v2/repository/index", self.repository_index)
        r.add_post("/v2/repository/models/{name}/load", self.repository_control)
        r.add_post("/v2/repository/models/{name}/unload", self.repository_control)
        for prefix in ("/v2/systemsharedmemory", "/v2/cudasharedmemory"):
            r.add_route("*", prefix + "{tail:.*}", self.shared_memory)
        r.add_post("/v1/predict/{name}", self.predict)
        r.add_get("/v1/status", self.status)
        r.add_get("/metrics", self.prometheus)
        return app

    # -- health and metadata ----------------------------------------------------------
    async def live(self, _request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def ready(self, _request: web.Request) -> web.Response:
        return web.Response(status=200 if self.proxy.pool.any_up() else 503)

    async def server_metadata(self, _request: web.Request) -> web.Response:
        try:
            status, body = await self.proxy.any_instance("/v2")
        except RouteError as err:
            return kserve_error(err)
        return web.Response(status=status, body=body, content_type=JSON)

    async def model_get(self, request: web.Request) -> web.Response:
        """Metadata, config and statistics of a deployment, from a Triton that serves it."""
        name = request.match_info["name"]
        pinned = request.match_info.get("version")
        try:
            self.proxy.authorize(name, request.headers.get(AUTHORIZATION))
            self.proxy.resolve(name, pinned, None)
            status, headers, body = await self.proxy.http(
                name, int(pinned) if pinned else None, "GET", request.raw_path, None, {}
            )
        except RouteError as err:
            return kserve_error(err)
        return web.Response(status=status, body=body, headers=headers)

    async def model_ready(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        pinned = request.match_info.get("version")
        try:
            self.proxy.authorize(name, request.headers.get(AUTHORIZATION))
            self.proxy.resolve(name, pinned, None)
        except RouteError as err:
            return kserve_error(err)
        ok = self.proxy.pool.serving(name, int(pinned) if pinned else None)
        return web.Response(status=200 if ok else 503)

    async def all_stats(self, request: web.Request) -> web.Response:
        """Triton's statistics of the deployments this caller may list."""
        try:
            names = {d.name for d in self.proxy.visible(request.headers.get(AUTHORIZATION))}
            status, body = await self.proxy.any_instance("/v2/models/stats")
        except RouteError as err:
            return kserve_error(err)
        if status == 200:
            stats = json.loads(body)
            stats["model_stats"] = [
                m for m in stats.get("model_stats", []) if m.get("name") in names
            ]
            body = json.dumps(stats).encode()
        return web.Response(status=status, body=body, content_type=JSON)

    async def repository_index(self, request: web.Request) -> web.Response:
        """Deployments and their state: the public ones without a token, all with one."""
        try:
            entries = self.proxy.index(request.headers.get(AUTHORIZATION))
        except RouteError as err:
            return kserve_error(err)
        index = []
        for e in entries:
            entry: dict[str, Any] = {
                "name": e.name,
                "version": str(e.version),
                "state": "READY" if e.ready else "UNAVAILABLE",
            }
            if e.reason:
                entry["reason"] = e.reason
            index.append(entry)
        return web.Response(body=json.dumps(index).encode(), content_type=JSON)

    async def repository_control(self, request: web.Request) -> web.Response:
        return kserve_error(
            RouteError(
                403,
                "models are loaded and unloaded by deployments (`cvops deploy`, "
                "deployment.requested / deployment.retire_requested events), "
                "not through the router",
            )
        )

    async def shared_memory(self, _request: web.Request) -> web.Response:
        return kserve_error(
            RouteError(400, "shared-memory tensors are not supported through the router")
        )

    # -- inference (the hot path) -----------------------------------------------------
    async def infer(self, request: web.Request) -> web.Response:
        """KServe infer (the front door serves this route itself; this is the same logic)."""
        start = time.perf_counter()
        name = request.match_info["name"]
        version: int | str = "-"
        try:
            body = await request.read()
            headers = {k: h for k in PASS_ON if (h := request.headers.get(k)) is not None}
            version, status, out, data = await self.proxy.infer(
                name,
                request.match_info.get("version"),
                request.headers.get(REQUEST_KEY),
                request.headers.get(AUTHORIZATION),
                body,
                headers,
            )
            response = web.Response(status=status, body=data, headers=out)
        except RouteError as err:
            version = err.version or "-"
            response = kserve_error(err)
        self.metrics.observe(
            name, version, "http", str(response.status), time.perf_counter() - start
        )
        return response

    async def predict(self, request: web.Request) -> web.Response:
        """Top-k labels of one PNG/JPEG (raw body or multipart field ``file``).

        Query: ``k`` (default 5). Returns ``{"model", "version", "predictions": [...]}``.
        """
        start = time.perf_counter()
        name = request.match_info["name"]
        try:
            k = int(request.query.get("k", "5"))
        except ValueError:
            return cvops_error(400, "bad_request", "k must be an integer")
        try:
            self.proxy.authorize(name, request.headers.get(AUTHORIZATION))
            d, v = self.proxy.resolve(
                name, request.query.get("version"), request.headers.get(REQUEST_KEY)
            )
        except RouteError as err:
            code = {401: "unauthorized", 404: "not_found"}.get(err.status, "bad_request")
            return cvops_error(err.status, code, err.message)
        mv = self.proxy.routes.version(d.model_name, v)
        if mv is None or not mv.inputs or not mv.outputs:
            return cvops_error(
                409, "no_signature", f"{d.model_name}:{v} has no input/output record"
            )
        try:
            spec = predict.image_input(mv.inputs[0], mv.hyperparameters)
        except ValueError as err:
            return cvops_error(400, "not_an_image_model", str(err))
        data = await _image_bytes(request)
        try:
            x = await asyncio.to_thread(_prepare, data, spec, mv.hyperparameters)
        except predict.NotAnImage as err:
            return cvops_error(400, "not_an_image", str(err))
        body, head = predict.infer_body(spec.name, x, spec.datatype, mv.outputs[0].name)
        try:
            status, headers, answer = await self.proxy.http(
                name,
                v,
                "POST",
                f"/v2/models/{name}/versions/{v}/infer",
                body,
                {"Inference-Header-Content-Length": str(head)},
            )
        except Unavailable as err:
            return cvops_error(503, "unavailable", err.message)
        if status != 200:
            detail = _triton_error(answer)
            return cvops_error(502 if status >= 500 else 400, "inference_failed", detail)
        length = headers.get("Inference-Header-Content-Length")
        scores = predict.read_output(answer, int(length) if length else None)
        classes = mv.hyperparameters.get("classes")
        result = {
            "model": name,
            "version": v,
            "predictions": predict.top_k(
                scores[0], classes if isinstance(classes, list) else None, k
            ),
        }
        self.metrics.observe(name, v, "predict", "200", time.perf_counter() - start)
        return web.json_response(result)

    # -- operations -------------------------------------------------------------------
    async def status(self, request: web.Request) -> web.Response:
        """Instances (health, pid, loaded models) and deployments as this router sees them;
        without a token only the public deployments (as the repository index)."""
        try:
            visible = {d.name: d for d in self.proxy.visible(request.headers.get(AUTHORIZATION))}
        except RouteError as err:
            return kserve_error(err)
        pool = self.proxy.pool
        return web.json_response(
            {
                "instances": [
                    {
                        "name": i.name,
                        "http": i.http,
                        "grpc": i.grpc,
                        "up": i.up,
                        "outstanding": i.outstanding,
                        "breaker": i.breaker.state,
                        "loaded": {k: list(v) for k, v in i.loaded.items() if k in visible},
                        "pid": self.local.pid if self.local and i.local else None,
                        "restarts": self.local.restarts if self.local and i.local else 0,
                    }
                    for i in pool.instances
                ],
                "deployments": [
                    {
                        "name": d.name,
                        "status": d.status,
                        "model_name": d.model_name,
                        "version": d.version,
                        "engine": d.engine,
                        "precision": d.precision,
                        "arms": [
                            {
                                "arm": a.name,
                                "triton_version": a.slot,
                                "version": a.version,
                                "engine": a.engine,
                                "precision": a.precision,
                                "artifact": a.served.artifact.sha256 if a.served else None,
                                "target": a.served.target if a.served else None,
                            }
                            for a in d.arms
                        ],
                        "canary_version": d.canary_version,
                        "canary_weight_percent": d.canary_weight_bp / 100,
                        "public": d.public,
                        "pending_version": d.pending_version,
                        "reason": d.reason,
                    }
                    for d in visible.values()
                ],
                "data_plane": self.data_plane(),
            }
        )

    async def prometheus(self, _request: web.Request) -> web.Response:
        body = await self.exporter.render(self.proxy.get)
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def _image_bytes(request: web.Request) -> bytes:
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if getattr(part, "name", None) == "file":
                return bytes(await part.read())  # type: ignore[union-attr]
        return b""
    return await request.read()


def _prepare(data: bytes, spec: predict.ImageInput, hyper: dict[str, Any]) -> Any:
    return predict.preprocess(predict.decode_image(data), spec, hyper)


def _triton_error(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body[:200]))
    except (ValueError, AttributeError):
        return body[:200].decode(errors="replace")
