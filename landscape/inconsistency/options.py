"""Names, thresholds and the small option groups of the inconsistency score.

Every public entry validates its arguments here once (:func:`check_epsilon`, :func:`choice`,
:class:`SolverOptions`, :class:`CheckOptions`; the remedy in :mod:`.remedy`) and passes the
resolved objects down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METHODS = ("auto", "dense", "matrix-free", "diagonal")
CURVATURES = ("hessian", "ggn", "ef")
DIAGONAL_SOURCES = ("hessian", "variance")
SOLVERS = ("lobpcg", "eigsh")

#: ``method="auto"`` builds dense ``[D, D]`` matrices up to this many parameters (exact, and
#: cheaper than an iterative solve: ``D`` products or the head's closed form, one ``eigh``
#: per domain), and runs the matrix-free solvers above it.
AUTO_DENSE_DIM = 2048

#: ``λ_min(H_A) ≤ PD_RTOL · λ_max(H_A)`` counts as singular.
PD_RTOL = 1e-8


def choice(value, allowed: Sequence, what: str):
    """``value`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    if value not in allowed:
        raise ValueError(
            f"unknown {what} {value!r}; use one of {', '.join(repr(a) for a in allowed)}"
        )
    return value


def check_epsilon(epsilon) -> tuple[np.ndarray, bool]:
    """``ε`` as a float64 array ``[E]`` and whether the caller gave a single number.

    Raises:
        TypeError: not a number or a list of numbers.
        ValueError: an empty list, or a value that is not finite and positive.

    Example:
        >>> check_epsilon(1e-3)
        (array([0.001]), True)
    """
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


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class SolverOptions:
    """How the matrix-free generalized eigenproblems are solved.

    Attributes:
        solver: ``"lobpcg"`` (``scipy.sparse.linalg.lobpcg`` with ``B = H̃_A``) or
            ``"eigsh"`` (ARPACK with ``M = H̃_A`` and a conjugate-gradient inverse).
        tol: relative tolerance of the generalized eigenpair, and of the ``k`` Ritz pairs of
            ``remedy="top-k"`` (relative to :math:`\\lambda_{\\max}(H_A)`).
        maxiter: iteration limit of the generalized eigensolver.
        block_size: LOBPCG block size.
        lanczos_steps: Lanczos products per domain that estimate :math:`\\lambda_{\\max}(H_A)`
            and bound :math:`\\lambda_{\\min}(H_A)` (the top-``k`` Lanczos iterates to ``tol``
            instead, at least this many products).
        lanczos_maxiter: product limit of that top-``k`` Lanczos (``None``: ``max(300, 20k)``).
        rtol: ``λ_min ≤ rtol·λ_max`` counts as singular (every method).
        seed: seed of the Lanczos and LOBPCG starts (pair ``p`` uses ``seed + p``).
    """

    solver: str = "lobpcg"
    tol: float = 1e-6
    maxiter: int = 100
    block_size: int = 2
    lanczos_steps: int = 30
    lanczos_maxiter: int | None = None
    rtol: float = PD_RTOL
    seed: int = 0

    def __post_init__(self):
        choice(self.solver, SOLVERS, "solver")
        _positive_float(self.tol, "tol")
        _positive_int(self.maxiter, "maxiter")
        _positive_int(self.block_size, "block_size")
        _positive_int(self.lanczos_steps, "lanczos_steps")
        if self.lanczos_maxiter is not None:
            _positive_int(self.lanczos_maxiter, "lanczos_maxiter")
        _positive_float(self.rtol, "rtol")


@dataclass(frozen=True)
class CheckOptions:
    """The empirical check on the true losses (see :mod:`.checks`).

    Attributes:
        enabled: run it at all.
        steps: projected-ascent steps of the search on the winning pair. 30 by default:
            with the head's cached input a step is cheap (the Colored MNIST head,
            2 x 25,000 images: the whole check at 30 steps adds 3 s to a 13 s score), and
            10 steps stop far short (Fishr's head at eps = 1e-3: 0.036 after 10 steps,
            0.345 after 30).
        restarts: seeded random restarts of the search.
        line_tol: relative precision of the step where ``R_A`` has changed by ``ε``.
        seed: seed of the random restarts.
    """

    enabled: bool = True
    steps: int = 30
    restarts: int = 0
    line_tol: float = 1e-6
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.restarts < 0:
            raise ValueError(
                f"check_steps and check_restarts must be >= 0, got {self.steps}, {self.restarts}"
            )
        _positive_float(self.line_tol, "line_tol")
