r"""The inconsistency score :math:`I^\varepsilon` and its parts (docs/method.md section 3).

Parascandolo et al. (2021) define, for weights :math:`\theta^*` and :math:`\varepsilon > 0`,

.. math::

    I^\varepsilon(\theta^*) = \max_{(A, B)} \max_{\theta \in N_A}
        |R_B(\theta) - R_A(\theta^*)|,

with :math:`N_A` the largest path-connected region around :math:`\theta^*` where
:math:`|R_A(\theta) - R_A(\theta^*)| \le \varepsilon`. Fishr (Rame et al. 2022) uses its
second-order form, with :math:`\theta` the displacement from :math:`\theta^*` and
:math:`H_e` the curvature of domain :math:`e` at :math:`\theta^*`:

.. math::

    I^\varepsilon \approx \max_{(A, B)} \Big[ R_B - R_A
        + \max_{\frac12 \theta^\top H_A \theta \le \varepsilon} \tfrac12 \theta^\top H_B \theta
        \Big], \qquad
    \max_{\frac12 \theta^\top H_A \theta \le \varepsilon} \tfrac12 \theta^\top H_B \theta
        = \varepsilon \max(\lambda_{\max}(H_B, H_A), 0),

where :math:`\lambda_{\max}(H_B, H_A)` is the largest generalized eigenvalue of
:math:`H_B v = \lambda H_A v` (:math:`H_A` positive definite). With :math:`v^\top H_A v = 1`
the maximiser is :math:`\theta = \sqrt{2\varepsilon}\, v` (on the ellipsoid). The
:math:`\max(\cdot, 0)` matters only when :math:`H_B` is negative definite relative to
:math:`H_A`: then :math:`\theta = 0` is the maximiser. The pair :math:`(A, A)` gives exactly
:math:`\varepsilon`, so :math:`I^\varepsilon \ge \varepsilon`.

This module has three layers:

* the linear algebra on a pair of curvatures (:func:`generalized_eig_dense`,
  :func:`generalized_eig_matrix_free`, :func:`generalized_eig_diagonal`), each returning a
  :class:`GeneralizedEig`, with the trouble spots of docs/method.md section 3 (``H_A`` singular or
  indefinite) detected and either reported as a :class:`NotPositiveDefiniteError` carrying a
  report, or handled by the remedy the caller chose (relative damping, restriction to the
  top-``k`` eigenspace of ``H_A``);
* the empirical check on the true losses (:func:`line_check`, :func:`constrained_search`):
  along the maximiser the step where ``R_A`` rises by ``ε`` and ``R_B`` there, and a
  projected ascent on ``R_B`` under ``|R_A - R_A(θ*)| ≤ ε`` that gives a lower bound of the
  original definition;
* :func:`inconsistency_score`, which runs all of it over every ordered pair of domains and
  returns an :class:`InconsistencyResult` (save / load, readable table).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from landscape.io import SavedResult

METHODS = ("dense", "matrix-free", "diagonal")
CURVATURES = ("hessian", "ggn", "ef")
REMEDIES = (None, "damping", "top-k")
DIAGONAL_SOURCES = ("hessian", "variance")
SOLVERS = ("lobpcg", "eigsh")

#: ``λ_min(H_A) ≤ PD_RTOL · λ_max(H_A)`` counts as singular.
PD_RTOL = 1e-8


# --------------------------------------------------------------------------------------------
# Reports of the trouble spots
# --------------------------------------------------------------------------------------------


class NotPositiveDefiniteError(ValueError):
    """``H_A`` is singular or indefinite where the method needs it positive definite.

    The message is one line naming the domain, its extreme eigenvalues and the remedy to pass.
    ``report`` is the :class:`DefinitenessReport` with the unbounded direction.
    """

    def __init__(self, message: str, report: DefinitenessReport):
        super().__init__(message)
        self.report = report


@dataclass
class DefinitenessReport:
    """What is known about the definiteness of one curvature matrix ``H_A``.

    Attributes:
        status: ``"positive definite"``, ``"singular"`` (``λ_min ≤ rtol·λ_max``, no negative
            eigenvalue), ``"indefinite"`` (a negative eigenvalue below ``-rtol·λ_max``),
            ``"singular, shared null space"`` (dense only: every other ``H_B`` vanishes on the
            null space of ``H_A``, so the maximum is finite and exact on its range), or
            ``"not disproved"`` (matrix-free: Lanczos found no eigenvalue at or below
            ``rtol·λ_max``; this is evidence, not proof).
        min_eigenvalue: smallest eigenvalue (dense: exact; matrix-free: Lanczos Ritz value,
            an upper bound of the true one).
        max_eigenvalue: largest eigenvalue (matrix-free: Ritz value, a lower bound).
        eigenvalues: the smallest few eigenvalues (ascending) [m].
        unbounded_direction: unit vector ``u`` with the smallest Rayleigh quotient ``uᵀH_Au``
            (the direction along which ``½θᵀH_Aθ ≤ ε`` is unbounded when not positive
            definite) [D], or ``None`` when positive definite.
        curvature_along: ``uᵀH_Bu`` for every other domain ``B``: when ``uᵀH_Au ≤ 0`` and
            ``uᵀH_Bu > 0`` the quadratic maximum of the pair is ``+inf`` (certified).
        unbounded_for: the domains ``B`` whose pair ``(A, B)`` is certified ``+inf``.
        rtol: the relative threshold used.
        how: ``"eigh"`` (dense), ``"lanczos(m)"`` or ``"diagonal"``.
    """

    domain: str
    status: str
    min_eigenvalue: float
    max_eigenvalue: float
    eigenvalues: np.ndarray
    unbounded_direction: np.ndarray | None = None
    curvature_along: dict[str, float] = field(default_factory=dict)
    unbounded_for: list[str] = field(default_factory=list)
    rtol: float = PD_RTOL
    how: str = "eigh"

    @property
    def positive_definite(self) -> bool:
        return self.status in ("positive definite", "not disproved")

    def as_dict(self, with_direction: bool = False) -> dict[str, Any]:
        """A JSON-friendly summary (the direction only when asked: it is ``[D]``)."""
        out = {
            "domain": self.domain,
            "status": self.status,
            "min_eigenvalue": float(self.min_eigenvalue),
            "max_eigenvalue": float(self.max_eigenvalue),
            "eigenvalues": np.asarray(self.eigenvalues, dtype=np.float64),
            "curvature_along": {k: float(v) for k, v in self.curvature_along.items()},
            "unbounded_for": list(self.unbounded_for),
            "rtol": float(self.rtol),
            "how": self.how,
        }
        if with_direction and self.unbounded_direction is not None:
            out["unbounded_direction"] = np.asarray(self.unbounded_direction)
        return out

    def message(self, *, what: str = "H_A", remedies: bool = True) -> str:
        """One line: the problem, the eigenvalues, the consequence and the remedies."""
        text = (
            f"{what} of domain {self.domain!r} is {self.status} "
            f"(smallest eigenvalue {self.min_eigenvalue:.3g}, largest {self.max_eigenvalue:.3g}"
            f", {self.how}): the set ½θᵀH_Aθ ≤ ε is unbounded"
        )
        if self.unbounded_for:
            text += (
                " and the quadratic maximum is +inf for the pair(s) "
                + ", ".join(f"({self.domain!r}, {b!r})" for b in self.unbounded_for)
                + " (H_B curves upward along the unbounded direction)"
            )
        if remedies:
            text += (
                "; pass remedy='damping' (adds damping·λ_max(H_A) to H_A) or remedy='top-k' "
                "(restricts to the top-k eigenspace of H_A), CLI: --remedy damping|top-k"
            )
        return text


def _report_from_spectrum(
    domain: str,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray | None,
    rtol: float,
    how: str,
) -> DefinitenessReport:
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lo, hi = float(lam.min()), float(lam.max())
    scale = max(hi, 0.0)
    if hi <= 0:
        status = "indefinite" if lo < 0 else "singular"
    elif lo < -rtol * scale:
        status = "indefinite"
    elif lo <= rtol * scale:
        status = "singular"
    else:
        status = "positive definite"
    u = None
    if status != "positive definite" and eigenvectors is not None:
        u = np.asarray(eigenvectors[:, int(np.argmin(lam))], dtype=np.float64)
        u = u / np.linalg.norm(u)
    return DefinitenessReport(
        domain=domain,
        status=status,
        min_eigenvalue=lo,
        max_eigenvalue=hi,
        eigenvalues=np.sort(lam)[:10],
        unbounded_direction=u,
        rtol=rtol,
        how=how,
    )


# --------------------------------------------------------------------------------------------
# Generalized eigenproblems
# --------------------------------------------------------------------------------------------


@dataclass
class GeneralizedEig:
    r"""The largest generalized eigenpair of ``(H_B, H̃_A)`` and how it was obtained.

    ``H̃_A`` is ``H_A`` after the remedy (``H_A + δI`` for damping, ``H_A`` restricted to the
    span of its top-``k`` eigenvectors for top-k, ``H_A`` itself otherwise).

    Attributes:
        value: :math:`\lambda_{\max}(H_B, \tilde H_A)` (may be negative).
        vector: generalized eigenvector ``v`` [D], normalised so that ``vᵀH̃_Av = 1``
            (then ``√(2ε)·v`` lies on the ellipsoid ``½θᵀH̃_Aθ = ε``).
        method: ``"dense"``, ``"matrix-free"`` or ``"diagonal"``.
        solver: ``"eigh"``, ``"lobpcg"``, ``"eigsh"``, ``"top-k"`` or ``"ratio"``.
        remedy: ``None``, ``"damping"``, ``"top-k"`` or ``"range"`` (dense, exact: ``H_A``
            singular but every ``H_B`` vanishes on its null space).
        delta: absolute damping ``δ`` added to ``H_A`` (0 without damping).
        subspace_dim: dimension of the space the maximum is taken over.
        products_a, products_b: curvature-vector products spent on ``H_A`` and ``H_B``.
        iterations: solver iterations (0 for direct solvers).
        residual: relative residual ``‖H_Bv − λH̃_Av‖ / (‖H_Bv‖ + |λ|‖H̃_Av‖)``.
        converged: whether the iterative solver met its tolerance.
        seconds: wall-clock time of the solve.
    """

    value: float
    vector: np.ndarray
    method: str
    solver: str
    remedy: str | None = None
    delta: float = 0.0
    subspace_dim: int = 0
    products_a: int = 0
    products_b: int = 0
    iterations: int = 0
    residual: float = 0.0
    converged: bool = True
    seconds: float = 0.0

    def curvature_term(self, epsilon: float | np.ndarray) -> float | np.ndarray:
        r""":math:`\varepsilon \max(\lambda_{\max}, 0)`, the inner quadratic maximum."""
        term = np.asarray(epsilon, dtype=np.float64) * max(self.value, 0.0)
        return float(term) if term.ndim == 0 else term

    def maximiser(self, epsilon: float) -> np.ndarray:
        r"""The displacement :math:`\sqrt{2\varepsilon}\,v` on the ellipsoid (0 if
        :math:`\lambda_{\max} \le 0`)."""
        if self.value <= 0:
            return np.zeros_like(self.vector)
        return math.sqrt(2.0 * float(epsilon)) * self.vector


def _check_remedy(remedy, damping, k):
    if remedy not in REMEDIES:
        raise ValueError(f"unknown remedy {remedy!r}; use None, 'damping' or 'top-k'")
    if remedy == "damping" and not (isinstance(damping, int | float) and damping > 0):
        raise ValueError(
            f"damping must be a positive number (relative to λ_max(H_A)), got {damping!r}"
        )
    if remedy == "top-k" and not (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
        raise ValueError(f"k must be a positive integer for remedy='top-k', got {k!r}")


def _as_symmetric(H, name: str) -> np.ndarray:
    if hasattr(H, "detach"):
        H = H.detach().cpu().numpy()
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be a square matrix [D, D], got shape {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError(f"{name} has NaN or infinite entries; check the loss at θ*")
    return 0.5 * (H + H.T)


class DenseCurvature:
    r"""The eigendecomposition :math:`H_A = Q \Lambda Q^\top` of one dense curvature matrix,
    reused for every pair ``(A, ·)``.

    For a pair, with :math:`S` the eigen-indices kept and :math:`\tilde\Lambda` the (damped)
    eigenvalues, :math:`C = \tilde\Lambda_S^{-1/2} Q_S^\top H_B Q_S \tilde\Lambda_S^{-1/2}`;
    :math:`\lambda_{\max}(C) = \lambda_{\max}(H_B, \tilde H_A)` and, with :math:`w` its unit
    eigenvector, :math:`v = Q_S \tilde\Lambda_S^{-1/2} w` satisfies :math:`v^\top \tilde H_A v = 1`.
    Without remedy and with :math:`H_A` positive definite this is ``scipy.linalg.eigh(H_B,
    H_A)`` (the tests check it).
    """

    def __init__(self, H_A, domain: str = "A", rtol: float = PD_RTOL):
        self.H = _as_symmetric(H_A, f"H_A of domain {domain!r}")
        self.domain = domain
        self.rtol = rtol
        self.eigenvalues, self.eigenvectors = scipy.linalg.eigh(self.H)
        self.report = _report_from_spectrum(
            domain, self.eigenvalues, self.eigenvectors, rtol, "eigh"
        )

    @property
    def dim(self) -> int:
        return self.H.shape[0]

    def null_space(self) -> np.ndarray:
        """Eigenvectors with ``λ ≤ rtol·λ_max`` (including negative ones) [D, m]."""
        keep = self.eigenvalues <= self.rtol * max(self.eigenvalues.max(), 0.0)
        return self.eigenvectors[:, keep]

    def inspect(self, others: Mapping[str, np.ndarray]) -> DefinitenessReport:
        """Complete :attr:`report` with the curvature of each ``H_B`` along the unbounded
        direction, and detect a null space shared with every ``H_B`` (exact restriction)."""
        rep = self.report
        if rep.status == "positive definite":
            return rep
        u = rep.unbounded_direction
        rep.curvature_along = {b: float(u @ H_B @ u) for b, H_B in others.items()}
        scale_b = {b: max(np.abs(H_B).max(), 1e-300) for b, H_B in others.items()}
        rep.unbounded_for = [
            b for b, c in rep.curvature_along.items() if c > self.rtol * scale_b[b]
        ]
        if rep.status == "singular" and others:
            N = self.null_space()
            shared = all(
                np.linalg.norm(H_B @ N, ord=2) <= self.rtol * np.linalg.norm(H_B, ord=2)
                for H_B in others.values()
            )
            if shared:
                rep.status = "singular, shared null space"
        return rep

    def solve(self, H_B, *, remedy=None, damping: float = 1e-3, k: int | None = None):
        """The largest generalized eigenpair of ``(H_B, H̃_A)``; see the class docstring.

        Raises:
            NotPositiveDefiniteError: ``H_A`` is not positive definite and no remedy applies.
            ValueError: the remedy cannot make the problem well-posed (damping below
                ``|λ_min|``, ``k`` above the number of positive eigenvalues).
        """
        _check_remedy(remedy, damping, k)
        t0 = time.perf_counter()
        H_B = _as_symmetric(H_B, "H_B")
        if H_B.shape != self.H.shape:
            raise ValueError(f"H_B has shape {H_B.shape}, H_A has {self.H.shape}")
        lam, Q = self.eigenvalues, self.eigenvectors
        lam_max = float(lam.max())
        status = self.report.status
        delta = 0.0
        used = remedy
        if remedy is None:
            if status == "positive definite":
                keep = np.arange(lam.size)
            elif status == "singular, shared null space":
                keep = np.flatnonzero(lam > self.rtol * lam_max)
                used = "range"
            else:
                raise NotPositiveDefiniteError(self.report.message(), self.report)
            scaled = lam[keep]
        elif remedy == "damping":
            delta = float(damping) * lam_max
            if lam_max <= 0:
                raise ValueError(
                    f"H_A of domain {self.domain!r} has no positive eigenvalue "
                    f"(largest {lam_max:.3g}); damping relative to λ_max(H_A) is undefined"
                )
            if lam.min() + delta <= self.rtol * (lam_max + delta):
                raise ValueError(
                    f"damping {damping:g}·λ_max(H_A) = {delta:.3g} does not make H_A of domain "
                    f"{self.domain!r} positive definite (smallest eigenvalue {lam.min():.3g}); "
                    f"use damping > {-lam.min() / lam_max:.3g} or remedy='top-k'"
                )
            keep = np.arange(lam.size)
            scaled = lam + delta
        else:  # top-k
            positive = int(np.sum(lam > self.rtol * max(lam_max, 0.0)))
            if k > positive:
                raise ValueError(
                    f"k={k} exceeds the {positive} positive eigenvalues of H_A of domain "
                    f"{self.domain!r}; use k <= {positive}"
                )
            keep = np.arange(lam.size - k, lam.size)
            scaled = lam[keep]
        W = Q[:, keep] / np.sqrt(scaled)  # [D, m], W^T H̃_A W = I
        C = W.T @ H_B @ W
        C = 0.5 * (C + C.T)
        mu, w = scipy.linalg.eigh(C, subset_by_index=[C.shape[0] - 1, C.shape[0] - 1])
        v = W @ w[:, 0]
        value = float(mu[0])
        HA_v = (
            self.H @ v + delta * v
            if used != "top-k"
            else Q[:, keep] @ (scaled * (Q[:, keep].T @ v))
        )
        res = np.linalg.norm(
            (H_B @ v - value * HA_v)
            if used in (None, "damping")
            else (C @ w[:, 0] - value * w[:, 0])
        )
        denom = np.linalg.norm(H_B @ v) + abs(value) * np.linalg.norm(HA_v)
        return GeneralizedEig(
            value=value,
            vector=v,
            method="dense",
            solver="eigh",
            remedy=used,
            delta=delta,
            subspace_dim=int(keep.size),
            residual=float(res / denom) if denom > 0 else 0.0,
            seconds=time.perf_counter() - t0,
        )


def generalized_eig_dense(
    H_B,
    H_A,
    *,
    remedy: str | None = None,
    damping: float = 1e-3,
    k: int | None = None,
    rtol: float = PD_RTOL,
    domain: str = "A",
) -> GeneralizedEig:
    r"""Largest generalized eigenpair of two dense symmetric matrices, in float64.

    .. math:: H_B v = \lambda H_A v, \qquad v^\top H_A v = 1.

    Args:
        H_B, H_A: symmetric ``[D, D]`` arrays or tensors (symmetrised, cast to float64).
        remedy: ``None`` (``H_A`` must be positive definite, or singular with a null space on
            which ``H_B`` vanishes), ``"damping"`` (``H_A + δI``, ``δ = damping·λ_max(H_A)``)
            or ``"top-k"`` (restrict ``θ`` to the span of the ``k`` leading eigenvectors of
            ``H_A``).
        damping: relative damping for ``remedy="damping"``.
        k: subspace size for ``remedy="top-k"``.
        rtol: ``λ_min ≤ rtol·λ_max`` counts as singular.
        domain: name of ``A`` for messages.

    Raises:
        NotPositiveDefiniteError: ``H_A`` singular or indefinite and ``remedy=None``; its
            ``report`` holds the eigenvalues and the unbounded direction.

    Example:
        >>> import numpy as np
        >>> eig = generalized_eig_dense(np.diag([2.0, 1.0]), np.diag([1.0, 4.0]))
        >>> round(eig.value, 12), round(eig.curvature_term(0.1), 12)
        (2.0, 0.2)
    """
    H_B = _as_symmetric(H_B, "H_B")
    dense = DenseCurvature(H_A, domain=domain, rtol=rtol)
    dense.inspect({"B": H_B})
    return dense.solve(H_B, remedy=remedy, damping=damping, k=k)


def generalized_eig_diagonal(
    h_B,
    h_A,
    *,
    remedy: str | None = None,
    damping: float = 1e-3,
    k: int | None = None,
    rtol: float = PD_RTOL,
    domain: str = "A",
) -> GeneralizedEig:
    r"""The diagonal approximation: :math:`\lambda = \max_k h_{B,k} / h_{A,k}`.

    With diagonal curvatures the generalized eigenvectors are the coordinate axes and the
    maximiser is :math:`\theta = \sqrt{2\varepsilon / h_{A,k}}\, e_k`. Coordinates where both
    ``|h_A,k|`` and ``|h_B,k|`` are at or below ``rtol`` times their largest magnitude are flat
    for both domains and contribute nothing (they are skipped).

    Args:
        h_B, h_A: diagonals ``[D]``.
        remedy, damping, k, rtol, domain: as in :func:`generalized_eig_dense` (top-k keeps the
            ``k`` largest ``h_A,k``).

    Raises:
        NotPositiveDefiniteError: some ``h_A,k ≤ rtol·max h_A`` where ``h_B,k`` is not
            negligible (near-zero guard: the ratio would blow up), or a negative ``h_A,k``,
            and ``remedy=None``.
    """
    _check_remedy(remedy, damping, k)
    t0 = time.perf_counter()
    a = np.asarray(_to_numpy(h_A), dtype=np.float64).reshape(-1)
    b = np.asarray(_to_numpy(h_B), dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"h_B has {b.size} entries, h_A has {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("a curvature diagonal has NaN or infinite entries; check the loss at θ*")
    a_max = max(float(a.max()), 0.0)
    small_a = a <= rtol * a_max
    flat = (
        small_a
        & (np.abs(a) <= rtol * max(np.abs(a).max(), 1e-300))
        & (np.abs(b) <= rtol * max(np.abs(b).max(), 1e-300))
    )
    bad = small_a & ~flat
    report = _report_from_spectrum(domain, a, None, rtol, "diagonal")
    if bad.any():
        worst = int(np.flatnonzero(bad)[np.argmin(a[bad])])
        u = np.zeros_like(a)
        u[worst] = 1.0
        report.unbounded_direction = u
        report.curvature_along = {"B": float(b[worst])}
        if a[worst] <= 0 and b[worst] > 0:
            report.unbounded_for = ["B"]
        report.status = "indefinite" if a.min() < -rtol * a_max else "singular"
    delta = 0.0
    used = remedy
    if remedy is None:
        if bad.any() or a_max <= 0:
            raise NotPositiveDefiniteError(
                report.message(what="diagonal curvature h_A") + f" ({int(bad.sum())} coordinates"
                " with near-zero or negative h_A and non-negligible h_B)",
                report,
            )
        keep = np.flatnonzero(~flat)
        scaled = a[keep]
    elif remedy == "damping":
        if a_max <= 0:
            raise ValueError(
                f"h_A of domain {domain!r} has no positive entry; damping is undefined"
            )
        delta = float(damping) * a_max
        if a.min() + delta <= rtol * (a_max + delta):
            raise ValueError(
                f"damping {damping:g}·max(h_A) = {delta:.3g} does not make h_A of domain "
                f"{domain!r} positive (smallest {a.min():.3g}); use damping > "
                f"{-a.min() / a_max:.3g} or remedy='top-k'"
            )
        keep = np.arange(a.size)
        scaled = a + delta
    else:
        positive = int(np.sum(a > rtol * a_max))
        if k > positive:
            raise ValueError(
                f"k={k} exceeds the {positive} positive entries of h_A of domain {domain!r}; "
                f"use k <= {positive}"
            )
        keep = np.argsort(a, kind="stable")[a.size - k :]
        scaled = a[keep]
    ratios = b[keep] / scaled
    j = int(np.argmax(ratios))
    v = np.zeros_like(a)
    v[keep[j]] = 1.0 / math.sqrt(scaled[j])
    return GeneralizedEig(
        value=float(ratios[j]),
        vector=v,
        method="diagonal",
        solver="ratio",
        remedy=used,
        delta=delta,
        subspace_dim=int(keep.size),
        seconds=time.perf_counter() - t0,
    )


def _to_numpy(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x


# --------------------------------------------------------------------------------------------
# Matrix-free
# --------------------------------------------------------------------------------------------


class CountingOperator(spla.LinearOperator):
    """A float64 SciPy ``LinearOperator`` that counts the vectors it multiplies.

    Wraps anything with ``matvec`` / ``matmat`` (a SciPy operator, a curvature operator's
    ``to_scipy()``, or a dense array), optionally shifted: ``(H + shift·I) x``.
    """

    def __init__(self, op, shift: float = 0.0):
        if hasattr(op, "to_scipy"):
            op = op.to_scipy()
        if isinstance(op, np.ndarray):
            op = spla.aslinearoperator(np.asarray(op, dtype=np.float64))
        n = op.shape[0]
        super().__init__(dtype=np.float64, shape=(n, n))
        self.op = op
        self.shift = float(shift)
        self.products = 0

    def _matvec(self, x):
        self.products += 1
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(self.op.matvec(x), dtype=np.float64).reshape(-1)
        return y + self.shift * x if self.shift else y

    def _matmat(self, X):
        X = np.asarray(X, dtype=np.float64)
        self.products += X.shape[1]
        Y = np.asarray(self.op.matmat(X), dtype=np.float64)
        return Y + self.shift * X if self.shift else Y

    def _adjoint(self):
        return self


def lanczos_extremes(op, steps: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r"""``steps`` Lanczos iterations (full reorthogonalisation) from a seeded start.

    Returns the Ritz values (ascending) ``[m]`` and Ritz vectors ``[D, m]``. The smallest
    Ritz value is an upper bound of :math:`\lambda_{\min}` and the largest a lower bound of
    :math:`\lambda_{\max}` (Cauchy interlacing), so a Ritz value at or below zero *proves*
    that the operator is not positive definite.
    """
    n = op.shape[0]
    m = min(int(steps), n)
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(n)
    q /= np.linalg.norm(q)
    Q = np.zeros((n, m))
    alpha = np.zeros(m)
    beta = np.zeros(m)
    j_end = m
    for j in range(m):
        Q[:, j] = q
        w = op.matvec(q)
        alpha[j] = q @ w
        w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        w = w - Q[:, : j + 1] @ (Q[:, : j + 1].T @ w)
        b = np.linalg.norm(w)
        if j + 1 < m:
            if b <= 1e-12 * max(abs(alpha[: j + 1]).max(), 1e-300):
                j_end = j + 1
                break
            beta[j] = b
            q = w / b
    T = np.diag(alpha[:j_end]) + np.diag(beta[: j_end - 1], 1) + np.diag(beta[: j_end - 1], -1)
    theta, S = scipy.linalg.eigh(T)
    return theta, Q[:, :j_end] @ S


class MatrixFreeCurvature:
    r"""One domain's curvature operator ``H_A`` prepared for every pair ``(A, ·)``.

    A seeded Lanczos run (``lanczos_steps`` products) estimates :math:`\lambda_{\max}(H_A)`
    (for relative damping and scaling) and bounds :math:`\lambda_{\min}(H_A)` from above: a
    Ritz value at or below ``rtol·λ_max`` proves ``H_A`` is not positive definite. With
    ``remedy="top-k"`` the same run (``max(lanczos_steps, 2k + 10)`` products) gives the ``k``
    leading Ritz pairs ``(Λ_k, U_k)``; since ``U_kᵀH_AU_k = Λ_k`` exactly, the restricted
    problem is solved exactly on their span, the Lanczos approximation of the top-``k``
    eigenspace.
    """

    def __init__(
        self,
        op,
        domain: str = "A",
        *,
        remedy: str | None = None,
        damping: float = 1e-3,
        k: int | None = None,
        lanczos_steps: int = 30,
        rtol: float = PD_RTOL,
        seed: int = 0,
    ):
        _check_remedy(remedy, damping, k)
        self.op = op if isinstance(op, CountingOperator) else CountingOperator(op)
        self.domain = domain
        self.remedy = remedy
        self.damping = damping
        self.k = k
        self.rtol = rtol
        self.seed = seed
        start = self.op.products
        n = self.op.shape[0]
        if remedy == "top-k" and k >= n:
            raise ValueError(f"k={k} must be smaller than the dimension {n}; use method='dense'")
        steps = max(lanczos_steps, 2 * k + 10) if remedy == "top-k" else lanczos_steps
        ritz, vectors = lanczos_extremes(self.op, steps=steps, seed=seed)
        self.report = _report_from_spectrum(domain, ritz, vectors, rtol, f"lanczos({ritz.size})")
        if self.report.status == "positive definite":
            self.report.status = "not disproved"
        self.lam_max = self.report.max_eigenvalue
        self.delta = 0.0
        self.topk: tuple[np.ndarray, np.ndarray] | None = None
        if remedy is None:
            pass
        elif self.lam_max <= 0:
            raise ValueError(
                f"H_A of domain {domain!r} has no positive eigenvalue (Lanczos largest "
                f"{self.lam_max:.3g}); neither damping nor top-k applies"
            )
        elif remedy == "damping":
            self.delta = float(damping) * self.lam_max
            lo = self.report.min_eigenvalue
            if lo + self.delta <= 0:
                raise ValueError(
                    f"damping {damping:g}·λ_max(H_A) = {self.delta:.3g} does not make H_A of "
                    f"domain {domain!r} positive definite (an eigenvalue ≤ {lo:.3g}); use damping"
                    f" > {-lo / self.lam_max:.3g} or remedy='top-k'"
                )
        else:
            lam, U = ritz[-k:], vectors[:, -k:]
            if lam.min() <= self.rtol * lam.max():
                raise ValueError(
                    f"the top-{k} eigenvalues of H_A of domain {domain!r} include "
                    f"{lam.min():.3g} ≤ 0; use a smaller k (fewer than the positive eigenvalues)"
                )
            self.topk = (lam, U)
        self.setup_products = self.op.products - start

    @property
    def dim(self) -> int:
        return self.op.shape[0]

    def inspect(self, others: Mapping[str, CountingOperator]) -> DefinitenessReport:
        """Add ``uᵀH_Bu`` along the unbounded direction (one product per other domain)."""
        rep = self.report
        if rep.positive_definite or rep.unbounded_direction is None:
            return rep
        u = rep.unbounded_direction
        rep.curvature_along = {b: float(u @ H_B.matvec(u)) for b, H_B in others.items()}
        rep.unbounded_for = [b for b, c in rep.curvature_along.items() if c > 0]
        return rep

    def solve(
        self,
        H_B,
        *,
        solver: str = "lobpcg",
        tol: float = 1e-6,
        maxiter: int = 200,
        block_size: int = 2,
        seed: int | None = None,
    ) -> GeneralizedEig:
        r"""Largest generalized eigenpair of ``(H_B, H̃_A)`` without forming a matrix.

        Solvers: ``"lobpcg"`` (``scipy.sparse.linalg.lobpcg(H_B, X, B=H̃_A)``, seeded block
        start of ``block_size`` columns) or ``"eigsh"`` (ARPACK on ``H_B`` with ``M=H̃_A`` and
        a conjugate-gradient inverse of ``H̃_A``). Both run on the pair divided by the Lanczos
        :math:`\lambda_{\max}(\tilde H_A)` (same eigenvalues); ``tol`` is relative to
        :math:`\lambda_{\max}(H_B)/\lambda_{\max}(\tilde H_A)`, a lower bound of the answer
        (when ``H_B`` is a :class:`MatrixFreeCurvature` whose estimate is known). With
        ``remedy="top-k"`` the problem is the ``k × k`` one :math:`\Lambda_k^{-1/2} U_k^\top H_B U_k
        \Lambda_k^{-1/2}` (``k`` products with ``H_B``).

        Raises:
            NotPositiveDefiniteError: ``H_A`` proved not positive definite, no remedy.
        """
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; use 'lobpcg' or 'eigsh'")
        t0 = time.perf_counter()
        scale_b = None
        if isinstance(H_B, MatrixFreeCurvature):
            scale_b, H_B = H_B.lam_max, H_B.op
        B = H_B if isinstance(H_B, CountingOperator) else CountingOperator(H_B)
        if B.shape != self.op.shape:
            raise ValueError(f"H_B has shape {B.shape}, H_A has {self.op.shape}")
        b0, a0 = B.products, self.op.products
        seed = self.seed if seed is None else seed
        if self.remedy is None and not self.report.positive_definite:
            raise NotPositiveDefiniteError(self.report.message(), self.report)
        if self.topk is not None:
            lam, U = self.topk
            W = U / np.sqrt(lam)
            C = W.T @ B.matmat(W)
            C = 0.5 * (C + C.T)
            mu, w = scipy.linalg.eigh(C)
            v = W @ w[:, -1]
            value = float(mu[-1])
            res = float(np.linalg.norm(C @ w[:, -1] - value * w[:, -1]))
            return GeneralizedEig(
                value=value,
                vector=v,
                method="matrix-free",
                solver="top-k",
                remedy="top-k",
                subspace_dim=int(lam.size),
                products_a=0,
                products_b=B.products - b0,
                residual=res / max(abs(value), 1e-300),
                seconds=time.perf_counter() - t0,
            )
        A_t = CountingOperator(self.op, shift=self.delta) if self.delta else self.op
        scale = max(self.lam_max + self.delta, 1e-300)
        # λ_max(H_B)/λ_max(H̃_A) is a lower bound of λ_max(H_B, H̃_A): a relative tolerance
        lam_b = scale_b if scale_b is not None else float("nan")
        tol_abs = tol * (lam_b / scale if np.isfinite(lam_b) and lam_b > 0 else 1.0)
        n = self.dim
        rng = np.random.default_rng(seed)
        if solver == "lobpcg":
            out = _lobpcg_max(B, A_t, scale, tol_abs, n, block_size, maxiter, rng)
        else:
            out = _eigsh_max(B, A_t, scale, tol, n, maxiter, rng)
        if out is None:  # a Cholesky / CG failure: H̃_A is not positive definite
            rep = self.report
            rep.status = "indefinite"
            raise NotPositiveDefiniteError(rep.message(), rep)
        value, v, iters, converged = out
        HBv = B.matvec(v)
        HAv = A_t.matvec(v)
        norm_a = float(v @ HAv)
        if not norm_a > 0:
            rep = self.report
            rep.status = "indefinite"
            raise NotPositiveDefiniteError(rep.message(), rep)
        v = v / math.sqrt(norm_a)
        HBv, HAv = HBv / math.sqrt(norm_a), HAv / math.sqrt(norm_a)
        value = float(v @ HBv)  # Rayleigh quotient with vᵀH̃_Av = 1
        denom = np.linalg.norm(HBv) + abs(value) * np.linalg.norm(HAv)
        res = float(np.linalg.norm(HBv - value * HAv) / denom) if denom > 0 else 0.0
        products_a = self.op.products - a0 + (A_t.products if A_t is not self.op else 0)
        return GeneralizedEig(
            value=value,
            vector=v,
            method="matrix-free",
            solver=solver,
            remedy=self.remedy,
            delta=self.delta,
            subspace_dim=n,
            products_a=products_a,
            products_b=B.products - b0,
            iterations=iters,
            residual=res,
            converged=converged,
            seconds=time.perf_counter() - t0,
        )


def _scaled(op: CountingOperator, scale: float) -> spla.LinearOperator:
    n = op.shape[0]
    return spla.LinearOperator(
        (n, n),
        matvec=lambda x: op.matvec(x) / scale,
        matmat=lambda X: op.matmat(X) / scale,
        dtype=np.float64,
    )


def _lobpcg_max(B, A, scale, tol_abs, n, block_size, maxiter, rng):
    """LOBPCG on ``(B/scale, A/scale)`` (same eigenvalues, unit-scale residuals)."""
    m = max(1, min(int(block_size), n))
    if n < 5 * m + 1:
        # LOBPCG needs n > 5·block; tiny problems are solved densely from the operators
        HB, HA = B.matmat(np.eye(n)), A.matmat(np.eye(n))
        try:
            lam, V = scipy.linalg.eigh(0.5 * (HB + HB.T), 0.5 * (HA + HA.T))
        except np.linalg.LinAlgError:
            return None
        return float(lam[-1]), V[:, -1], 0, True
    X = rng.standard_normal((n, m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            lam, V, res_hist = spla.lobpcg(
                _scaled(B, scale),
                X,
                B=_scaled(A, scale),
                tol=tol_abs,
                maxiter=maxiter,
                largest=True,
                retResidualNormsHistory=True,
            )
        except np.linalg.LinAlgError:
            return None
    iters = max(len(res_hist) - 1, 0)
    last = np.asarray(res_hist[-1]) if res_hist else np.array([np.inf])
    j = int(np.argmax(lam))
    converged = bool(last.reshape(-1)[min(j, last.size - 1)] <= tol_abs)
    return float(lam[j]), np.asarray(V[:, j]), iters, converged


def _eigsh_max(B, A, scale, tol, n, maxiter, rng, cg_rtol=1e-10):
    """ARPACK ``eigsh(B, M=A, Minv=CG(A))`` on the scaled pair."""
    As = _scaled(A, scale)
    cg_iters = [0]

    def solve(x):
        y, info = spla.cg(As, x, rtol=cg_rtol, maxiter=10 * n)
        cg_iters[0] += 1
        if info != 0:
            raise np.linalg.LinAlgError(f"CG on H_A did not converge (info={info})")
        return y

    Minv = spla.LinearOperator((n, n), matvec=solve, dtype=np.float64)
    try:
        lam, V = spla.eigsh(
            _scaled(B, scale),
            k=1,
            M=As,
            Minv=Minv,
            which="LA",
            v0=rng.standard_normal(n),
            tol=tol,
            maxiter=maxiter,
        )
        converged = True
    except spla.ArpackNoConvergence as err:
        if err.eigenvalues.size == 0:
            return float("nan"), rng.standard_normal(n), maxiter, False
        lam, V, converged = err.eigenvalues, err.eigenvectors, False
    except np.linalg.LinAlgError:
        return None
    return float(lam[-1]), np.asarray(V[:, -1]), cg_iters[0], converged


# --------------------------------------------------------------------------------------------
# The true losses at displaced weights
# --------------------------------------------------------------------------------------------


class DisplacedRisk:
    r"""One domain's risk :math:`R_e(\theta^* + x)` and its gradient for displacements ``x``.

    ``x [D]`` moves only the parameters chosen by ``names`` (in their flattened order). The
    model is evaluated with :func:`torch.func.functional_call` on a displaced parameter
    dictionary, so its parameters, ``requires_grad`` flags and mode are never touched. The
    risk is the mean loss over all samples (batches weighted by their size), in the model's
    dtype, on the device of its parameters.
    """

    def __init__(self, model, loss_func, data, params=None):
        import torch

        from landscape.domains import as_batches
        from landscape.params import flatten, select_params

        self.model = model
        self.loss_func = loss_func
        self.batches = as_batches(data)
        selected = select_params(model, params)
        self.like = {n: p.detach() for n, p in selected.items()}
        self.fixed = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
        self.fixed.update(dict(model.named_buffers()))
        self.theta0 = flatten(self.like)
        self.dtype = self.theta0.dtype
        self.device = self.theta0.device
        self.num_samples = sum(int(X.shape[0]) for X, _ in self.batches)
        self.evaluations = 0
        self._torch = torch

    def _params(self, x, requires_grad: bool = False):
        from landscape.params import unflatten

        torch = self._torch
        if x is None:
            theta = self.theta0.clone()
        else:
            dx = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
            theta = self.theta0 + dx
        if requires_grad:
            theta.requires_grad_(True)
        return theta, {**self.fixed, **unflatten(theta, self.like)}

    def _batch(self, X, y):
        X = X.to(self.device, self.dtype) if X.is_floating_point() else X.to(self.device)
        y = y.to(self.device, self.dtype) if y.is_floating_point() else y.to(self.device)
        return X, y

    def value(self, x=None) -> float:
        """:math:`R_e(\\theta^* + x)` (``x=None``: at :math:`\\theta^*`)."""
        from torch.func import functional_call

        torch = self._torch
        _, params = self._params(x)
        total = 0.0
        with torch.no_grad():
            for X, y in self.batches:
                X, y = self._batch(X, y)
                out = functional_call(self.model, params, (X,))
                total += float(self.loss_func(out, y)) * int(X.shape[0])
        self.evaluations += 1
        value = total / self.num_samples
        if not math.isfinite(value):
            raise ValueError("the risk is NaN or infinite at the displaced weights")
        return value

    def value_and_grad(self, x=None) -> tuple[float, np.ndarray]:
        """:math:`R_e` and :math:`\\nabla R_e` ``[D]`` (float64 NumPy) at :math:`\\theta^*+x`."""
        from torch.func import functional_call

        torch = self._torch
        theta, params = self._params(x, requires_grad=True)
        total = 0.0
        grad = torch.zeros_like(theta)
        for X, y in self.batches:
            X, y = self._batch(X, y)
            loss = self.loss_func(functional_call(self.model, params, (X,)), y)
            w = int(X.shape[0]) / self.num_samples
            (g,) = torch.autograd.grad(loss, theta, retain_graph=False, allow_unused=True)
            if g is not None:
                grad += w * g
            total += float(loss.detach()) * w
            theta, params = self._params(x, requires_grad=True)
        self.evaluations += 1
        if not math.isfinite(total):
            raise ValueError("the risk is NaN or infinite at the displaced weights")
        return total, grad.detach().to("cpu", self._torch.float64).numpy()


# steps (in units of the quadratic maximiser) tried before bisection: fine up to 2, then coarse
_LINE_GRID = tuple(0.125 * j for j in range(1, 17)) + (2.5, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0)


@dataclass
class LineCheck:
    """The maximiser's ray ``θ* + s·θ_q`` followed until ``|R_A − R_A(θ*)|`` reaches ``ε``.

    Attributes:
        step: ``s`` (signed: the better of ``±θ_q``) at the first crossing (bisection), or the
            largest ``s`` tried when ``R_A`` never changed by ``ε`` (``reached=False``).
        reached: whether the crossing was found.
        risk_a: ``R_A`` at that point (``R_A(θ*) + ε`` when reached from above).
        risk_b: ``R_B`` at that point.
        value: ``|R_B − R_A(θ*)|`` there: a point of ``N_A``, so a lower bound of the original
            definition for the pair (up to the grid resolution of the path).
        evaluations: risk evaluations spent.
    """

    step: float
    reached: bool
    risk_a: float
    risk_b: float
    value: float
    evaluations: int


def line_check(
    risk_a: DisplacedRisk,
    risk_b: DisplacedRisk,
    direction: np.ndarray,
    epsilon: float,
    *,
    ra0: float | None = None,
    tol: float = 1e-6,
) -> LineCheck:
    r"""Where along :math:`\pm\theta_q` does the true :math:`R_A` change by :math:`\varepsilon`?

    For each sign the ray is scanned at the steps of ``_LINE_GRID`` (``s`` in units of the
    quadratic maximiser ``direction``; ``s = 1`` is where the quadratic model of ``R_A`` rises
    by ``ε``), and the first bracket where :math:`|R_A(\theta^*+s\theta_q) - R_A(\theta^*)|
    \ge \varepsilon` is bisected to relative width ``tol``. The point kept is the feasible end
    of the bracket. Of the two signs the one with the larger :math:`|R_B - R_A(\theta^*)|` is
    returned.
    """
    ra0 = risk_a.value() if ra0 is None else ra0
    d = np.asarray(direction, dtype=np.float64)
    start = risk_a.evaluations + risk_b.evaluations
    best: LineCheck | None = None
    if not np.any(d):
        rb = risk_b.value()
        return LineCheck(0.0, False, ra0, rb, abs(rb - ra0), 1)
    for sign in (1.0, -1.0):

        def rise(s: float, sign: float = sign) -> float:
            return abs(risk_a.value(sign * s * d) - ra0)

        lo, hi = 0.0, None
        for s in _LINE_GRID:
            if rise(s) >= epsilon:
                hi = s
                break
            lo = s
        reached = hi is not None
        if reached:
            while hi - lo > tol * hi:
                mid = 0.5 * (lo + hi)
                if rise(mid) >= epsilon:
                    hi = mid
                else:
                    lo = mid
        x = sign * lo * d
        ra = risk_a.value(x)
        rb = risk_b.value(x)
        cand = LineCheck(sign * lo, reached, ra, rb, abs(rb - ra0), 0)
        if best is None or cand.value > best.value:
            best = cand
    best.evaluations = risk_a.evaluations + risk_b.evaluations - start
    return best


@dataclass
class SearchCheck:
    """Projected ascent on ``R_B`` inside ``N_A`` (see :func:`constrained_search`).

    Attributes:
        value: the largest ``|R_B(θ) − R_A(θ*)|`` over the feasible points visited: a lower
            bound of the original definition for the pair (the path between consecutive
            points is checked only at the points).
        risk_a, risk_b: ``R_A`` and ``R_B`` at that point.
        displacement_norm: ``‖θ − θ*‖`` there.
        steps: ascent steps accepted; ``history``: ``R_B`` after each accepted step.
        starts: how many starting points were used (the maximiser's ray ± and ``restarts``
            seeded random ones); ``seed``: the seed of the random starts.
        evaluations: risk and gradient evaluations spent.
    """

    value: float
    risk_a: float
    risk_b: float
    displacement_norm: float
    steps: int
    history: list[float]
    starts: int
    seed: int
    evaluations: int


def constrained_search(
    risk_a: DisplacedRisk,
    risk_b: DisplacedRisk,
    direction: np.ndarray,
    epsilon: float,
    *,
    steps: int = 30,
    restarts: int = 0,
    seed: int = 0,
    step_size: float = 0.1,
    ra0: float | None = None,
) -> SearchCheck:
    r"""A lower bound of :math:`\max_{\theta\in N_A} |R_B(\theta) - R_A(\theta^*)|`.

    Projected gradient ascent on :math:`R_B` subject to :math:`|R_A(\theta) -
    R_A(\theta^*)| \le \varepsilon`. Starts: the quadratic maximiser ``direction`` moved
    along its ray onto the boundary of :math:`N_A` (:func:`line_check`, the better sign), plus
    ``restarts`` seeded Gaussian directions of the same norm, likewise moved. A step follows
    :math:`\nabla R_B`, minus its component along :math:`\nabla R_A` when the constraint is
    nearly active and the step would push through it; a point that leaves :math:`N_A` is
    pulled back along :math:`\nabla R_A` once, and the step is halved when that fails or
    :math:`R_B` does not increase. The step length starts at ``step_size`` times the start's
    norm.
    """
    ra0 = risk_a.value() if ra0 is None else ra0
    rng = np.random.default_rng(seed)
    start_evals = risk_a.evaluations + risk_b.evaluations
    d = np.asarray(direction, dtype=np.float64)
    starts = [d] + [
        rng.standard_normal(d.size) * (np.linalg.norm(d) / math.sqrt(d.size))
        for _ in range(int(restarts))
    ]
    best = None
    for s0 in starts:
        line = line_check(risk_a, risk_b, s0, epsilon, ra0=ra0)
        x = line.step * s0
        fa, ga = risk_a.value_and_grad(x)
        fb, gb = risk_b.value_and_grad(x)
        history = [fb]
        local = (abs(fb - ra0), fa, fb, float(np.linalg.norm(x)))
        eta = step_size * max(float(np.linalg.norm(x)), float(np.linalg.norm(d)), 1e-12)
        accepted = 0
        for _ in range(int(steps)):
            g = gb.copy()
            gaa = float(ga @ ga)
            if gaa > 0:
                if fa - ra0 > 0.5 * epsilon and g @ ga > 0:
                    g -= (g @ ga) / gaa * ga
                elif fa - ra0 < -0.5 * epsilon and g @ ga < 0:
                    g -= (g @ ga) / gaa * ga
            ng = float(np.linalg.norm(g))
            if ng == 0:
                break
            moved = False
            for _ in range(8):
                y = x + eta * g / ng
                fa_y = risk_a.value(y)
                if abs(fa_y - ra0) > epsilon and gaa > 0:
                    target = math.copysign(0.9 * epsilon, fa_y - ra0)
                    y = y - ((fa_y - ra0 - target) / gaa) * ga
                    fa_y = risk_a.value(y)
                if abs(fa_y - ra0) <= epsilon:
                    fb_y = risk_b.value(y)
                    if fb_y > fb:
                        x, moved = y, True
                        break
                eta *= 0.5
            if not moved:
                break
            accepted += 1
            eta *= 1.5
            fa, ga = risk_a.value_and_grad(x)
            fb, gb = risk_b.value_and_grad(x)
            history.append(fb)
            if abs(fb - ra0) > local[0]:
                local = (abs(fb - ra0), fa, fb, float(np.linalg.norm(x)))
        if best is None or local[0] > best[0][0]:
            best = (local, accepted, history)
    (value, fa, fb, norm), accepted, history = best
    return SearchCheck(
        value=value,
        risk_a=fa,
        risk_b=fb,
        displacement_norm=norm,
        steps=accepted,
        history=history,
        starts=len(starts),
        seed=seed,
        evaluations=risk_a.evaluations + risk_b.evaluations - start_evals,
    )


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@dataclass
class InconsistencyResult(SavedResult):
    r"""The inconsistency score of one checkpoint, its parts and its checks.

    Shapes: ``n`` domains, ``E`` values of ``ε``, ``D`` selected parameters, ``P = n(n−1)``
    ordered pairs ``(A, B)`` with ``A ≠ B`` (in the order of :attr:`pairs`). Matrices are
    indexed ``[A, B]`` (rows ``A``, columns ``B``, in the order of :attr:`domains`).

    Attributes:
        score: :math:`I^\varepsilon` (a float for one ``ε``, an array ``[E]`` for a list):
            the largest pairwise value, at least ``ε`` (the value of every ``(A, A)``).
        pair: the ordered pair ``(A, B)`` with the largest off-diagonal value (a list of
            pairs ``[E]`` for a list of ``ε``). When that value is below ``ε`` the score is
            ``ε`` (see ``from_diagonal``).
        epsilon: ``[E]`` the values of ``ε`` in the order given.
        values: ``[E, n, n]`` pairwise second-order values ``R_B − R_A + ε·max(λ_AB, 0)``,
            diagonal exactly ``ε``.
        risk_gap: ``[n, n]`` ``R_B − R_A``.
        curvature_term: ``[E, n, n]`` ``ε·max(λ_AB, 0)`` (diagonal ``ε``).
        eigenvalues: ``[n, n]`` ``λ_AB = λ_max(H_B, H̃_A)`` (diagonal 1).
        risks, gradient_norms: per domain ``R_e(θ*)`` and ``‖∇R_e(θ*)‖`` over the selected
            parameters (stationarity: the quadratic model ignores the gradient).
        first_order: ``[E, 2]`` ``∇R_A·θ`` and ``∇R_B·θ`` along the winning maximiser ``θ``:
            the first-order terms the quadratic model drops, to compare with ``ε``.
        direction: the winning pair's maximiser ``θ = √(2ε)·v`` ``[D]`` (``[E, D]`` for a
            list of ``ε``); :meth:`direction_by_name` splits it by parameter.
        unit_directions: ``[P, D]`` generalized eigenvectors ``v`` (``vᵀH̃_Av = 1``) per pair.
        pairs: the ``P`` ordered pairs, in the order of :attr:`unit_directions`.
        param_names, param_shapes: the selected parameters (layout of ``[D]`` vectors).
        method, curvature, diagonal_source, remedy, damping, k: the settings.
        definiteness: per domain, what is known of ``H_A`` (status, extreme eigenvalues,
            the smallest ones, curvature of the other domains along its unbounded direction).
        solver: per pair ``"A -> B"``: solver, products, iterations, residual, convergence.
        check: the empirical check on the true losses, or ``None``: ``line_value`` ``[E, n,
            n]`` (``|R_B − R_A(θ*)|`` where ``R_A`` has changed by ``ε`` along the maximiser;
            diagonal ``ε``), ``line_risk_b``, ``line_step``, ``line_reached``;
            ``search_value`` ``[E]`` (projected ascent on the winning pair: a lower bound of
            the original definition), ``search_pair``, ``search_steps``; ``empirical_score``
            ``[E]`` (the largest of ``ε``, the line values and the search value).
        seed: seed of every random choice (Lanczos and LOBPCG starts, search restarts).
        num_samples: per domain.
        seconds: wall-clock time of the whole computation.
    """

    score: Any
    pair: Any
    domains: list[str]
    epsilon: np.ndarray
    values: np.ndarray
    risk_gap: np.ndarray
    curvature_term: np.ndarray
    eigenvalues: np.ndarray
    risks: dict[str, float]
    gradient_norms: dict[str, float]
    first_order: np.ndarray
    direction: np.ndarray
    unit_directions: np.ndarray
    pairs: list
    param_names: list[str]
    param_shapes: list
    method: str
    curvature: str
    diagonal_source: str | None = None
    remedy: str | None = None
    damping: float | None = None
    k: int | None = None
    definiteness: dict = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    check: dict | None = None
    seed: int = 0
    num_samples: dict = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self):
        self.epsilon = np.asarray(self.epsilon, dtype=np.float64).reshape(-1)
        self.pairs = [tuple(p) for p in self.pairs]
        if (
            isinstance(self.pair, list | tuple)
            and len(self.pair)
            and isinstance(self.pair[0], list | tuple)
        ):
            self.pair = [tuple(p) for p in self.pair]
        else:
            self.pair = tuple(self.pair)
        self.param_shapes = [tuple(int(s) for s in shape) for shape in self.param_shapes]

    @property
    def scalar(self) -> bool:
        """Whether one ``ε`` was given (then ``score`` is a float and ``pair`` a tuple)."""
        return np.ndim(self.score) == 0

    @property
    def from_diagonal(self) -> np.ndarray:
        """``[E]``: whether the score is ``ε`` because every ``A ≠ B`` value is below it."""
        n = len(self.domains)
        off = self.values[:, ~np.eye(n, dtype=bool)]
        return off.max(axis=1) < self.epsilon

    def direction_by_name(self, index: int = 0) -> dict[str, np.ndarray]:
        """The maximiser for ``epsilon[index]`` split into arrays shaped like the parameters."""
        theta = self.direction if self.direction.ndim == 1 else self.direction[index]
        out, start = {}, 0
        for name, shape in zip(self.param_names, self.param_shapes, strict=True):
            size = int(np.prod(shape)) if len(shape) else 1
            out[name] = theta[start : start + size].reshape(shape)
            start += size
        return out

    def table(self) -> str:
        """A readable summary: settings, per-domain facts, pairwise matrices, the winner."""
        names = self.domains
        n = len(names)
        idx = {d: i for i, d in enumerate(names)}
        width = max(10, *(len(d) + 2 for d in names))
        dim = sum(int(np.prod(s)) if len(s) else 1 for s in self.param_shapes)
        lines = [
            f"inconsistency score I^eps  method={self.method}  curvature={self.curvature}"
            + (f" ({self.diagonal_source} diagonal)" if self.method == "diagonal" else "")
            + f"  remedy={self.remedy or 'none'}"
            + (f" (damping {self.damping:g})" if self.remedy == "damping" else "")
            + (f" (k={self.k})" if self.remedy == "top-k" else ""),
            f"parameters: {_short_names(self.param_names)} (D={dim})  seed={self.seed}  "
            f"time {self.seconds:.2f} s",
            "",
            f"{'domain':<{width}}{'N':>8}{'risk':>12}{'|grad|':>12}  H_A",
        ]
        for d in names:
            info = self.definiteness.get(d, {})
            lo, hi = info.get("min_eigenvalue", float("nan")), info.get("max_eigenvalue", 0)
            lines.append(
                f"{d:<{width}}{self.num_samples.get(d, 0):>8}{self.risks[d]:>12.6g}"
                f"{self.gradient_norms[d]:>12.4g}  {info.get('status', '?')} "
                f"(min {lo:.3g}, max {hi:.3g}, {info.get('how', '')})"
            )

        def matrix(title: str, M: np.ndarray, fmt: str = ".6g") -> None:
            lines.extend(["", f"{title} (rows A, columns B)"])
            lines.append(" " * width + "".join(f"{d:>{width}}" for d in names))
            for i, a in enumerate(names):
                lines.append(
                    f"{a:<{width}}" + "".join(f"{M[i, j]:>{width}{fmt}}" for j in range(n))
                )

        matrix("risk gap R_B - R_A", self.risk_gap)
        matrix("generalized eigenvalue lambda_max(H_B, H_A)", self.eigenvalues)
        for e, eps in enumerate(self.epsilon):
            matrix(f"pairwise value at eps={eps:g}", self.values[e])
            if self.check is not None:
                matrix(
                    f"empirical |R_B - R_A(theta*)| where R_A changed by eps={eps:g} along the"
                    " maximiser",
                    np.asarray(self.check["line_value"])[e],
                )
        lines.extend(["", "winning pair and its parts"])
        head = f"{'eps':>10}  {'pair (A -> B)':<{2 * width}}{'score':>12}{'risk gap':>12}"
        head += f"{'curvature':>12}"
        if self.check is not None:
            head += f"{'line':>12}{'search':>12}{'empirical':>12}"
        head += f"{'g_A.theta':>12}{'g_B.theta':>12}"
        lines.append(head)
        scores = np.atleast_1d(self.score)
        pairs = [self.pair] if self.scalar else self.pair
        for e, eps in enumerate(self.epsilon):
            a, b = pairs[e]
            i, j = idx[a], idx[b]
            row = f"{eps:>10.4g}  {a + ' -> ' + b:<{2 * width}}{scores[e]:>12.6g}"
            row += f"{self.risk_gap[i, j]:>12.4g}{self.curvature_term[e, i, j]:>12.4g}"
            if self.check is not None:
                row += f"{np.asarray(self.check['line_value'])[e, i, j]:>12.4g}"
                row += f"{np.asarray(self.check['search_value'])[e]:>12.4g}"
                row += f"{np.asarray(self.check['empirical_score'])[e]:>12.4g}"
            row += f"{self.first_order[e, 0]:>12.3g}{self.first_order[e, 1]:>12.3g}"
            if self.from_diagonal[e]:
                row += "  (every A != B value is below eps: score = eps)"
            lines.append(row)
        if self.check is not None:
            lines.append(
                "line: |R_B - R_A(theta*)| on the maximiser's ray where R_A changed by eps; "
                "search: projected ascent on R_B within |R_A - R_A(theta*)| <= eps (lower "
                "bound of Parascandolo's definition); empirical: the larger of the two and eps"
            )
        counts = {p[9:]: s["products"] for p, s in self.solver.items() if p.startswith("operator ")}
        if counts:
            lines.append(
                "curvature-vector products: "
                + ", ".join(f"{d} {c}" for d, c in counts.items())
                + f" (total {sum(counts.values())})"
            )
        unconverged = [p for p, s in self.solver.items() if not s.get("converged", True)]
        if unconverged:
            lines.append(f"WARNING: the eigensolver did not converge for {', '.join(unconverged)}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def summary(self) -> dict[str, Any]:
        """The headline numbers as plain JSON values (for the CLI and the README)."""
        scores = np.atleast_1d(self.score)
        pairs = [self.pair] if self.scalar else self.pair
        idx = {d: i for i, d in enumerate(self.domains)}
        rows = []
        for e, eps in enumerate(self.epsilon):
            i, j = idx[pairs[e][0]], idx[pairs[e][1]]
            row = {
                "epsilon": float(eps),
                "score": float(scores[e]),
                "pair": list(pairs[e]),
                "risk_gap": float(self.risk_gap[i, j]),
                "curvature_term": float(self.curvature_term[e, i, j]),
                "eigenvalue": float(self.eigenvalues[i, j]),
            }
            if self.check is not None:
                row["empirical_line"] = float(np.asarray(self.check["line_value"])[e, i, j])
                row["empirical_search"] = float(np.asarray(self.check["search_value"])[e])
                row["empirical_score"] = float(np.asarray(self.check["empirical_score"])[e])
            rows.append(row)
        return {
            "method": self.method,
            "curvature": self.curvature,
            "remedy": self.remedy,
            "domains": self.domains,
            "risks": self.risks,
            "gradient_norms": self.gradient_norms,
            "scores": rows,
        }


def _short_names(names: Sequence[str]) -> str:
    return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])}, ... ({len(names)})"


# --------------------------------------------------------------------------------------------
# The score
# --------------------------------------------------------------------------------------------


def _check_epsilon(epsilon) -> tuple[np.ndarray, bool]:
    scalar = np.ndim(epsilon) == 0
    try:
        eps = np.asarray(epsilon, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"epsilon must be a number or a list of numbers, got {epsilon!r}") from None
    if eps.size == 0:
        raise ValueError("epsilon is an empty list; give at least one value > 0")
    bad = eps[~(np.isfinite(eps) & (eps > 0))]
    if bad.size:
        raise ValueError(f"epsilon must be > 0 and finite, got {bad[0]:g}; e.g. epsilon=1e-3")
    return eps, scalar


def _choice(value, allowed, what: str):
    if value not in allowed:
        raise ValueError(
            f"unknown {what} {value!r}; use one of {', '.join(repr(a) for a in allowed)}"
        )
    return value


def _diagonals(model, loss_func, domains, params, curvature, source, progress):
    """Per-domain diagonals ``{name: [D] float64}`` from :mod:`landscape.curvature`: BackPACK's
    exact Hessian or GGN diagonal, the empirical Fisher diagonal (mean squared per-sample
    gradient), or Fishr's gradient variance (``source="variance"``)."""
    from landscape import curvature as curv
    from landscape.params import flatten

    def flat(d):
        if isinstance(d, Mapping):
            d = flatten(dict(d))
        return np.asarray(_to_numpy(d), dtype=np.float64).reshape(-1)

    if source == "variance":
        per_domain = curv.gradient_variance(model, loss_func, domains, params, progress=progress)
        per_domain = per_domain.variance
    elif curvature == "ef":
        per_domain = curv.gradient_variance(model, loss_func, domains, params, progress=progress)
        per_domain = per_domain.empirical_fisher
    else:
        how = {"hessian": "exact", "ggn": "ggn"}[curvature]
        per_domain = curv.hessian_diagonal(
            model, loss_func, domains, params, method=how, progress=progress
        ).diagonal
    return {name: flat(per_domain[name]) for name in domains}


def inconsistency_score(
    model,
    loss_func,
    domains: Mapping,
    epsilon: float | Sequence[float],
    params=None,
    method: str = "dense",
    *,
    curvature: str = "hessian",
    diagonal_source: str = "hessian",
    remedy: str | None = None,
    damping: float = 1e-3,
    k: int | None = None,
    check: bool = True,
    check_steps: int = 30,
    check_restarts: int = 0,
    solver: str = "lobpcg",
    tol: float = 1e-6,
    maxiter: int = 100,
    block_size: int = 2,
    lanczos_steps: int = 30,
    rtol: float = PD_RTOL,
    seed: int = 0,
    progress: bool = True,
) -> InconsistencyResult:
    r"""The inconsistency score :math:`I^\varepsilon` of a model over its domains.

    For every ordered pair ``(A, B)`` of domains: the risk term :math:`R_B - R_A`, the
    curvature term :math:`\varepsilon \max(\lambda_{\max}(H_B, H_A), 0)` and their sum; the
    score is the largest sum (at least ``ε``, the value of ``(A, A)``), as in docs/method.md
    section 3 (Parascandolo et al. 2021; Rame et al. 2022, section 3). The eigenproblems are
    solved once: a list of ``ε`` costs nothing more (the curvature term is linear in ``ε``)
    except for the empirical check.

    Args:
        model: the network at :math:`\theta^*` (eval mode; never changed).
        loss_func: mean-reduced ``BCEWithLogitsLoss``, ``CrossEntropyLoss`` or ``MSELoss``.
        domains: ``{name: data}`` with at least two domains.
        epsilon: ``ε > 0``, or a list of them.
        params: the parameters ``θ`` moves (``None`` = all, a prefix such as
            ``"classifier"``, or names).
        method: ``"dense"`` (``[D, D]`` curvature matrices in float64: summed in float64 from
            the model's own features for the output layer's closed form, else computed on a
            float64 copy of the model and data; eigendecomposition in float64; ``D`` up to a
            few thousand),
            ``"matrix-free"`` (LOBPCG / ARPACK on curvature-vector products; whole networks)
            or ``"diagonal"`` (ratios of diagonals:
            :math:`\max_k h_{B,k}/h_{A,k}`, the approximation Fishr matches).
        curvature: ``"hessian"``, ``"ggn"`` (generalised Gauss-Newton) or ``"ef"`` (empirical
            Fisher).
        diagonal_source: for ``method="diagonal"``: ``"hessian"`` (the diagonal of the chosen
            curvature) or ``"variance"`` (Fishr's per-domain gradient variances).
        remedy: what to do when ``H_A`` is not positive definite: ``None`` (raise
            :class:`NotPositiveDefiniteError` with the report), ``"damping"`` (``H_A + δI``,
            ``δ = damping·λ_max(H_A)``) or ``"top-k"`` (``θ`` restricted to the span of the
            ``k`` leading eigenvectors of ``H_A``; for the diagonal method the ``k`` largest
            entries). The dense method also handles exactly a singular ``H_A`` whose null
            space every ``H_B`` shares (reported as ``remedy="range"`` for that pair).
        damping: relative damping for ``remedy="damping"``.
        k: subspace size for ``remedy="top-k"``.
        check: run the empirical check on the true losses (line along every pair's maximiser,
            projected ascent on the winning pair; see :func:`line_check` and
            :func:`constrained_search`).
        check_steps, check_restarts: ascent steps and seeded random restarts of the search.
        solver, tol, maxiter, block_size: matrix-free eigensolver (``"lobpcg"`` or
            ``"eigsh"``), its relative tolerance, iteration limit and LOBPCG block size.
        lanczos_steps: Lanczos products per domain (matrix-free) to estimate
            :math:`\lambda_{\max}(H_A)` and bound :math:`\lambda_{\min}(H_A)`.
        rtol: ``λ_min ≤ rtol·λ_max`` counts as singular.
        seed: seed of every random start (recorded).
        progress: show progress bars.

    Returns:
        An :class:`InconsistencyResult`; ``print(result)`` shows the table.

    Raises:
        ValueError: ``ε ≤ 0``, fewer than two domains, unknown method / curvature / remedy,
            ``D`` too large for the dense method.
        NotPositiveDefiniteError: some ``H_A`` is singular or indefinite and ``remedy`` is
            ``None`` (the message names the remedies; ``err.report`` has the details).
    """
    import copy

    import torch
    from tqdm.auto import tqdm

    from landscape.domains import check_domains, num_samples
    from landscape.curvature.operators import MAX_DENSE_DIM, check_eval_mode, check_loss
    from landscape.params import select_params

    t_start = time.perf_counter()
    eps, scalar = _check_epsilon(epsilon)
    _choice(method, METHODS, "method")
    _choice(curvature, CURVATURES, "curvature")
    _choice(diagonal_source, DIAGONAL_SOURCES, "diagonal_source")
    _choice(solver, SOLVERS, "solver")
    _check_remedy(remedy, damping, k)
    domains = check_domains(domains, min_domains=2, what="the inconsistency score")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_loss(loss_func)
    check_eval_mode(model)
    selected = select_params(model, params)
    names = list(domains)
    n = len(names)
    param_names = list(selected)
    param_shapes = [tuple(p.shape) for p in selected.values()]
    dim = sum(p.numel() for p in selected.values())
    if method == "dense" and dim > MAX_DENSE_DIM:
        raise ValueError(
            f"method='dense' builds [D, D] matrices and D={dim} is above {MAX_DENSE_DIM}; use "
            "method='matrix-free' or fewer parameters (e.g. params='classifier')"
        )
    state = {n_: p.requires_grad for n_, p in model.named_parameters()}
    modes = {n_: m.training for n_, m in model.named_modules()}

    try:
        # risks and gradients at θ* (the same evaluator as the empirical check)
        evaluators = {d: DisplacedRisk(model, loss_func, domains[d], params) for d in names}
        risks, grads = {}, {}
        if method != "dense" or check:  # else from the float64 dense pass (no extra forward)
            for d in names:
                risks[d], grads[d] = evaluators[d].value_and_grad(None)

        # one eigenvector per ordered pair (A, B), A != B
        pairs = [(a, b) for a in names for b in names if a != b]
        lam = np.eye(n)
        vectors = np.zeros((len(pairs), dim))
        solver_info: dict[str, dict] = {}
        reports: dict[str, DefinitenessReport] = {}
        bar = tqdm(total=len(pairs), desc="I^eps pairs", disable=not progress, leave=False)

        def record(p: int, a: str, b: str, eig: GeneralizedEig) -> None:
            lam[names.index(a), names.index(b)] = eig.value
            vectors[p] = eig.vector
            solver_info[f"{a} -> {b}"] = {
                "solver": eig.solver,
                "remedy": eig.remedy,
                "delta": eig.delta,
                "subspace_dim": eig.subspace_dim,
                "products_a": eig.products_a,
                "products_b": eig.products_b,
                "iterations": eig.iterations,
                "residual": eig.residual,
                "converged": eig.converged,
                "seconds": eig.seconds,
            }
            bar.update(1)

        if method == "dense":
            from landscape.curvature.operators import curvature_operator

            # float64 matrices: eigenvalues near rtol·λ_max must not be float32 rounding noise.
            # The output layer's closed form sums in float64 from the model's own features;
            # any other selection is computed on a float64 copy of the model and data.
            mats = {}
            model64 = None
            for d in names:
                with curvature_operator(model, loss_func, domains[d], params, curvature) as op:
                    try:
                        mat = op.dense(method="closed-form", accumulate=torch.float64)
                    except ValueError:  # no closed form: products on a float64 copy below
                        mat = None
                    else:
                        if d not in risks:  # free after a closed-form dense pass
                            risks[d] = op.risk()
                            grads[d] = op.gradient().detach().to("cpu", torch.float64).numpy()
                if mat is None:
                    if model64 is None:
                        model64 = copy.deepcopy(model).to(torch.float64)
                    data64 = [
                        (
                            X.double() if X.is_floating_point() else X,
                            y.double() if y.is_floating_point() else y,
                        )
                        for X, y in domains[d]
                    ]
                    with curvature_operator(model64, loss_func, data64, params, curvature) as op:
                        mat = op.dense()
                        if d not in risks:
                            risks[d] = op.risk()
                            grads[d] = op.gradient().detach().to("cpu", torch.float64).numpy()
                mats[d] = mat.detach().to("cpu", torch.float64).numpy()
            dense = {d: DenseCurvature(mats[d], domain=d, rtol=rtol) for d in names}
            for a in names:
                reports[a] = dense[a].inspect({b: mats[b] for b in names if b != a})
                if remedy is None and not (
                    reports[a].positive_definite or reports[a].status.endswith("shared null space")
                ):
                    raise NotPositiveDefiniteError(reports[a].message(), reports[a])
            for p, (a, b) in enumerate(pairs):
                record(p, a, b, dense[a].solve(mats[b], remedy=remedy, damping=damping, k=k))
        elif method == "matrix-free":
            from landscape.curvature.operators import curvature_operator

            ops = {
                d: curvature_operator(model, loss_func, domains[d], params, curvature)
                for d in names
            }
            try:
                free = {
                    d: MatrixFreeCurvature(
                        ops[d],
                        d,
                        remedy=remedy,
                        damping=damping,
                        k=k,
                        lanczos_steps=lanczos_steps,
                        rtol=rtol,
                        seed=seed,
                    )
                    for d in names
                }
                for a in names:
                    reports[a] = free[a].inspect({b: free[b].op for b in names if b != a})
                    if remedy is None and not reports[a].positive_definite:
                        raise NotPositiveDefiniteError(reports[a].message(), reports[a])
                for p, (a, b) in enumerate(pairs):
                    eig = free[a].solve(
                        free[b],
                        solver=solver,
                        tol=tol,
                        maxiter=maxiter,
                        block_size=block_size,
                        seed=seed + p,
                    )
                    record(p, a, b, eig)
                for d in names:
                    solver_info[f"operator {d}"] = {
                        "setup_products": free[d].setup_products,
                        "products": ops[d].num_products,
                    }
            finally:
                for op in ops.values():
                    op.release()
        else:
            diag = _diagonals(
                model, loss_func, domains, params, curvature, diagonal_source, progress
            )
            for a in names:
                for b in names:
                    if a == b:
                        continue
                    p = pairs.index((a, b))
                    try:
                        eig = generalized_eig_diagonal(
                            diag[b],
                            diag[a],
                            remedy=remedy,
                            damping=damping,
                            k=k,
                            rtol=rtol,
                            domain=a,
                        )
                    except NotPositiveDefiniteError as err:
                        err.report.curvature_along = {
                            b: err.report.curvature_along.get("B", float("nan"))
                        }
                        err.report.unbounded_for = [b] if err.report.unbounded_for else []
                        raise NotPositiveDefiniteError(
                            err.report.message(what="diagonal curvature h_A"), err.report
                        ) from None
                    record(p, a, b, eig)
                reports[a] = _report_from_spectrum(a, diag[a], None, rtol, "diagonal")
        bar.close()
        grad_norms = {d: float(np.linalg.norm(grads[d])) for d in names}
        unconverged = [p for p, info in solver_info.items() if not info.get("converged", True)]
        if unconverged:
            warnings.warn(
                f"the eigensolver did not reach tol={tol:g} within maxiter={maxiter} for "
                f"{', '.join(unconverged)}; the values are Rayleigh quotients (lower bounds), "
                "see result.solver for the residuals; an ill-conditioned H_A (near-zero "
                "eigenvalues) stalls LOBPCG: pass remedy='damping' or 'top-k', or raise maxiter",
                stacklevel=2,
            )

        # values
        R = np.array([risks[d] for d in names])
        risk_gap = R[None, :] - R[:, None]  # [A, B] = R_B - R_A
        curv_term = eps[:, None, None] * np.maximum(lam, 0.0)[None]
        values = risk_gap[None] + curv_term
        diag_idx = np.arange(n)
        values[:, diag_idx, diag_idx] = eps[:, None]
        curv_term[:, diag_idx, diag_idx] = eps[:, None]
        off = ~np.eye(n, dtype=bool)
        winners = []
        for e in range(eps.size):
            masked = np.where(off, values[e], -np.inf)
            i, j = np.unravel_index(int(np.argmax(masked)), masked.shape)
            winners.append((names[i], names[j]))
        scores = np.maximum(values[:, off].max(axis=1), eps)
        directions = np.stack(
            [
                math.sqrt(2 * eps[e])
                * vectors[pairs.index(winners[e])]
                * (lam[names.index(winners[e][0]), names.index(winners[e][1])] > 0)
                for e in range(eps.size)
            ]
        )
        first_order = np.array(
            [
                [grads[w[0]] @ directions[e], grads[w[1]] @ directions[e]]
                for e, w in enumerate(winners)
            ]
        )

        # empirical check on the true losses
        checked = None
        if check:
            line_value = np.zeros((eps.size, n, n))
            line_rb = np.zeros((eps.size, n, n))
            line_step = np.zeros((eps.size, n, n))
            line_reached = np.ones((eps.size, n, n), dtype=bool)
            search_value = np.zeros(eps.size)
            search_steps = np.zeros(eps.size, dtype=np.int64)
            search_history = []
            cbar = tqdm(
                total=eps.size * (len(pairs) + 1),
                desc="I^eps check",
                disable=not progress,
                leave=False,
            )
            for e, ep in enumerate(eps):
                for i, a in enumerate(names):
                    line_value[e, i, i] = ep
                    line_rb[e, i, i] = risks[a]
                for p, (a, b) in enumerate(pairs):
                    i, j = names.index(a), names.index(b)
                    theta = math.sqrt(2 * ep) * vectors[p]
                    lc = line_check(evaluators[a], evaluators[b], theta, ep, ra0=risks[a])
                    line_value[e, i, j], line_rb[e, i, j] = lc.value, lc.risk_b
                    line_step[e, i, j], line_reached[e, i, j] = lc.step, lc.reached
                    cbar.update(1)
                a, b = winners[e]
                p = pairs.index((a, b))
                theta = math.sqrt(2 * ep) * vectors[p]
                sc = constrained_search(
                    evaluators[a],
                    evaluators[b],
                    theta,
                    ep,
                    steps=check_steps,
                    restarts=check_restarts,
                    seed=seed,
                    ra0=risks[a],
                )
                search_value[e], search_steps[e] = sc.value, sc.steps
                search_history.append(np.asarray(sc.history))
                cbar.update(1)
            cbar.close()
            empirical = np.maximum(line_value[:, off].max(axis=1), search_value)
            empirical = np.maximum(empirical, eps)
            checked = {
                "line_value": line_value,
                "line_risk_b": line_rb,
                "line_step": line_step,
                "line_reached": line_reached,
                "search_value": search_value,
                "search_pair": [list(w) for w in winners],
                "search_steps": search_steps,
                "search_history": search_history,
                "search_restarts": int(check_restarts),
                "empirical_score": empirical,
            }
    finally:
        for n_, p in model.named_parameters():
            p.requires_grad_(state[n_])
        for n_, m in model.named_modules():
            if m.training != modes[n_]:
                m.train(modes[n_])

    return InconsistencyResult(
        score=float(scores[0]) if scalar else scores,
        pair=winners[0] if scalar else winners,
        domains=names,
        epsilon=eps,
        values=values,
        risk_gap=risk_gap,
        curvature_term=curv_term,
        eigenvalues=lam,
        risks={d: float(risks[d]) for d in names},
        gradient_norms=grad_norms,
        first_order=first_order,
        direction=directions[0] if scalar else directions,
        unit_directions=vectors,
        pairs=pairs,
        param_names=param_names,
        param_shapes=param_shapes,
        method=method,
        curvature=curvature,
        diagonal_source=diagonal_source if method == "diagonal" else None,
        remedy=remedy,
        damping=float(damping) if remedy == "damping" else None,
        k=int(k) if remedy == "top-k" else None,
        definiteness={d: reports[d].as_dict() for d in names},
        solver=solver_info,
        check=checked,
        seed=int(seed),
        num_samples={d: num_samples(domains[d]) for d in names},
        seconds=time.perf_counter() - t_start,
    )
