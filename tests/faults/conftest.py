"""Fault suite fixtures: a NATS of each test's own (so it can be killed -9 and restarted on
its port and store), a bus to it, and the digits model the converter jobs convert."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from cvops.core import Bus
from cvops.testing.converter import TrainedModel, digits_arrays, trained_digits_model
from cvops.testing.faults import KillableNats


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[KillableNats]:
    """A JetStream server of the test's own, stopped (by PID) after it."""
    server = KillableNats(tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fault_bus(nats: KillableNats, tmp_path: Path) -> AsyncIterator[Bus]:
    """The test's own connection (it reconnects when the server comes back)."""
    bus = await Bus.connect(nats.settings(tmp_path / "client"), name="fault-test")
    try:
        yield bus
    finally:
        await bus.close()


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    return digits_arrays()


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    return trained_digits_model()
