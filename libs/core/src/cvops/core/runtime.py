"""Service runtime: logging, metrics endpoint, bus, presence, and a graceful SIGTERM.

On SIGTERM the service stops fetching; a message in flight is finished (or nak'd by the
consumer on error) before the connection drains, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable

from prometheus_client import start_http_server

from cvops.core.bus import Bus
from cvops.core.logging import configure_logging, get_logger
from cvops.core.presence import Presence
from cvops.core.settings import Settings, load_settings

Main = Callable[[Bus, Settings, asyncio.Event], Awaitable[None]]


def run_service(name: str, main: Main, settings: Settings | None = None) -> None:
    """Run ``main(bus, settings, stop)`` until SIGTERM/SIGINT sets ``stop``."""
    settings = settings or load_settings()
    configure_logging(name, settings.log_level, settings.log_json)
    port = settings.metrics_port(name)
    if port:
        try:
            start_http_server(port, addr=settings.metrics_host)
        except OSError as err:
            get_logger().warning("metrics_port_busy", port=port, error=str(err))
    asyncio.run(_serve(name, main, settings))


async def _serve(name: str, main: Main, settings: Settings) -> None:
    log = get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bus = await Bus.connect(settings, name=name)
    log.info("service_started", nats=settings.effective_nats_url)
    presence = Presence(bus, name)
    presence_task = asyncio.create_task(presence.run(), name="presence")
    try:
        await main(bus, settings, stop)
    finally:
        presence.stop()
        await presence_task
        await bus.close()
        log.info("service_stopped")
