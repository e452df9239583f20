r"""The dense backend: float64 ``[D, D]`` curvature matrices and their eigendecomposition.

For one domain ``A`` the eigendecomposition :math:`H_A = Q \Lambda Q^\top` is computed once
and reused for every pair ``(A, ·)``. With :math:`S` the eigen-indices the remedy keeps and
:math:`\tilde\Lambda` their (damped) eigenvalues (:meth:`Remedy.restrict
<landscape.inconsistency.remedy.Remedy.restrict>`),

.. math::

    W = Q_S \tilde\Lambda_S^{-1/2}, \qquad C = W^\top H_B W, \qquad
    \lambda_{\max}(H_B, \tilde H_A) = \lambda_{\max}(C), \qquad v = W w,

with :math:`w` the unit top eigenvector of :math:`C`, so that :math:`v^\top \tilde H_A v = 1`.
Without remedy and with :math:`H_A` positive definite this is ``scipy.linalg.eigh(H_B, H_A)``
(the tests check it).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping

import numpy as np
import scipy.linalg

from landscape.inconsistency.definiteness import (
    DefinitenessReport,
    mark_unbounded,
    report_from_spectrum,
)
from landscape.inconsistency.options import PD_RTOL
from landscape.inconsistency.protocol import GeneralizedEig
from landscape.inconsistency.remedy import Remedy


def as_symmetric(H, name: str) -> np.ndarray:
    """``H`` (array or tensor) as a float64 symmetric ``[D, D]`` array, checked finite."""
    if hasattr(H, "detach"):
        H = H.detach().cpu().numpy()
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"{name} must be a square matrix [D, D], got shape {H.shape}")
    if not np.all(np.isfinite(H)):
        raise ValueError(f"{name} has NaN or infinite entries; check the loss at θ*")
    return 0.5 * (H + H.T)


class DenseCurvature:
    """One domain's dense curvature, eigendecomposed once (see the module docstring).

    Args:
        H_A: symmetric ``[D, D]`` array or tensor (symmetrised, cast to float64).
        domain: name of ``A`` for messages.
        rtol: ``λ_min ≤ rtol·λ_max`` counts as singular.
        remedy: the :class:`~landscape.inconsistency.remedy.Remedy` (default: none).
    """

    def __init__(self, H_A, domain: str = "A", rtol: float = PD_RTOL, remedy: Remedy | None = None):
        self.H = as_symmetric(H_A, f"H_A of domain {domain!r}")
        self.domain = domain
        self.rtol = rtol
        self.remedy = remedy or Remedy()
        self.eigenvalues, self.eigenvectors = scipy.linalg.eigh(self.H)
        self.report = report_from_spectrum(
            domain, self.eigenvalues, self.eigenvectors, rtol, "eigh"
        )

    @property
    def dim(self) -> int:
        return self.H.shape[0]

    def setup_record(self) -> None:
        return None

    def null_space(self) -> np.ndarray:
        """Eigenvectors with ``λ ≤ rtol·λ_max`` (including negative ones) [D, m]."""
        keep = self.eigenvalues <= self.rtol * max(self.eigenvalues.max(), 0.0)
        return self.eigenvectors[:, keep]

    def inspect(self, others: Mapping[str, DenseCurvature | np.ndarray]) -> DefinitenessReport:
        """Complete :attr:`report` with the curvature of each ``H_B`` along the unbounded
        direction (positive beyond ``rtol`` relative to ``H_B``'s largest entry certifies
        ``+inf``), and detect a null space shared with every ``H_B`` (exact on the range)."""
        rep = self.report
        if rep.status == "positive definite":
            return rep
        mats = {b: _matrix(H_B) for b, H_B in others.items()}
        u = rep.unbounded_direction
        mark_unbounded(
            rep,
            {b: float(u @ H_B @ u) for b, H_B in mats.items()},
            {b: np.abs(H_B).max() for b, H_B in mats.items()},
        )
        if rep.status == "singular" and mats:
            N = self.null_space()
            shared = all(
                np.linalg.norm(H_B @ N, ord=2) <= self.rtol * np.linalg.norm(H_B, ord=2)
                for H_B in mats.values()
            )
            if shared:
                rep.status = "singular, shared null space"
        return rep

    def solve(self, other: DenseCurvature | np.ndarray, *, seed: int = 0) -> GeneralizedEig:
        """The largest generalized eigenpair of ``(H_B, H̃_A)``; see the module docstring.

        Raises:
            NotPositiveDefiniteError: ``H_A`` is not positive definite and no remedy applies.
            ValueError: the remedy cannot make the problem well-posed (damping below
                ``|λ_min|``, ``k`` above the number of positive eigenvalues).
        """
        t0 = time.perf_counter()
        H_B = _matrix(other)
        if H_B.shape != self.H.shape:
            raise ValueError(f"H_B has shape {H_B.shape}, H_A has {self.H.shape}")
        kept = self.remedy.restrict(self.eigenvalues, self.report)
        Q_S = self.eigenvectors[:, kept.keep]
        W = Q_S / np.sqrt(kept.values)  # [D, m], W^T H̃_A W = I
        C = W.T @ H_B @ W
        C = 0.5 * (C + C.T)
        mu, w = scipy.linalg.eigh(C, subset_by_index=[C.shape[0] - 1, C.shape[0] - 1])
        v, value = W @ w[:, 0], float(mu[0])
        if kept.used in (None, "damping"):
            HA_v = self.H @ v + kept.delta * v
            res = np.linalg.norm(H_B @ v - value * HA_v)
        else:  # the problem restricted to the kept eigenvectors
            HA_v = Q_S @ (kept.values * (Q_S.T @ v))
            res = np.linalg.norm(C @ w[:, 0] - value * w[:, 0])
        denom = np.linalg.norm(H_B @ v) + abs(value) * np.linalg.norm(HA_v)
        return GeneralizedEig(
            value=value,
            vector=v,
            method="dense",
            solver="eigh",
            remedy=kept.used,
            delta=kept.delta,
            subspace_dim=int(kept.keep.size),
            residual=float(res / denom) if denom > 0 else 0.0,
            seconds=time.perf_counter() - t0,
        )


def _matrix(other) -> np.ndarray:
    return other.H if isinstance(other, DenseCurvature) else as_symmetric(other, "H_B")


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
    remedy = Remedy.resolve(remedy, damping, k)
    H_B = as_symmetric(H_B, "H_B")
    dense = DenseCurvature(H_A, domain=domain, rtol=rtol, remedy=remedy)
    dense.inspect({"B": H_B})
    return dense.solve(H_B)


def dense_curvatures(model, loss_func, domains: Mapping, params, curvature: str) -> dict:
    """Float64 ``[D, D]`` curvature matrices per domain, with the risk and gradient at θ*.

    Eigenvalues near ``rtol·λ_max`` must not be float32 rounding noise: the output layer's
    closed form (where :func:`~landscape.curvature.has_closed_form` says the model and
    selection allow one) sums in float64 from the model's own features; any other selection,
    or a closed form refused by its run-time conditions (``NoClosedForm``), is computed by
    products on a float64 copy of the model (any module torch.func differentiates), each
    batch cast to float64 as it is used. Both accumulate over the domain's batches (a
    DataLoader streams): memory holds one batch and the ``[D, D]`` result.

    Returns:
        ``{domain: (H [D, D] float64 NumPy, risk, gradient [D] float64 NumPy)}``.
    """
    import torch

    from landscape.curvature import NoClosedForm, curvature_operator, has_closed_form

    out, model64 = {}, None
    closed = has_closed_form(model, loss_func, params, curvature)
    for d, data in domains.items():
        if closed:
            with curvature_operator(model, loss_func, data, params, curvature) as op:
                try:
                    mat = op.dense(method="closed-form", accumulate=torch.float64)
                    out[d] = (_numpy(mat), op.risk(), _numpy(op.gradient()))
                    continue
                except NoClosedForm:
                    pass
        if model64 is None:
            model64 = copy.deepcopy(model).to(torch.float64)
        # the operator casts each batch to the copy's float64 as it runs: one batch in memory
        with curvature_operator(model64, loss_func, data, params, curvature) as op:
            out[d] = (_numpy(op.dense()), op.risk(), _numpy(op.gradient()))
    return out


def _numpy(t) -> np.ndarray:
    import torch

    return t.detach().to("cpu", torch.float64).numpy()
