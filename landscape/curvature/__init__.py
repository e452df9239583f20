"""Per-domain curvature: gradient variances, Hessian / GGN / Fisher diagonals, eigenpairs,
traces, spectral densities, and their comparison across domains.

Every function takes ``(model, loss_func, domains, params=...)``: ``domains`` is a mapping
``{name: data}`` (:func:`landscape.domains.check_domains`), ``params`` chooses parameters by
name (:func:`landscape.params.select_params`; ``"classifier"`` is Fishr's head). Results are
dataclasses (``.save(path)`` / ``.load(path)``, see :class:`landscape.io.SavedResult`) holding
one array per domain, in the layout of ``select_params`` (``param_names`` /
``param_shapes``), and every setting and seed used.

The quantities are those of the domain's risk :math:`R_e = \\frac1N\\sum_i \\ell_i` (mean loss
over its samples; see :mod:`landscape.curvature.reference` for the definitions), i.e. the chain of the
Fishr paper (Rame et al. 2022, section 3):
:math:`\\operatorname{Var}(g) \\approx` empirical Fisher :math:`\\approx` Fisher (= GGN for CE /
BCE) :math:`\\approx` Hessian.

Guard rails (before any curvature work): the model must be in eval mode and one forward pass
must be deterministic (:func:`landscape.curvature.operators.check_eval_mode`,
:func:`~landscape.curvature.operators.check_deterministic`); the loss must be a supported mean-reduced
loss. A model extended by BackPACK is analysed through a plain copy, and BackPACK is only ever
applied to a private copy: the user's model (parameters, ``requires_grad`` flags, mode,
hooks) is never changed.

Stochastic estimators (Hutchinson, Lanczos starts, SLQ probes, Monte-Carlo Fisher) draw from
``torch.Generator(seed)`` freshly seeded for **every domain**, so all domains see the same
probes and their differences are not drowned by probe noise.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.domains import Domains, as_batches, check_domains
from landscape.io import SavedResult
from landscape.losses import with_reduction
from landscape.curvature.operators import (
    Curvature,
    CurvatureOperator,
    as_curvature,
    check_deterministic,
    check_eval_mode,
    check_loss,
    is_backpack_extended,
    plain_copy,
)
from landscape.params import ParamSpec, select_params

__all__ = [
    "DiagonalMethod",
    "GradientVarianceResult",
    "HessianDiagonalResult",
    "EigenpairsResult",
    "TraceResult",
    "SpectralDensityResult",
    "ComparisonResult",
    "gradient_variance",
    "hessian_diagonal",
    "top_eigenpairs",
    "hessian_trace",
    "spectral_density",
    "compare_domains",
    "lanczos",
    "rademacher",
]


class DiagonalMethod(str, Enum):
    """How :func:`hessian_diagonal` computes a diagonal."""

    EXACT = "exact"
    """Exact Hessian diagonal by BackPACK's ``DiagHessian`` (Linear / Conv / activations)."""
    GGN = "ggn"
    """Exact GGN diagonal by BackPACK's ``DiagGGNExact`` (= Fisher diagonal for CE / BCE)."""
    FISHER_MC = "fisher_mc"
    """Monte-Carlo Fisher diagonal by BackPACK's ``DiagGGNMC`` (labels sampled from the
    model, seeded)."""
    HUTCHINSON = "hutchinson"
    """:math:`\\mathbb E[v \\odot A v]` with Rademacher probes ``v``, with a standard error;
    any model (products only)."""


# --------------------------------------------------------------------------- results


@dataclass
class _Result(SavedResult):
    domains: list[str]
    param_names: list[str]
    param_shapes: list[list[int]]
    loss: str
    settings: dict[str, Any]

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Split a ``[D]`` vector of this result into ``{parameter name: array}``."""
        out, start = {}, 0
        for name, shape in zip(self.param_names, self.param_shapes, strict=True):
            size = int(np.prod(shape)) if shape else 1
            out[name] = np.asarray(vector)[start : start + size].reshape(shape)
            start += size
        return out


@dataclass
class GradientVarianceResult(_Result):
    """Per-domain gradient statistics (Fishr's matched quantity).

    Attributes:
        variance: ``{domain: [D]}``, :math:`\\frac1N\\sum_i (g_i - \\bar g)^2` when
            ``settings["centered"]``, else :math:`\\frac1N\\sum_i g_i^2`.
        empirical_fisher: ``{domain: [D]}``, always :math:`\\frac1N\\sum_i g_i^2` (the
            diagonal of the empirical Fisher).
        mean_gradient: ``{domain: [D]}``, :math:`\\bar g = \\nabla R_e`.
        num_samples: ``{domain: N}``.
    """

    variance: dict[str, np.ndarray] = field(default_factory=dict)
    empirical_fisher: dict[str, np.ndarray] = field(default_factory=dict)
    mean_gradient: dict[str, np.ndarray] = field(default_factory=dict)
    num_samples: dict[str, int] = field(default_factory=dict)


@dataclass
class HessianDiagonalResult(_Result):
    """Per-domain curvature diagonals.

    Attributes:
        diagonal: ``{domain: [D]}``.
        standard_error: ``{domain: [D]}`` per-entry standard error (Hutchinson only; empty
            for deterministic methods).
        num_products: ``{domain: int}`` curvature-vector products (Hutchinson only).
    """

    diagonal: dict[str, np.ndarray] = field(default_factory=dict)
    standard_error: dict[str, np.ndarray] = field(default_factory=dict)
    num_products: dict[str, int] = field(default_factory=dict)


@dataclass
class EigenpairsResult(_Result):
    """Per-domain extreme eigenpairs of a curvature matrix.

    Attributes:
        largest_eigenvalues: ``{domain: [k]}`` descending (empty if not asked).
        largest_eigenvectors: ``{domain: [D, k]}`` orthonormal columns.
        smallest_eigenvalues: ``{domain: [k]}`` ascending (most negative first).
        smallest_eigenvectors: ``{domain: [D, k]}``.
        residuals: ``{domain: [k]}`` or ``[2k]`` (largest then smallest):
            :math:`\\|A u - \\lambda u\\|`.
        converged: ``{domain: bool}``, all residuals within the tolerance.
        num_products: ``{domain: int}``.
        seconds: ``{domain: float}`` wall time.
    """

    largest_eigenvalues: dict[str, np.ndarray] = field(default_factory=dict)
    largest_eigenvectors: dict[str, np.ndarray] = field(default_factory=dict)
    smallest_eigenvalues: dict[str, np.ndarray] = field(default_factory=dict)
    smallest_eigenvectors: dict[str, np.ndarray] = field(default_factory=dict)
    residuals: dict[str, np.ndarray] = field(default_factory=dict)
    converged: dict[str, bool] = field(default_factory=dict)
    num_products: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def eigenvalues(self) -> dict[str, np.ndarray]:
        """The requested end: largest if computed, else smallest."""
        return self.largest_eigenvalues or self.smallest_eigenvalues

    @property
    def eigenvectors(self) -> dict[str, np.ndarray]:
        """Eigenvectors matching :attr:`eigenvalues`."""
        return self.largest_eigenvectors or self.smallest_eigenvectors


@dataclass
class TraceResult(_Result):
    """Per-domain traces.

    Attributes:
        trace: ``{domain: float}``.
        standard_error: ``{domain: float}`` (0 for the exact method).
        samples: ``{domain: [m]}`` the Hutchinson samples :math:`v_j^\\top A v_j` (running
            means and standard errors vs products can be redrawn from them).
        num_products: ``{domain: int}``.
    """

    trace: dict[str, float] = field(default_factory=dict)
    standard_error: dict[str, float] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    num_products: dict[str, int] = field(default_factory=dict)


@dataclass
class SpectralDensityResult(_Result):
    """Per-domain spectral densities by stochastic Lanczos quadrature.

    Attributes:
        nodes: ``{domain: [probes, m]}`` Ritz values of each probe's Lanczos run.
        weights: ``{domain: [probes, m]}`` quadrature weights (each row sums to 1).
        grid: ``{domain: [P]}`` eigenvalue grid.
        density: ``{domain: [P]}`` Gaussian-smoothed density on the grid (integrates to 1;
            multiply by ``D`` for an eigenvalue count density).
    """

    nodes: dict[str, np.ndarray] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    grid: dict[str, np.ndarray] = field(default_factory=dict)
    density: dict[str, np.ndarray] = field(default_factory=dict)

    def moment(self, domain: str, power: int) -> float:
        """SLQ estimate of :math:`\\frac1D \\operatorname{tr} A^p` (mean over probes)."""
        return float(np.mean(np.sum(self.weights[domain] * self.nodes[domain] ** power, 1)))


@dataclass
class ComparisonResult(_Result):
    """Cross-domain comparison of gradient variances, curvature diagonals and eigenspaces.

    Matrices are ``[E, E]`` in the order of ``domains``.

    Attributes:
        variance: ``{domain: [D]}`` gradient variances (see :func:`gradient_variance`).
        diagonal: ``{domain: [D]}`` Hessian (or chosen curvature) diagonals.
        variance_distance: :math:`\\|v_A - v_B\\|^2`.
        variance_cosine: :math:`\\cos(v_A, v_B)`.
        diagonal_distance: :math:`\\|\\operatorname{diag} H_A - \\operatorname{diag} H_B\\|^2`.
        diagonal_cosine: cosine between the diagonals.
        within_cosine: ``[E]``, :math:`\\cos(v_e, \\operatorname{diag} H_e)` (the premise
            Var :math:`\\approx` Hessian).
        eigenvalues: ``{domain: [k]}`` top-k eigenvalues (empty when ``k=0``).
        principal_angles: ``[E, E, k]`` principal angles (radians, ascending) between the
            top-k eigenspaces.
    """

    variance: dict[str, np.ndarray] = field(default_factory=dict)
    diagonal: dict[str, np.ndarray] = field(default_factory=dict)
    variance_distance: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    variance_cosine: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    diagonal_distance: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    diagonal_cosine: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    within_cosine: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eigenvalues: dict[str, np.ndarray] = field(default_factory=dict)
    principal_angles: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))


# --------------------------------------------------------------------------- plumbing


@dataclass
class _Setup:
    model: nn.Module  # plain (never BackPACK-extended) model to analyse; may be the user's
    loss_func: nn.Module
    loss: str
    domains: dict
    params: ParamSpec
    names: list[str]
    shapes: list[list[int]]
    dim: int

    def base(self, **settings) -> dict[str, Any]:
        return {
            "domains": list(self.domains),
            "param_names": self.names,
            "param_shapes": self.shapes,
            "loss": self.loss,
            "settings": {"params": self.params, **settings},
        }


def _prepare(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec,
    what: str,
    min_domains: int = 1,
) -> _Setup:
    """Validate inputs and run the guard rails (eval mode, deterministic pass)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    name = check_loss(loss_func)
    checked = check_domains(domains, min_domains=min_domains, what=what)
    selected = select_params(model, params)
    if is_backpack_extended(model):
        model = plain_copy(model)
    check_eval_mode(model)
    for data in checked.values():
        check_deterministic(model, next(iter(data)))
    if isinstance(params, str) or params is None:
        spec = params
    else:
        spec = list(params)
    return _Setup(
        model=model,
        loss_func=loss_func,
        loss=name,
        domains=checked,
        params=spec,
        names=list(selected),
        shapes=[list(p.shape) for p in selected.values()],
        dim=sum(p.numel() for p in selected.values()),
    )


def _first_param(model: nn.Module) -> Tensor:
    return next(model.parameters())


def _to(t: Tensor, like: Tensor) -> Tensor:
    if t.is_floating_point():
        return t.to(device=like.device, dtype=like.dtype)
    return t.to(device=like.device)


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy()


def rademacher(dim: int, num: int, seed: int, dtype: torch.dtype, device) -> Tensor:
    """``[num, dim]`` Rademacher (+-1) probes from ``torch.Generator().manual_seed(seed)``.

    Drawn on the CPU, so the probes are the same on every device.
    """
    g = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, (num, dim), generator=g, dtype=torch.int8)
    return (2 * signs - 1).to(device=device, dtype=dtype)


def _operator(setup: _Setup, data, curvature, progress: bool) -> CurvatureOperator:
    return CurvatureOperator(
        setup.model, setup.loss_func, data, setup.params, curvature, progress, check=False
    )


# --------------------------------------------------------------------------- BackPACK


def _backpack_copy(setup: _Setup):
    """A private BackPACK-extended copy of the model (only selected params need grad) and
    of the loss (mean and sum reductions)."""
    from backpack import extend

    model = copy.deepcopy(setup.model)
    selected = set(setup.names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in selected)
    for module in model.modules():  # leaves only: containers need no (and have no) extension
        if next(module.children(), None) is None:
            extend(module)
    return model, [p for n, p in model.named_parameters() if n in selected]


def _check_backpack_targets(setup: _Setup, out: Tensor, y: Tensor, second_order: bool) -> None:
    if setup.loss != "bce" or not second_order:
        return
    if out.dim() != 2 or out.shape[1] != 1:
        raise ValueError(
            f"BackPACK's second-order extensions need BCEWithLogitsLoss logits of shape [N, 1], "
            f"got {tuple(out.shape)}; use method='hutchinson'"
        )
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError(
            "BackPACK's second-order extensions need 0/1 targets for BCEWithLogitsLoss; "
            "use method='hutchinson'"
        )


def _backpack_pass(
    setup: _Setup,
    data,
    extensions: Callable[[], list],
    fields: Sequence[str],
    reduction: str,
    second_order: bool,
    seed: int | None = None,
    progress: bool = False,
    desc: str = "",
    fallback: str = "method='hutchinson' (any model)",
) -> list[tuple[int, dict[str, Tensor]]]:
    """Run BackPACK over one domain's batches; ``[(n_b, {field: [D]} incl. "grad")]``."""
    from backpack import backpack, extend

    model, leaves = _backpack_copy(setup)
    loss_func = extend(with_reduction(setup.loss_func, reduction))
    like = _first_param(model)
    batches = as_batches(data)
    results = []
    device = like.device
    fork = [device] if device.type == "cuda" else []
    for X, y in tqdm(batches, desc=desc, disable=not progress, leave=False):
        X, y = _to(X, like), _to(y, like)
        with torch.random.fork_rng(devices=fork, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            out = model(X)
            _check_backpack_targets(setup, out, y, second_order)
            loss = loss_func(out, y)
            try:
                with backpack(*extensions()):
                    loss.backward()
            except (NotImplementedError, RuntimeError, AttributeError) as err:
                raise ValueError(
                    f"BackPACK cannot handle this model ({type(err).__name__}: "
                    f"{str(err).splitlines()[0][:200]}); use {fallback}"
                ) from None
        entry = {"grad": torch.cat([p.grad.reshape(-1) for p in leaves]).detach()}
        for f in fields:
            missing = [p for p in leaves if not hasattr(p, f)]
            if missing:
                raise ValueError(
                    f"BackPACK computed no {f!r} for some selected parameters; use {fallback}"
                )
            entry[f] = torch.cat([getattr(p, f).reshape(-1) for p in leaves]).detach()
        for p in leaves:
            p.grad = None
            for f in fields:
                delattr(p, f)
        results.append((int(X.shape[0]), entry))
    return results


# --------------------------------------------------------------------------- variance


def _variance_backpack(setup: _Setup, data, progress: bool):
    from backpack.extensions import SumGradSquared, Variance

    runs = _backpack_pass(
        setup,
        data,
        lambda: [Variance(), SumGradSquared()],
        ("variance", "sum_grad_squared"),
        reduction="sum",
        second_order=False,
        progress=progress,
        desc="gradient variance",
        fallback="method='per_sample' (torch.func, any model)",
    )
    return _combine_moments([(n, e["grad"], e["variance"], e["sum_grad_squared"]) for n, e in runs])


def _combine_moments(parts):
    """Chan et al.'s parallel combination of per-batch (n_b, sum g, biased var, sum g^2)."""
    N = sum(n for n, *_ in parts)
    mean = sum(s for _, s, _, _ in parts) / N
    m2 = sum(n * var + n * (s / n - mean) ** 2 for n, s, var, _ in parts)
    second = sum(q for *_, q in parts) / N
    return N, mean, m2 / N, second


def _variance_per_sample(setup: _Setup, data, chunk_size: int, progress: bool):
    """Chunks of per-sample gradients by ``torch.func.vmap(grad)``; moments combined."""
    from torch.func import functional_call, grad, vmap

    model = setup.model
    like = _first_param(model)
    selected = select_params(model, setup.params)
    leaves = {n: p.detach() for n, p in selected.items()}
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
    fixed.update(dict(model.named_buffers()))
    loss_func = setup.loss_func

    def sample_loss(theta, x, t):
        out = functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),))
        return loss_func(out, t.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    parts = []
    batches = list(as_batches(data))
    for X, y in tqdm(batches, desc="per-sample gradients", disable=not progress, leave=False):
        X, y = _to(X, like), _to(y, like)
        for i in range(0, X.shape[0], chunk_size):
            G = per_sample(leaves, X[i : i + chunk_size], y[i : i + chunk_size])
            G = torch.cat([G[n].reshape(G[n].shape[0], -1) for n in selected], dim=1)
            s = G.sum(0)
            mean = s / G.shape[0]
            parts.append((G.shape[0], s, ((G - mean) ** 2).mean(0), (G**2).sum(0)))
    return _combine_moments(parts)


VARIANCE_METHODS = ("auto", "linear", "backpack", "per_sample")
"""Ways :func:`gradient_variance` computes per-sample gradient moments."""

# Default samples per chunk: per_sample builds [chunk, D] per-sample gradients; linear keeps
# [chunk, width] activations of one forward (measured on the Colored MNIST MLP: see
# benchmarks/bench_curvature.py).
_CHUNKS = {"per_sample": 256, "linear": 2048}

# Rows of the first batch on which method="auto" checks the nn.Linear factorisation.
_LINEAR_CHECK_ROWS = 64


def _linear_setup(setup: _Setup):
    """The selected ``nn.Linear`` layers, and detached tensors for ``functional_call``."""
    from landscape.persample import select_linear_layers

    layers = select_linear_layers(setup.model, setup.params)  # ValueError: not all Linear
    params = {n: p.detach() for n, p in setup.model.named_parameters()}
    params.update(dict(setup.model.named_buffers()))
    return layers, params


def _linear_reason(setup: _Setup) -> tuple[str | None, str]:
    """Why the ``nn.Linear`` factorisation does not apply (``None``: it does), and the exact
    method to use instead (``"backpack"``, or ``"per_sample"`` when a selected parameter is
    used outside its layer: BackPACK's per-module per-sample gradients miss that use too).

    Structural: every selected parameter belongs to an ``nn.Linear`` that runs once per
    forward on ``[N, in]`` inputs. Numerical, on the first rows of the first domain: the
    summed per-sample gradients equal autograd's gradient (else a selected parameter is also
    used outside its layer; :func:`landscape.persample.sums_match_gradient`).
    """
    from landscape.persample import linear_gradient_sums, linear_pass, sums_match_gradient

    try:
        layers, params = _linear_setup(setup)
        X, y = next(iter(next(iter(setup.domains.values()))))
        like = _first_param(setup.model)
        X, y = _to(X[:_LINEAR_CHECK_ROWS], like), _to(y[:_LINEAR_CHECK_ROWS], like)
        for name in setup.names:
            params[name] = params[name].clone().requires_grad_(True)
        acts, deltas, _, grads = linear_pass(
            setup.model, layers, X, y, setup.loss_func, params, setup.names
        )
    except ValueError as err:
        return str(err), "backpack"
    sums, squares = linear_gradient_sums(layers, acts, deltas)
    gradient = torch.cat([g.reshape(-1) for g in grads])
    if not sums_match_gradient(sums, squares, gradient, int(X.shape[0])):
        return (
            "the per-sample gradients of the Linear layers do not add up to the gradient "
            "(a selected parameter is also used outside its layer)"
        ), "per_sample"
    return None, "linear"


def _variance_linear(setup: _Setup, data, chunk_size: int, progress: bool):
    """Exact moments from the ``nn.Linear`` factorisation, chunk by chunk (one forward and one
    backward to the layers' outputs per chunk; sums under ``no_grad``)."""
    from landscape.persample import linear_gradient_sums, linear_pass

    layers, params = _linear_setup(setup)
    like = _first_param(setup.model)
    parts = []
    batches = list(as_batches(data))
    for X, y in tqdm(batches, desc="per-sample moments", disable=not progress, leave=False):
        X, y = _to(X, like), _to(y, like)
        n = int(X.shape[0])
        s = q = None
        for i in range(0, n, chunk_size):
            acts, deltas, _, _ = linear_pass(
                setup.model, layers, X[i : i + chunk_size], y[i : i + chunk_size],
                setup.loss_func, params,
            )  # fmt: skip
            ds, dq = linear_gradient_sums(layers, acts, deltas)
            s, q = (ds, dq) if s is None else (s + ds, q + dq)
        mean = s / n
        parts.append((n, s, q / n - mean.square(), q))
    return _combine_moments(parts)


def gradient_variance(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    centered: bool = True,
    method: str = "auto",
    chunk_size: int | None = None,
    progress: bool = False,
) -> GradientVarianceResult:
    """Per-domain diagonal variance of the per-sample gradients (what Fishr matches).

    .. math::

        v_e = \\frac1{N_e}\\sum_{i} (g_i - \\bar g_e)^2, \\qquad
        \\operatorname{diag} F_e = \\frac1{N_e}\\sum_{i} g_i^2, \\qquad
        g_i = \\nabla_\\theta \\ell(f_\\theta(x_i), y_i)

    (biased 1/N variance, as in Fishr, Rame et al. 2022, eq. 4). Per-sample gradients of a
    whole network are never stored. Methods:

    * ``"linear"``: every selected parameter in an ``nn.Linear``: the per-sample gradients
      factorise, :math:`g_i(W) = \\delta_i a_i^\\top`, so
      :math:`\\sum_i g_i = \\delta^\\top a` and :math:`\\sum_i g_i^2 = (\\delta^2)^\\top a^2`
      (:mod:`landscape.persample`, the moments of Fishr's penalty): one forward and one
      backward to the layers' outputs per chunk of ``chunk_size`` samples, sums under
      ``no_grad``, chunks and batches added up exactly (variance :math:`q/N - \\bar g^2`);
    * ``"backpack"``: BackPACK's ``Variance`` and ``SumGradSquared`` with a sum-reduced loss
      batch by batch (batches combined exactly with Chan's parallel formula);
    * ``"per_sample"``: chunks of ``chunk_size`` per-sample gradients with ``torch.func``
      (any model torch.func supports);
    * ``"auto"`` (default): ``"linear"`` when it applies (checked: each selected layer runs
      once on ``[N, in]`` inputs, and on the first rows of the first domain the summed
      per-sample gradients equal autograd's gradient), else ``"backpack"``, or
      ``"per_sample"`` when that sum check fails (a selected parameter used outside its
      layer, which BackPACK's per-module per-sample gradients miss as well).

    ``"linear"`` and ``"backpack"`` both form the variance as :math:`q/N - \\bar g^2`, whose
    relative rounding is about :math:`\\epsilon (1 + \\bar g^2 / v)` (see
    :mod:`landscape.persample`): use float64 for nearly constant gradients.

    Args:
        model, loss_func, domains, params: see the module docstring.
        centered: subtract the mean gradient (Fishr's variance) or not (second moment).
        method: ``"auto"``, ``"linear"``, ``"backpack"`` or ``"per_sample"``.
        chunk_size: samples per chunk for ``"linear"`` (memory ``chunk_size x`` the widest
            layer; default 2048) and ``"per_sample"`` (memory ``chunk_size x D``; default 256).
        progress: progress bars over batches.

    Returns:
        A :class:`GradientVarianceResult`; ``settings["method"]`` is the method that ran.

    Raises:
        ValueError: unknown method, bad ``chunk_size``, or ``method="linear"`` where the
            factorisation does not apply (the message says why).
    """
    if method not in VARIANCE_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(VARIANCE_METHODS)}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    setup = _prepare(model, loss_func, domains, params, "gradient_variance")
    if method in ("auto", "linear"):
        reason, fallback = _linear_reason(setup)
        if reason is not None and method == "linear":
            raise ValueError(f"method='linear' does not apply: {reason}; use method='{fallback}'")
        method = fallback
    chunk = int(chunk_size or _CHUNKS.get(method, _CHUNKS["per_sample"]))
    result = GradientVarianceResult(
        **setup.base(centered=bool(centered), method=method, chunk_size=chunk)
    )
    for name, data in setup.domains.items():
        if method == "linear":
            N, mean, var, second = _variance_linear(setup, data, chunk, progress)
        elif method == "backpack":
            N, mean, var, second = _variance_backpack(setup, data, progress)
        else:
            N, mean, var, second = _variance_per_sample(setup, data, chunk, progress)
        result.variance[name] = _numpy(var if centered else second)
        result.empirical_fisher[name] = _numpy(second)
        result.mean_gradient[name] = _numpy(mean)
        result.num_samples[name] = int(N)
    return result


# --------------------------------------------------------------------------- diagonals


def _hutchinson_diagonal(op: CurvatureOperator, num_probes: int, seed: int):
    probes = rademacher(op.dim, num_probes, seed, op.dtype, op.device)
    samples = torch.stack([v * op.matvec(v) for v in probes])  # [m, D]
    mean = samples.mean(0)
    se = samples.std(0, unbiased=True) / math.sqrt(num_probes) if num_probes > 1 else None
    return mean, se


def hessian_diagonal(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    method: str | DiagonalMethod = "exact",
    num_probes: int = 100,
    mc_samples: int = 1,
    curvature: str | Curvature = "hessian",
    seed: int = 0,
    progress: bool = False,
) -> HessianDiagonalResult:
    """Per-domain diagonal of the Hessian (or of the GGN / a Fisher) of the risk.

    Methods (:class:`DiagonalMethod`):

    * ``"exact"``: :math:`\\operatorname{diag}\\nabla^2 R_e` (BackPACK ``DiagHessian``);
    * ``"ggn"``: :math:`\\operatorname{diag} \\frac1N\\sum_i J_i^\\top\\Lambda_i J_i`
      (``DiagGGNExact``); for the head of a network it equals the Hessian diagonal, since
      the logits are linear in the head's weights (docs/method.md section 3);
    * ``"fisher_mc"``: Monte-Carlo Fisher with ``mc_samples`` labels drawn from the model per
      sample (``DiagGGNMC``, seeded with ``seed``);
    * ``"hutchinson"``: :math:`\\frac1m \\sum_j v_j \\odot A v_j` with ``num_probes``
      Rademacher probes (seeded) on the ``curvature`` operator; unbiased, per-entry standard
      error :math:`s_j / \\sqrt m`; works for any model.

    BackPACK methods sum the batches' diagonals weighted by ``n_b / N``.
    """
    try:
        method = DiagonalMethod(getattr(method, "value", method))
    except ValueError:
        raise ValueError(
            f"unknown method {method!r}; use one of {', '.join(m.value for m in DiagonalMethod)}"
        ) from None
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
    setup = _prepare(model, loss_func, domains, params, "hessian_diagonal")
    settings: dict[str, Any] = {"method": method.value}
    if method is DiagonalMethod.HUTCHINSON:
        settings.update(num_probes=int(num_probes), seed=int(seed), curvature=curvature.value)
    if method is DiagonalMethod.FISHER_MC:
        settings.update(mc_samples=int(mc_samples), seed=int(seed))
    result = HessianDiagonalResult(**setup.base(**settings))
    for name, data in setup.domains.items():
        if method is DiagonalMethod.HUTCHINSON:
            with _operator(setup, data, curvature, progress) as op:
                diag, se = _hutchinson_diagonal(op, int(num_probes), int(seed))
                result.num_products[name] = op.num_products
            if se is not None:
                result.standard_error[name] = _numpy(se)
        else:
            from backpack.extensions import DiagGGNExact, DiagGGNMC, DiagHessian

            ext, fld = {
                DiagonalMethod.EXACT: (lambda: [DiagHessian()], "diag_h"),
                DiagonalMethod.GGN: (lambda: [DiagGGNExact()], "diag_ggn_exact"),
                DiagonalMethod.FISHER_MC: (
                    lambda: [DiagGGNMC(mc_samples=int(mc_samples))],
                    "diag_ggn_mc",
                ),
            }[method]
            runs = _backpack_pass(
                setup,
                data,
                ext,
                (fld,),
                reduction="mean",
                second_order=True,
                seed=int(seed) if method is DiagonalMethod.FISHER_MC else None,
                progress=progress,
                desc=f"{method.value} diagonal",
            )
            N = sum(n for n, _ in runs)
            diag = sum((n / N) * e[fld] for n, e in runs)
        result.diagonal[name] = _numpy(diag)
    return result


# --------------------------------------------------------------------------- Lanczos


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    k: int = 1,
    which: str = "largest",
    tol: float = 1e-8,
    max_iter: int | None = None,
    progress: bool = False,
    steps: int | None = None,
):
    """Lanczos with full re-orthogonalisation for extreme eigenpairs of a symmetric operator.

    Builds the Krylov basis :math:`Q_m` and tridiagonal :math:`T_m = Q_m^\\top A Q_m` one
    product at a time and stops as soon as the wanted Ritz values :math:`\\theta_i` have
    error bounds :math:`\\min(r_i, r_i^2/\\delta_i) \\le` ``tol`` :math:`\\cdot \\max_j
    |\\theta_j|`, with residuals :math:`r_i = \\|A u_i - \\theta_i u_i\\| = \\beta_m
    |e_m^\\top s_i|` and :math:`\\delta_i` the gap to the nearest other Ritz value (checked
    after every product, unlike ARPACK, which checks only at restarts). Eigenvector errors
    are about :math:`r_i / \\delta_i`: pass a smaller ``tol`` when the vectors matter.
    Memory: ``m`` vectors of length ``D``.

    Single-vector Krylov methods (this one, ARPACK) see one copy of a repeated eigenvalue:
    when the Krylov space becomes invariant the iteration goes on from a fresh random
    vector orthogonal to it (which recovers exact multiplicities, e.g. the null space of a
    small rank-deficient GGN), but a repeated eigenvalue found before that is reported once.

    Args:
        matvec: ``v [D] -> A v [D]``.
        v0: start vector ``[D]`` (dtype and device of the computation).
        k: how many eigenpairs at each wanted end.
        which: ``"largest"``, ``"smallest"`` or ``"both"``.
        tol: relative accuracy of the wanted eigenvalues (see above).
        max_iter: at most this many products (default ``min(D, max(300, 20 k))``).
        progress: progress bar over products.
        steps: run exactly this many steps (no convergence test), e.g. for quadrature.

    Returns:
        ``dict`` with ``largest`` / ``smallest`` (``(values [k], vectors [D, k],
        residuals [k])``), ``alpha``, ``beta`` (the tridiagonal), ``num_products`` and
        ``converged``.
    """
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both', got {which!r}")
    D = v0.numel()
    if not 1 <= k <= D:
        raise ValueError(f"k must be between 1 and the dimension {D}, got {k}")
    if steps is None:
        max_iter = min(D, max(300, 20 * k)) if max_iter is None else min(D, int(max_iter))
    else:
        max_iter = min(D, int(steps))
    Q = _Basis(v0 / v0.norm(), max_iter)
    alpha: list[float] = []
    beta: list[float] = []
    converged = False
    bar = tqdm(total=max_iter, desc="Lanczos", unit="product", disable=not progress, leave=False)
    ends = ("largest", "smallest") if which == "both" else (which,)
    eps = np.finfo(np.float32 if v0.dtype == torch.float32 else np.float64).eps
    restarts = torch.Generator().manual_seed(0x5EED)
    for j in range(max_iter):
        w = matvec(Q[j])
        bar.update(1)
        alpha.append(float(Q[j] @ w))
        Qm = Q.view()  # [j+1, D], no copy
        before = float(w.norm())
        w = w - Qm.T @ (Qm @ w)  # full re-orthogonalisation (classical Gram-Schmidt) ...
        b = float(w.norm())
        if b < 0.7 * before:  # ... repeated when cancellation was large (DGKS criterion)
            w = w - Qm.T @ (Qm @ w)
            b = float(w.norm())
        theta, S = _tridiagonal_eigh(alpha, beta)
        scale = max(np.abs(theta).max(), np.finfo(float).tiny)
        invariant = b <= 1e3 * eps * scale
        if j + 1 == max_iter:
            beta.append(b)
            break
        if steps is None and not invariant and j + 1 >= k:
            res = _error_bounds(theta, b * np.abs(S[-1]))
            wanted = []
            if "largest" in ends:
                wanted.append(res[::-1][:k])
            if "smallest" in ends:
                wanted.append(res[:k])
            if all((r <= tol * scale).all() for r in wanted):
                beta.append(b)
                converged = True
                break
        if invariant:
            # The Krylov space is invariant: its Ritz pairs are exact, but copies of repeated
            # eigenvalues lie outside it. Steps: stop (quadrature is exact). Otherwise go on
            # with a random vector orthogonal to the basis (T gets a zero off-diagonal).
            if steps is not None:
                break
            w = torch.randn(D, generator=restarts).to(device=v0.device, dtype=v0.dtype)
            for _ in range(2):
                w = w - Qm.T @ (Qm @ w)
            beta.append(0.0)
            Q.append(w / w.norm())
        else:
            beta.append(b)
            Q.append(w / b)
    bar.close()
    m = len(alpha)
    theta, S = _tridiagonal_eigh(alpha, beta[: m - 1])
    b_last = beta[m - 1] if len(beta) >= m else 0.0
    res_all = b_last * np.abs(S[-1])
    Qm = Q.view()[:m]
    out: dict[str, Any] = {"alpha": np.array(alpha), "beta": np.array(beta[: m - 1])}
    scale = max(np.abs(theta).max(), np.finfo(float).tiny)
    kk = min(k, m)
    for end in ends:
        idx = np.arange(m)[::-1][:kk] if end == "largest" else np.arange(m)[:kk]
        vecs = Qm.T @ torch.as_tensor(S[:, idx].copy(), dtype=Qm.dtype, device=Qm.device)
        out[end] = (theta[idx], vecs, res_all[idx])
    if not converged:
        bounds = _error_bounds(theta, res_all)
        idx = [np.arange(m)[::-1][:kk] if e == "largest" else np.arange(m)[:kk] for e in ends]
        converged = all(bool((bounds[i] <= tol * scale).all()) for i in idx)
    out["num_products"] = m
    out["converged"] = bool(converged)
    out["nodes"] = theta
    out["weights"] = S[0] ** 2
    return out


def _tridiagonal_eigh(alpha: list[float], beta: list[float]):
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal ``T``."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return np.array(alpha, dtype=float), np.ones((1, 1))
    return eigh_tridiagonal(np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float))


class _Basis:
    """Lanczos vectors in a preallocated ``[capacity, D]`` buffer (grown by doubling)."""

    def __init__(self, q0: Tensor, max_rows: int):
        self.buffer = torch.empty((min(max_rows, 32), q0.numel()), dtype=q0.dtype, device=q0.device)
        self.max_rows = max_rows
        self.buffer[0] = q0
        self.size = 1

    def __getitem__(self, j: int) -> Tensor:
        return self.buffer[j]

    def append(self, q: Tensor) -> None:
        if self.size == self.buffer.shape[0]:
            rows = min(2 * self.size, max(self.max_rows, self.size + 1))
            bigger = torch.empty((rows, self.buffer.shape[1]), dtype=q.dtype, device=q.device)
            bigger[: self.size] = self.buffer[: self.size]
            self.buffer = bigger
        self.buffer[self.size] = q
        self.size += 1

    def view(self) -> Tensor:
        return self.buffer[: self.size]


def _error_bounds(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    r"""Eigenvalue error bounds :math:`\min(r_i, r_i^2 / \delta_i)` of Ritz values.

    :math:`r_i` is the residual norm and :math:`\delta_i` the distance to the nearest other
    Ritz value (an estimate of the spectral gap; the quadratic bound is the Kato-Temple /
    Saad one, with the usual caveat that the Ritz gap may overestimate the true gap early on).
    """
    if len(theta) < 2:
        return residuals
    diffs = np.abs(theta[:, None] - theta[None, :])
    np.fill_diagonal(diffs, np.inf)
    gap = np.maximum(diffs.min(axis=1), np.finfo(float).tiny)
    return np.minimum(residuals, residuals**2 / gap)


def top_eigenpairs(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    k: int = 1,
    which: str = "largest",
    curvature: str | Curvature = "hessian",
    method: str = "lanczos",
    tol: float = 1e-8,
    max_iter: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> EigenpairsResult:
    """Per-domain extreme eigenpairs of the Hessian, GGN or empirical Fisher of the risk.

    Matrix-free: only curvature-vector products (:class:`~landscape.curvature.operators.CurvatureOperator`).

    Args:
        k: eigenpairs at each requested end.
        which: ``"largest"`` (algebraically largest, descending), ``"smallest"`` (most
            negative first, ascending) or ``"both"`` (one Krylov space serves both ends).
        curvature: ``"hessian"``, ``"ggn"`` or ``"ef"``.
        method: ``"lanczos"`` (ours: full re-orthogonalisation, convergence checked after
            every product; fewest products, see ``benchmarks/bench_curvature.py``) or
            ``"eigsh"`` (SciPy's ARPACK on the operator's ``to_scipy()``).
        tol: relative accuracy of the eigenvalues (``lanczos``: error bound
            :math:`\\min(r, r^2/\\delta) \\le tol \\cdot |\\theta|_{max}`, see :func:`lanczos`;
            eigenvectors are accurate to about :math:`r/\\delta`) or ARPACK's ``tol``
            (``eigsh``).
        max_iter: cap on products (``lanczos``) or restarts (``eigsh``).
        seed: seeds the start vector (the same for every domain).

    A warning is issued (and ``converged`` is ``False``) when the tolerance is not reached.
    """
    import time

    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both', got {which!r}")
    if method not in ("lanczos", "eigsh"):
        raise ValueError(f"unknown method {method!r}; use 'lanczos' or 'eigsh'")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    curvature = as_curvature(curvature)
    setup = _prepare(model, loss_func, domains, params, "top_eigenpairs")
    if k > setup.dim:
        raise ValueError(f"k={k} exceeds the number of selected parameters {setup.dim}")
    if method == "eigsh" and k >= setup.dim:
        raise ValueError(f"method='eigsh' needs k < D={setup.dim}; use method='lanczos'")
    result = EigenpairsResult(
        **setup.base(
            k=k,
            which=which,
            curvature=curvature.value,
            method=method,
            tol=float(tol),
            max_iter=max_iter,
            seed=int(seed),
        )
    )
    ends = ("largest", "smallest") if which == "both" else (which,)
    for name, data in setup.domains.items():
        with _operator(setup, data, curvature, False) as op:
            v0 = torch.randn(setup.dim, generator=torch.Generator().manual_seed(int(seed)))
            v0 = v0.to(device=op.device, dtype=op.dtype)
            start = time.perf_counter()
            if method == "lanczos":
                out = lanczos(op.matvec, v0, k, which, tol, max_iter, progress)
            else:
                out = _eigsh(op, v0, k, ends, tol, max_iter, progress)
            result.seconds[name] = time.perf_counter() - start
            result.num_products[name] = op.num_products
        res = []
        for end in ends:
            values, vectors, residuals = out[end]
            getattr(result, f"{end}_eigenvalues")[name] = np.asarray(values, dtype=np.float64)
            getattr(result, f"{end}_eigenvectors")[name] = _numpy(vectors)
            res.append(np.asarray(residuals, dtype=np.float64))
        result.residuals[name] = np.concatenate(res)
        result.converged[name] = bool(out["converged"])
        if not out["converged"]:
            warnings.warn(
                f"top_eigenpairs: domain {name!r} did not converge to tol={tol} in "
                f"{op.num_products} products (residuals {result.residuals[name]}); raise "
                "max_iter or tol",
                RuntimeWarning,
                stacklevel=2,
            )
    return result


def _eigsh(op: CurvatureOperator, v0: Tensor, k: int, ends, tol, max_iter, progress):
    from scipy.sparse.linalg import eigsh

    A = op.to_scipy()
    out: dict[str, Any] = {"converged": True}
    bar = tqdm(desc="eigsh", unit="product", disable=not progress, leave=False)
    before = op.num_products
    for end in ends:
        values, vectors = eigsh(
            A,
            k=k,
            which="LA" if end == "largest" else "SA",
            v0=_numpy(v0).astype(np.float64),
            tol=tol,
            maxiter=max_iter,
        )
        order = np.argsort(values)[::-1] if end == "largest" else np.argsort(values)
        values, vectors = values[order], vectors[:, order]
        V = torch.as_tensor(vectors, dtype=op.dtype, device=op.device)
        AV = op.matmat(V)
        residuals = (AV - V * torch.as_tensor(values, dtype=op.dtype, device=op.device)).norm(dim=0)
        out[end] = (values, V, _numpy(residuals).astype(np.float64))
    bar.update(op.num_products - before)
    bar.close()
    return out


# --------------------------------------------------------------------------- trace


def hessian_trace(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    method: str = "hutchinson",
    num_probes: int = 50,
    curvature: str | Curvature = "hessian",
    seed: int = 0,
    progress: bool = False,
) -> TraceResult:
    """Per-domain trace of the Hessian (or GGN / empirical Fisher) of the risk.

    * ``"hutchinson"``: :math:`\\operatorname{tr} A \\approx \\frac1m\\sum_j v_j^\\top A v_j`
      with ``num_probes`` Rademacher probes (seeded, shared by all domains); standard error
      :math:`s / \\sqrt m` with :math:`s` the sample standard deviation of
      :math:`v_j^\\top A v_j`.
    * ``"exact"``: the sum of the exact diagonal (BackPACK ``DiagHessian`` /
      ``DiagGGNExact``; for ``"ef"`` the sum of the squared per-sample gradients).
    """
    if method not in ("hutchinson", "exact"):
        raise ValueError(f"unknown method {method!r}; use 'hutchinson' or 'exact'")
    if method == "hutchinson" and (not isinstance(num_probes, int) or num_probes < 2):
        raise ValueError(
            f"num_probes must be an integer >= 2 (for a standard error), got {num_probes!r}"
        )
    curvature = as_curvature(curvature)
    setup = _prepare(model, loss_func, domains, params, "hessian_trace")
    settings: dict[str, Any] = {"method": method, "curvature": curvature.value}
    if method == "hutchinson":
        settings.update(num_probes=num_probes, seed=int(seed))
    result = TraceResult(**setup.base(**settings))
    if method == "exact":
        if curvature is Curvature.EF:
            gv = gradient_variance(setup.model, loss_func, setup.domains, params, centered=False)
            diags = gv.empirical_fisher
        else:
            m = "exact" if curvature is Curvature.HESSIAN else "ggn"
            diags = hessian_diagonal(setup.model, loss_func, setup.domains, params, m).diagonal
        for name in setup.domains:
            result.trace[name] = float(np.sum(diags[name], dtype=np.float64))
            result.standard_error[name] = 0.0
            result.num_products[name] = 0
        return result
    for name, data in setup.domains.items():
        with _operator(setup, data, curvature, progress) as op:
            probes = rademacher(op.dim, num_probes, int(seed), op.dtype, op.device)
            samples = np.array([float(v @ op.matvec(v)) for v in probes])
            result.num_products[name] = op.num_products
        result.samples[name] = samples
        result.trace[name] = float(samples.mean())
        result.standard_error[name] = float(samples.std(ddof=1) / math.sqrt(num_probes))
    return result


# --------------------------------------------------------------------------- density


def spectral_density(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    num_probes: int = 8,
    lanczos_steps: int = 64,
    curvature: str | Curvature = "hessian",
    num_points: int = 512,
    sigma: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SpectralDensityResult:
    """Per-domain spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    For each Rademacher probe :math:`v` (seeded, shared by all domains), ``lanczos_steps``
    Lanczos steps from :math:`v/\\|v\\|` give Ritz values :math:`\\theta_j` and weights
    :math:`w_j = (e_1^\\top s_j)^2`, a Gauss quadrature with
    :math:`\\sum_j w_j f(\\theta_j) \\approx v^\\top f(A) v / v^\\top v` (exact for
    polynomials of degree :math:`< 2m`). The density averages the probes:

    .. math:: \\rho(t) = \\frac1{n_v} \\sum_{v} \\sum_j w_j\\,
              \\mathcal N(t;\\theta_j, \\sigma^2),

    an estimate of :math:`\\frac1D\\sum_k \\mathcal N(t; \\lambda_k, \\sigma^2)`; ``sigma``
    defaults to 1% of the spectral range, on a grid of ``num_points`` points padded by
    ``5 sigma``.
    """
    for value, what in ((num_probes, "num_probes"), (lanczos_steps, "lanczos_steps")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be a positive integer, got {value!r}")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    curvature = as_curvature(curvature)
    setup = _prepare(model, loss_func, domains, params, "spectral_density")
    result = SpectralDensityResult(
        **setup.base(
            num_probes=num_probes,
            lanczos_steps=lanczos_steps,
            curvature=curvature.value,
            num_points=int(num_points),
            sigma=sigma,
            seed=int(seed),
        )
    )
    steps = min(lanczos_steps, setup.dim)
    for name, data in setup.domains.items():
        nodes = np.zeros((num_probes, steps))
        weights = np.zeros((num_probes, steps))
        with _operator(setup, data, curvature, progress) as op:
            probes = rademacher(op.dim, num_probes, int(seed), op.dtype, op.device)
            for i, v in enumerate(probes):
                out = lanczos(op.matvec, v, 1, "largest", steps=steps)
                m = out["num_products"]
                # an early invariant subspace leaves fewer nodes: pad with zero weights
                nodes[i, :m], weights[i, :m] = out["nodes"], out["weights"]
                nodes[i, m:] = out["nodes"][-1]
        lo, hi = float(nodes.min()), float(nodes.max())
        width = sigma if sigma is not None else max(0.01 * (hi - lo), 1e-12 * max(1.0, abs(hi)))
        grid = np.linspace(lo - 5 * width, hi + 5 * width, int(num_points))
        kernel = np.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / width) ** 2)
        kernel /= width * math.sqrt(2 * math.pi)
        result.nodes[name] = nodes
        result.weights[name] = weights
        result.grid[name] = grid
        result.density[name] = (kernel * weights[None]).sum(-1).mean(-1)
    return result


# --------------------------------------------------------------------------- comparison


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def principal_angles(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spans of ``U`` and ``V``.

    :math:`\\theta_i = \\arccos \\sigma_i(Q_U^\\top Q_V)` with orthonormal bases.
    """
    Qu, _ = np.linalg.qr(np.asarray(U, dtype=np.float64))
    Qv, _ = np.linalg.qr(np.asarray(V, dtype=np.float64))
    s = np.linalg.svd(Qu.T @ Qv, compute_uv=False)
    return np.sort(np.arccos(np.clip(s, -1.0, 1.0)))


def compare_domains(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    k: int = 5,
    diagonal_method: str | DiagonalMethod = "exact",
    centered: bool = True,
    num_probes: int = 100,
    curvature: str | Curvature = "hessian",
    seed: int = 0,
    progress: bool = False,
) -> ComparisonResult:
    """Compare two or more domains' gradient variances, curvature diagonals and eigenspaces.

    The quantities of the Fishr paper's Hessian-alignment analysis (docs/method.md section 5):
    for every pair (A, B), :math:`\\|v_A - v_B\\|^2` and :math:`\\cos(v_A, v_B)` between the
    gradient variances, the same between Hessian diagonals; for every domain the cosine
    between its variance and its Hessian diagonal (the premise Var :math:`\\approx` Hessian);
    and the principal angles between the domains' top-``k`` eigenspaces of ``curvature``
    (``k=0`` skips them). Stochastic estimators (Hutchinson diagonal, Lanczos start) use
    the same seed, hence the same probes, for every domain.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    setup = _prepare(model, loss_func, domains, params, "compare_domains", min_domains=2)
    method = DiagonalMethod(getattr(diagonal_method, "value", diagonal_method))
    gv = gradient_variance(
        setup.model, loss_func, setup.domains, params, centered=centered, progress=progress
    )
    hd = hessian_diagonal(
        setup.model,
        loss_func,
        setup.domains,
        params,
        method,
        num_probes=num_probes,
        seed=seed,
        progress=progress,
    )
    names = list(setup.domains)
    E = len(names)
    result = ComparisonResult(
        **setup.base(
            k=k,
            diagonal_method=method.value,
            centered=bool(centered),
            num_probes=int(num_probes),
            curvature=as_curvature(curvature).value,
            seed=int(seed),
        ),
        variance=gv.variance,
        diagonal=hd.diagonal,
    )
    vd, vc, dd, dc = (np.zeros((E, E)) for _ in range(4))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            va, vb = gv.variance[a].astype(np.float64), gv.variance[b].astype(np.float64)
            ha, hb = hd.diagonal[a].astype(np.float64), hd.diagonal[b].astype(np.float64)
            vd[i, j], vc[i, j] = float(np.sum((va - vb) ** 2)), _cosine(va, vb)
            dd[i, j], dc[i, j] = float(np.sum((ha - hb) ** 2)), _cosine(ha, hb)
    result.variance_distance, result.variance_cosine = vd, vc
    result.diagonal_distance, result.diagonal_cosine = dd, dc
    result.within_cosine = np.array(
        [
            _cosine(gv.variance[n].astype(np.float64), hd.diagonal[n].astype(np.float64))
            for n in names
        ]
    )
    angles = np.zeros((E, E, k))
    if k > 0:
        eig = top_eigenpairs(
            setup.model,
            loss_func,
            setup.domains,
            params,
            k,
            curvature=curvature,
            tol=1e-12,  # eigenvectors accurate to ~1e-6 relative to the gaps
            seed=seed,
            progress=progress,
        )
        result.eigenvalues = eig.largest_eigenvalues
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                angles[i, j] = principal_angles(
                    eig.largest_eigenvectors[a], eig.largest_eigenvectors[b]
                )
    result.principal_angles = angles
    return result
