"""Diagonal backend: ratios of diagonals against the dense result and the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import reference
from landscape.inconsistency import (
    NotPositiveDefiniteError,
    generalized_eig_dense,
    generalized_eig_diagonal,
    inconsistency_score,
)
from tests.cases import make_binary_domains, make_mlp
from tests.inconsistency.helpers import (
    linear_model,
)


def test_diagonal_is_the_dense_result_for_diagonal_matrices():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 2, 7), rng.uniform(-1, 3, 7)
    diag = generalized_eig_diagonal(b, a)
    dense = generalized_eig_dense(np.diag(b), np.diag(a))
    assert diag.value == pytest.approx(dense.value, rel=1e-12)
    assert diag.value == pytest.approx(np.max(b / a), rel=1e-12)
    np.testing.assert_allclose(np.abs(diag.vector), np.abs(dense.vector), atol=1e-12)


def test_diagonal_near_zero_guard():
    with pytest.raises(NotPositiveDefiniteError, match="near-zero or negative h_A"):
        generalized_eig_diagonal(np.array([1.0, 0.3]), np.array([1.0, 1e-14]))
    # coordinates flat for both domains are skipped, not a blow-up
    eig = generalized_eig_diagonal(np.array([1.0, 0.0]), np.array([2.0, 0.0]))
    assert eig.value == pytest.approx(0.5)
    damped = generalized_eig_diagonal(
        np.array([1.0, 0.3]), np.array([1.0, 0.0]), remedy="damping", damping=0.1
    )
    assert damped.value == pytest.approx(3.0)


def test_diagonal_method_equals_dense_for_orthogonal_features():
    pytest.importorskip("landscape.curvature")
    g = torch.Generator().manual_seed(0)
    domains = {}
    w = torch.randn(3, 1, generator=g, dtype=torch.float64)
    for e in range(2):
        Q, _ = torch.linalg.qr(torch.randn(30, 3, generator=g, dtype=torch.float64))
        X = Q * torch.tensor([3.0, 2.0 + e, 1.0 + 2 * e], dtype=torch.float64)
        domains[f"e{e}"] = [(X, X @ w + 0.1 * torch.randn(30, 1, generator=g, dtype=torch.float64))]
    model = linear_model(w)
    kw = dict(progress=False, check=False)
    dense = inconsistency_score(model, nn.MSELoss(), domains, 0.02, **kw)
    diag = inconsistency_score(model, nn.MSELoss(), domains, 0.02, method="diagonal", **kw)
    np.testing.assert_allclose(diag.eigenvalues, dense.eigenvalues, rtol=1e-8)
    assert diag.score == pytest.approx(dense.score, rel=1e-10)
    np.testing.assert_allclose(np.abs(diag.direction), np.abs(dense.direction), atol=1e-8)


@pytest.mark.parametrize(
    "curvature, source",
    [("hessian", "hessian"), ("ggn", "hessian"), ("ef", "hessian"), ("hessian", "variance")],
)
def test_diagonal_sources_match_the_reference(curvature, source):
    pytest.importorskip("landscape.curvature")
    model = make_mlp(dim=4, hidden=(3,))
    domains = make_binary_domains(2, n=50, dim=4)
    loss = nn.BCEWithLogitsLoss()
    res = inconsistency_score(
        model,
        loss,
        domains,
        0.01,
        params="classifier",
        method="diagonal",
        curvature=curvature,
        diagonal_source=source,
        progress=False,
        check=False,
    )
    if source == "variance":
        h = {
            d: reference.gradient_variance(model, loss, domains[d], "classifier").numpy()
            for d in domains
        }
    else:
        h = {
            d: np.diag(
                reference.dense_curvature(model, loss, domains[d], "classifier", curvature).numpy()
            )
            for d in domains
        }
    assert res.eigenvalues[0, 1] == pytest.approx(np.max(h["d1"] / h["d0"]), rel=1e-6)
    assert res.eigenvalues[1, 0] == pytest.approx(np.max(h["d0"] / h["d1"]), rel=1e-6)
    assert res.diagonal_source == source
