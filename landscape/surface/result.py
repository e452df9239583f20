"""The result of a loss-surface slice: per-domain losses and accuracies on one grid."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from landscape.io import SavedResult

__all__ = ["SurfaceResult"]


@dataclass
class SurfaceResult(SavedResult):
    """Per-domain losses (and accuracies) on a 2D grid of one plane.

    Arrays are indexed ``[i, j]`` for the point :math:`(\\alpha_i, \\beta_j)`.

    Attributes:
        alphas: ``[A]`` coordinates along the first direction.
        betas: ``[B]`` coordinates along the second direction.
        losses: ``{domain: [A, B]}`` mean loss.
        accuracies: ``{domain: [A, B]}`` accuracy (empty for regression losses).
        differences: ``{"B - A": [A, B]}`` loss of B minus loss of A, every ordered pair.
        deviations: ``{domain: [A, B]}`` loss minus the mean loss over domains.
        pairs: the ordered pairs ``[A, B]`` behind the keys of ``differences``.
        domains: domain names in order.
        num_samples: ``{domain: samples evaluated}`` (after subsampling).
        directions: the directions' description (kind, seed, normalisation, parameter
            names, shapes, norms, fingerprint, points / trajectory coordinates, ...).
        settings: loss, subsampling and its seeds, batch-norm handling, evaluation path,
            points per call, device, dtype.
    """

    alphas: Any
    betas: Any
    losses: dict[str, Any]
    accuracies: dict[str, Any] = field(default_factory=dict)
    differences: dict[str, Any] = field(default_factory=dict)
    deviations: dict[str, Any] = field(default_factory=dict)
    pairs: list = field(default_factory=list)
    domains: list = field(default_factory=list)
    num_samples: dict[str, int] = field(default_factory=dict)
    directions: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.alphas = np.asarray(self.alphas, dtype=np.float64)
        self.betas = np.asarray(self.betas, dtype=np.float64)
        self.pairs = [list(p) for p in self.pairs]

    def difference(self, a: str, b: str) -> np.ndarray:
        """``losses[b] - losses[a]`` ``[A, B]``."""
        for name in (a, b):
            if name not in self.losses:
                raise ValueError(f"unknown domain {name!r}; available: {', '.join(self.losses)}")
        return self.losses[b] - self.losses[a]

    @classmethod
    def from_rows(
        cls,
        alphas: np.ndarray,
        betas: np.ndarray,
        rows: list[dict[str, np.ndarray]],
        num_samples: dict[str, int],
        accuracy: bool,
        **description: Any,
    ) -> SurfaceResult:
        """Assemble a result from the grid's rows.

        With losses :math:`L_e` of the :math:`E` domains, ``differences`` holds
        :math:`L_B - L_A` for every ordered pair and ``deviations``
        :math:`L_e - \\frac1E \\sum_{e'} L_{e'}`.

        Args:
            alphas: ``[A]``.
            betas: ``[B]``.
            rows: ``A`` rows ``{"loss/<domain>": [B], "acc/<domain>": [B]}`` (accuracies
                only when computed).
            num_samples: ``{domain: samples}`` in the domains' order.
            accuracy: whether the rows hold accuracies.
            **description: ``directions`` and ``settings``.
        """
        names = list(num_samples)
        losses = {n: np.stack([row[f"loss/{n}"] for row in rows]) for n in names}
        accs = {n: np.stack([row[f"acc/{n}"] for row in rows]) for n in names} if accuracy else {}
        pairs = [[a, b] for a, b in itertools.permutations(names, 2)]
        mean = np.mean([losses[n] for n in names], axis=0)
        return cls(
            alphas=alphas,
            betas=betas,
            losses=losses,
            accuracies=accs,
            differences={f"{b} - {a}": losses[b] - losses[a] for a, b in pairs},
            deviations={n: losses[n] - mean for n in names},
            pairs=pairs,
            domains=names,
            num_samples=num_samples,
            **description,
        )
