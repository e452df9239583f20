"""GGN and Monte-Carlo Fisher diagonals of any model by ``torch.func``: squared per-sample
vector-Jacobian products against a factor of the loss Hessian.

The GGN of a domain's risk is :math:`G = \\frac1N \\sum_i J_i^\\top \\Lambda_i J_i` with
:math:`J_i = \\partial f_\\theta(x_i)/\\partial\\theta` ``[C, D]`` and :math:`\\Lambda_i` the
Hessian of the per-sample loss in the outputs ``[C, C]``. With a factor
:math:`\\Lambda_i = S_i S_i^\\top` (``K`` columns :math:`s_{i,k}`),

.. math::

    \\operatorname{diag} G = \\frac1N \\sum_i \\sum_{k=1}^{K} (J_i^\\top s_{i,k})^{\\odot 2},

so one forward and ``K`` vector-Jacobian products per sample (vectorised over the samples
and the columns with :func:`torch.func.vmap`) give the exact diagonal, for any model
``torch.func`` can differentiate (convolutions, GroupNorm, BatchNorm in eval mode, residual
sums, functional operations). Exact factors (:func:`hessian_factor`), per sample with ``k``
outputs and the per-sample loss the mean over them:

* cross-entropy, :math:`p = \\operatorname{softmax}(f)`: :math:`\\Lambda = \\operatorname{diag}(p)
  - p p^\\top = S S^\\top` with :math:`S = \\operatorname{diag}(\\sqrt p) - p \\sqrt p^\\top`
  (since :math:`\\sum_c p_c = 1`), ``K = C``;
* binary cross-entropy, :math:`\\sigma = \\operatorname{sigmoid}(f)`:
  :math:`S = \\operatorname{diag}(\\sqrt{\\sigma(1-\\sigma)/k})`;
* squared error: :math:`S = \\sqrt{2/k}\\, I`.

Other output shapes (cross-entropy over ``[N, C, d...]``) take :math:`\\Lambda_i` from
:func:`torch.func.hessian` and :math:`S_i = U_i \\operatorname{diag}(\\sqrt{\\lambda_i})` from
its eigendecomposition. The Monte-Carlo Fisher (:func:`sampled_factor`) uses ``M`` columns
:math:`\\tilde s_{i,m} / \\sqrt M` with :math:`\\mathbb E[\\tilde s \\tilde s^\\top] = \\Lambda_i`:
:math:`\\tilde s = p - e_{\\hat y}` with :math:`\\hat y \\sim p` (cross-entropy),
:math:`(\\sigma - \\hat y)/\\sqrt k` with :math:`\\hat y \\sim \\operatorname{Bernoulli}(\\sigma)`
(binary), :math:`\\sqrt{2/k}\\,\\varepsilon` with :math:`\\varepsilon \\sim \\mathcal N(0, I)`
(squared error).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor
from torch.func import functional_call, hessian, vjp, vmap
from tqdm.auto import tqdm

from landscape.curvature._setup import Setup
from landscape.curvature.checks import _to
from landscape.domains import as_batches

# Samples per chunk are chosen so that the [chunk, K, D] products hold at most this many
# elements (at least one sample).
VJP_ELEMENTS = 2**24


def hessian_factor(setup: Setup, out: Tensor, y: Tensor) -> Tensor:
    """``S [n, K, k]`` with :math:`S_i^\\top S_i = \\Lambda_i` (rows are the columns
    :math:`s_{i,k}` of the module docstring) for outputs ``out [n, *]``, ``k`` per sample."""
    n = out.shape[0]
    z = out.reshape(n, -1)
    k = z.shape[1]
    if setup.loss == "ce" and out.dim() == 2:
        p = torch.softmax(z, dim=1)
        r = p.sqrt()
        return torch.diag_embed(r) - r[:, :, None] * p[:, None, :]  # rows: sqrt(p_c)(e_c - p)
    if setup.loss == "bce":
        s = torch.sigmoid(z)
        return torch.diag_embed((s * (1 - s) / k).sqrt())
    if setup.loss == "mse":
        return math.sqrt(2.0 / k) * torch.eye(k, dtype=z.dtype, device=z.device).expand(n, k, k)
    lam = _loss_hessians(setup, out, y)
    values, vectors = torch.linalg.eigh(lam)
    return (vectors * values.clamp_min(0).sqrt()[:, None, :]).transpose(1, 2)


def _loss_hessians(setup: Setup, out: Tensor, y: Tensor) -> Tensor:
    """:math:`\\Lambda_i` ``[n, k, k]`` by :func:`torch.func.hessian` of the per-sample loss."""
    n, loss_func = out.shape[0], setup.loss_func

    def sample_loss(o, t):
        return loss_func(o.unsqueeze(0), t.unsqueeze(0))

    lam = vmap(hessian(sample_loss))(out, y)
    k = out[0].numel()
    return lam.reshape(n, k, k)


def sampled_factor(setup: Setup, out: Tensor, samples: int, generator: torch.Generator) -> Tensor:
    """``[n, M, k]`` Monte-Carlo columns :math:`\\tilde s_{i,m}/\\sqrt M` (module docstring);
    draws on the CPU from ``generator``, so they do not depend on the device."""
    n = out.shape[0]
    z = out.detach().reshape(n, -1).to("cpu", torch.float64)
    k = z.shape[1]
    if setup.loss == "ce" and out.dim() == 2:
        p = torch.softmax(z, dim=1)
        labels = torch.multinomial(p, samples, replacement=True, generator=generator)
        cols = p[:, None, :] - torch.nn.functional.one_hot(labels, k).to(p.dtype)
    elif setup.loss == "bce":
        s = torch.sigmoid(z)[:, None, :].expand(n, samples, k)
        cols = (s - torch.bernoulli(s, generator=generator)) / math.sqrt(k)
    elif setup.loss == "mse":
        cols = math.sqrt(2.0 / k) * torch.randn(n, samples, k, generator=generator, dtype=z.dtype)
    else:
        raise ValueError(
            f"no Monte-Carlo Fisher for {setup.loss} outputs of shape {tuple(out.shape)}; use "
            "method='ggn'"
        )
    return (cols / math.sqrt(samples)).to(device=out.device, dtype=out.dtype)


def squared_vjp_diagonal(
    setup: Setup,
    data,
    factor: Callable[[Tensor, Tensor], Tensor],
    desc: str = "GGN diagonal",
    progress: bool = False,
) -> Tensor:
    """:math:`\\frac1N \\sum_i \\sum_k (J_i^\\top s_{i,k})^{\\odot 2}` ``[D]`` over one domain,
    batch by batch (memory: one chunk of ``[chunk, K, D]`` products), with
    ``factor(out [n, *], y [n, *]) -> S [n, K, k]`` (:func:`hessian_factor` or a closure
    over :func:`sampled_factor`)."""
    model, like = setup.model, setup.like
    leaves, fixed = setup.split_params()

    def output(theta, x):
        return functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),)).squeeze(0)

    def sample_squares(theta, x, S):  # S [K, k]: K products J_i^T s_k, squared and summed
        out, pullback = vjp(lambda th: output(th, x), theta)
        (products,) = vmap(pullback)(S.reshape(S.shape[0], *out.shape))
        return {n: products[n].square().sum(0) for n in setup.names}

    def forward(x):
        with torch.no_grad():
            return functional_call(model, {**fixed, **leaves}, (x,))

    squares = vmap(sample_squares, in_dims=(None, 0, 0))
    total = torch.zeros(setup.dim, dtype=like.dtype, device=like.device)
    count, chunk = 0, None
    for X, y in tqdm(as_batches(data), desc=desc, disable=not progress, leave=False):
        X, y = _to(X, like), _to(y, like)
        if chunk is None:  # K columns per sample: [chunk, K, D] within the budget
            width = factor(forward(X[:1]), y[:1]).shape[1]
            chunk = max(1, VJP_ELEMENTS // (width * setup.dim))
        for i in range(0, X.shape[0], chunk):
            x, t = X[i : i + chunk], y[i : i + chunk]
            with torch.no_grad():
                sq = squares(leaves, x, factor(forward(x), t))
                total += torch.cat([sq[n].sum(0).reshape(-1) for n in setup.names])
            count += int(x.shape[0])
    return total / count
