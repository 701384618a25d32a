"""``python -m cvops.gateway``: serve the gateway with uvicorn on gateway_host:gateway_port."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn
from litestar import Litestar

from cvops.core import configure_logging, load_settings
from cvops.gateway.app import create_app

# Time for in-flight requests (an upload awaiting its verdict) to finish on SIGTERM.
SHUTDOWN_GRACE_S = 10


class GatewayServer(uvicorn.Server):
    """uvicorn that also ends open SSE feeds on SIGTERM, so shutdown does not wait on them."""

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        service = getattr(self.app.state, "gateway", None)
        if service is not None:
            service.stopping.set()
        super().handle_exit(sig, frame)


def _exit_cleanly(_sig: int, _frame: FrameType | None) -> None:
    sys.exit(0)


def main() -> None:
    # uvicorn re-raises SIGTERM/SIGINT to the handler it found after its graceful shutdown:
    # with this one the process then exits 0, as the other services do
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    settings = load_settings()
    configure_logging("gateway", settings.log_level, settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        lifespan="on",
    )
    GatewayServer(config, app).run()


if __name__ == "__main__":
    main()
