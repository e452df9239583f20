"""The empirical check on the true losses: line check and constrained search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.inconsistency import (
    DisplacedRisk,
    constrained_search,
    generalized_eig_dense,
    inconsistency_score,
    line_check,
)
from tests.cases import make_binary_domains, make_mlp
from tests.inconsistency.helpers import (
    linear_domains,
    linear_model,
)


def test_empirical_check_is_exact_on_quadratic_losses():
    """Zero residuals: θ* minimises both domains, the losses are exactly quadratic."""
    domains, w = linear_domains(dims=3, n=40, shifts=(0.0, 0.8), zero_residual=True)
    model = linear_model(w)
    res = inconsistency_score(
        model, nn.MSELoss(), domains, 0.05, method="dense", progress=False, check_steps=20
    )
    a, b = res.pair
    i, j = res.domains.index(a), res.domains.index(b)
    assert res.score == pytest.approx(0.05 * res.eigenvalues[i, j], rel=1e-9)
    assert res.check["line_step"][0, i, j] == pytest.approx(1.0, abs=1e-5)
    assert res.check["line_value"][0, i, j] == pytest.approx(res.score, rel=1e-5)
    # the search cannot beat the true maximum of a quadratic on the ellipsoid
    assert res.check["search_value"][0] <= res.score * (1 + 1e-6)
    assert res.check["search_value"][0] >= res.check["line_value"][0, i, j] * (1 - 1e-6)
    assert res.check["empirical_score"][0] == pytest.approx(res.score, rel=1e-5)
    assert abs(res.first_order[0]).max() < 1e-10


def test_search_is_a_feasible_lower_bound():
    model = make_mlp(dim=4, hidden=(5,))
    domains = make_binary_domains(2, n=48, dim=4)
    loss = nn.BCEWithLogitsLoss()
    ra = DisplacedRisk(model, loss, domains["d0"])
    rb = DisplacedRisk(model, loss, domains["d1"])
    d = np.random.default_rng(0).standard_normal(ra.theta0.numel())
    eps = 0.02
    line = line_check(ra, rb, d, eps)
    assert line.reached
    assert abs(line.risk_a - ra.value()) == pytest.approx(eps, rel=1e-4)
    sc = constrained_search(ra, rb, d, eps, steps=15, restarts=1, seed=3)
    assert sc.value >= line.value - 1e-12
    assert abs(sc.risk_a - ra.value()) <= eps * (1 + 1e-9)
    assert sc.starts == 2 and sc.seed == 3
    assert sc.history == sorted(sc.history)  # ascent on R_B


class QuadraticRisk:
    """``R(x) = c + ½xᵀHx + g·x`` computed in ``dtype``: a stand-in for ``DisplacedRisk``."""

    def __init__(self, H, c=0.1, g=None, dtype=torch.float64):
        self.H = torch.as_tensor(H, dtype=dtype)
        self.g = torch.zeros(len(H), dtype=dtype) if g is None else torch.as_tensor(g, dtype=dtype)
        self.c, self.dtype, self.evaluations = c, dtype, 0

    def value(self, x=None) -> float:
        self.evaluations += 1
        if x is None:
            return float(torch.tensor(self.c, dtype=self.dtype))
        x = torch.as_tensor(np.asarray(x), dtype=self.dtype)
        return float(self.c + 0.5 * x @ self.H @ x + self.g @ x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_line_check_ties_go_to_the_positive_ray(dtype):
    """Issue 8 item 1: on quadratic losses ``±θ_q`` tie and rounding broke the tie (``line_step``
    came out ``-0.99999``); a difference within the line's precision now goes to ``+``."""
    H_A, H_B, eps = np.diag([1.0, 2.0]), np.diag([3.0, 1.0]), 0.05
    eig = generalized_eig_dense(H_B, H_A)
    theta = eig.maximiser(eps)
    # R_B favours the negative ray by far less than the precision: rounding-sized
    tiny = 1e-9 if dtype == torch.float64 else 1e-7
    ra = QuadraticRisk(H_A, dtype=dtype)
    rb = QuadraticRisk(H_B, g=-tiny * theta / np.linalg.norm(theta), dtype=dtype)
    line = line_check(ra, rb, theta, eps)
    assert line.reached and line.step > 0
    assert line.step == pytest.approx(1.0, abs=1e-5 if dtype == torch.float64 else 1e-3)
    assert line.value == pytest.approx(
        eig.curvature_term(eps), rel=1e-5 if dtype == torch.float64 else 1e-3
    )
    # a real difference still wins
    rb = QuadraticRisk(H_B, g=-1e-2 * theta / np.linalg.norm(theta), dtype=dtype)
    assert line_check(ra, rb, theta, eps).step < 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_quadratic_losses_give_positive_line_steps_in_both_dtypes(dtype):
    """End to end: every pair's line step on exactly quadratic losses is ``+1`` (the tie rule),
    with few risk evaluations (Brent in ``s²`` is exact in one secant step)."""
    domains, w = linear_domains(dims=3, n=40, shifts=(0.0, 0.8), zero_residual=True)
    domains = {d: [(X.to(dtype), y.to(dtype))] for d, [(X, y)] in domains.items()}
    model = linear_model(w).to(dtype)
    res = inconsistency_score(model, nn.MSELoss(), domains, 0.05, progress=False, check_steps=2)
    off = ~np.eye(2, dtype=bool)
    steps = res.check["line_step"][0][off]
    assert np.all(steps > 0)
    np.testing.assert_allclose(steps, 1.0, atol=1e-5 if dtype == torch.float64 else 1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_line_check_cost_is_proportionate(dtype):
    """Issue 8 item 13: the check dominated ``landscape score`` (a fine scan, then 20 bisection
    steps per sign: 54 evaluations per pair). A coarse scan and Brent in ``s²`` need few."""
    H_A, H_B, eps = np.diag([1.0, 2.0, 0.5]), np.diag([3.0, 1.0, 2.0]), 0.05
    theta = generalized_eig_dense(H_B, H_A).maximiser(eps)
    line = line_check(QuadraticRisk(H_A, dtype=dtype), QuadraticRisk(H_B, dtype=dtype), theta, eps)
    assert line.evaluations <= 20
    assert abs(line.step) == pytest.approx(1.0, abs=1e-5 if dtype == torch.float64 else 1e-3)
