"""DomainBed's hand-tuned MNIST featurizer (Gulrajani & Lopez-Paz 2021), with its names.

Four 3×3 convolutions, each followed by ReLU then GroupNorm(8, ·), then a global average:

    conv1 (C -> 64) -> bn0 -> conv2 (64 -> 128, stride 2) -> bn1 -> conv3 -> bn2 -> conv4 -> bn3
    -> avgpool -> [N, 128]

The "bn" modules are GroupNorms (DomainBed's names), so the network behaves the same in train
and eval mode. A 28×28 input becomes 14×14 after ``conv2``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class MNIST_CNN(nn.Module):  # DomainBed's name
    """DomainBed's ``MNIST_CNN`` featurizer: images ``[N, C, H, W]`` to features ``[N, 128]``.

    Args:
        input_shape: ``(C, H, W)``; only ``C`` sets the architecture.
        activation: applied to the features (DomainBed's ``URM`` sets it; identity otherwise).
    """

    n_outputs = 128

    def __init__(self, input_shape: Sequence[int], activation: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(int(input_shape[0]), 64, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.bn0 = nn.GroupNorm(8, 64)
        self.bn1 = nn.GroupNorm(8, 128)
        self.bn2 = nn.GroupNorm(8, 128)
        self.bn3 = nn.GroupNorm(8, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.activation = activation if activation is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Features ``[N, 128]`` for images ``[N, C, H, W]``."""
        x = self.bn0(F.relu(self.conv1(x)))
        x = self.bn1(F.relu(self.conv2(x)))
        x = self.bn2(F.relu(self.conv3(x)))
        x = self.bn3(F.relu(self.conv4(x)))
        return self.activation(self.avgpool(x).view(len(x), -1))
