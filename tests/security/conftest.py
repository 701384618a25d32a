"""Security suite fixtures: per module, one gateway process on a NATS of its own.

The log starts empty, so the gateway bootstraps its admin as on a first ``./justw up`` (the
admin's token comes from the credentials file it writes); an engineer and a viewer are made
through the API, each with an API token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cvops.testing.gateway_process import GatewayProcess


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The module's gateway with a user per role (no registry runs: an upload's wait for a
    verdict ends quickly, 202 pending)."""
    gateway = GatewayProcess(
        tmp_path_factory.mktemp("security"),
        upload_verdict_timeout_s=0.3,
        max_upload_bytes=256 * 1024,
    )
    try:
        yield gateway.start().add_users()
    finally:
        gateway.stop()
