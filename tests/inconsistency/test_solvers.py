"""Counting operators and Lanczos Ritz pairs."""

from __future__ import annotations

import numpy as np
import pytest

from landscape.inconsistency import (
    CountingOperator,
    lanczos_ritz,
)
from tests.inconsistency.helpers import (
    random_spd,
)


def test_counting_operator_counts_columns():
    op = CountingOperator(np.eye(5))
    op.matvec(np.ones(5))
    op.matmat(np.ones((5, 3)))
    assert op.products == 4


def test_lanczos_bounds_the_spectrum():
    rng = np.random.default_rng(1)
    H = random_spd(rng, 30, 50.0) - 3.0 * np.eye(30)
    lam = np.linalg.eigvalsh(H)
    part = lanczos_ritz(CountingOperator(H), steps=12, seed=0)
    theta, V = part.values, part.vectors
    assert part.spectrum[0] >= lam[0] - 1e-10 and part.spectrum[-1] <= lam[-1] + 1e-10
    assert theta[0] == pytest.approx(part.spectrum[0]) and part.products == 12
    full = lanczos_ritz(CountingOperator(H), steps=30, seed=0)
    np.testing.assert_allclose(full.spectrum, lam, atol=1e-8 * np.abs(lam).max())
    np.testing.assert_allclose(H @ V[:, -1], theta[-1] * V[:, -1], atol=1e-3 * np.abs(lam).max())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_lanczos_on_a_torch_operator_runs_on_its_device_with_the_same_products(dtype):
    """A wrapped curvature operator: Lanczos multiplies torch tensors on its device (no SciPy
    round trip) and gives the same Ritz pairs and product count as through its to_scipy()
    (the same float64 vectors, rounded to the operator's dtype), against dense eigenvalues."""
    import torch
    from torch import nn

    from landscape.curvature import curvature_operator
    from tests.cases import make_binary_domains, make_mlp

    dt = getattr(torch, dtype)
    model = make_mlp(dim=6, hidden=(5, 4), dtype=dt).eval()
    data = make_binary_domains(1, n=64, dim=6, dtype=dt)["d0"]
    op = curvature_operator(model, nn.BCEWithLogitsLoss(), data)
    wrapped, host = CountingOperator(op), CountingOperator(op.to_scipy())
    assert wrapped.torch_op is op and host.torch_op is None
    a = lanczos_ritz(wrapped, k=3, which="largest", tol=1e-5, seed=1)
    b = lanczos_ritz(host, k=3, which="largest", tol=1e-5, seed=1)
    assert a.products == b.products == wrapped.products == host.products
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    dense = np.linalg.eigvalsh(op.dense().double().numpy())[::-1][:3]
    np.testing.assert_allclose(a.values[::-1], dense, rtol=0, atol=1e-5 * dense[0])
