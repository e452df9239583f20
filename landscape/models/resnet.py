"""ResNet-18 / ResNet-50 with torchvision's architecture and parameter names.

:func:`resnet` returns torchvision's ``resnet18`` / ``resnet50`` (random weights: nothing is
ever downloaded) when ``import torchvision`` works, and otherwise :class:`ResNet`, our own
module with torchvision's exact parameter and buffer names, shapes and initialisation, so
the same state dicts load into either (He et al. 2016, torchvision's "v1.5": the stride of a
bottleneck sits on its 3×3 convolution).

    conv1 7×7/2 (64) -> bn1 -> relu -> maxpool 3×3/2 -> layer1..layer4 -> avgpool -> fc

``layer{i}`` holds ``blocks[i]`` residual blocks of widths 64, 128, 256, 512 (× 4 for the
bottleneck), the first of layers 2-4 with stride 2 and a ``downsample`` (1×1 convolution +
batch norm) on its shortcut; features before ``fc`` are ``[N, 512]`` (ResNet-18) or
``[N, 2048]`` (ResNet-50) for any input height and width ≥ 1 after the stem.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from torch import Tensor, nn

#: Residual blocks per layer of each depth (torchvision's definitions).
BLOCKS = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}


def _conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with 3×3 convolutions."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """``[N, inplanes, H, W]`` -> ``[N, planes, H / stride, W / stride]``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 (reduce) -> 3×3 (stride) -> 1×1 (expand ×4), each with batch norm, plus shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = _downsample(inplanes, planes * self.expansion, stride)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        """``[N, inplanes, H, W]`` -> ``[N, 4·planes, H / stride, W / stride]``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(_conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """torchvision's ResNet (same names, shapes, forward and initialisation; ReLUs out of
    place).

    Args:
        depth: 18 (basic blocks) or 50 (bottlenecks).
        num_classes: outputs of the final ``fc``.
        in_channels: input channels of ``conv1`` (torchvision: 3).
    """

    def __init__(self, depth: int = 18, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        if depth not in BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {depth!r}")
        block = BasicBlock if depth == 18 else Bottleneck
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (planes, count) in enumerate(zip((64, 128, 256, 512), BLOCKS[depth], strict=True)):
            setattr(self, f"layer{i + 1}", self._layer(block, planes, count, 1 if i == 0 else 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _layer(self, block: type, planes: int, count: int, stride: int) -> nn.Sequential:
        blocks = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs ``[N, num_classes]`` for images ``[N, in_channels, H, W]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@functools.cache
def torchvision_models() -> Any | None:
    """``torchvision.models``, or None where torchvision does not import.

    The PyPI torchvision wheel fails to import against a CPU build of torch (``operator
    torchvision::nms does not exist``); any failure means "not available".
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision.models as models  # noqa: PLC0415
    except Exception:  # noqa: BLE001 - a broken install raises anything
        return None
    return models


def resnet(depth: int, num_classes: int = 1000, use_torchvision: bool | None = None) -> nn.Module:
    """A randomly initialised ResNet-18 or ResNet-50 (no pretrained weights are fetched).

    Args:
        depth: 18 or 50.
        num_classes: outputs of ``fc``.
        use_torchvision: ``None`` uses torchvision's model when it imports, else
            :class:`ResNet`; ``True`` requires torchvision; ``False`` always :class:`ResNet`.

    Raises:
        ValueError: unknown depth, or ``use_torchvision=True`` without a working torchvision.

    Its ReLUs do not work in place (torchvision's do): the values are the same, and the
    backward hooks of the curvature backends (BackPACK) see every activation.
    """
    if depth not in BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(BLOCKS)}, got {depth!r}")
    models = torchvision_models() if use_torchvision is not False else None
    if use_torchvision and models is None:
        raise ValueError("torchvision does not import here; pass use_torchvision=None or False")
    if models is None:
        return ResNet(depth, num_classes)
    net = getattr(models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    for module in net.modules():  # the same values; backward hooks see every activation
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return net
