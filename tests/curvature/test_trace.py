"""Traces (landscape/curvature/trace.py): closed forms and Hutchinson's convergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature as C
from landscape.curvature import reference as ref
from tests.curvature._common import (
    close,
    small_case,
)


def test_linear_mse_closed_form():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = X @ torch.randn(5, 1, generator=g, dtype=torch.float64) + 0.1
    model = nn.Linear(5, 1, bias=False).double().eval()
    H = 2 / 60 * X.T @ X
    evals, evecs = torch.linalg.eigh(H)
    domains = {"a": [(X[:25], y[:25]), (X[25:], y[25:])]}
    for method in ("exact", "ggn"):
        d = C.hessian_diagonal(model, nn.MSELoss(), domains, method=method)
        close(d.diagonal["a"], torch.diagonal(H).numpy())
    eig = C.top_eigenpairs(model, nn.MSELoss(), domains, k=2, tol=1e-12)
    close(eig.eigenvalues["a"], evals.flip(0)[:2].numpy(), 1e-10)
    tr = C.hessian_trace(model, nn.MSELoss(), domains, method="exact")
    assert tr.trace["a"] == pytest.approx(float(torch.trace(H)), rel=1e-12)
    # SLQ with as many steps as dimensions finds the whole spectrum
    sd = C.spectral_density(model, nn.MSELoss(), domains, num_probes=3, lanczos_steps=5)
    close(sd.nodes["a"], np.tile(evals.numpy(), (3, 1)), 1e-10)


def test_hutchinson_estimators_converge_with_honest_standard_errors():
    model, loss_func, domains = small_case("ce")
    data = {"d1": domains["d1"]}
    H = ref.dense_hessian(model, loss_func, data["d1"])
    true_diag, true_trace = torch.diagonal(H).numpy(), ref.trace(H)
    errors, trace_errors = [], []
    for m in (16, 256):
        d = C.hessian_diagonal(model, loss_func, data, method="hutchinson", num_probes=m, seed=1)
        err = d.diagonal["d1"] - true_diag
        se = d.standard_error["d1"]
        assert d.num_products["d1"] == m
        assert np.mean(np.abs(err) < 4 * se) > 0.95
        errors.append(np.sqrt(np.mean(err**2)))
        t = C.hessian_trace(model, loss_func, data, num_probes=m, seed=1)
        assert abs(t.trace["d1"] - true_trace) < 4 * t.standard_error["d1"]
        assert t.samples["d1"].shape == (m,)
        trace_errors.append(t.standard_error["d1"])
    # 16x more probes: the error and the standard error shrink by about 4
    assert 2 < errors[0] / errors[1] < 8
    assert 2.5 < trace_errors[0] / trace_errors[1] < 6.5
