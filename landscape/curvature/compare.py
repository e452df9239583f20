"""Cross-domain comparison of gradient variances, curvature diagonals and eigenspaces."""

from __future__ import annotations

import numpy as np
from torch import nn

from landscape.curvature._setup import check_positive_int, prepare
from landscape.curvature.diagonals import (
    DiagonalMethod,
    DiagonalOptions,
    _as_method,
    diagonal_result,
)
from landscape.curvature.lanczos import resolve_tol
from landscape.curvature.operators import Curvature, as_curvature
from landscape.curvature.results import ComparisonResult
from landscape.curvature.spectrum import EigenOptions, eigenpairs_result
from landscape.curvature.variance import variance_result
from landscape.domains import Domains
from landscape.params import ParamSpec


def cosine(u, v) -> float:
    """Cosine :math:`u^\\top v / (\\|u\\| \\|v\\|)` of two vectors (arrays or tensors, any
    shape, flattened), computed in float64.

    Returns ``nan`` when either vector is zero: the angle is undefined, and a zero vector is
    neither aligned (1) nor orthogonal (0) to anything.
    """
    a = np.asarray(_array(u), dtype=np.float64).reshape(-1)
    b = np.asarray(_array(v), dtype=np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def _array(x):
    detach = getattr(x, "detach", None)
    return detach().to("cpu").numpy() if detach is not None else x


def principal_angles(U: np.ndarray, V: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spans of ``U`` and ``V``.

    :math:`\\theta_i = \\arccos \\sigma_i(Q_U^\\top Q_V)` with orthonormal bases, computed by
    :func:`scipy.linalg.subspace_angles` (accurate for small angles too).
    """
    from scipy.linalg import subspace_angles

    U = np.asarray(U, dtype=np.float64)
    V = np.asarray(V, dtype=np.float64)
    return np.sort(subspace_angles(U, V))


def compare_domains(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    k: int = 5,
    diagonal_method: str | DiagonalMethod = "auto",
    centered: bool = True,
    num_probes: int = 100,
    curvature: str | Curvature = "hessian",
    seed: int = 0,
    progress: bool = False,
) -> ComparisonResult:
    """Compare two or more domains' gradient variances, curvature diagonals and eigenspaces.

    The quantities of the Fishr paper's Hessian-alignment analysis (docs/method.md section 5):
    for every pair (A, B), :math:`\\|v_A - v_B\\|^2` and :math:`\\cos(v_A, v_B)` between the
    gradient variances, the same between Hessian diagonals (``diagonal_method``, see
    :func:`~landscape.curvature.diagonals.hessian_diagonal`); for every domain the cosine
    between its variance and its Hessian diagonal (the premise Var :math:`\\approx` Hessian);
    and the principal angles between the domains' top-``k`` eigenspaces of ``curvature``
    (``k=0`` skips them). Stochastic estimators (Hutchinson diagonal, Lanczos start) use
    the same seed, hence the same probes, for every domain. Cosines are :func:`cosine`
    (``nan`` for a zero vector).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    setup = prepare(model, loss_func, domains, params, "compare_domains", min_domains=2)
    method = _as_method(diagonal_method)
    curvature = as_curvature(curvature)
    num_probes = check_positive_int(num_probes, "num_probes")
    gv = variance_result(setup, centered, "auto", None, progress)
    options = DiagonalOptions(num_probes=num_probes, seed=int(seed), progress=progress)
    hd = diagonal_result(setup, method, options)
    names = list(setup.domains)
    result = ComparisonResult(
        **setup.base(
            k=k, diagonal_method=hd.settings["method"], centered=bool(centered),
            num_probes=num_probes, curvature=curvature.value, seed=int(seed),
        ),
        variance=gv.variance,
        diagonal=hd.diagonal,
    )  # fmt: skip
    v = {n: gv.variance[n].astype(np.float64) for n in names}
    h = {n: hd.diagonal[n].astype(np.float64) for n in names}
    result.variance_distance = _pairwise(names, lambda a, b: float(np.sum((v[a] - v[b]) ** 2)))
    result.variance_cosine = _pairwise(names, lambda a, b: cosine(v[a], v[b]))
    result.diagonal_distance = _pairwise(names, lambda a, b: float(np.sum((h[a] - h[b]) ** 2)))
    result.diagonal_cosine = _pairwise(names, lambda a, b: cosine(h[a], h[b]))
    result.within_cosine = np.array([cosine(v[n], h[n]) for n in names])
    result.principal_angles = np.zeros((len(names), len(names), k))
    if k > 0:
        # eigenvectors accurate to ~1e-6 relative to the gaps in float64 (tol 1e-12); float32
        # products resolve eigenvalues to ~1e-7 of lambda_max only (resolve_tol: 1e-6)
        tol = resolve_tol(None, setup.like.dtype, float64=1e-12)
        options = EigenOptions(k=k, curvature=curvature, tol=tol, seed=int(seed), progress=progress)
        eig = eigenpairs_result(setup, options)
        vectors = eig.largest_eigenvectors
        result.eigenvalues = eig.largest_eigenvalues
        result.principal_angles = np.stack(
            [np.stack([principal_angles(vectors[a], vectors[b]) for b in names]) for a in names]
        )
    return result


def _pairwise(names: list[str], value) -> np.ndarray:
    """``[E, E]`` matrix of ``value(a, b)`` over ordered pairs of domains."""
    return np.array([[value(a, b) for b in names] for a in names], dtype=np.float64)
