"""The score against closed forms (linear models with MSE) and dense references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from landscape.curvature import reference
from landscape.inconsistency import (
    NotPositiveDefiniteError,
    inconsistency_score,
)
from tests.cases import make_binary_domains, make_mlp
from tests.inconsistency.helpers import (
    assert_unchanged,
    closed_form,
    linear_domains,
    linear_model,
    snapshot,
)


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
            method="dense",
        )
    dropout = nn.Sequential(model, nn.Dropout(0.1)).train()  # behaves differently in train mode
    with pytest.raises(ValueError, match="train mode"):
        inconsistency_score(dropout, loss, domains, 0.1)


class _Root(nn.Module):
    """``sqrt(x)``: finite on the first batch, NaN on a negative input of a later one."""

    def forward(self, x):
        return torch.sqrt(x)


@pytest.mark.parametrize(
    ("method", "check"), [("dense", False), ("dense", True), ("matrix-free", False)]
)
def test_nan_risk_at_theta_star_names_the_domain_not_displaced_weights(method, check):
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(_Root(), nn.Linear(3, 1)).double().eval()
    domains = {
        d: [
            (
                torch.rand(20, 3, generator=g, dtype=torch.float64),
                torch.zeros(20, 1, dtype=torch.float64),
            )
            for _ in range(2)
        ]
        for d in ("e0", "e1")
    }
    domains["e1"][1][0][0, 0] = -1.0  # finite input, NaN output
    with pytest.raises(
        ValueError,
        match=r"domain 'e1': the risk at theta\* \(the unmoved weights\) is nan: the model's "
        "output is not finite",
    ):
        inconsistency_score(
            model,
            nn.MSELoss(),
            domains,
            0.1,
            method=method,
            check=check,
            remedy="damping",
            progress=False,
        )
