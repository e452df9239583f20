"""Tests for landscape.surface.result: differences, deviations, save and load."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from landscape.surface import (
    SurfaceResult,
    loss_surface,
)
from landscape.surface.directions import (
    random_directions,
)
from tests.cases import make_binary_domains, make_mlp


def test_result_differences_and_save_load(tmp_path):
    model = make_mlp(dim=10)
    domains = make_binary_domains(3, n=20, dim=10)
    res = loss_surface(
        model,
        nn.BCEWithLogitsLoss(),
        domains,
        random_directions(model, seed=4),
        grid=((-1, 1, 3), (-2, 2, 5)),
        progress=False,
    )
    assert res.losses["d0"].shape == (3, 5) and res.betas.tolist() == [-2, -1, 0, 1, 2]
    assert len(res.pairs) == 6 and ["d2", "d0"] in res.pairs
    np.testing.assert_array_equal(res.differences["d0 - d2"], res.losses["d0"] - res.losses["d2"])
    np.testing.assert_allclose(sum(res.deviations.values()), 0.0, atol=1e-12)
    np.testing.assert_array_equal(res.difference("d1", "d2"), res.differences["d2 - d1"])
    with pytest.raises(ValueError, match="unknown domain 'x'; available: d0, d1, d2"):
        res.difference("x", "d0")
    res.save(tmp_path / "surf")
    back = SurfaceResult.load(tmp_path / "surf")
    for name in res.losses:
        np.testing.assert_array_equal(back.losses[name], res.losses[name])
        np.testing.assert_array_equal(back.accuracies[name], res.accuracies[name])
    np.testing.assert_array_equal(back.alphas, res.alphas)
    assert back.directions == res.directions and back.settings == res.settings
    assert back.pairs == res.pairs and back.directions["seed"] == 4
