r"""The diagonal backend: :math:`\lambda_{\max} = \max_k h_{B,k} / h_{A,k}`.

With diagonal curvatures the generalized eigenvectors are the coordinate axes and the
maximiser is :math:`\theta = \sqrt{2\varepsilon / h_{A,k}}\, e_k`, the approximation Fishr
matches. Coordinates where both :math:`|h_{A,k}|` and :math:`|h_{B,k}|` are at or below
``rtol`` times their largest magnitude are flat for both domains and contribute nothing (they
are skipped: a null space the pair shares); a coordinate with
:math:`h_{A,k} \le \text{rtol}\cdot\max h_A` where :math:`h_{B,k}` is not negligible makes the
ratio blow up (the near-zero guard).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np

from landscape.inconsistency.definiteness import (
    DefinitenessReport,
    NotPositiveDefiniteError,
    mark_unbounded,
    report_from_spectrum,
)
from landscape.inconsistency.options import PD_RTOL
from landscape.inconsistency.protocol import GeneralizedEig
from landscape.inconsistency.remedy import Remedy

WHAT = "diagonal curvature h_A"


def as_diagonal(h, name: str) -> np.ndarray:
    """``h`` (array or tensor) as a finite float64 vector ``[D]``."""
    if hasattr(h, "detach"):
        h = h.detach().cpu().numpy()
    h = np.asarray(h, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{name} has NaN or infinite entries; check the loss at θ*")
    return h


class DiagonalCurvature:
    """One domain's curvature diagonal ``h_A`` prepared for every pair ``(A, ·)``."""

    def __init__(self, h_A, domain: str = "A", rtol: float = PD_RTOL, remedy: Remedy | None = None):
        self.h = as_diagonal(h_A, f"h_A of domain {domain!r}")
        self.domain = domain
        self.rtol = rtol
        self.remedy = remedy or Remedy()
        self.report = report_from_spectrum(domain, self.h, None, rtol, "diagonal")

    @property
    def dim(self) -> int:
        return self.h.size

    def setup_record(self) -> None:
        return None

    def _flat_and_bad(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, rtol = self.h, self.rtol
        small_a = a <= rtol * max(float(a.max()), 0.0)
        flat = (
            small_a
            & (np.abs(a) <= rtol * max(np.abs(a).max(), 1e-300))
            & (np.abs(b) <= rtol * max(np.abs(b).max(), 1e-300))
        )
        return flat, small_a & ~flat

    def _pair_report(self, b_name: str, b: np.ndarray) -> DefinitenessReport:
        """The report for one pair: the worst coordinate where ``h_A`` is near zero or negative
        and ``h_B`` is not negligible, or the shared flat coordinates."""
        a = self.h
        flat, bad = self._flat_and_bad(b)
        rep = report_from_spectrum(self.domain, a, None, self.rtol, "diagonal")
        if bad.any():
            worst = int(np.flatnonzero(bad)[np.argmin(a[bad])])
            rep.unbounded_direction = np.eye(1, a.size, worst).reshape(-1)
            mark_unbounded(rep, {b_name: b[worst]}, {b_name: np.abs(b).max()})
            if a[worst] > 0:
                rep.unbounded_for = []
            rep.status = "indefinite" if a.min() < -self.rtol * max(a.max(), 0.0) else "singular"
        elif flat.any() and a.max() > 0:
            rep.status = "singular, shared null space"
        return rep

    def inspect(self, others: Mapping[str, DiagonalCurvature | np.ndarray]) -> DefinitenessReport:
        """The report of ``h_A`` itself (per pair, :meth:`solve` checks the coordinates)."""
        return self.report

    def solve(self, other: DiagonalCurvature | np.ndarray, *, seed: int = 0) -> GeneralizedEig:
        """The largest ratio ``h_B,k / h̃_A,k`` over the kept coordinates.

        Raises:
            NotPositiveDefiniteError: some ``h_A,k ≤ rtol·max h_A`` where ``h_B,k`` is not
                negligible, or a negative ``h_A,k``, and ``remedy=None``.
        """
        t0 = time.perf_counter()
        name = other.domain if isinstance(other, DiagonalCurvature) else "B"
        b = other.h if isinstance(other, DiagonalCurvature) else as_diagonal(other, "h_B")
        if b.shape != self.h.shape:
            raise ValueError(f"h_B has {b.size} entries, h_A has {self.h.size}")
        rep = self._pair_report(name, b)
        flat, bad = self._flat_and_bad(b)
        try:
            kept = self.remedy.restrict(
                self.h, rep, range_keep=np.flatnonzero(~flat), what=WHAT, noun="entries"
            )
        except NotPositiveDefiniteError as err:
            raise NotPositiveDefiniteError(
                f"{err} ({int(bad.sum())} coordinates with near-zero or negative h_A and "
                "non-negligible h_B)",
                rep,
            ) from None
        ratios = b[kept.keep] / kept.values
        j = int(np.argmax(ratios))
        v = np.zeros_like(self.h)
        v[kept.keep[j]] = 1.0 / math.sqrt(kept.values[j])
        return GeneralizedEig(
            value=float(ratios[j]),
            vector=v,
            method="diagonal",
            solver="ratio",
            remedy=kept.used,
            delta=kept.delta,
            subspace_dim=int(kept.keep.size),
            seconds=time.perf_counter() - t0,
        )


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
    r"""The diagonal approximation :math:`\lambda = \max_k h_{B,k} / h_{A,k}` (see the module
    docstring).

    Args:
        h_B, h_A: diagonals ``[D]``.
        remedy, damping, k, rtol, domain: as in
            :func:`~landscape.inconsistency.dense.generalized_eig_dense` (top-k keeps the
            ``k`` largest ``h_A,k``).

    Raises:
        NotPositiveDefiniteError: some ``h_A,k ≤ rtol·max h_A`` where ``h_B,k`` is not
            negligible (near-zero guard: the ratio would blow up), or a negative ``h_A,k``,
            and ``remedy=None``.

    Example:
        >>> generalized_eig_diagonal(np.array([1.0, 3.0]), np.array([2.0, 1.0])).value
        3.0
    """
    remedy = Remedy.resolve(remedy, damping, k)
    return DiagonalCurvature(h_A, domain, rtol, remedy).solve(h_B)


def diagonals(model, loss_func, domains, params, curvature, source, progress) -> dict:
    """Per-domain diagonals ``{name: [D] float64}`` from :mod:`landscape.curvature`: the exact
    Hessian or GGN diagonal (BackPACK where it handles every module, else products or
    ``torch.func``), the empirical Fisher diagonal (mean squared per-sample gradient), or
    Fishr's gradient variance (``source="variance"``).

    Raises:
        ValueError: one line, when no exact backend handles the model (the Hessian diagonal
            of a large selection BackPACK has no rules for), naming the options that work.
    """
    from landscape import curvature as curv
    from landscape.params import flatten

    if source == "variance" or curvature == "ef":
        res = curv.gradient_variance(model, loss_func, domains, params, progress=progress)
        per_domain = res.variance if source == "variance" else res.empirical_fisher
    else:
        how = {"hessian": "exact", "ggn": "ggn"}[curvature]
        try:
            per_domain = curv.hessian_diagonal(
                model, loss_func, domains, params, method=how, progress=progress
            ).diagonal
        except ValueError as err:  # no exact backend handles this model and selection
            raise ValueError(
                f"method='diagonal' with curvature={curvature!r} needs the exact diagonal, which "
                f"cannot be computed here ({str(err).split('; use ')[0]}); use curvature='ggn', "
                "diagonal_source='variance' or method='matrix-free'"
            ) from None

    def flat(d):
        return as_diagonal(flatten(dict(d)) if isinstance(d, Mapping) else d, "diagonal")

    return {name: flat(per_domain[name]) for name in domains}
