"""Tests for landscape.surface.first_layer: when the shortcut applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.surface import (
    first_linear_layer,
    loss_surface,
)
from landscape.surface.directions import (
    random_directions,
)
from tests.cases import make_mlp
from tests.surface.helpers import ConvBN


def test_first_layer_detection():
    model = make_mlp(dim=10)
    assert first_linear_layer(model, torch.randn(2, 10, dtype=torch.float64)) == "featurizer.1"
    assert (
        first_linear_layer(ConvBN().double(), torch.randn(2, 1, 5, 5, dtype=torch.float64)) is None
    )

    class Scaled(nn.Module):  # a parameter used before the first linear layer
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))
            self.lin = nn.Linear(10, 1)

        def forward(self, x):
            return self.lin(self.scale * x)

    assert first_linear_layer(Scaled(), torch.randn(2, 10)) is None

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(10, 10)
            self.b = nn.Linear(10, 10)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    assert first_linear_layer(Tied(), torch.randn(2, 10)) is None
    with pytest.raises(ValueError, match="first_layer=True, but the model's first parameterised"):
        model = ConvBN().eval()
        loss_surface(
            model,
            nn.CrossEntropyLoss(),
            {"a": (torch.randn(4, 1, 5, 5), torch.randint(0, 3, (4,)))},
            random_directions(model),
            grid=(-1, 1, 2),
            first_layer=True,
            progress=False,
        )
