"""Tests of the inconsistency score I^eps against closed forms and brute force.

References: ``scipy.linalg.eigh(H_B, H_A)`` in float64, sampling of the ellipsoid
``½tᵀH_At = ε``, dense float64 Hessians of :mod:`landscape.curvature.reference`, and linear models with
MSE (``H = 2/N·XᵀX``) where the losses are exactly quadratic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from landscape.curvature import reference
from landscape.inconsistency import (
    CountingOperator,
    DisplacedRisk,
    InconsistencyResult,
    MatrixFreeCurvature,
    NotConvergedError,
    NotPositiveDefiniteError,
    constrained_search,
    generalized_eig_dense,
    generalized_eig_diagonal,
    inconsistency_score,
    lanczos_ritz,
    line_check,
)
from tests.cases import make_binary_domains, make_mlp

# ------------------------------------------------------------------------------ helpers


def random_spd(rng: np.random.Generator, dim: int, cond: float) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return Q @ np.diag(np.geomspace(1.0, cond, dim)) @ Q.T * rng.uniform(0.1, 10)


def linear_domains(dims=3, n=40, shifts=(0.0, 0.5), seed=0, zero_residual=False, w=None):
    """Linear-regression domains ``{name: [(X, y)]}`` (float64) and the true weights."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dims, 1, generator=g, dtype=torch.float64) if w is None else w
    domains = {}
    for e, shift in enumerate(shifts):
        X = torch.randn(n, dims, generator=g, dtype=torch.float64) * (1 + shift)
        X[:, 0] += shift
        noise = 0 if zero_residual else 0.3 * torch.randn(n, 1, generator=g, dtype=torch.float64)
        domains[f"e{e}"] = [(X, X @ w + noise)]
    return domains, w


def linear_model(w: torch.Tensor) -> nn.Module:
    model = nn.Linear(w.shape[0], 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w.T)
    return model.eval()


def closed_form(domains, w, eps):
    """Risks, H = 2/N·XᵀX and the exact score of a linear model with MSE, in NumPy."""
    risks, hess = {}, {}
    for name, [(X, y)] in domains.items():
        Xn, r = X.numpy(), (X @ w - y).numpy()
        risks[name] = float(np.mean(r**2))
        hess[name] = 2 / X.shape[0] * Xn.T @ Xn
    best = -np.inf
    for a in domains:
        for b in domains:
            if a != b:
                lam = scipy.linalg.eigh(hess[b], hess[a], eigvals_only=True)[-1]
                best = max(best, risks[b] - risks[a] + eps * max(lam, 0))
    return risks, hess, max(best, eps)


def snapshot(model: nn.Module):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
    )


def assert_unchanged(model: nn.Module, snap) -> None:
    values, flags, modes = snap
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), values[n]), n
        assert p.requires_grad == flags[n], n
    assert {n: m.training for n, m in model.named_modules()} == modes


# ------------------------------------------------------------------------------ linear algebra


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    cond=st.floats(1.0, 1e4),
)
def test_dense_matches_scipy_generalized_eigh(dim, seed, cond):
    rng = np.random.default_rng(seed)
    H_A, H_B = random_spd(rng, dim, cond), random_spd(rng, dim, cond)
    H_B = H_B - rng.uniform(0, 2) * np.trace(H_B) / dim * np.eye(dim)  # H_B may be indefinite
    eig = generalized_eig_dense(H_B, H_A)
    ref = scipy.linalg.eigh(H_B, H_A, eigvals_only=True)[-1]
    assert eig.value == pytest.approx(ref, rel=1e-9, abs=1e-9 * np.abs(H_B).max())
    v = eig.vector
    assert v @ H_A @ v == pytest.approx(1.0, rel=1e-9)
    np.testing.assert_allclose(
        H_B @ v, eig.value * H_A @ v, atol=1e-8 * np.abs(H_B).max() * (1 + np.linalg.norm(v))
    )
    eps = 0.37
    theta = eig.maximiser(eps)
    assert 0.5 * theta @ H_A @ theta <= eps * (1 + 1e-9)
    assert 0.5 * theta @ H_B @ theta == pytest.approx(eig.curvature_term(eps), rel=1e-8, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(2, 4), seed=st.integers(0, 2**31 - 1), cond=st.floats(1.0, 10.0))
def test_ellipsoid_sampling_never_exceeds_and_approaches(dim, seed, cond):
    """Brute force: ½tᵀH_Bt over random t on ½tᵀH_At = ε is ≤ ε·λ_max and gets close."""
    rng = np.random.default_rng(seed)
    H_A, H_B = random_spd(rng, dim, cond), random_spd(rng, dim, cond)
    eps = 1e-2
    eig = generalized_eig_dense(H_B, H_A)
    T = rng.standard_normal((20000, dim))
    T *= np.sqrt(2 * eps / np.einsum("ni,ij,nj->n", T, H_A, T))[:, None]
    sampled = 0.5 * np.einsum("ni,ij,nj->n", T, H_B, T)
    bound = eig.curvature_term(eps)
    assert sampled.max() <= bound * (1 + 1e-10)
    assert sampled.max() >= 0.97 * bound


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), solver=st.sampled_from(["lobpcg", "eigsh"]))
def test_matrix_free_matches_dense(seed, solver):
    rng = np.random.default_rng(seed)
    dim = 40
    H_A, H_B = random_spd(rng, dim, 20.0), random_spd(rng, dim, 20.0)
    # a few outliers, as in real curvature spectra
    U, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
    H_B += U @ np.diag([30.0, 15.0]) @ U.T * np.abs(H_B).max()
    A = MatrixFreeCurvature(H_A, "A", seed=seed)
    B = MatrixFreeCurvature(H_B, "B", seed=seed)
    eig = A.solve(B, solver=solver, tol=1e-8, maxiter=500)
    ref = scipy.linalg.eigh(H_B, H_A, eigvals_only=True)[-1]
    assert eig.converged
    assert eig.value == pytest.approx(ref, rel=1e-7)
    assert eig.vector @ H_A @ eig.vector == pytest.approx(1.0, rel=1e-9)
    assert eig.residual < 1e-5
    assert eig.products_a > 0 and eig.products_b > 0


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


def test_diagonal_is_the_dense_result_for_diagonal_matrices():
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 2, 7), rng.uniform(-1, 3, 7)
    diag = generalized_eig_diagonal(b, a)
    dense = generalized_eig_dense(np.diag(b), np.diag(a))
    assert diag.value == pytest.approx(dense.value, rel=1e-12)
    assert diag.value == pytest.approx(np.max(b / a), rel=1e-12)
    np.testing.assert_allclose(np.abs(diag.vector), np.abs(dense.vector), atol=1e-12)


def test_negative_definite_b_gives_a_zero_curvature_term():
    eig = generalized_eig_dense(-np.eye(3), np.eye(3))
    assert eig.value == pytest.approx(-1.0)
    assert eig.curvature_term(0.1) == 0.0
    assert not np.any(eig.maximiser(0.1))


# ------------------------------------------------------------------------------ trouble spots


def test_singular_h_a_reports_the_unbounded_direction():
    H_A = np.diag([1.0, 2.0, 0.0])
    H_B = np.diag([1.0, 1.0, 0.5])
    with pytest.raises(
        NotPositiveDefiniteError, match="singular.*\\+inf.*remedy='damping'"
    ) as info:
        generalized_eig_dense(H_B, H_A, domain="+80%")
    rep = info.value.report
    assert rep.status == "singular" and rep.domain == "+80%"
    np.testing.assert_allclose(np.abs(rep.unbounded_direction), [0, 0, 1], atol=1e-12)
    assert rep.curvature_along["B"] == pytest.approx(0.5)
    assert rep.unbounded_for == ["B"]
    assert rep.min_eigenvalue == pytest.approx(0.0, abs=1e-15)
    assert rep.max_eigenvalue == pytest.approx(2.0)


def test_indefinite_h_a_is_reported_with_its_eigenvalues():
    H_A = np.diag([1.0, -0.5])
    with pytest.raises(NotPositiveDefiniteError, match="indefinite.*smallest eigenvalue -0.5"):
        generalized_eig_dense(np.eye(2), H_A)


def test_shared_null_space_is_exact_on_the_range():
    H_A = np.diag([1.0, 2.0, 0.0])
    H_B = np.diag([3.0, 1.0, 0.0])
    eig = generalized_eig_dense(H_B, H_A)
    assert eig.remedy == "range" and eig.subspace_dim == 2
    assert eig.value == pytest.approx(3.0)


def test_damping_is_relative_to_the_spectrum_and_recorded():
    H_A = np.diag([4.0, 1.0, 0.0])
    H_B = np.diag([1.0, 1.0, 1.0])
    eig = generalized_eig_dense(H_B, H_A, remedy="damping", damping=0.01)
    assert eig.delta == pytest.approx(0.04)
    assert eig.value == pytest.approx(1 / 0.04)
    ref = scipy.linalg.eigh(H_B, H_A + 0.04 * np.eye(3), eigvals_only=True)[-1]
    assert eig.value == pytest.approx(ref)
    with pytest.raises(ValueError, match="use damping > 0.5"):
        generalized_eig_dense(H_B, np.diag([4.0, 1.0, -2.0]), remedy="damping", damping=0.1)


def test_top_k_restricts_to_the_leading_eigenspace():
    rng = np.random.default_rng(0)
    H_A = random_spd(rng, 6, 10.0)
    H_A = H_A - np.linalg.eigvalsh(H_A)[1] * np.eye(6)  # two non-positive eigenvalues
    H_B = random_spd(rng, 6, 10.0)
    lam, Q = np.linalg.eigh(H_A)
    U = Q[:, -3:]
    ref = scipy.linalg.eigh(U.T @ H_B @ U, np.diag(lam[-3:]), eigvals_only=True)[-1]
    eig = generalized_eig_dense(H_B, H_A, remedy="top-k", k=3)
    assert eig.value == pytest.approx(ref, rel=1e-10)
    assert eig.vector @ H_A @ eig.vector == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k=5 exceeds the 4 positive eigenvalues"):
        generalized_eig_dense(H_B, H_A, remedy="top-k", k=5)
    free = MatrixFreeCurvature(H_A, "A", remedy="top-k", k=3)
    assert free.solve(H_B).value == pytest.approx(ref, rel=1e-8)


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


def test_matrix_free_proves_indefiniteness_with_lanczos():
    H_A = np.diag(np.r_[np.linspace(1, 2, 30), -0.1])
    with pytest.raises(NotPositiveDefiniteError, match="indefinite.*lanczos"):
        MatrixFreeCurvature(H_A, "A").solve(np.eye(31))
    damped = MatrixFreeCurvature(H_A, "A", remedy="damping", damping=0.2, lanczos_steps=31)
    eig = damped.solve(np.eye(31), tol=1e-10, maxiter=400)
    delta = 0.2 * 2.0
    assert damped.delta == pytest.approx(delta, rel=1e-8)
    assert eig.value == pytest.approx(1 / (delta - 0.1), rel=1e-6)


def test_bad_remedy_arguments():
    with pytest.raises(ValueError, match="unknown remedy 'shrink'"):
        generalized_eig_dense(np.eye(2), np.eye(2), remedy="shrink")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        generalized_eig_dense(np.eye(2), np.eye(2), remedy="top-k", k=0)
    with pytest.raises(ValueError, match="damping must be a positive number"):
        generalized_eig_dense(np.eye(2), np.eye(2), remedy="damping", damping=-1)


# ------------------------------------------------------------------------------ the score


@pytest.mark.parametrize("method", ["dense", "matrix-free"])
def test_closed_form_linear_regression(method):
    domains, w = linear_domains(dims=4, n=50, shifts=(0.0, 0.4, 1.0))
    model = linear_model(w + 0.05)
    snap = snapshot(model)
    eps = [1e-3, 0.1]
    res = inconsistency_score(
        model, nn.MSELoss(), domains, eps, method=method, progress=False, check=False
    )
    assert_unchanged(model, snap)
    risks, hess, _ = closed_form(domains, (w + 0.05), 0.0)
    for e, ep in enumerate(eps):
        assert res.score[e] == pytest.approx(closed_form(domains, w + 0.05, ep)[2], rel=1e-7)
    names = list(domains)
    for i, a in enumerate(names):
        assert res.risks[a] == pytest.approx(risks[a], rel=1e-12)
        for j, b in enumerate(names):
            if a != b:
                lam = scipy.linalg.eigh(hess[b], hess[a], eigvals_only=True)[-1]
                assert res.eigenvalues[i, j] == pytest.approx(lam, rel=1e-7)
                assert res.risk_gap[i, j] == pytest.approx(risks[b] - risks[a], abs=1e-12)
        assert np.all(res.values[:, i, i] == np.asarray(eps))
    a, b = res.pair[0]
    theta = res.direction[0]
    assert 0.5 * theta @ hess[a] @ theta == pytest.approx(eps[0], rel=1e-7)
    assert 0.5 * theta @ hess[b] @ theta == pytest.approx(
        res.curvature_term[0, names.index(a), names.index(b)], rel=1e-6
    )


def test_two_identical_domains_give_epsilon():
    domains, w = linear_domains(dims=3, n=30, shifts=(0.2,))
    twin = {"A": domains["e0"], "B": [(domains["e0"][0][0].clone(), domains["e0"][0][1].clone())]}
    for method in ("dense", "matrix-free"):
        res = inconsistency_score(
            linear_model(w), nn.MSELoss(), twin, 0.01, method=method, progress=False, check=False
        )
        assert res.score == pytest.approx(0.01, rel=1e-9)
        np.testing.assert_allclose(res.values[0], 0.01, rtol=1e-8)


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


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_small_network_dense_matrix_free_and_reference_agree(curvature):
    model = make_mlp(dim=4, hidden=(6,))
    domains = make_binary_domains(2, n=80, dim=4)
    loss = nn.BCEWithLogitsLoss()
    snap = snapshot(model)
    kw = dict(params="classifier", progress=False, check=False)
    dense = inconsistency_score(model, loss, domains, 0.01, curvature=curvature, **kw)
    free = inconsistency_score(
        model,
        loss,
        domains,
        0.01,
        method="matrix-free",
        curvature=curvature,
        tol=1e-9,
        maxiter=300,
        **kw,
    )
    assert_unchanged(model, snap)
    H = {
        d: reference.dense_curvature(model, loss, domains[d], "classifier", curvature).numpy()
        for d in domains
    }
    ref = scipy.linalg.eigh(H["d1"], H["d0"], eigvals_only=True)[-1]
    assert dense.eigenvalues[0, 1] == pytest.approx(ref, rel=1e-8)
    assert free.eigenvalues[0, 1] == pytest.approx(ref, rel=1e-6)
    assert free.score == pytest.approx(dense.score, rel=1e-6)
    assert dense.risks["d0"] == pytest.approx(reference.risk(model, loss, domains["d0"]), rel=1e-12)


def test_whole_network_hessian_is_reported_then_remedied():
    model = make_mlp(dim=4, hidden=(6,))
    domains = make_binary_domains(2, n=80, dim=4)
    loss = nn.BCEWithLogitsLoss()
    H = {d: reference.dense_hessian(model, loss, domains[d]).numpy() for d in domains}
    lam0 = np.linalg.eigvalsh(H["d0"])
    assert lam0[0] < 0  # a small random network is no minimum: H indefinite
    with pytest.raises(NotPositiveDefiniteError, match="'d0' is indefinite.*--remedy") as info:
        inconsistency_score(model, loss, domains, 0.01, progress=False, check=False)
    assert info.value.report.min_eigenvalue == pytest.approx(lam0[0], rel=1e-8)
    kw = dict(progress=False, check=False, remedy="top-k", k=5)
    dense = inconsistency_score(model, loss, domains, 0.01, **kw)
    free = inconsistency_score(model, loss, domains, 0.01, method="matrix-free", **kw)
    lam, Q = np.linalg.eigh(H["d0"])
    U = Q[:, -5:]
    ref = scipy.linalg.eigh(U.T @ H["d1"] @ U, np.diag(lam[-5:]), eigvals_only=True)[-1]
    assert dense.eigenvalues[0, 1] == pytest.approx(ref, rel=1e-8)
    assert free.eigenvalues[0, 1] == pytest.approx(ref, rel=1e-5)
    assert dense.k == 5 and dense.remedy == "top-k"
    damp = dict(progress=False, check=False, remedy="damping", damping=2.0)
    dd = inconsistency_score(model, loss, domains, 0.01, **damp)
    delta = 2.0 * lam0[-1]
    ref = scipy.linalg.eigh(H["d1"], H["d0"] + delta * np.eye(len(lam0)), eigvals_only=True)[-1]
    assert dd.eigenvalues[0, 1] == pytest.approx(ref, rel=1e-8)
    assert dd.solver["d0 -> d1"]["delta"] == pytest.approx(delta, rel=1e-8)


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


# ------------------------------------------------------------------------------ input, result


def test_bad_input_messages():
    domains, w = linear_domains()
    model, loss = linear_model(w), nn.MSELoss()
    with pytest.raises(ValueError, match="epsilon must be > 0 and finite, got 0"):
        inconsistency_score(model, loss, domains, 0.0)
    with pytest.raises(ValueError, match="epsilon must be > 0 and finite, got -1"):
        inconsistency_score(model, loss, domains, [0.1, -1])
    with pytest.raises(ValueError, match="needs at least 2 domains, got 1"):
        inconsistency_score(model, loss, {"e0": domains["e0"]}, 0.1)
    with pytest.raises(ValueError, match="unknown method 'exact'"):
        inconsistency_score(model, loss, domains, 0.1, method="exact")
    with pytest.raises(ValueError, match="unknown curvature 'fisher'"):
        inconsistency_score(model, loss, domains, 0.1, curvature="fisher")
    big = nn.Linear(100, 100).double().eval()
    with pytest.raises(ValueError, match="D=10100 is above .*method='matrix-free'"):
        inconsistency_score(
            big,
            loss,
            {"a": [(torch.ones(2, 100), torch.ones(2, 100))]}
            | {"b": [(torch.ones(2, 100), torch.ones(2, 100))]},
            0.1,
        )
    dropout = nn.Sequential(model, nn.Dropout(0.1)).train()  # behaves differently in train mode
    with pytest.raises(ValueError, match="train mode"):
        inconsistency_score(dropout, loss, domains, 0.1)


def test_result_saves_loads_and_prints(tmp_path):
    model = make_mlp(dim=4, hidden=(3,))
    domains = make_binary_domains(3, n=40, dim=4)
    model.featurizer[1].weight.requires_grad_(False)
    snap = snapshot(model)
    res = inconsistency_score(
        model,
        nn.BCEWithLogitsLoss(),
        domains,
        0.01,
        params="classifier",
        progress=False,
        check_steps=5,
    )
    assert_unchanged(model, snap)
    path = res.save(tmp_path / "score")
    back = InconsistencyResult.load(path)
    assert back.score == res.score and back.pair == res.pair
    np.testing.assert_array_equal(back.values, res.values)
    np.testing.assert_array_equal(back.direction, res.direction)
    assert back.definiteness["d0"]["status"] == res.definiteness["d0"]["status"]
    np.testing.assert_array_equal(back.check["line_value"], res.check["line_value"])
    named = back.direction_by_name()
    assert named["classifier.weight"].shape == (1, 3)
    np.testing.assert_array_equal(
        np.concatenate([v.ravel() for v in named.values()]), res.direction
    )
    text = str(back)
    assert "winning pair" in text and f"{res.pair[0]} -> {res.pair[1]}" in text
    assert "empirical" in text
    assert math.isfinite(res.summary()["scores"][0]["empirical_search"])


# ------------------------------------------------------------------------------ command line


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import data_spec
    from landscape.models import MLP

    torch.manual_seed(0)
    model = MLP(5, [4], 1).double()
    spec = data_spec("gaussian_classification", n_domains=3, n=60, dim=4)
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta)


def test_cli_score_writes_the_result(checkpoint, tmp_path, capsys):
    from landscape.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "score",
            str(checkpoint),
            "--params",
            "classifier",
            "--epsilon",
            "1e-3",
            "1e-2",
            "--out",
            str(out),
            "--check-steps",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "winning pair" in text and "d0" in text and "d2" not in text
    res = InconsistencyResult.load(out / "score")
    assert res.domains == ["d0", "d1"] and res.epsilon.tolist() == [1e-3, 1e-2]
    assert (out / "score_summary.json").is_file()
    main(
        [
            "score",
            str(checkpoint),
            "--params",
            "classifier",
            "--domains",
            "d0",
            "d2",
            "--subsample",
            "20",
            "--no-check",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert InconsistencyResult.load(out / "score").num_samples == {"d0": 20, "d2": 20}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epsilon", "0"], "epsilon must be > 0"),
        (["--domains", "d0"], "needs at least 2 domains"),
        (["--domains", "d0", "d9"], "unknown domain 'd9'"),
        (["--method", "matrix-free", "--check"], "--remedy damping|top-k"),
    ],
)
def test_cli_score_errors(checkpoint, tmp_path, capsys, args, message):
    from landscape.cli import main

    with pytest.raises(SystemExit) as info:
        main(["score", str(checkpoint), "--out", str(tmp_path), "--quiet", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


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


def test_unconverged_matrix_free_solve_is_flagged():
    """An ill-conditioned H_A stalls LOBPCG: the solve says so (flag, residual) and the score
    refuses to report the number (issue 8 item 4: never a lower bound as if converged)."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.standard_normal((60, 60)))
    H_A = Q @ np.diag(np.geomspace(1e-9, 1.0, 60)) @ Q.T
    H_B = random_spd(rng, 60, 10.0)
    eig = MatrixFreeCurvature(H_A, "A").solve(H_B, maxiter=3)
    assert not eig.converged and eig.residual > 1e-6
    ref = scipy.linalg.eigh(H_B, H_A, eigvals_only=True)[-1]
    assert eig.value <= ref * (1 + 1e-9)  # a Rayleigh quotient: a lower bound
    domains, w = linear_domains(dims=14, n=40, shifts=(0.0, 0.5))
    X = domains["e0"][0][0]
    noise = torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    X[:, 3] = X[:, 2] + 1e-3 * noise  # nearly collinear features: cond(H_A) ~ 1e6
    with pytest.raises(NotConvergedError, match="did not reach tol.*\\('e0', 'e1'\\).*remedy='damping'"):
        inconsistency_score(
            linear_model(w),
            nn.MSELoss(),
            domains,
            0.1,
            method="matrix-free",
            maxiter=2,
            progress=False,
            check=False,
        )

