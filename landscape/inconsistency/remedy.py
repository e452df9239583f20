r"""What to do when :math:`H_A` is not positive definite, validated and applied in one place.

Every backend (dense, matrix-free, diagonal) describes :math:`H_A` by a spectrum
:math:`\lambda` (exact eigenvalues, Lanczos Ritz values or diagonal entries) and asks
:meth:`Remedy.restrict` which of its eigen-directions to keep and with which values:

* ``None``: all of them when :math:`H_A` is positive definite; its range
  (:math:`\lambda > \text{rtol}\cdot\lambda_{\max}`) when it is singular and every
  :math:`H_B` vanishes on its null space (exact; reported as ``"range"``); otherwise a
  :class:`~landscape.inconsistency.definiteness.NotPositiveDefiniteError`;
* ``"damping"``: :math:`\tilde H_A = H_A + \delta I` with
  :math:`\delta = \text{damping}\cdot\lambda_{\max}(H_A)`, refused when it does not make
  :math:`\tilde H_A` positive definite;
* ``"top-k"``: :math:`\theta` restricted to the span of the ``k`` leading eigenvectors,
  refused when fewer than ``k`` eigenvalues are positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from landscape.inconsistency.definiteness import DefinitenessReport, NotPositiveDefiniteError

REMEDIES = (None, "damping", "top-k")


@dataclass(frozen=True)
class Remedy:
    """The remedy chosen by the caller (validated on construction).

    Attributes:
        kind: ``None``, ``"damping"`` or ``"top-k"``.
        damping: relative damping (``δ = damping·λ_max(H_A)``) for ``"damping"``.
        k: subspace size for ``"top-k"``.

    Example:
        >>> from landscape.inconsistency.definiteness import report_from_spectrum
        >>> lam = np.array([-0.1, 1.0])
        >>> report = report_from_spectrum("A", lam, None, rtol=1e-8, how="eigh")
        >>> Remedy("damping", damping=0.2).restrict(lam, report).delta
        0.2
    """

    kind: str | None = None
    damping: float = 1e-3
    k: int | None = None

    def __post_init__(self):
        if self.kind not in REMEDIES:
            raise ValueError(f"unknown remedy {self.kind!r}; use None, 'damping' or 'top-k'")
        damping, k = self.damping, self.k
        if self.kind == "damping" and not (
            isinstance(damping, int | float) and not isinstance(damping, bool) and damping > 0
        ):
            raise ValueError(
                f"damping must be a positive number (relative to λ_max(H_A)), got {damping!r}"
            )
        if self.kind == "top-k" and not (
            isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 1
        ):
            raise ValueError(f"k must be a positive integer for remedy='top-k', got {k!r}")

    @classmethod
    def resolve(cls, remedy, damping: float = 1e-3, k: int | None = None) -> Remedy:
        """A :class:`Remedy` from the plain keyword arguments (or one passed as is)."""
        return remedy if isinstance(remedy, Remedy) else cls(remedy, damping, k)

    @property
    def settings(self) -> dict:
        """``damping`` and ``k`` as recorded in a result (``None`` where they do not apply)."""
        return {
            "damping": float(self.damping) if self.kind == "damping" else None,
            "k": int(self.k) if self.kind == "top-k" else None,
        }

    def restrict(
        self,
        lam: np.ndarray,
        report: DefinitenessReport,
        *,
        range_keep: np.ndarray | None = None,
        what: str = "H_A",
        noun: str = "eigenvalues",
    ) -> Restriction:
        """The eigen-directions of ``lam`` kept and their (damped) values.

        Args:
            lam: the spectrum of ``H_A`` ``[m]`` (any order).
            report: its definiteness report (``report.rtol`` is the threshold).
            range_keep: with ``kind=None``, the indices that span the range of ``H_A``
                (default: ``lam > rtol·λ_max``); used when the report says positive definite
                or singular with a shared null space.
            what, noun: how messages name the matrix and its spectrum.

        Raises:
            NotPositiveDefiniteError: ``kind=None`` and ``H_A`` is not positive definite
                (nor singular with a null space every ``H_B`` shares).
            ValueError: the remedy cannot make the problem well-posed.
        """
        lam = np.asarray(lam, dtype=np.float64)
        lam_max, rtol, domain = float(lam.max()), report.rtol, report.domain
        if self.kind is None:
            if report.positive_definite:
                keep = np.arange(lam.size) if range_keep is None else range_keep
                return Restriction(keep, lam[keep], 0.0, None)
            if report.status.endswith("shared null space"):
                keep = np.flatnonzero(lam > rtol * lam_max) if range_keep is None else range_keep
                return Restriction(keep, lam[keep], 0.0, "range")
            raise NotPositiveDefiniteError(report.message(what=what), report)
        if lam_max <= 0:
            raise ValueError(
                f"{what} of domain {domain!r} has no positive {noun[:-1]} (largest "
                f"{lam_max:.3g}); neither damping nor top-k applies"
            )
        if self.kind == "damping":
            delta = float(self.damping) * lam_max
            if lam.min() + delta <= rtol * (lam_max + delta):
                raise ValueError(
                    f"damping {self.damping:g}·λ_max({what}) = {delta:.3g} does not make {what} "
                    f"of domain {domain!r} positive definite (smallest {noun[:-1]} "
                    f"{lam.min():.3g}); use damping > {-lam.min() / lam_max:.3g} or "
                    "remedy='top-k'"
                )
            return Restriction(np.arange(lam.size), lam + delta, delta, "damping")
        positive = int(np.sum(lam > rtol * lam_max))
        if self.k > positive:
            raise ValueError(
                f"k={self.k} exceeds the {positive} positive {noun} of {what} of domain "
                f"{domain!r}; use k <= {positive}"
            )
        keep = np.argsort(lam, kind="stable")[lam.size - self.k :]
        return Restriction(keep, lam[keep], 0.0, "top-k")


@dataclass
class Restriction:
    """The outcome of :meth:`Remedy.restrict`.

    Attributes:
        keep: indices into the spectrum that span the space of the maximum ``[m]``.
        values: the eigenvalues of ``H̃_A`` there (damped for ``"damping"``) ``[m]``.
        delta: the absolute damping ``δ`` (0 otherwise).
        used: ``None``, ``"damping"``, ``"top-k"`` or ``"range"``.
    """

    keep: np.ndarray
    values: np.ndarray
    delta: float
    used: str | None
