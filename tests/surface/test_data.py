"""Tests for landscape.surface.data: seeded subsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.surface import (
    loss_surface,
)
from landscape.surface.directions import (
    random_directions,
)
from tests.cases import make_binary_domains, make_mlp
from tests.surface.helpers import brute_force


def test_subsample_is_seeded_and_evaluates_the_drawn_samples():
    model = make_mlp(dim=10)
    domains = make_binary_domains(2, n=50, dim=10)
    dirs = random_directions(model, seed=0)
    kw = dict(grid=(-1, 1, 3), subsample=12, progress=False)
    r1 = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, seed=1, **kw)
    r2 = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, seed=1, **kw)
    r3 = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, seed=2, **kw)
    assert r1.num_samples == {"d0": 12, "d1": 12}
    np.testing.assert_array_equal(r1.losses["d0"], r2.losses["d0"])
    assert not np.allclose(r1.losses["d0"], r3.losses["d0"])
    # the same numbers as the brute force on the recorded draw
    s = r1.settings["subsample_seeds"]["d0"]
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(s))[:12].sort().values
    X, y = domains["d0"][0]
    ref, _ = brute_force(
        model, nn.BCEWithLogitsLoss(), {"d0": [(X[idx], y[idx])]}, dirs, r1.alphas, r1.betas
    )
    np.testing.assert_allclose(r1.losses["d0"], ref["d0"], rtol=1e-12)
    # subsample larger than the domain: all samples
    full = loss_surface(
        model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3), subsample=500, progress=False
    )
    assert full.num_samples["d0"] == 50


def test_nan_targets_are_named_before_any_grid_point():
    model = make_mlp(dim=10)
    domains = make_binary_domains(2, n=20, dim=10)
    X, y = domains["d1"][0]
    y = y.clone()
    y[3] = float("nan")
    domains["d1"] = [(X, y)]
    dirs = random_directions(model, seed=0)
    with pytest.raises(
        ValueError, match="domain 'd1': batch 0 has NaN or infinite values in its targets y"
    ):
        loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3), progress=False)
