"""Shared helpers of the inconsistency tests: random SPD matrices, linear-regression domains
with MSE (``H = 2/N·XᵀX``, exactly quadratic losses) and their closed forms, model snapshots."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn


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
