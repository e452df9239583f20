"""Result dataclasses of :mod:`landscape.curvature`: one array (or number) per domain, in the
layout of :func:`landscape.params.select_params` (``param_names`` / ``param_shapes``), with
every setting and seed used. Each saves to ``.npz`` + ``.json`` and loads back
(:class:`landscape.io.SavedResult`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.io import SavedResult

__all__ = [
    "GradientVarianceResult",
    "HessianDiagonalResult",
    "EigenpairsResult",
    "TraceResult",
    "SpectralDensityResult",
    "ComparisonResult",
]


@dataclass
class _Result(SavedResult):
    domains: list[str]
    param_names: list[str]
    param_shapes: list[list[int]]
    loss: str
    settings: dict[str, Any]

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """Split a ``[D]`` vector of this result into ``{parameter name: array}``."""
        from landscape.params import split

        return split(
            np.asarray(vector), dict(zip(self.param_names, self.param_shapes, strict=True))
        )


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

    ``settings`` records what ran: ``"method"`` (``"auto"`` resolved to ``"exact"`` or
    ``"hutchinson"``), ``"backend"`` (``"backpack"``, ``"products"``, ``"torch.func"`` or
    ``"operator"``) and ``"exact"`` (``False`` for Hutchinson and Monte-Carlo Fisher).

    Attributes:
        diagonal: ``{domain: [D]}``.
        standard_error: ``{domain: [D]}`` per-entry standard error (Hutchinson only; empty
            for deterministic methods).
        num_products: ``{domain: int}`` curvature-vector products (Hutchinson and rows of
            products only).
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
        residuals: ``{domain: [k]}`` or ``[2k]`` (largest then smallest): true residuals
            :math:`\\|A u - \\lambda u\\|` of the returned pairs (float64 arithmetic).
        converged: ``{domain: bool}``, every eigenvalue's error bound within ``tol`` times
            :math:`\\lambda_{max}` (see :func:`landscape.curvature.lanczos.lanczos`).
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
