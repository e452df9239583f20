"""Tests for landscape.surface.batchnorm: statistics recomputed at each grid point."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from landscape.surface import (
    loss_surface,
)
from landscape.surface.directions import (
    random_directions,
)
from tests.surface.helpers import ConvBN, assert_untouched, brute_force, snapshot


def test_batch_norm_recompute_matches_brute_force():
    torch.manual_seed(0)
    model = ConvBN().double().eval()
    domains = {
        f"d{e}": [
            (torch.randn(10, 1, 5, 5, dtype=torch.float64) * (1 + e), torch.randint(0, 3, (10,)))
            for _ in range(2)
        ]
        for e in range(2)
    }
    dirs = random_directions(model, seed=0)
    alphas, betas = np.array([-0.5, 0.0, 1.0]), np.array([0.0, 0.7])
    snap = snapshot(model)
    res = loss_surface(
        model,
        nn.CrossEntropyLoss(),
        domains,
        dirs,
        grid=(alphas, betas),
        batch_norm="recompute",
        progress=False,
    )
    assert_untouched(model, snap)
    ref, _ = brute_force(
        model, nn.CrossEntropyLoss(), domains, dirs, alphas, betas, bn_recompute=True
    )
    running = loss_surface(
        model, nn.CrossEntropyLoss(), domains, dirs, grid=(alphas, betas), progress=False
    )
    for name in domains:
        np.testing.assert_allclose(res.losses[name], ref[name], rtol=1e-10)
        assert not np.allclose(running.losses[name], res.losses[name])
    assert res.settings["batch_norm"] == "recompute"
