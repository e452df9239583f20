"""Per-domain spectra of a curvature matrix: extreme eigenpairs and spectral densities.

Both run on the domain's :class:`~landscape.curvature.operators.CurvatureOperator` (products
only) and on :func:`landscape.curvature.lanczos.lanczos`, the one Lanczos of the package;
``top_eigenpairs(method="eigsh")`` runs SciPy's ARPACK on the same products instead.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.curvature._setup import Setup, check_positive_int, numpy, prepare, rademacher
from landscape.curvature.lanczos import lanczos, resolve_tol
from landscape.curvature.operators import Curvature, CurvatureOperator, as_curvature
from landscape.curvature.results import EigenpairsResult, SpectralDensityResult
from landscape.domains import Domains
from landscape.params import ParamSpec


def top_eigenpairs(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    k: int = 1,
    which: str = "largest",
    curvature: str | Curvature = "hessian",
    method: str = "lanczos",
    tol: float | None = None,
    max_iter: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> EigenpairsResult:
    """Per-domain extreme eigenpairs of the Hessian, GGN or empirical Fisher of the risk.

    Matrix-free: only curvature-vector products
    (:class:`~landscape.curvature.operators.CurvatureOperator`).

    Args:
        k: eigenpairs at each requested end.
        which: ``"largest"`` (algebraically largest, descending), ``"smallest"`` (most
            negative first, ascending) or ``"both"`` (one Krylov space serves both ends).
        curvature: ``"hessian"``, ``"ggn"`` or ``"ef"``.
        method: ``"lanczos"`` (ours: full re-orthogonalisation with float64 scalars,
            convergence checked on true residuals; fewest products, see
            ``benchmarks/bench_curvature.py``) or ``"eigsh"`` (SciPy's ARPACK on the
            operator's ``to_scipy()``).
        tol: relative accuracy of the eigenvalues (``lanczos``: error bound
            :math:`\\min(r, r^2/\\delta) + \\eta \\le tol \\cdot |\\theta|_{max}` with true
            residuals :math:`r` and the operator's noise level :math:`\\eta`, see
            :func:`~landscape.curvature.lanczos.lanczos`; eigenvectors are accurate to about
            :math:`r/\\delta`) or ARPACK's ``tol`` (``eigsh``). In float32 the noise level is
            about :math:`10^{-7}` of :math:`\\lambda_{max}`: a smaller ``tol`` ends with
            ``converged=False``. ``None`` (default): 1e-8 for a float64 model, 1e-6 for
            float32 (:func:`~landscape.curvature.lanczos.resolve_tol`); the ``tol`` used is
            recorded in ``settings["tol"]``.
        max_iter: cap on Krylov steps (``lanczos``) or restarts (``eigsh``).
        seed: seeds the start vector (the same for every domain).

    ``residuals`` are the true :math:`\\|A u - \\lambda u\\|` of the returned pairs. A warning
    is issued (and ``converged`` is ``False``) when the tolerance is not reached.
    """
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both', got {which!r}")
    if method not in ("lanczos", "eigsh"):
        raise ValueError(f"unknown method {method!r}; use 'lanczos' or 'eigsh'")
    k = check_positive_int(k, "k")
    resolve_tol(tol, torch.float64)  # a bad tol fails before any work
    setup = prepare(model, loss_func, domains, params, "top_eigenpairs")
    tol = resolve_tol(tol, setup.like.dtype)
    options = EigenOptions(k, which, as_curvature(curvature), method, tol, max_iter, int(seed),
                           progress)  # fmt: skip
    return eigenpairs_result(setup, options)


@dataclass(frozen=True)
class EigenOptions:
    """Resolved options of :func:`top_eigenpairs` (see its arguments)."""

    k: int = 1
    which: str = "largest"
    curvature: Curvature = Curvature.HESSIAN
    method: str = "lanczos"
    tol: float = 1e-8
    max_iter: int | None = None
    seed: int = 0
    progress: bool = False


def eigenpairs_result(setup: Setup, o: EigenOptions) -> EigenpairsResult:
    """:func:`top_eigenpairs` on resolved inputs."""
    if o.k > setup.dim:
        raise ValueError(f"k={o.k} exceeds the number of selected parameters {setup.dim}")
    if o.method == "eigsh" and o.k >= setup.dim:
        raise ValueError(f"method='eigsh' needs k < D={setup.dim}; use method='lanczos'")
    result = EigenpairsResult(
        **setup.base(
            k=o.k, which=o.which, curvature=o.curvature.value, method=o.method, tol=o.tol,
            max_iter=o.max_iter, seed=o.seed,
        )
    )  # fmt: skip
    ends = ("largest", "smallest") if o.which == "both" else (o.which,)
    for name, data in setup.domains.items():
        with setup.operator(data, o.curvature) as op:
            v0 = torch.randn(setup.dim, generator=torch.Generator().manual_seed(o.seed))
            v0 = v0.to(device=op.device, dtype=op.dtype)
            start = time.perf_counter()
            if o.method == "lanczos":
                out = lanczos(op.matvec, v0, o.k, o.which, o.tol, o.max_iter, o.progress)
            else:
                out = _eigsh(op, v0, o.k, ends, o.tol, o.max_iter, o.progress)
            result.seconds[name] = time.perf_counter() - start
            result.num_products[name] = op.num_products
        _record(result, name, out, ends, o.tol)
    return result


def _record(result: EigenpairsResult, name: str, out: dict, ends, tol: float) -> None:
    """Store one domain's pairs, residuals and convergence; warn when not converged."""
    res = []
    for end in ends:
        values, vectors, residuals = out[end]
        getattr(result, f"{end}_eigenvalues")[name] = np.asarray(values, dtype=np.float64)
        getattr(result, f"{end}_eigenvectors")[name] = numpy(vectors)
        res.append(np.asarray(residuals, dtype=np.float64))
    result.residuals[name] = np.concatenate(res)
    result.converged[name] = bool(out["converged"])
    if not out["converged"]:
        warnings.warn(
            f"top_eigenpairs: domain {name!r} did not converge to tol={tol} in "
            f"{result.num_products[name]} products (residuals {result.residuals[name]}); raise "
            "max_iter or tol (in float32, tol below about 1e-6 is under the products' noise)",
            RuntimeWarning,
            stacklevel=4,
        )


def _eigsh(op: CurvatureOperator, v0: Tensor, k: int, ends, tol, max_iter, progress):
    """ARPACK's extreme eigenpairs of ``op`` with true residuals (float64 arithmetic)."""
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
            v0=numpy(v0).astype(np.float64),
            tol=tol,
            maxiter=max_iter,
        )
        order = np.argsort(values)[::-1] if end == "largest" else np.argsort(values)
        values, vectors = values[order], vectors[:, order]
        V = torch.as_tensor(vectors, dtype=op.dtype, device=op.device)
        AV = op.matmat(V).to(torch.float64)
        V64 = V.to(torch.float64)
        lam = torch.as_tensor(values, dtype=torch.float64, device=op.device)
        residuals = (AV - V64 * lam).norm(dim=0)
        out[end] = (values, V, numpy(residuals))
    bar.update(op.num_products - before)
    bar.close()
    return out


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
    ``5 sigma``. A probe's run ends early only when its Krylov space is invariant to the
    operator's noise level (then the quadrature is exact); its missing nodes get zero weight.
    """
    num_probes = check_positive_int(num_probes, "num_probes")
    lanczos_steps = check_positive_int(lanczos_steps, "lanczos_steps")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    curvature = as_curvature(curvature)
    setup = prepare(model, loss_func, domains, params, "spectral_density")
    result = SpectralDensityResult(
        **setup.base(
            num_probes=num_probes, lanczos_steps=lanczos_steps, curvature=curvature.value,
            num_points=int(num_points), sigma=sigma, seed=int(seed),
        )
    )  # fmt: skip
    steps = min(lanczos_steps, setup.dim)
    for name, data in setup.domains.items():
        nodes = np.zeros((num_probes, steps))
        weights = np.zeros((num_probes, steps))
        with setup.operator(data, curvature, progress) as op:
            probes = rademacher(op.dim, num_probes, int(seed), op.dtype, op.device)
            for i, v in enumerate(probes):
                out = lanczos(op.matvec, v, 1, "largest", steps=steps)
                m = out["steps"]
                nodes[i, :m], weights[i, :m] = out["nodes"], out["weights"]
                nodes[i, m:] = out["nodes"][-1]
        result.nodes[name], result.weights[name] = nodes, weights
        result.grid[name], result.density[name] = _smooth(nodes, weights, sigma, int(num_points))
    return result


def _smooth(nodes: np.ndarray, weights: np.ndarray, sigma: float | None, num_points: int):
    """Grid and Gaussian-smoothed density of the quadrature (mean over probes)."""
    lo, hi = float(nodes.min()), float(nodes.max())
    width = sigma if sigma is not None else max(0.01 * (hi - lo), 1e-12 * max(1.0, abs(hi)))
    grid = np.linspace(lo - 5 * width, hi + 5 * width, num_points)
    kernel = np.exp(-0.5 * ((grid[:, None, None] - nodes[None]) / width) ** 2)
    kernel /= width * math.sqrt(2 * math.pi)
    return grid, (kernel * weights[None]).sum(-1).mean(-1)
