"""Tests for landscape.surface.prefix: the frozen-prefix shortcut gives the plain path's
surface, and is used only where it is exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.surface import loss_surface
from landscape.surface.directions import plane_directions, random_directions
from tests.cases import make_binary_domains, make_mlp

LOSS = nn.BCEWithLogitsLoss()


def _both(model, domains, directions, **kw):
    """The surface with the shortcut allowed and without it (3 x 4 grid)."""
    grid = ((-1.0, 1.0, 3), (-0.5, 2.0, 4))
    fast = loss_surface(model, LOSS, domains, directions, grid=grid, progress=False, **kw)
    plain = loss_surface(model, LOSS, domains, directions, grid=grid, progress=False,
                         frozen_prefix=False, first_layer=False)  # fmt: skip
    for name in domains:
        np.testing.assert_allclose(fast.losses[name], plain.losses[name], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(fast.accuracies[name], plain.accuracies[name])
    return fast.settings


def test_head_directions_run_the_head_alone_and_match_the_plain_path():
    model = make_mlp(dim=6, hidden=(7, 5))
    domains = make_binary_domains(n=50, dim=6)
    dirs = random_directions(model, params="classifier", include_biases=True, seed=1)
    settings = _both(model, domains, dirs)
    assert settings["frozen_prefix"] == "classifier"
    assert settings["path"] == "prefix+plain"  # a 5-input head: no first-layer shortcut
    assert settings["first_layer"] is None


def test_prefix_composes_with_the_first_layer_shortcut_inside_the_head():
    class TwoLayerHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Linear(6, 12), nn.Tanh())
            self.head = nn.Sequential(nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 1))

        def forward(self, x):
            return self.head(self.features(x))

    torch.manual_seed(0)
    model = TwoLayerHead().double().eval()
    dirs = random_directions(model, params="head", include_biases=True, seed=2)
    settings = _both(model, make_binary_domains(n=40, dim=6), dirs)
    assert settings["frozen_prefix"] == "head"
    assert settings["first_layer"] == "head.0" and settings["path"] == "prefix+first_layer"


def test_whole_network_directions_do_not_use_it():
    model = make_mlp(dim=6, hidden=(7, 5))
    settings = _both(model, make_binary_domains(n=30, dim=6), random_directions(model, seed=0))
    assert settings["frozen_prefix"] is None


def test_fixed_origin_outside_the_head_feeds_the_cached_inputs():
    """Checkpoints that differ in the head only, and a model whose features differ from
    theirs: the plane's origin (checkpoint 0) pins the features, the cache must use it."""
    ckpts = [make_mlp(dim=6, hidden=(7, 5), seed=3) for _ in range(3)]
    g = torch.Generator().manual_seed(5)
    for c in ckpts[1:]:
        with torch.no_grad():
            for p in c.classifier.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    model = make_mlp(dim=6, hidden=(7, 5), seed=4)
    dirs = plane_directions(model, ckpts, origin=0)
    settings = _both(model, make_binary_domains(n=30, dim=6), dirs)
    assert settings["frozen_prefix"] == "classifier"


class _PostProcessed(nn.Module):
    """Scales the head's output: the model does not return the head's output."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 5)
        self.classifier = nn.Linear(5, 1)

    def forward(self, x):
        return 2.0 * self.classifier(torch.relu(self.body(x)))


class _Twice(_PostProcessed):
    """Runs the head twice."""

    def forward(self, x):
        h = torch.relu(self.body(x))
        return self.classifier(h + 0.1 * self.classifier(h))


class _Tied(_PostProcessed):
    """The head's bias is also used by the body."""

    def forward(self, x):
        return self.classifier(torch.relu(self.body(x) + self.classifier.bias))


@pytest.mark.parametrize("cls", [_PostProcessed, _Twice, _Tied])
def test_not_used_where_it_would_not_be_exact(cls):
    torch.manual_seed(0)
    model = cls().double().eval()
    dirs = random_directions(model, params="classifier", include_biases=True, seed=0)
    settings = _both(model, make_binary_domains(n=30, dim=6), dirs)
    assert settings["frozen_prefix"] is None
    with pytest.raises(ValueError, match="frozen_prefix=True, but the plane does not move"):
        loss_surface(model, LOSS, make_binary_domains(n=8, dim=6), dirs, grid=(-1, 1, 2),
                     frozen_prefix=True, progress=False)  # fmt: skip


def test_option_values_are_checked():
    from landscape.surface import SurfaceOptions

    with pytest.raises(ValueError, match="frozen_prefix must be 'auto', True or False"):
        SurfaceOptions(frozen_prefix="yes")


def test_model_is_left_untouched():
    model = make_mlp(dim=6, hidden=(7, 5))
    before = copy.deepcopy(model.state_dict())
    dirs = random_directions(model, params="classifier", seed=0)
    loss_surface(model, LOSS, make_binary_domains(n=20, dim=6), dirs, grid=(-1, 1, 3),
                 progress=False)  # fmt: skip
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name])
