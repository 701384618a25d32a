"""Saturation for ``bench/load/run.py``: closed-loop users with no think time, each GET in turn
of ``$CVOPS_SATURATE_PATHS`` (comma-separated; bearer ``$CVOPS_SATURATE_TOKEN`` when set).

The same file drives the gateway's reads and the bare Litestar anchor, so their requests/s
compare like with like.
"""

from __future__ import annotations

import itertools
import os

from locust import FastHttpUser, constant, task

PATHS = [p for p in os.environ.get("CVOPS_SATURATE_PATHS", "/").split(",") if p]
TOKEN = os.environ.get("CVOPS_SATURATE_TOKEN", "")


class Saturating(FastHttpUser):
    """GETs without a pause; anything but 200 is a failure."""

    wait_time = constant(0)
    network_timeout = 60.0
    connection_timeout = 60.0

    def on_start(self) -> None:
        self.paths = itertools.cycle(PATHS)
        self.headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}

    @task
    def read(self) -> None:
        path = next(self.paths)
        with self.client.get(path, headers=self.headers, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}")
