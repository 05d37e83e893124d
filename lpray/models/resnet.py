"""ResNet-18/34/50 trunks (torchvision's v1.5 architecture), defined here so that loading a
network for inference does not import torchvision.

Importing torchvision costs 5.7 s on the GPU machine (its ``ops`` import ``torch._dynamo``;
``python -X importtime``, one H200, 2026-12), half of ``lpray predict``'s start-up. The modules
are built in torchvision's order and initialised as it does, so the parameter names
(``state_dict`` keys of the trunk ``nn.Sequential``) and, for one seed, the random initial
weights are exactly torchvision's: ImageNet checkpoints load as they are, and training from
random init draws what it drew before (tests compare both with torchvision).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(inputs: int, outputs: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inputs, outputs, kernel, stride, padding=kernel // 2, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inputs: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv(inputs, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions with a residual connection (ResNet-50)."""

    expansion = 4

    def __init__(self, inputs: int, planes: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = _conv(inputs, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * self.expansion, 1)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def resnet_trunk(name: str, width: int = 64) -> tuple[nn.Sequential, int]:
    """The stride-32 feature trunk of ``name`` (conv1 .. layer4, no pooling or classifier) and
    its output channels, randomly initialised as torchvision initialises the whole network.

    ``width`` is the stem's channel count (torchvision: 64); every stage scales with it, so
    ``width=16`` has 1/16 of the parameters and roughly 1/16 of the multiply-adds (no ImageNet
    weights exist for it).
    """
    block, counts = LAYOUTS[name]
    stem = [
        nn.Conv2d(3, width, 7, 2, 3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    inputs, layers = width, []
    stages = (width, 2 * width, 4 * width, 8 * width)
    for planes, count, stride in zip(stages, counts, (1, 2, 2, 2)):
        blocks = []
        for k in range(count):
            downsample = None
            if k == 0 and (stride != 1 or inputs != planes * block.expansion):
                downsample = nn.Sequential(
                    _conv(inputs, planes * block.expansion, 1, stride),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            blocks.append(block(inputs, planes, stride if k == 0 else 1, downsample))
            inputs = planes * block.expansion
        layers.append(nn.Sequential(*blocks))
    # torchvision builds its classifier next; building one too keeps the random stream (and so
    # a seeded random init) identical to torchvision's
    nn.Linear(inputs, 1000)
    trunk = nn.Sequential(*stem, *layers)
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 1)
            nn.init.constant_(module.bias, 0)
    return trunk, inputs
