"""Fixtures for the engines tests: a tiny CNN trained briefly on synthetic separable images, and its
ONNX export (session-scoped: exporting costs seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

NUM_CLASSES = 4
IMAGE = (3, 16, 16)


class TinyCNN(nn.Module):
    """Three convolutions and a linear head: four quantizable nodes."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@dataclass
class Task:
    """A trained model with its data: train/calibration/validation splits, float32 NCHW."""

    model: nn.Module
    calibration: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    onnx_path: Path


def separable_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each class is a fixed smooth template plus noise; normalised to zero mean, unit std."""
    templates = np.random.default_rng(1234).normal(size=(NUM_CLASSES, *IMAGE))
    kernel = np.ones(3) / 3  # smooth so that strided convs see the pattern
    for axis in (2, 3):
        templates = np.apply_along_axis(lambda v: np.convolve(v, kernel, "same"), axis, templates)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, size=n)
    images = templates[labels] + rng.normal(scale=0.5, size=(n, *IMAGE))
    images = (images - images.mean()) / images.std()
    return images.astype(np.float32), labels.astype(np.int64)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, steps: int = 60) -> nn.Module:
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, len(images), (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(x_all[pick]), y_all[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def task(tmp_path_factory: pytest.TempPathFactory) -> Task:
    from cvops.engines import export_onnx

    torch.manual_seed(0)
    train_x, train_y = separable_images(1024, seed=1)
    calibration, _ = separable_images(64, seed=2)
    val_x, val_y = separable_images(400, seed=3)
    model = train(TinyCNN(), train_x, train_y)
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    export_onnx(model, torch.from_numpy(val_x[:2]), path)
    return Task(model, calibration, val_x, val_y, path)
