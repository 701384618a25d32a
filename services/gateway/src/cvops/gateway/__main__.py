"""``python -m cvops.gateway``: serve the gateway with uvicorn on gateway_host:gateway_port, in
this process or, with ``CVOPS_GATEWAY_WORKERS`` > 1, in that many worker processes."""

from __future__ import annotations

import sys

from cvops.core import configure_logging, load_settings
from cvops.gateway.server import exit_cleanly_on_signals, serve


def main() -> None:
    exit_cleanly_on_signals()
    settings = load_settings()
    configure_logging("gateway", settings.log_level, settings.log_json)
    sys.exit(serve(settings))


if __name__ == "__main__":
    main()
