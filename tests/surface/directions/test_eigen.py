"""Tests for landscape.surface.directions.eigen: top Hessian eigenvectors as directions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.params import flatten
from landscape.surface.directions import (
    eigen_directions,
)
from tests.cases import make_binary_domains, make_mlp
from tests.surface.helpers import equal


def test_eigen_directions_are_the_top_hessian_eigenvectors():
    from landscape.curvature.reference import dense_hessian

    model = make_mlp()
    domains = make_binary_domains(2)
    H = dense_hessian(model, nn.BCEWithLogitsLoss(), domains["d1"])
    evals, evecs = torch.linalg.eigh(H)
    dirs = eigen_directions(model, nn.BCEWithLogitsLoss(), domains, domain="d1", k=3, seed=2)
    assert dirs.kind == "eigen" and dirs.info["domain"] == "d1" and dirs.seed == 2
    np.testing.assert_allclose(dirs.info["eigenvalues"], evals.flip(0)[:3].numpy(), rtol=1e-6)
    for d, col in ((dirs.d1, -1), (dirs.d2, -2)):
        v = flatten(d)
        assert abs(abs(float(v @ evecs[:, col])) - 1.0) < 1e-6
        assert float(v[v.abs().argmax()]) > 0  # sign convention
    again = eigen_directions(model, nn.BCEWithLogitsLoss(), {"d1": domains["d1"]}, k=3, seed=2)
    assert equal(again.d1, dirs.d1)
    with pytest.raises(ValueError, match="pass domain=... \\(one of d0, d1\\)"):
        eigen_directions(model, nn.BCEWithLogitsLoss(), domains)
    with pytest.raises(ValueError, match="unknown domain 'd7'; available: d0, d1"):
        eigen_directions(model, nn.BCEWithLogitsLoss(), domains, domain="d7")
    with pytest.raises(ValueError, match="k must be an integer >= 2"):
        eigen_directions(model, nn.BCEWithLogitsLoss(), domains, domain="d1", k=1)
