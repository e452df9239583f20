"""ResNet-18 / ResNet-50 with torchvision's architecture and names (issue 10 part 3): the
same state dicts load into ours, torchvision's (where it imports) and an independent
reference written here, and give the same outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.models.resnet import ResNet, resnet, torchvision_models
from tests.models.test_domainbed_models import RefResNet18, randomize


class RefBottleneck(nn.Module):
    """torchvision's Bottleneck ("v1.5": the stride on the 3×3 convolution)."""

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet50(nn.Module):
    """torchvision's resnet50: stem, 3-4-6-3 bottlenecks, average, fc."""

    def __init__(self, classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True)):
            blocks = [RefBottleneck(cin, width, 1 if i == 0 else 2)]
            blocks += [RefBottleneck(4 * width, width, 1) for _ in range(count - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = 4 * width
        self.fc = nn.Linear(2048, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def test_parameter_counts_are_torchvision_s():
    """torchvision documents 11,689,512 and 25,557,032 parameters (1000 classes)."""
    for depth, count, entries in ((18, 11_689_512, 122), (50, 25_557_032, 320)):
        net = ResNet(depth)
        assert sum(p.numel() for p in net.parameters()) == count
        assert len(net.state_dict()) == entries  # with the batch norms' running statistics


def test_resnet50_equals_an_independent_reference():
    ours = randomize(ResNet(50, num_classes=4))
    reference = RefResNet50(4)
    reference.load_state_dict(ours.state_dict())  # strict: the same names and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_resnet18_equals_an_independent_reference():
    ours = randomize(ResNet(18, num_classes=3, in_channels=2))
    ours.fc = nn.Identity()
    reference = RefResNet18(2)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 2, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(torchvision_models() is None, reason="torchvision does not import here")
@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_s_resnet_takes_the_same_state_dict(depth):
    ours = randomize(resnet(depth, num_classes=5, use_torchvision=False))
    theirs = resnet(depth, num_classes=5, use_torchvision=True)
    assert type(theirs).__module__.startswith("torchvision")
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)


def test_bad_arguments_get_one_line():
    with pytest.raises(ValueError, match=r"^ResNet depth must be one of \[18, 50\], got 34$"):
        resnet(34)
    if torchvision_models() is None:
        with pytest.raises(ValueError, match="torchvision does not import here"):
            resnet(18, use_torchvision=True)
    assert isinstance(resnet(18, use_torchvision=False), ResNet)


@pytest.mark.parametrize("use_torchvision", [False, None])
def test_relus_do_not_work_in_place(use_torchvision):
    """An in-place ReLU overwrites the output a backward hook (BackPACK) hands back, which
    autograd refuses; the values are the same either way."""
    net = resnet(18, use_torchvision=use_torchvision)
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
