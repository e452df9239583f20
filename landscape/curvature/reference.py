"""Brute-force float64 references for every curvature quantity (small models only).

Everything here is computed densely with :mod:`torch.func` (``functional_call``, ``hessian``,
``jacrev``, ``vmap``) on a float64 copy of the model and the data, so it is slow, memory
hungry (``[D, D]`` matrices, ``[N, D]`` per-sample gradients) and *obviously right*. The
tests check every fast path of :mod:`landscape.curvature.operators` and :mod:`landscape.curvature`
against these functions; notebooks can use them on small parameter subsets (e.g. the head).

Conventions (shared with the fast paths):

* A domain's risk is the mean loss over its samples, batches weighted by their size:
  :math:`R_e(\\theta) = \\frac{1}{N} \\sum_{i=1}^{N} \\ell(f_\\theta(x_i), y_i)`, where the
  per-sample loss :math:`\\ell_i` is the loss of the one-sample batch ``(x_i, y_i)`` with the
  mean reduction (for MSE with ``C`` outputs this is the mean over the outputs).
* Flattened vectors of length ``D`` follow the order of
  :func:`landscape.params.select_params` (the model's own parameter order).
* Curvature matrices are those of :math:`R_e`:

  - Hessian :math:`H = \\nabla^2_\\theta R_e`;
  - generalised Gauss-Newton :math:`G = \\frac{1}{N} \\sum_i J_i^\\top \\Lambda_i J_i` with
    :math:`J_i = \\partial f_\\theta(x_i) / \\partial\\theta` ``[C, D]`` and
    :math:`\\Lambda_i = \\nabla^2_f \\ell(f, y_i)` ``[C, C]``;
  - empirical Fisher :math:`F = \\frac{1}{N} \\sum_i g_i g_i^\\top` with
    :math:`g_i = \\nabla_\\theta \\ell_i`;
  - gradient variance (Fishr, Rame et al. 2022, eq. 4) :math:`v = \\frac{1}{N} \\sum_i
    (g_i - \\bar g)^2` (element-wise, biased), :math:`\\bar g = \\nabla_\\theta R_e`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, jacrev, vmap

from landscape.domains import Batch, as_batches
from landscape.params import ParamSpec, flatten, select_params, unflatten

__all__ = [
    "risk",
    "gradient",
    "per_sample_gradients",
    "dense_hessian",
    "dense_ggn",
    "dense_empirical_fisher",
    "dense_curvature",
    "gradient_variance",
    "diagonal",
    "eigenpairs",
    "trace",
    "spectral_moments",
]


def _float64(model: nn.Module, data) -> tuple[nn.Module, Tensor, Tensor]:
    """A float64 copy of ``model`` and the domain's samples ``(X [N, *], y [N, *])``."""
    batches = list(as_batches(data))
    X = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    model64 = copy.deepcopy(model).to(torch.float64)
    device = next(model64.parameters()).device
    X = X.to(device, torch.float64 if X.is_floating_point() else X.dtype)
    y = y.to(device, torch.float64 if y.is_floating_point() else y.dtype)
    return model64, X, y


def _setup(model: nn.Module, loss_func: nn.Module, data, params: ParamSpec):
    """Float64 model, data, the selected parameters ``theta0 [D]`` and closures.

    Returns:
        ``(theta0, X, y, output_fn, sample_loss)`` where ``output_fn(theta, X)`` returns the
        outputs for inputs ``X`` and ``sample_loss(theta, x, t)`` the loss of one sample.
    """
    model64, X, y = _float64(model, data)
    selected = select_params(model64, params)
    like = {n: p.detach() for n, p in selected.items()}
    fixed = {n: p.detach() for n, p in model64.named_parameters() if n not in selected}
    fixed.update(dict(model64.named_buffers()))
    theta0 = flatten(like).clone()

    def output_fn(theta: Tensor, inputs: Tensor) -> Tensor:
        return functional_call(model64, {**fixed, **unflatten(theta, like)}, (inputs,))

    def sample_loss(theta: Tensor, x: Tensor, t: Tensor) -> Tensor:
        return loss_func(output_fn(theta, x.unsqueeze(0)), t.unsqueeze(0))

    return theta0, X, y, output_fn, sample_loss


def _mean_loss(sample_loss: Callable, X: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    def f(theta: Tensor) -> Tensor:
        return vmap(sample_loss, in_dims=(None, 0, 0))(theta, X, y).mean()

    return f


def risk(model: nn.Module, loss_func: nn.Module, data: Iterable[Batch]) -> float:
    """Mean loss over every sample of every batch (batches weighted by their size).

    Returns:
        :math:`R_e = \\frac{1}{N}\\sum_b n_b \\, L_b` with :math:`L_b` the mean-reduced loss of
        batch ``b`` (of ``n_b`` samples), in float64.
    """
    model64 = copy.deepcopy(model).to(torch.float64)
    device = next(model64.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for Xb, yb in as_batches(data):
            Xb = Xb.to(device, torch.float64 if Xb.is_floating_point() else Xb.dtype)
            yb = yb.to(device, torch.float64 if yb.is_floating_point() else yb.dtype)
            total += float(loss_func(model64(Xb), yb)) * Xb.shape[0]
            count += Xb.shape[0]
    return total / count


def gradient(
    model: nn.Module, loss_func: nn.Module, data: Iterable[Batch], params: ParamSpec = None
) -> Tensor:
    """The gradient :math:`\\nabla_\\theta R_e` ``[D]`` (float64)."""
    theta0, X, y, _, sample_loss = _setup(model, loss_func, data, params)
    return torch.func.grad(_mean_loss(sample_loss, X, y))(theta0)


def per_sample_gradients(
    model: nn.Module, loss_func: nn.Module, data: Iterable[Batch], params: ParamSpec = None
) -> Tensor:
    """Per-sample gradients :math:`g_i = \\nabla_\\theta \\ell_i` ``[N, D]`` (float64)."""
    theta0, X, y, _, sample_loss = _setup(model, loss_func, data, params)
    return vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0))(theta0, X, y)


def dense_hessian(
    model: nn.Module, loss_func: nn.Module, data: Iterable[Batch], params: ParamSpec = None
) -> Tensor:
    """The Hessian :math:`\\nabla^2_\\theta R_e` ``[D, D]`` (float64), by plain autograd:
    ``D`` backward passes through the gradient of the risk (the mean-reduced loss of all
    samples at once, which is the mean of the per-sample losses).

    Not :func:`torch.func.hessian`: in torch 2.13 ``torch.func``'s second derivatives through
    a ``LayerNorm`` that follows a selected parameter are wrong (``jacfwd(jacrev)`` and
    ``jacrev(jacrev)`` alike: up to 0.1 off on a Linear-LayerNorm-Linear net, while autograd's
    double backward agrees with central differences of the gradient to 1e-8);
    ``tests/curvature/test_reference.py`` checks this function by finite differences.
    """
    theta0, X, y, output_fn, _ = _setup(model, loss_func, data, params)
    return torch.autograd.functional.hessian(lambda t: loss_func(output_fn(t, X), y), theta0)


def dense_ggn(
    model: nn.Module, loss_func: nn.Module, data: Iterable[Batch], params: ParamSpec = None
) -> Tensor:
    """The generalised Gauss-Newton :math:`\\frac1N\\sum_i J_i^\\top \\Lambda_i J_i` ``[D, D]``."""
    theta0, X, y, output_fn, _ = _setup(model, loss_func, data, params)
    outputs = output_fn(theta0, X)  # [N, C...]
    J = jacrev(output_fn)(theta0, X).reshape(X.shape[0], -1, theta0.numel())  # [N, C, D]

    def loss_of_output(f: Tensor, t: Tensor) -> Tensor:
        return loss_func(f.unsqueeze(0), t.unsqueeze(0))

    Lam = vmap(hessian(loss_of_output))(outputs, y).reshape(X.shape[0], J.shape[1], J.shape[1])
    return torch.einsum("ncd,nce,nef->df", J, Lam, J) / X.shape[0]


def dense_empirical_fisher(
    model: nn.Module, loss_func: nn.Module, data: Iterable[Batch], params: ParamSpec = None
) -> Tensor:
    """The empirical Fisher :math:`\\frac1N \\sum_i g_i g_i^\\top` ``[D, D]`` (float64)."""
    G = per_sample_gradients(model, loss_func, data, params)
    return G.T @ G / G.shape[0]


def dense_curvature(
    model: nn.Module,
    loss_func: nn.Module,
    data: Iterable[Batch],
    params: ParamSpec = None,
    curvature: str = "hessian",
) -> Tensor:
    """``dense_hessian``, ``dense_ggn`` or ``dense_empirical_fisher`` by name (``"ef"``)."""
    funcs = {"hessian": dense_hessian, "ggn": dense_ggn, "ef": dense_empirical_fisher}
    key = getattr(curvature, "value", curvature)
    if key not in funcs:
        raise ValueError(f"unknown curvature {curvature!r}; use one of {', '.join(funcs)}")
    return funcs[key](model, loss_func, data, params)


def gradient_variance(
    model: nn.Module,
    loss_func: nn.Module,
    data: Iterable[Batch],
    params: ParamSpec = None,
    centered: bool = True,
) -> Tensor:
    """Element-wise gradient variance ``[D]``: :math:`\\frac1N\\sum_i (g_i - \\bar g)^2`.

    With ``centered=False`` the uncentered second moment :math:`\\frac1N \\sum_i g_i^2`, which
    is the diagonal of the empirical Fisher.
    """
    G = per_sample_gradients(model, loss_func, data, params)
    if centered:
        G = G - G.mean(dim=0, keepdim=True)
    return (G**2).mean(dim=0)


def diagonal(matrix: Tensor) -> Tensor:
    """The diagonal of a dense curvature matrix ``[D]``."""
    return torch.diagonal(matrix).clone()


def eigenpairs(matrix: Tensor, k: int | None = None, largest: bool = True):
    """Eigenvalues ``[k]`` and eigenvectors ``[D, k]`` of a symmetric matrix (``eigh``).

    Args:
        matrix: ``[D, D]``, symmetrised before ``torch.linalg.eigh``.
        k: how many; all when ``None``.
        largest: the ``k`` largest (descending) or the ``k`` smallest (ascending).
    """
    evals, evecs = torch.linalg.eigh((matrix + matrix.T) / 2)
    if largest:
        evals, evecs = evals.flip(0), evecs.flip(1)
    if k is not None:
        evals, evecs = evals[:k], evecs[:, :k]
    return evals, evecs


def trace(matrix: Tensor) -> float:
    """The trace of a dense matrix."""
    return float(torch.trace(matrix))


def spectral_moments(matrix: Tensor, powers: Iterable[int]) -> dict[int, float]:
    """Normalised spectral moments :math:`\\frac1D \\operatorname{tr} A^p` for each power."""
    evals = torch.linalg.eigvalsh((matrix + matrix.T) / 2)
    return {int(p): float((evals**p).mean()) for p in powers}
