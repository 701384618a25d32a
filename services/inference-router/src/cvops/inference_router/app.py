"""Wiring only: settings, bus, projection, Triton instances, worker, HTTP/gRPC/metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import cast

import aiohttp
import grpc
from aiohttp import web

from cvops.core import Bus, ProjectionRunner, Settings, WorkConsumer, get_logger
from cvops.core.local import TRITON, Layout
from cvops.core.runtime import freeze_startup_heap
from cvops.inference_router import identity
from cvops.inference_router.api import MAX_BODY, KServeHttp
from cvops.inference_router.dataplane import DataPlaneUnavailable, NginxDataPlane, find_nginx
from cvops.inference_router.front import FrontDoor
from cvops.inference_router.grpc_api import CHANNEL_OPTIONS, KServeGrpc
from cvops.inference_router.metrics import MetricsExporter, RouterMetrics
from cvops.inference_router.projection import SUBJECTS, RouterProjection, db_path
from cvops.inference_router.proxy import Proxy, RouteTable
from cvops.inference_router.repository import BACKENDS, Backend
from cvops.inference_router.routing import Instance, Pool, parse_instance
from cvops.inference_router.triton import LocalTriton
from cvops.inference_router.work import DEPLOY_SUBJECTS, Deployer

log = get_logger(__name__)

SERVICE = "inference-router"
HEALTH_INTERVAL_S = 1.0
HEALTH_TIMEOUT_S = 1.0
HANG_PROBES = 6  # a local tritonserver that misses this many probes in a row is killed
HANG_PROBE_TIMEOUT_S = 5.0  # generous: under load its HTTP threads answer slowly


class Router:
    """Everything one router process runs, started and stopped together."""

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.home = Path(settings.home) / SERVICE
        self.runner = ProjectionRunner(
            bus, RouterProjection(), db_path(settings), subjects=SUBJECTS
        )
        self.identity = ProjectionRunner(
            bus, identity.projection, identity.db_path(settings), stream=identity.STREAM
        )
        self.local: LocalTriton | None = None
        urls = [u for u in settings.triton_url.split(",") if u.strip()]
        if urls:  # Docker/GPU hosts: NGC tritonservers (native backends unless told python)
            instances = [parse_instance(u) for u in urls]
            repository = Path(settings.triton_model_repository or self.home / "models")
            backend = external_backend(settings)
        else:
            repository = self.home / "models"
            self.local = LocalTriton(
                repository=repository,
                workdir=self.home / "triton",
                http_port=settings.triton_http_port,
                grpc_port=settings.triton_grpc_port,
                metrics_port=settings.triton_metrics_port,
                pid_file=Layout.of(settings).pid_file(TRITON),
            )
            instances = [
                Instance(
                    name="local",
                    http=self.local.http_url,
                    grpc=self.local.grpc_url,
                    metrics=self.local.metrics_url,
                    local=True,
                )
            ]
            backend = "python"
        self.pool = Pool(instances)
        self.routes = RouteTable(self.runner, self.identity)
        self.metrics = RouterMetrics()
        self.proxy = Proxy(self.pool, self.routes, self.metrics)
        self.exporter = MetricsExporter(self.metrics, self.pool)
        self.deployer = Deployer(
            bus=bus,
            runner=self.runner,
            identity=self.identity,
            pool=self.pool,
            repository=repository,
            cache=self.home / "artifacts",
            backend=backend,
            on_routes_changed=self._routes_changed,
            engine_threads=settings.router_engine_threads,
        )
        self.consumer = WorkConsumer(
            bus,
            "inference-router-deploy",
            DEPLOY_SUBJECTS,
            self.deployer.handle,
            ack_wait=60,
            nak_delay=2.0,
        )
        self.http = KServeHttp(self.proxy, self.exporter, self.local)
        self.grpc = KServeGrpc(self.proxy)
        self._tasks: list[asyncio.Task[None]] = []
        self._runners: list[web.AppRunner] = []
        self._grpc_server: grpc.aio.Server | None = None
        self.front: FrontDoor | None = None
        self.dataplane: NginxDataPlane | None = None
        self._pool_seen: object = None
        self._reconcile_wanted = asyncio.Event()
        self._stopping = asyncio.Event()

    def _routes_changed(self) -> None:
        self._refresh()

    def _refresh(self) -> bool:
        """Reload the route table (True: the deployments changed) and hand it to nginx."""
        changed = self.routes.refresh()
        self._sync_plane()
        return changed

    def _sync_plane(self) -> None:
        if self.dataplane is not None:
            self._pool_seen = self._pool_state()
            self.dataplane.sync(self.routes.all.values(), self.routes.tokens)

    def _pool_state(self) -> object:
        return [(i.http, i.up, sorted(i.loaded.items())) for i in self.pool.instances]

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.runner.run(), name="projection"))
        self._tasks.append(asyncio.create_task(self.identity.run(), name="identity"))
        # the routes this router's projection file already holds, before the first request:
        # an empty table would answer a public deployment with 401 until the catch-up below
        # (a router restarted under load did, found by tests/faults/test_router_kill.py)
        self.routes.refresh()
        await self._serve()
        await asyncio.gather(self.runner.catch_up(timeout=120), self.identity.catch_up(timeout=120))
        self._refresh()
        if self.local is not None:
            local = self.local
            inst = self.pool.instances[0]
            local.on_down(lambda: self._local_down(inst))
            local.on_restarted(lambda: self._local_restarted(inst))
            await local.start()
            inst.up = True
            await self._recover(inst, f"router-start-{local.process.pid if local.process else 0}")
        self._tasks.append(asyncio.create_task(self._watch_projection(), name="route-refresh"))
        self._tasks.append(asyncio.create_task(self._reconcile_loop(), name="reconcile"))
        self._tasks.append(asyncio.create_task(self._health_watch(), name="health"))
        self._tasks.append(asyncio.create_task(self.consumer.run(), name="deploy-worker"))
        log.info(
            "router_started",
            http=self.settings.router_http_port,
            grpc=self.settings.router_grpc_port,
            metrics=self.settings.router_metrics_port,
            instances=[i.name for i in self.pool.instances],
        )

    async def _serve(self) -> None:
        host = self.settings.router_host
        # the aiohttp app answers every route but infer, behind the front door on loopback
        internal = web.AppRunner(self.http.app(), access_log=None, handle_signals=False)
        await internal.setup()
        await web.TCPSite(internal, "127.0.0.1", 0, reuse_address=True).start()
        self._runners.append(internal)
        address = internal.addresses[0]
        internal_address = f"{address[0]}:{address[1]}"
        self.dataplane = await self._nginx(internal_address)
        if self.dataplane is None:
            self.front = FrontDoor(self.proxy, self.metrics, internal_address, MAX_BODY)
            await self.front.start(host, self.settings.router_http_port)
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", self.http.prometheus)
        metrics = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
        await metrics.setup()
        await web.TCPSite(
            metrics,
            self.settings.metrics_host,
            self.settings.router_metrics_port,
            reuse_address=True,
        ).start()
        self._runners.append(metrics)
        server = grpc.aio.server(options=CHANNEL_OPTIONS)
        server.add_generic_rpc_handlers((self.grpc,))
        server.add_insecure_port(f"{host}:{self.settings.router_grpc_port}")
        await server.start()
        self._grpc_server = server

    async def _nginx(self, internal: str) -> NginxDataPlane | None:
        """nginx on the HTTP port (``router_data_plane``), or None: the router's own."""
        mode = self.settings.router_data_plane
        if mode not in ("auto", "nginx", "python"):
            raise ValueError(f"CVOPS_ROUTER_DATA_PLANE={mode!r}: not auto, nginx or python")
        if mode == "python":
            return None
        try:
            plane = NginxDataPlane(
                find_nginx(self.settings),
                workdir=self.home / "nginx",
                host=self.settings.router_host,
                port=self.settings.router_http_port,
                internal=internal,
                max_body=MAX_BODY,
                pool=self.pool,
                metrics=self.metrics,
            )
            plane.prepare()
            self.dataplane = plane
            self._sync_plane()  # the routes read so far, before the first request
            await plane.launch()
            self.http.data_plane = plane.describe
        except DataPlaneUnavailable as err:
            self.dataplane = None
            if mode == "nginx":
                raise
            log.warning("data_plane_python", reason=str(err))
            return None
        return plane

    async def stop(self) -> None:
        """Stop taking work and requests, then stop Triton (its exit timeout is short)."""
        self._stopping.set()
        self.consumer.stop()
        self.runner.stop()
        self.identity.stop()
        for task in self._tasks:
            if task.get_name() not in ("projection", "identity", "deploy-worker"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("router_stopping", step="tasks")
        if self.front is not None:
            await self.front.stop()
        if self.dataplane is not None:
            await self.dataplane.stop()
        if self._grpc_server is not None:
            await self._grpc_server.stop(grace=1)
        for runner in self._runners:
            await runner.cleanup()
        await self.grpc.close()
        await self.proxy.close()
        log.info("router_stopping", step="servers")
        if self.local is not None:
            await self.local.stop()
            log.info("router_stopping", step="triton")
        self.runner.engine.dispose()
        self.identity.engine.dispose()

    # -- health -----------------------------------------------------------------------
    def _local_down(self, inst: Instance) -> None:
        inst.mark_down()
        self.metrics.triton_restarts.inc()
        pid = self.local.process.pid if self.local and self.local.process else 0
        code = self.local.process.returncode if self.local and self.local.process else None
        asyncio.get_running_loop().create_task(
            self.deployer.instance_down(
                inst, f"tritonserver exited with {code}; restarting", f"triton-down-{pid}"
            )
        )

    async def _local_restarted(self, inst: Instance) -> None:
        inst.breaker.reset()
        inst.up = True
        pid = self.local.process.pid if self.local and self.local.process else 0
        await self._recover(inst, f"triton-up-{pid}")

    async def _recover(self, inst: Instance, incident: str) -> None:
        await self.deployer.instance_recovered(inst, incident)
        self._refresh()

    async def _health_watch(self) -> None:
        """Poll every instance's liveness.

        External instances go down and up with their answers (and are reloaded when they
        come back). The local one is restarted by its supervisor when it dies; when it
        hangs (alive, not answering ``HANG_PROBES`` probes in a row) it is killed here.
        """
        misses: dict[str, int] = {}
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(HEALTH_INTERVAL_S)
                for inst in self.pool.instances:
                    timeout = HANG_PROBE_TIMEOUT_S if inst.local else HEALTH_TIMEOUT_S
                    live = await _live(session, inst, timeout)
                    if inst.local:
                        misses[inst.name] = (
                            0 if live or not inst.up else misses.get(inst.name, 0) + 1
                        )
                        if misses[inst.name] >= HANG_PROBES and self.local is not None:
                            log.error("triton_hung", instance=inst.name, probes=HANG_PROBES)
                            misses[inst.name] = 0
                            self.local.kill()
                        continue
                    if live and not inst.up:
                        inst.up = True
                        inst.breaker.reset()
                        log.info("triton_instance_up", instance=inst.name)
                        await self._recover(inst, f"instance-up-{inst.name}-{time.time_ns()}")
                    elif not live and inst.up:
                        inst.mark_down()
                        log.warning("triton_instance_down", instance=inst.name)
                        await self.deployer.instance_down(
                            inst,
                            f"{inst.name} is not live",
                            f"instance-down-{inst.name}-{time.time_ns()}",
                        )

    # -- following the projection -----------------------------------------------------
    async def _watch_projection(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            if self.routes.stale() and self._refresh():
                self._reconcile_wanted.set()
            elif self.dataplane is not None and self._pool_state() != self._pool_seen:
                self._sync_plane()  # an instance went down or up, or loaded a version

    async def _reconcile_loop(self) -> None:
        while True:
            await self._reconcile_wanted.wait()
            self._reconcile_wanted.clear()
            for inst in self.pool.instances:
                if not inst.up:
                    continue
                try:
                    await self.deployer.reconcile(inst)
                except Exception as err:  # logged; the next change or restart retries
                    log.warning("reconcile_failed", instance=inst.name, error=str(err))
            self._refresh()


def external_backend(settings: Settings) -> Backend:
    """The backend models are written for on external Tritons (``CVOPS_TRITON_BACKEND``):
    the NGC image's native ones by default, ``python`` where only that backend exists."""
    name = settings.triton_backend or "onnxruntime"
    if name not in BACKENDS:
        raise ValueError(f"CVOPS_TRITON_BACKEND={name!r}: not one of {', '.join(BACKENDS)}")
    return cast(Backend, name)


async def _live(session: aiohttp.ClientSession, inst: Instance, timeout: float) -> bool:
    try:
        async with session.get(
            f"http://{inst.http}/v2/health/live",
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def main(bus: Bus, settings: Settings, stop: asyncio.Event) -> None:
    """Run the router until ``stop`` is set."""
    router = Router(bus, settings)
    try:
        await router.start()
        freeze_startup_heap()  # a process of its own: keep the collector off its startup heap
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await router.stop()
