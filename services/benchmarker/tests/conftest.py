"""Fixtures for the benchmarker's tests: digits, a simple-cnn trained on it for seconds and its
conversion artifacts made in-process (once per session), and settings for service processes."""

from __future__ import annotations

import numpy as np
import pytest

from cvops.core import Settings, load_settings
from cvops.testing.benchmarker import Converted, convert_in_process
from cvops.testing.converter import TrainedModel, digits_arrays, trained_digits_model
from cvops.testing.core import NatsServer


@pytest.fixture(scope="session")
def digits() -> dict[str, np.ndarray]:
    return digits_arrays()


@pytest.fixture(scope="session")
def trained() -> TrainedModel:
    return trained_digits_model()


@pytest.fixture(scope="session")
def converted(
    tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel, digits: dict[str, np.ndarray]
) -> list[Converted]:
    return convert_in_process(
        trained.weights,
        trained.arch,
        digits,
        trained.hyperparameters["normalization"],
        tmp_path_factory.mktemp("artifacts"),
    )


@pytest.fixture(scope="module")
def service_settings(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("benchmarker-home")
    return load_settings({}, nats_url=nats_server.url, home=str(home), log_json=True)
