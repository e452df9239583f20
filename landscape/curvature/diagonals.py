"""Per-domain diagonals of the Hessian, the GGN (= Fisher for CE / BCE) or a Monte-Carlo Fisher.

Backends, each exact unless said otherwise:

* ``backpack``: BackPACK's ``DiagHessian`` / ``DiagGGNExact`` / ``DiagGGNMC`` (one backward
  per batch; only for the modules BackPACK has rules for);
* ``products``: the exact Hessian diagonal from rows of Hessian-vector products,
  :math:`H_{jj} = e_j^\\top H e_j` (``D`` products: small selections only);
* ``torch.func``: the exact GGN diagonal
  :math:`\\operatorname{diag} G = \\frac1N\\sum_i\\sum_c (J_i^\\top s_{i,c})^{\\odot 2}`
  with :math:`J_i = \\partial f_i/\\partial\\theta` and a factor :math:`\\Lambda_i = S_i S_i^\\top`
  of the loss Hessian in the outputs (``C`` vector-Jacobian products per sample for ``C``
  outputs, vectorised by ``vmap``), and the Monte-Carlo Fisher diagonal with sampled columns
  (:mod:`landscape.curvature._func`; any model torch.func supports);
* ``operator``: Hutchinson's :math:`\\frac1m\\sum_j v_j \\odot A v_j` (unbiased, with a standard
  error; any model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from landscape.curvature._backpack import BackpackUnsupported, backpack_pass
from landscape.curvature._setup import Setup, numpy, prepare, rademacher
from landscape.curvature.checks import as_choice
from landscape.curvature.operators import Curvature, as_curvature
from landscape.curvature.results import HessianDiagonalResult
from landscape.domains import Domains
from landscape.params import ParamSpec

# Largest selection whose exact Hessian diagonal is taken from D rows of products when
# BackPACK cannot compute it (cost: D products per domain).
ROWS_MAX_DIM = 4096


class DiagonalMethod(str, Enum):
    """How :func:`hessian_diagonal` computes a diagonal."""

    AUTO = "auto"
    """The exact Hessian diagonal by the first backend that handles the model (BackPACK's
    ``DiagHessian``, else ``D`` rows of Hessian-vector products when ``D <=``
    :data:`ROWS_MAX_DIM`), else Hutchinson with its standard error."""
    EXACT = "exact"
    """Exact Hessian diagonal: BackPACK's ``DiagHessian`` where BackPACK handles the model,
    else ``D`` rows of Hessian-vector products (``D <=`` :data:`ROWS_MAX_DIM`)."""
    GGN = "ggn"
    """Exact GGN diagonal (= Fisher diagonal for CE / BCE): BackPACK's ``DiagGGNExact``, else
    squared per-sample vector-Jacobian products by ``torch.func`` (any model)."""
    FISHER_MC = "fisher_mc"
    """Monte-Carlo Fisher diagonal (labels sampled from the model, seeded): BackPACK's
    ``DiagGGNMC``, else the same estimator by ``torch.func`` (any model)."""
    HUTCHINSON = "hutchinson"
    """:math:`\\mathbb E[v \\odot A v]` with Rademacher probes ``v``, with a standard error;
    any model (products only)."""


_EXACT = {DiagonalMethod.EXACT, DiagonalMethod.GGN}


@dataclass(frozen=True)
class DiagonalOptions:
    """Resolved options of :func:`hessian_diagonal` (see its arguments)."""

    num_probes: int = 100
    mc_samples: int = 1
    curvature: Curvature = Curvature.HESSIAN
    seed: int = 0
    progress: bool = False


def hessian_diagonal(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    method: str | DiagonalMethod = "auto",
    num_probes: int = 100,
    mc_samples: int = 1,
    curvature: str | Curvature = "hessian",
    seed: int = 0,
    progress: bool = False,
) -> HessianDiagonalResult:
    """Per-domain diagonal of the Hessian (or of the GGN / a Fisher) of the risk.

    Methods (:class:`DiagonalMethod`):

    * ``"auto"`` (default): the exact Hessian diagonal where an exact backend handles the
      model, else Hutchinson (below);
    * ``"exact"``: :math:`\\operatorname{diag}\\nabla^2 R_e` (BackPACK ``DiagHessian``, else
      rows of Hessian-vector products for ``D <=`` :data:`ROWS_MAX_DIM`);
    * ``"ggn"``: :math:`\\operatorname{diag} \\frac1N\\sum_i J_i^\\top\\Lambda_i J_i`
      (``DiagGGNExact``, else ``C`` per-sample vector-Jacobian products by ``torch.func``,
      any model); for the head of a
      network it equals the Hessian diagonal, since the logits are linear in the head's
      weights (docs/method.md section 3);
    * ``"fisher_mc"``: Monte-Carlo Fisher with ``mc_samples`` labels drawn from the model per
      sample (``DiagGGNMC``, else ``torch.func``; seeded with ``seed``);
    * ``"hutchinson"``: :math:`\\frac1m \\sum_j v_j \\odot A v_j` with ``num_probes``
      Rademacher probes (seeded) on the ``curvature`` operator; unbiased, per-entry standard
      error :math:`s_j / \\sqrt m`; works for any model.

    BackPACK methods sum the batches' diagonals weighted by ``n_b / N``. The result records
    what ran: ``settings["method"]`` (``"auto"`` resolved), ``settings["backend"]``
    (``"backpack"``, ``"products"``, ``"torch.func"`` or ``"operator"``) and
    ``settings["exact"]``.

    Raises:
        ValueError: unknown method, bad counts, ``curvature`` other than ``"hessian"`` with a
            method that fixes the matrix, or an explicit method whose backends cannot handle
            the model (the message says which method to use).
    """
    method = _as_method(method)
    curvature = as_curvature(curvature)
    if method is DiagonalMethod.HUTCHINSON and int(num_probes) < 1:
        raise ValueError(f"num_probes must be a positive integer, got {num_probes}")
    if method is DiagonalMethod.FISHER_MC and int(mc_samples) < 1:
        raise ValueError(f"mc_samples must be a positive integer, got {mc_samples}")
    if method is not DiagonalMethod.HUTCHINSON and curvature is not Curvature.HESSIAN:
        raise ValueError(
            f"curvature={curvature.value!r} applies to method='hutchinson' only; method "
            f"{method.value!r} fixes the matrix"
        )
    setup = prepare(model, loss_func, domains, params, "hessian_diagonal")
    options = DiagonalOptions(int(num_probes), int(mc_samples), curvature, int(seed), progress)
    return diagonal_result(setup, method, options)


def diagonal_result(
    setup: Setup, method: DiagonalMethod, options: DiagonalOptions
) -> HessianDiagonalResult:
    """:func:`hessian_diagonal` on resolved inputs: the first backend of the plan that handles
    the model runs (the next one when BackPACK cannot)."""
    plan, error = _plan(setup, method), None
    for i, (how, backend) in enumerate(plan):
        if backend == "refuse":  # one line: why BackPACK could not, and what works
            why = str(error).split("; use ")[0]
            raise BackpackUnsupported(
                f"method='exact' cannot run: {why}, and D = {setup.dim} is above "
                f"ROWS_MAX_DIM = {ROWS_MAX_DIM} for rows of Hessian-vector products; use "
                "method='hutchinson' (any model, with a standard error), 'ggn' or 'auto'"
            )
        try:
            per_domain = {
                name: _diagonal(setup, data, how, backend, options)
                for name, data in setup.domains.items()
            }
            break
        except BackpackUnsupported as err:
            error = err
            if i + 1 == len(plan):
                raise
    result = HessianDiagonalResult(**setup.base(**_settings(how, backend, options)))
    for name, (diag, se, products) in per_domain.items():
        result.diagonal[name] = numpy(diag)
        if se is not None:
            result.standard_error[name] = numpy(se)
        if products is not None:
            result.num_products[name] = products
    return result


def _as_method(method) -> DiagonalMethod:
    return as_choice(method, DiagonalMethod, "method")


def _plan(setup: Setup, method: DiagonalMethod) -> list[tuple[DiagonalMethod, str]]:
    """Backends to try in order (the next one runs when BackPACK cannot handle the model)."""
    rows = setup.dim <= ROWS_MAX_DIM
    exact = [(DiagonalMethod.EXACT, "backpack")]
    if rows:
        exact.append((DiagonalMethod.EXACT, "products"))
    if method is DiagonalMethod.AUTO:
        return [*exact, (DiagonalMethod.HUTCHINSON, "operator")]
    if method is DiagonalMethod.EXACT:
        if not rows:
            exact.append((DiagonalMethod.EXACT, "refuse"))
        return exact
    if method is DiagonalMethod.GGN:
        return [(method, "backpack"), (method, "torch.func")]
    if method is DiagonalMethod.FISHER_MC:
        return [(method, "backpack"), (method, "torch.func")]
    return [(method, "operator")]


def _settings(how: DiagonalMethod, backend: str, options: DiagonalOptions) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "method": how.value,
        "backend": backend,
        "exact": how in _EXACT,
    }
    if how is DiagonalMethod.HUTCHINSON:
        settings.update(
            num_probes=options.num_probes, seed=options.seed, curvature=options.curvature.value
        )
    if how is DiagonalMethod.FISHER_MC:
        settings.update(mc_samples=options.mc_samples, seed=options.seed)
    return settings


def _diagonal(setup: Setup, data, how: DiagonalMethod, backend: str, options: DiagonalOptions):
    """One domain's ``(diagonal [D], standard error [D] or None, products or None)``."""
    if backend == "backpack":
        return _diagonal_backpack(setup, data, how, options), None, None
    if backend == "torch.func":
        return _diagonal_func(setup, data, how, options), None, None
    curvature = Curvature.HESSIAN if backend == "products" else options.curvature
    with setup.operator(data, curvature, options.progress) as op:
        if backend == "products":
            diag, se = _rows_diagonal(op), None
        else:
            diag, se = _hutchinson_diagonal(op, options.num_probes, options.seed)
        return diag, se, op.num_products


def _diagonal_backpack(setup: Setup, data, how: DiagonalMethod, options: DiagonalOptions):
    from backpack.extensions import DiagGGNExact, DiagGGNMC, DiagHessian

    extensions, field = {
        DiagonalMethod.EXACT: (lambda: [DiagHessian()], "diag_h"),
        DiagonalMethod.GGN: (lambda: [DiagGGNExact()], "diag_ggn_exact"),
        DiagonalMethod.FISHER_MC: (
            lambda: [DiagGGNMC(mc_samples=options.mc_samples)],
            "diag_ggn_mc",
        ),
    }[how]
    fallback = (
        "method='ggn' (the exact Fisher for CE / BCE, any model) or method='hutchinson'"
        if how is DiagonalMethod.FISHER_MC
        else "method='hutchinson' (any model)"
    )
    runs = backpack_pass(
        setup,
        data,
        extensions,
        (field,),
        reduction="mean",
        second_order=True,
        fallback=fallback,
        seed=options.seed if how is DiagonalMethod.FISHER_MC else None,
        progress=options.progress,
    )
    total, N = None, 0
    for n, entry in runs:  # the risk's diagonal: sum_b n_b diag(H_b) / N
        total = n * entry[field] if total is None else total.add_(entry[field], alpha=n)
        N += n
    return total / N


def _hutchinson_diagonal(op, num_probes: int, seed: int) -> tuple[Tensor, Tensor | None]:
    """Mean of ``v * (A v)`` over Rademacher probes and its per-entry standard error."""
    probes = rademacher(op.dim, num_probes, seed, op.dtype, op.device)
    samples = probes * op.matmat(probes.T).T  # [m, D]: v * (A v), in vectorised blocks
    mean = samples.mean(0)
    se = samples.std(0, unbiased=True) / math.sqrt(num_probes) if num_probes > 1 else None
    return mean, se


def _rows_diagonal(op, chunk: int = 64) -> Tensor:
    """:math:`H_{jj} = e_j^\\top H e_j`: ``D`` products with the unit vectors, ``chunk``
    columns at a time through :meth:`~landscape.curvature.operators.CurvatureOperator.matmat`
    (vectorised blocks where PyTorch can batch the model's backward)."""
    diag = torch.empty(op.dim, dtype=op.dtype, device=op.device)
    for j in range(0, op.dim, chunk):
        k = min(chunk, op.dim - j)
        E = torch.zeros(op.dim, k, dtype=op.dtype, device=op.device)
        E[j : j + k] = torch.eye(k, dtype=op.dtype, device=op.device)
        diag[j : j + k] = op.matmat(E)[j : j + k].diagonal()
    return diag


def _diagonal_func(setup: Setup, data, how: DiagonalMethod, options: DiagonalOptions) -> Tensor:
    """Exact GGN or Monte-Carlo Fisher diagonal by squared per-sample vector-Jacobian
    products (:mod:`landscape.curvature._func`; any model ``torch.func`` supports)."""
    from landscape.curvature._func import hessian_factor, sampled_factor, squared_vjp_diagonal

    if how is DiagonalMethod.GGN:
        return squared_vjp_diagonal(
            setup, data, lambda out, y: hessian_factor(setup, out, y), progress=options.progress
        )
    generator = torch.Generator().manual_seed(options.seed)  # the same draws for every domain
    return squared_vjp_diagonal(
        setup,
        data,
        lambda out, y: sampled_factor(setup, out, options.mc_samples, generator),
        desc="Monte-Carlo Fisher diagonal",
        progress=options.progress,
    )
