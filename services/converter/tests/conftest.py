"""Fixtures for the converter's tests: digits, a simple-cnn trained on it for seconds, and one
converter service process shared by the module that asks for it."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cvops.core import Settings, load_settings
from cvops.testing.converter import TEST_ENV, TrainedModel, digits_arrays, trained_digits_model
from cvops.testing.core import NatsServer, start_service


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    return digits_arrays()


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    return trained_digits_model()


@pytest.fixture(scope="module")
def service_settings(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("converter-home")
    return load_settings({}, nats_url=nats_server.url, home=str(home), log_json=True)


@pytest.fixture(scope="module")
def converter(service_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m cvops.converter`` for the module's tests (stopped with SIGTERM after)."""
    log = Path(service_settings.home) / "converter.log"
    proc = start_service("cvops.converter", service_settings, log, **TEST_ENV)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
