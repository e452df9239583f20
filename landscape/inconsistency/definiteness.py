r"""What is known about the definiteness of one curvature matrix, and the errors that say so.

The quadratic maximum :math:`\max_{\frac12\theta^\top H_A\theta\le\varepsilon}
\tfrac12\theta^\top H_B\theta` is finite only when :math:`H_A` is positive definite, or
singular with every :math:`H_B` vanishing on its null space (docs/method.md section 3). A
:class:`DefinitenessReport` records which case holds; :class:`NotPositiveDefiniteError` carries
it when the method cannot go on, :class:`NotConvergedError` when an iterative solver stopped
short (a number that did not converge is never reported as a score).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.inconsistency.options import PD_RTOL

REMEDY_HINT = (
    "pass remedy='damping' (adds damping·λ_max(H_A) to H_A) or remedy='top-k' "
    "(restricts to the top-k eigenspace of H_A), CLI: --remedy damping|top-k"
)


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
            text += "; " + REMEDY_HINT
        return text


def report_from_spectrum(
    domain: str,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray | None,
    rtol: float,
    how: str,
) -> DefinitenessReport:
    """Classify a spectrum (exact eigenvalues, Ritz values or diagonal entries): positive
    definite, singular (``λ_min ≤ rtol·λ_max``) or indefinite (``λ_min < −rtol·λ_max``); the
    unbounded direction is the eigenvector of the smallest value (when given)."""
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


def curvature_is_positive(curvature: float, scale: float, rtol: float) -> bool:
    """Whether ``uᵀH_Bu`` (``u`` a unit vector) is positive beyond rounding: above
    ``rtol · scale`` with ``scale`` the magnitude of ``H_B`` (its ``λ_max`` or largest entry),
    so that ``1e-29`` on a null space shared by both domains is no certificate of ``+inf``."""
    return bool(curvature > rtol * max(abs(scale), np.finfo(float).tiny))


def mark_unbounded(
    report: DefinitenessReport, curvature_along: Mapping[str, float], scales: Mapping[str, float]
) -> DefinitenessReport:
    """Record ``uᵀH_Bu`` per domain ``B`` and the pairs certified ``+inf`` (positive beyond
    ``rtol`` relative to ``scales[B]``)."""
    report.curvature_along = {b: float(c) for b, c in curvature_along.items()}
    report.unbounded_for = [
        b
        for b, c in report.curvature_along.items()
        if curvature_is_positive(c, scales[b], report.rtol)
    ]
    return report


class NotConvergedError(ValueError):
    """An iterative solver stopped before its tolerance: no number is reported.

    ``pair`` is ``(A, B)`` (or ``(A, None)`` for a per-domain Lanczos run), ``residual`` the
    relative residual reached and ``tol`` the one asked for.
    """

    def __init__(self, message: str, pair=None, residual: float = float("nan"), tol=None):
        super().__init__(message)
        self.pair = pair
        self.residual = residual
        self.tol = tol
