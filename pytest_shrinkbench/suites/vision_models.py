"""Architectures of the standard vision suites: the networks the pruning literature reports on.

* CIFAR ResNets 20/32/44/56/110 (He et al., *Deep Residual Learning*, 2016, section 4.2): a 3×3
  stem of 16 channels, three stages of ``n`` basic blocks with 16, 32 and 64 channels (depth
  6n + 2), global average pooling and a linear classifier. Shortcuts are option A: parameter-free
  identities, subsampled by 2 and zero-padded in channels where a stage begins, so the parameter
  counts are the published ones (0.27M, 0.46M, 0.66M, 0.85M, 1.7M).
* CIFAR-VGG: Zagoruyko's VGG with batch norm and dropout for 32×32 inputs ("92.45% on CIFAR-10
  in Torch", 2015): 13 conv-BN-ReLU layers with dropout between them, five max pools, and a
  512-512-10 classifier with batch norm and dropout.
* LeNet-300-100 (LeCun et al. 1998) on 28×28 MNIST, and LeNet-5 in the Caffe form used by the
  pruning literature (Han et al. 2015: 20 and 50 5×5 filters, a 500-unit hidden layer, 431K
  parameters).
* ImageNet models are torchvision's own builders, always with ``weights=None`` (see
  :func:`torchvision_model`); pretrained weights come from a file, never from the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ShortcutA(nn.Module):
    """He et al.'s option A: identity, subsampled by ``stride`` and zero-padded to ``planes`` channels. No parameters."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            # The new channels are split evenly before and after the old ones (zeros either way).
            x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return x


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and an option-A shortcut; ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(in_planes, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 images (He et al. 2016, section 4.2)."""

    def __init__(self, depth: int, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for index in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out" if isinstance(module, nn.Conv2d) else "fan_in")

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def resnet20(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(32, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(44, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(56, num_classes)


def resnet110(num_classes: int = 10) -> CifarResNet:
    return CifarResNet(110, num_classes)


CIFAR_RESNETS = {20: resnet20, 32: resnet32, 44: resnet44, 56: resnet56, 110: resnet110}


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    # Torch7's SpatialBatchNormalization(n, 1e-3), as in Zagoruyko's vgg_bn_drop.lua.
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=1e-3), nn.ReLU(inplace=True)]


# Zagoruyko's plan: (channels, dropout after the layer or None), "M" = 2×2 max pool.
CIFAR_VGG_PLAN = (
    (64, 0.3), (64, None), "M",
    (128, 0.4), (128, None), "M",
    (256, 0.4), (256, 0.4), (256, None), "M",
    (512, 0.4), (512, 0.4), (512, None), "M",
    (512, 0.4), (512, 0.4), (512, None), "M",
)


class CifarVGG(nn.Module):
    """Zagoruyko's VGG-BN-dropout for 32×32 inputs (the "92.45% on CIFAR-10" network)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for step in CIFAR_VGG_PLAN:
            if step == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            width, dropout = step
            layers += _conv_bn_relu(channels, width)
            if dropout is not None:
                layers.append(nn.Dropout(dropout))
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5),
            nn.Linear(512, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )
        for module in self.features:
            if isinstance(module, nn.Conv2d):  # MSR (He) initialisation, as in the Torch7 original
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class LeNet300(nn.Module):
    """LeNet-300-100 on 28×28 MNIST: 784-300-100-10 fully connected (266,610 parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """LeNet-5 as in Caffe and Han et al. 2015: conv 20@5×5, pool, conv 50@5×5, pool, fc 500, fc 10 (431,080 parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)  # 28 → 24, pooled to 12
        self.conv2 = nn.Conv2d(20, 50, 5)  # 12 → 8, pooled to 4
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def torchvision_model(name: str) -> nn.Module:
    """torchvision's builder ``name`` (e.g. ``resnet18``) with ``weights=None``: nothing is ever downloaded."""
    import torchvision  # imported on use: every pytest session loads the plugin, few build ImageNet models

    return torchvision.models.get_model(name, weights=None)


def imagenet_resnet18() -> nn.Module:
    return torchvision_model("resnet18")


def imagenet_resnet50() -> nn.Module:
    return torchvision_model("resnet50")


def imagenet_vgg16_bn() -> nn.Module:
    return torchvision_model("vgg16_bn")


def imagenet_mobilenet_v2() -> nn.Module:
    return torchvision_model("mobilenet_v2")


def imagenet_vit_b_16() -> nn.Module:
    return torchvision_model("vit_b_16")


def cifar_vit(num_classes: int = 10) -> nn.Module:
    """A small ViT for 32×32 images (torchvision's VisionTransformer): 4×4 patches (64 tokens), width 192, 6 layers of
    3 heads, MLP 384, as ViT-Tiny-sized models trained from scratch on CIFAR-10 are: 1,806,538 parameters."""
    import torchvision

    return torchvision.models.VisionTransformer(image_size=32, patch_size=4, num_layers=6, num_heads=3, hidden_dim=192,
                                                mlp_dim=384, num_classes=num_classes)
