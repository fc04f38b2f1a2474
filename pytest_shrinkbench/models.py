"""Architectures of the embedded digits suites (8×8 grey images, 10 classes)."""

from __future__ import annotations

from torch import Tensor, nn


class DigitsMLP(nn.Module):
    """LeNet-300-100 (LeCun et al. 1998) on 64 flattened pixels: the classic MLP pruning target."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    # No conv bias: the batch norm that follows has its own shift.
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DigitsCNN(nn.Module):
    """A small VGG-style conv net with batch norm: 3 conv blocks (16/32/64 channels) and a linear head.

    Small enough that 90 fine-tuning runs fit in a minute on a CPU core, deep enough that layers
    differ in FLOPs per parameter, which is what separates global from layerwise pruning.
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(1, 16),
            _conv_bn(16, 32),
            nn.MaxPool2d(2),  # 8×8 → 4×4
            _conv_bn(32, 64),
            nn.MaxPool2d(2),  # 4×4 → 2×2
        )
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
