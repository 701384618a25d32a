"""Serving the gateway: one uvicorn process, or ``gateway_workers`` of them on one port.

With several workers this process binds the port, starts each worker as a child process on
that socket and waits. It restarts none of them: when one ends on its own, the others are
stopped and this process exits 1, so the one supervisor there is (``./justw up``'s, a
container's restart policy) restarts the gateway whole. SIGTERM or SIGINT is passed to
every worker, each finishes its requests as a single gateway does, and this one exits 0.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from types import FrameType

import uvicorn
from litestar import Litestar

from cvops.core import Settings, configure_logging, get_logger
from cvops.core.runtime import freeze_startup_heap
from cvops.gateway.app import create_app
from cvops.gateway.workers import Worker

log = get_logger(__name__)

# Time for in-flight requests (an upload awaiting its verdict) to finish on SIGTERM.
SHUTDOWN_GRACE_S = 10
# What a worker gets beyond that before it is killed (its lifespan's shutdown).
WORKER_STOP_EXTRA_S = 3.0
PARENT_POLL_S = 0.5


class GatewayServer(uvicorn.Server):
    """uvicorn that also ends open SSE feeds on SIGTERM, so shutdown does not wait on them,
    and keeps the garbage collector off the heap it started with (``freeze_startup_heap``)."""

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan ran: caught up, bootstrapped
        if self.started:
            freeze_startup_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        service = getattr(self.app.state, "gateway", None)
        if service is not None:
            service.stopping.set()
        super().handle_exit(sig, frame)


def _exit_cleanly(_sig: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def exit_cleanly_on_signals() -> None:
    """uvicorn re-raises SIGTERM/SIGINT to the handler it found after its graceful shutdown:
    with this one the process then exits 0, as the other services do."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)


def _config(app: Litestar, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        lifespan="on",
    )


def serve(settings: Settings) -> int:
    """Serve the gateway until SIGTERM: in this process, or in ``gateway_workers`` children."""
    if settings.gateway_workers > 1:
        return serve_workers(settings)
    app = create_app(settings)
    GatewayServer(_config(app, settings), app).run()
    return 0


def serve_workers(settings: Settings) -> int:
    """Start ``gateway_workers`` worker processes on one bound socket and wait for them.

    Returns:
        0 once all stopped after SIGTERM/SIGINT; 1 when a worker ended on its own.
    """
    count = settings.gateway_workers
    sock = uvicorn.Config(
        "cvops.gateway:create_app", host=settings.gateway_host, port=settings.gateway_port
    ).bind_socket()
    stopping = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    spawn = multiprocessing.get_context("spawn")
    bootstrapped = spawn.Event()
    workers = [
        spawn.Process(
            target=_run_worker,
            args=(settings, Worker(i, count, bootstrapped), sock, os.getpid()),
            name=f"gateway-worker-{i}",
        )
        for i in range(count)
    ]
    for process in workers:
        process.start()
    sock.close()  # the workers hold it now: the port closes with the last of them
    log.info("gateway_workers_started", workers=count, pids=[p.pid for p in workers])
    ended_alone = False
    while not stopping.is_set():
        if wait([p.sentinel for p in workers], timeout=PARENT_POLL_S):
            ended_alone = not stopping.is_set()
            break
    for process in workers:
        if process.exitcode is not None:
            if ended_alone:
                log.error("gateway_worker_ended", worker=process.name, exitcode=process.exitcode)
        elif process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + SHUTDOWN_GRACE_S + WORKER_STOP_EXTRA_S
    for process in workers:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in workers:
        if process.exitcode is None:
            log.warning("gateway_worker_killed", worker=process.name)
            process.kill()
            process.join()
    return 1 if ended_alone else 0


def _run_worker(settings: Settings, worker: Worker, sock: socket.socket, parent: int) -> None:
    """One worker process: the gateway app served by uvicorn on the inherited socket."""
    exit_cleanly_on_signals()
    configure_logging("gateway", settings.log_level, settings.log_json)
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
    app = create_app(settings, worker=worker)
    GatewayServer(_config(app, settings), app).run(sockets=[sock])


def _stop_when_orphaned(parent: int) -> None:
    """SIGTERM this worker once the process that started it is gone (killed with -9)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
