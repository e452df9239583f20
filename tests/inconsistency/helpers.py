"""Shared helpers of the inconsistency tests: random SPD matrices, linear-regression domains
with MSE (``H = 2/N·XᵀX``, exactly quadratic losses) and their closed forms, model snapshots."""

from __future__ import annotations

import copy

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


# --------------------------------------------------------------------- any-module references


def torch_func_curvatures(model, loss_func, batches, names, curvature="hessian"):
    """Dense float64 ``(H [D, D], risk, gradient [D])`` of the risk of the concatenated
    batches over the parameters ``names``, by :mod:`torch.func` on a float64 copy (any
    module): ``"hessian"`` (reverse over reverse) or ``"ggn"`` (``JᵀΛJ`` with
    ``J = ∂f/∂θ [N·C, D]`` row by row and ``Λ`` the loss's Hessian in the outputs)."""
    from torch.func import functional_call, hessian, jacrev

    net = copy.deepcopy(model).double()
    X = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches])
    y = y.double() if y.is_floating_point() else y
    state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
    state = {n: t.detach() for n, t in state.items()}
    shapes = [state[n].shape for n in names]
    theta0 = torch.cat([state[n].reshape(-1) for n in names])

    def output(theta):
        parts = torch.split(theta, [int(np.prod(s)) for s in shapes])
        moved = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes, strict=True)}
        return functional_call(net, {**state, **moved}, (X,))

    def risk(theta):
        return loss_func(output(theta), y)

    value, grad = float(risk(theta0)), torch.func.grad(risk)(theta0)
    if curvature == "hessian":
        H = jacrev(jacrev(risk))(theta0)
    else:
        theta = theta0.clone().requires_grad_(True)
        out = output(theta)
        rows = [torch.autograd.grad(o, theta, retain_graph=True)[0] for o in out.reshape(-1)]
        J, out = torch.stack(rows), out.detach()  # [N·C, D], one backward pass per row
        Lam = hessian(lambda o: loss_func(o, y))(out).reshape(out.numel(), out.numel())
        H = J.T @ Lam @ J
    H = H.detach().numpy()
    return 0.5 * (H + H.T), value, grad.detach().numpy()


def reference_eig(H_B, H_A, remedy=None, damping=1e-3, k=None, rtol=1e-8):
    """``(λ, v)``: the largest generalized eigenpair of ``(H_B, H̃_A)`` with ``vᵀH̃_Av = 1``,
    solved densely by ``scipy.linalg.eigh``: ``H̃_A = H_A + δI`` (damping), the span of the
    ``k`` leading eigenvectors (top-k), else the range of ``H_A`` (its eigenvalues above
    ``rtol·λ_max``; all of them when ``H_A`` is positive definite)."""
    if remedy == "damping":
        delta = damping * scipy.linalg.eigh(H_A, eigvals_only=True)[-1]
        lam, V = scipy.linalg.eigh(H_B, H_A + delta * np.eye(len(H_A)))
        return lam[-1], V[:, -1]
    mu, Q = scipy.linalg.eigh(H_A)
    keep = np.arange(len(mu) - k, len(mu)) if remedy == "top-k" else mu > rtol * mu[-1]
    W = Q[:, keep] / np.sqrt(mu[keep])
    lam, w = scipy.linalg.eigh(W.T @ H_B @ W)
    return lam[-1], W @ w[:, -1]


def reference_diagonal_eig(h_B, h_A, remedy=None, damping=1e-3, k=None):
    """``max_k h_B,k / h̃_A,k`` over the kept coordinates (damping: ``h_A + δ``,
    ``δ = damping·max h_A``; top-k: the ``k`` largest ``h_A,k``)."""
    if remedy == "damping":
        return float(np.max(h_B / (h_A + damping * h_A.max())))
    keep = np.argsort(h_A)[-k:] if remedy == "top-k" else np.arange(h_A.size)
    return float(np.max(h_B[keep] / h_A[keep]))


def reference_values(risks, eigenvalues, names, epsilon):
    """The pairwise ``R_B − R_A + ε·max(λ_AB, 0)`` ``[n, n]`` (diagonal ``ε``) and the score."""
    n = len(names)
    values = np.full((n, n), float(epsilon))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a != b:
                values[i, j] = risks[b] - risks[a] + epsilon * max(eigenvalues[a, b], 0.0)
    off = ~np.eye(n, dtype=bool)
    return values, max(values[off].max(), epsilon)
