"""Nets and data for the engine benchmarks: resnet-mini (from the zoo when installed, else an
equivalent), a ResNet-18-shaped net, and synthetic separable images to train them briefly."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        widths: tuple[int, ...],
        blocks: tuple[int, ...],
        num_classes: int,
        in_channels: int = 3,
        imagenet_stem: bool = False,
    ) -> None:
        super().__init__()
        stem = widths[0]
        if imagenet_stem:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(stem),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
                nn.BatchNorm2d(stem),
                nn.ReLU(),
            )
        layers: list[nn.Module] = []
        cin = stem
        for i, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for j in range(count):
                layers.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layers(self.stem(x)).mean(dim=(2, 3)))


def resnet_mini(num_classes: int, in_channels: int, image_size: int) -> tuple[nn.Module, str]:
    """The zoo's resnet-mini when cvops-vision is installed; the same shape otherwise."""
    try:
        from cvops.vision.zoo import build_model

        return build_model("resnet-mini", num_classes, in_channels, image_size), "zoo"
    except ImportError:
        return ResNet((16, 32, 64, 128), (1, 1, 1, 1), num_classes, in_channels), "local"


def resnet18_shaped(num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet-18's layout: 7x7 stem, 4 stages of 2 basic blocks, 64..512 channels."""
    return ResNet((64, 128, 256, 512), (2, 2, 2, 2), num_classes, in_channels, imagenet_stem=True)


def build(name: str, num_classes: int, size: int) -> tuple[nn.Module, str]:
    if name == "resnet-mini":
        return resnet_mini(num_classes, 3, size)
    if name == "resnet18":
        return resnet18_shaped(num_classes), "local"
    raise SystemExit(f"unknown net {name!r}")


def separable_images(
    n: int, size: int, num_classes: int, seed: int, noise: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    """Each class is a fixed low-frequency pattern plus pixel noise; zero mean, unit std."""
    coarse = np.random.default_rng(4321).normal(size=(num_classes, 3, 8, 8))
    templates = torch.nn.functional.interpolate(
        torch.from_numpy(coarse), size=(size, size), mode="bilinear", align_corners=False
    ).numpy()
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    images = templates[labels] + rng.normal(scale=noise, size=(n, 3, size, size))
    images = (images - images.mean()) / images.std()
    return images.astype(np.float32), labels.astype(np.int64)


def train_briefly(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, steps: int, batch: int = 32
) -> nn.Module:
    """A few Adam steps: enough to learn the separable task, not a real training run."""
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, len(images), (batch,), generator=generator)
        loss = nn.functional.cross_entropy(model(x_all[pick]), y_all[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()
