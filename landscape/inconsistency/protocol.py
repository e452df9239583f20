r"""The pairwise protocol every backend implements, and what one pair's solve returns.

A backend is built once per domain ``A`` from its curvature ``H_A`` (a dense matrix, an
operator, a diagonal) and the chosen :class:`~landscape.inconsistency.remedy.Remedy`; it then

* ``inspect(others)`` -> :class:`~landscape.inconsistency.definiteness.DefinitenessReport`:
  what is known of ``H_A``, completed with the curvature of every other ``H_B`` along its
  unbounded direction (and whether a null space is shared);
* ``solve(other)`` -> :class:`GeneralizedEig`: the largest generalized eigenpair of
  :math:`H_B v = \lambda \tilde H_A v` with ``other`` the backend of ``B``.

:func:`landscape.inconsistency.score.inconsistency_score` runs the same loop over every
backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from landscape.inconsistency.definiteness import DefinitenessReport


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

    def record(self) -> dict:
        """The solver facts kept per pair in ``InconsistencyResult.solver``."""
        keys = ("solver", "remedy", "delta", "subspace_dim", "products_a", "products_b")
        keys += ("iterations", "residual", "converged", "seconds")
        return {key: getattr(self, key) for key in keys}


class PairwiseCurvature(Protocol):
    """One domain's curvature prepared for every pair ``(A, ·)`` (see the module docstring)."""

    domain: str
    report: DefinitenessReport

    @property
    def dim(self) -> int: ...

    def inspect(self, others: Mapping[str, PairwiseCurvature]) -> DefinitenessReport: ...

    def solve(self, other: PairwiseCurvature, *, seed: int = 0) -> GeneralizedEig: ...

    def setup_record(self) -> dict | None:
        """Products spent on this domain's operator (``None`` where nothing is counted)."""
