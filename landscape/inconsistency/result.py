r"""The result of :func:`~landscape.inconsistency.score.inconsistency_score`.

Internally every quantity is held per value of :math:`\varepsilon` (arrays ``[E, ...]``);
:func:`as_given` is the one place that returns the caller's shape at the surface: a single
``ε`` gives ``score`` a float, ``pair`` a tuple and ``direction`` ``[D]``. Consumers that
handle any number of ``ε`` read :attr:`InconsistencyResult.scores`,
:attr:`~InconsistencyResult.winning_pairs`, :attr:`~InconsistencyResult.directions` or
:meth:`~InconsistencyResult.winner` and never branch on the shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.io import SavedResult


def as_given(per_epsilon, scalar: bool):
    """``per_epsilon`` (``[E, ...]`` array or list) in the caller's shape: its first entry
    (a float for scores) when one ``ε`` was given, else unchanged."""
    if not scalar:
        return per_epsilon
    first = per_epsilon[0]
    return float(first) if np.ndim(first) == 0 and not isinstance(first, tuple) else first


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
            ``[E]`` (the largest of ``ε``, the line values and the search value);
            ``evaluator`` (per domain: the head alone on its cached input, or full forwards
            and why; :mod:`landscape.inconsistency.head`).
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
    def scores(self) -> np.ndarray:
        """``[E]`` the score per ``ε``, whatever the caller gave."""
        return np.atleast_1d(np.asarray(self.score, dtype=np.float64))

    @property
    def winning_pairs(self) -> list[tuple[str, str]]:
        """``[E]`` the winning ordered pair ``(A, B)`` per ``ε``."""
        return [self.pair] if self.scalar else list(self.pair)

    @property
    def directions(self) -> np.ndarray:
        """``[E, D]`` the winning maximiser per ``ε``."""
        return np.atleast_2d(self.direction)

    def winner(self, index: int = 0) -> tuple[str, str]:
        """The winning pair ``(A, B)`` for ``epsilon[index]`` (any number of ``ε``)."""
        return self.winning_pairs[index]

    @property
    def from_diagonal(self) -> np.ndarray:
        """``[E]``: whether the score is ``ε`` because every ``A ≠ B`` value is below it."""
        n = len(self.domains)
        off = self.values[:, ~np.eye(n, dtype=bool)]
        return off.max(axis=1) < self.epsilon

    def direction_by_name(self, index: int = 0) -> dict[str, np.ndarray]:
        """The maximiser for ``epsilon[index]`` split into arrays shaped like the parameters."""
        import torch

        from landscape.params import unflatten

        like = {n: torch.empty(s, dtype=torch.float64) for n, s in zip(
            self.param_names, self.param_shapes, strict=True)}  # fmt: skip
        theta = torch.from_numpy(np.ascontiguousarray(self.directions[index]))
        return {n: t.numpy() for n, t in unflatten(theta, like).items()}

    def table(self) -> str:
        """A readable summary: settings, per-domain facts, pairwise matrices, the winner."""
        from landscape.inconsistency.report import table

        return table(self)

    def __str__(self) -> str:
        return self.table()

    def summary(self) -> dict[str, Any]:
        """The headline numbers as plain JSON values (for the CLI and the README)."""
        from landscape.inconsistency.report import summary

        return summary(self)
