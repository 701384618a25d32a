"""The web UI's JavaScript (HTMX and its SSE extension): npm packages that ``./justw`` installs
with ``npm ci`` into ``services/gateway/web-assets/node_modules`` (git ignores it), served
under ``/ui/assets/``. Without them every page still renders; only live updates are off.
"""

from __future__ import annotations

import os
from pathlib import Path

from cvops.core import get_logger

log = get_logger(__name__)

# Where the gateway image puts the installed packages (deploy/docker/gateway.Dockerfile).
ASSETS_ENV = "CVOPS_WEB_ASSETS"
# The checkout's install (this file is services/gateway/src/cvops/gateway/web/assets.py).
CHECKOUT_MODULES = Path(__file__).resolve().parents[4] / "web-assets" / "node_modules"
# package -> the folder of its built files, relative to node_modules
PACKAGES = {"htmx.org": "htmx.org/dist", "htmx-ext-sse": "htmx-ext-sse/dist"}
# the files the pages load, each found in one of those folders
SCRIPTS = ("htmx.min.js", "sse.min.js")


def node_modules() -> Path:
    """The node_modules folder the assets are served from (``$CVOPS_WEB_ASSETS`` first)."""
    configured = os.environ.get(ASSETS_ENV)
    return Path(configured) if configured else CHECKOUT_MODULES


def asset_directories(modules: Path | None = None) -> list[Path] | None:
    """The folders holding the scripts, or None (logged once) when they are not installed."""
    modules = modules or node_modules()
    folders = [modules / folder for folder in PACKAGES.values()]
    present = {s for folder in folders for s in SCRIPTS if (folder / s).is_file()}
    if present != set(SCRIPTS):
        log.warning(
            "web_assets_missing",
            node_modules=str(modules),
            missing=sorted(set(SCRIPTS) - present),
            hint="run ./justw (npm ci in services/gateway/web-assets); pages render without "
            "live updates until then",
        )
        return None
    return folders
