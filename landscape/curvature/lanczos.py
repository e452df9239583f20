"""THE Lanczos iteration of the package: extreme eigenpairs and Gauss quadrature nodes of a
symmetric operator given by its products.

Precision. The Krylov basis :math:`Q_m` is stored in the operator's dtype (memory: ``m``
vectors of length ``D``), but everything accumulated from it is float64: the recurrence
scalars :math:`\\alpha_j = q_j^\\top A q_j`, :math:`\\beta_j`, the full re-orthogonalisation
coefficients :math:`Q_m^\\top w`, the tridiagonal :math:`T_m`, the Ritz vectors
:math:`Q_m s_i` and the residuals. A float32 dot product of length ``D`` rounds at about
:math:`\\epsilon_{32}\\sqrt D` (``3e-5`` for ``D = 3\\cdot 10^5``): accumulated in float32 the
basis loses orthogonality at that level and the Ritz values drift by as much, while the
recurrence's residual estimate :math:`\\beta_m |e_m^\\top s_i|` still goes to zero.

Noise level. In exact arithmetic :math:`q_i^\\top A q_j` is :math:`\\alpha_j`,
:math:`\\beta_{j-1}` or 0; the largest deviation seen while re-orthogonalising is the
operator's own noise :math:`\\eta` (rounding of its products and of the stored basis: about
:math:`\\epsilon\\,\\|A\\|` of the operator's dtype). No eigenvalue can be resolved below it,
so it enters every error bound, and the Krylov space is declared invariant only when the new
residual norm is at that level (or at float64 rounding), never at a fixed multiple of the
dtype's epsilon.

Convergence is decided on **true** residuals :math:`r_i = \\|A u_i - \\theta_i u_i\\|` of the
Ritz vectors :math:`u_i = Q_m s_i`, obtained without further products: every product the run
made satisfies :math:`A q_j = Q_{j+1} h_j + w_j` exactly (``h_j`` the float64 coefficients of
the re-orthogonalisation, both passes, and ``w_j`` the part orthogonal to the basis, which
becomes :math:`\\beta_j q_{j+1}`), so :math:`A Q_m = Q_m H_m + w_m e_m^\\top` with the full
(upper Hessenberg) coefficient matrix :math:`H_m` and

.. math:: \\|A u_i - \\theta_i u_i\\|^2 = \\|(H_m - \\theta_i I) s_i\\|^2
          + \\|w_m\\|^2 (e_m^\\top s_i)^2, \\qquad \\theta_i = s_i^\\top H_m s_i,

the Rayleigh quotient of :math:`u_i`. :math:`H_m - T_m` holds the deviations of
:math:`q_i^\\top A q_j` from the tridiagonal (rounding of the products and of the stored
basis), which the recurrence's estimate :math:`\\beta_m |e_m^\\top s_i|` ignores; a fresh
product of :math:`u_i` would differ from :math:`\\sum_j s_{ij} A q_j` only by the operator's
rounding, the noise level :math:`\\eta` that every bound adds. The error bound
:math:`\\min(r_i, r_i^2/\\delta_i) + \\eta \\le` ``tol`` :math:`\\cdot \\max_j |\\theta_j|`, with
:math:`\\delta_i` the gap to the other Ritz values widened by their residuals (Kato-Temple /
Saad), is checked after every step once the Krylov space holds one more Ritz value than
wanted (it stands for the spectrum not yet found): the run makes exactly one product per
Krylov step (before: ``k`` more products per check, up to a third of a run's products).
After a restart (an invariant Krylov space, see :func:`lanczos`) the discarded
:math:`w_j` (at the noise level) adds :math:`|s_{ij}|\\,\\|w_j\\|` to :math:`r_i`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["lanczos", "resolve_tol"]

_EPS64 = float(np.finfo(np.float64).eps)

FLOAT64_FLOOR = 100 * _EPS64
"""Smallest relative tolerance that true residuals can certify (about 2.2e-14): a smaller
``tol`` is read as this."""

BASIS_FLOAT64_BYTES = 2**30
"""The Krylov basis is kept in float64 up to this size (bytes at ``max_iter`` rows)."""

# Float64 copies of basis rows are made in blocks of at most this many elements.
_BLOCK_ELEMENTS = 2**23


def resolve_tol(tol: float | None, dtype: torch.dtype, float64: float = 1e-8) -> float:
    """The relative eigenvalue tolerance for products computed in ``dtype``: ``tol`` when
    given (a positive number), else ``float64`` (default 1e-8) raised to what the dtype's
    products can resolve, the power of ten nearest :math:`8\\epsilon` of the dtype: no
    change in float64, 1e-6 in float32 (whose products resolve eigenvalues only to about
    :math:`10^{-7}\\lambda_{max}`), 1e-2 in float16. The one rule of every default ``tol``
    of the package (:func:`lanczos`, :func:`~landscape.curvature.spectrum.top_eigenpairs`,
    :func:`~landscape.curvature.compare.compare_domains`)."""
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol > 0:
            raise ValueError(f"tol must be a positive number or None, got {tol!r}")
        return float(tol)
    if not dtype.is_floating_point:
        raise TypeError(f"products must be floating point for a tolerance, got {dtype}")
    reach = 10.0 ** round(float(np.log10(8 * torch.finfo(dtype).eps)))
    return max(float(float64), reach)


def lanczos(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    k: int = 1,
    which: str = "largest",
    tol: float | None = None,
    max_iter: int | None = None,
    progress: bool = False,
    steps: int | None = None,
) -> dict[str, Any]:
    """Lanczos with full re-orthogonalisation for extreme eigenpairs of a symmetric operator.

    Builds the Krylov basis :math:`Q_m` and tridiagonal :math:`T_m = Q_m^\\top A Q_m` one
    product at a time (scalars in float64, see the module docstring). After every product the
    recurrence's error estimate :math:`\\min(\\hat r_i, \\hat r_i^2/\\delta_i)` with
    :math:`\\hat r_i = \\beta_m |e_m^\\top s_i|` is checked; when it meets ``tol`` (or the
    noise level :math:`\\eta`), the true residuals of the wanted Ritz pairs are computed (from
    the recorded coefficients, without products: module docstring) and the iteration stops
    if :math:`\\min(r_i, r_i^2/\\delta_i) + \\eta \\le` ``tol`` :math:`\\cdot \\max_j|\\theta_j|`
    (converged), or if only the noise level stands in the way
    (not converged: more products cannot help). Eigenvector errors are about
    :math:`r_i / \\delta_i`: pass a smaller ``tol`` when the vectors matter.

    Single-vector Krylov methods (this one, ARPACK) see one copy of a repeated eigenvalue:
    when the Krylov space becomes invariant the iteration goes on from a fresh random
    vector orthogonal to it (which recovers exact multiplicities, e.g. the null space of a
    small rank-deficient GGN), but a repeated eigenvalue found before that is reported once.

    Args:
        matvec: ``v [D] -> A v [D]``.
        v0: start vector ``[D]`` (dtype and device of the computation).
        k: how many eigenpairs at each wanted end.
        which: ``"largest"``, ``"smallest"`` or ``"both"``.
        tol: relative accuracy of the wanted eigenvalues (see above; read as at least
            :data:`FLOAT64_FLOOR`, the float64 rounding level of the residuals); ``None``:
            :func:`resolve_tol` for ``v0``'s dtype (1e-8 in float64, 1e-6 in float32).
        max_iter: at most this many Krylov steps, i.e. products (default
            ``min(D, max(300, 20 k))``).
        progress: progress bar over products.
        steps: run exactly this many steps (no convergence test), e.g. for quadrature.

    Returns:
        ``dict`` with ``largest`` / ``smallest`` (``(values [k], vectors [D, k],
        residuals [k])``: Rayleigh quotients, unit vectors in ``v0``'s dtype, true residuals
        :math:`\\|A u - \\theta u\\|`, or the recurrence's estimates with ``steps``),
        ``alpha``, ``beta`` (the tridiagonal, float64), ``num_products`` (all products:
        one per step), ``steps`` (Krylov dimension ``m``), ``converged``,
        ``bounds`` (``{end: [k]}`` eigenvalue error bounds), ``noise`` (:math:`\\eta`),
        ``nodes`` and ``weights`` (Gauss quadrature: Ritz values and :math:`(e_1^\\top s_j)^2`).
    """
    if which not in ("largest", "smallest", "both"):
        raise ValueError(f"which must be 'largest', 'smallest' or 'both', got {which!r}")
    D = v0.numel()
    if not 1 <= k <= D:
        raise ValueError(f"k must be between 1 and the dimension {D}, got {k}")
    limit = min(D, int(steps if steps is not None else max_iter or max(300, 20 * k)))
    ends = ("largest", "smallest") if which == "both" else (which,)
    tol = resolve_tol(tol, v0.dtype)
    run = _Krylov(matvec, v0, limit)
    bar = tqdm(total=limit, desc="Lanczos", unit="product", disable=not progress, leave=False)
    check = None
    while True:
        run.step()
        bar.update(1)
        if steps is None and run.m >= min(k * len(ends) + 1, limit) and not run.invariant:
            estimate = run.estimate(ends, k)
            if estimate <= max(_target(tol, run.scale), run.noise):
                check = run.check(ends, k, tol)  # true residuals, no products
                if check.converged or check.noise_limited:
                    break
        if run.m == limit or (steps is not None and run.invariant):
            break
        run.extend()
    bar.close()
    return run.finish(ends, k, tol, check if check is not None and check.m == run.m else None,
                      residuals=steps is None)  # fmt: skip


def _target(tol: float, scale: float) -> float:
    """Absolute eigenvalue accuracy asked for: ``tol`` relative to the largest |Ritz value|,
    but not below float64 rounding (:data:`FLOAT64_FLOOR` relative), which no residual can
    certify."""
    return max(tol, FLOAT64_FLOOR) * scale


def _ends_index(m: int, ends, k: int) -> dict[str, np.ndarray]:
    """Indices of the wanted Ritz values (ascending order) at each end."""
    kk = min(k, m)
    return {e: np.arange(m)[::-1][:kk] if e == "largest" else np.arange(m)[:kk] for e in ends}


def _gaps(theta: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    r"""Safeguarded gap of each Ritz value to the rest of the spectrum:
    :math:`\delta_i = \min_{j \ne i} (|\theta_i - \theta_j| - r_j)`, since an eigenvalue lies
    within :math:`r_j` of :math:`\theta_j` (``inf`` when alone; ``tiny`` when the intervals
    overlap, which leaves the linear bound :math:`r_i`). Plain Ritz gaps overestimate the gap
    to eigenvalues not yet found and made the quadratic bound certify wrong values."""
    if len(theta) < 2:
        return np.full(len(theta), np.inf)
    diffs = np.abs(theta[:, None] - theta[None, :]) - residuals[None, :]
    np.fill_diagonal(diffs, np.inf)
    return np.maximum(diffs.min(axis=1), np.finfo(float).tiny)


def _quadratic(residuals: np.ndarray, gaps: np.ndarray) -> np.ndarray:
    r"""Eigenvalue error bounds :math:`\min(r_i, r_i^2/\delta_i)` (Kato-Temple / Saad; the
    Ritz gap may overestimate the true gap early on). Overlapping intervals give
    :math:`\delta_i` = ``tiny`` and :math:`r_i^2/\delta_i` = ``inf`` (no overflow warning):
    the bound is then :math:`r_i`."""
    with np.errstate(over="ignore", divide="ignore"):
        return np.minimum(residuals, residuals**2 / gaps)


def _tridiagonal_eigh(alpha: list[float], beta: list[float]):
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal ``T``."""
    from scipy.linalg import eigh_tridiagonal

    if len(alpha) == 1:
        return np.array(alpha, dtype=np.float64), np.ones((1, 1))
    return eigh_tridiagonal(np.asarray(alpha, np.float64), np.asarray(beta, np.float64))


@dataclass
class _Check:
    """True residuals of the wanted Ritz pairs at Krylov dimension ``m``."""

    m: int
    pairs: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # (values, index, residuals)
    bounds: dict[str, np.ndarray]
    converged: bool
    noise_limited: bool


class _Basis:
    """Lanczos vectors in a preallocated ``[capacity, D]`` buffer (grown by doubling), with
    float64 products against it.

    The buffer is float64 when ``max_rows`` float64 rows fit in :data:`BASIS_FLOAT64_BYTES`
    (no conversion per product: float32 rows converted block by block made the
    re-orthogonalisation 3x slower than the products of a 300k-parameter network at N = 256),
    else in the start vector's dtype (half the memory; rows converted block by block).
    """

    def __init__(self, q0: Tensor, max_rows: int):
        D = q0.numel()
        wide = max_rows * D * 8 <= BASIS_FLOAT64_BYTES
        dtype = torch.float64 if wide else q0.dtype
        self.buffer = torch.empty((min(max_rows, 32), D), dtype=dtype, device=q0.device)
        self.max_rows = max_rows
        self.dtype = q0.dtype  # the operator's
        self.buffer[0] = q0
        self.size = 1
        self.rows = self.max_rows if dtype == torch.float64 else max(1, _BLOCK_ELEMENTS // D)

    def __getitem__(self, j: int) -> Tensor:
        return self.buffer[j]

    def append(self, q: Tensor) -> None:
        if self.size == self.buffer.shape[0]:
            rows = min(2 * self.size, max(self.max_rows, self.size + 1))
            bigger = self.buffer.new_empty((rows, self.buffer.shape[1]))
            bigger[: self.size] = self.buffer[: self.size]
            self.buffer = bigger
        self.buffer[self.size] = q.to(self.dtype)  # rounded as the operator will see it
        self.size += 1

    def _blocks(self):
        for i in range(0, self.size, self.rows):
            yield i, self.buffer[i : min(i + self.rows, self.size)].to(torch.float64)

    def coefficients(self, w: Tensor) -> Tensor:
        """:math:`Q^\\top w` in float64 (``w`` float64 ``[D]`` or ``[D, c]``)."""
        return torch.cat([block @ w for _, block in self._blocks()])

    def combine(self, h: Tensor) -> Tensor:
        """:math:`Q h` in float64 (``h`` float64 ``[m]`` or ``[m, c]``)."""
        out = None
        for i, block in self._blocks():
            part = block.T @ h[i : i + block.shape[0]]
            out = part if out is None else out + part
        return out


class _Krylov:
    """State of one Lanczos run: basis, float64 tridiagonal, pending residual, noise level."""

    def __init__(self, matvec, v0: Tensor, limit: int):
        self.matvec, self.dtype, self.device = matvec, v0.dtype, v0.device
        self.D = v0.numel()
        v = v0.to(torch.float64)
        self.Q = _Basis((v / v.norm()).to(v0.dtype), limit)
        self.alpha: list[float] = []
        self.beta: list[float] = []
        self.h: list[np.ndarray] = []  # h_j = Q_{j+1}^T A q_j, both passes (float64)
        self.lost: dict[int, float] = {}  # |w_j| discarded at a restart after step j
        self.noise = 0.0
        self.products = 0
        self.restarts = torch.Generator().manual_seed(0x5EED)
        self.w: Tensor | None = None
        self.b = 0.0
        self.theta, self.S = np.zeros(0), np.zeros((0, 0))

    @property
    def m(self) -> int:
        return len(self.alpha)

    @property
    def scale(self) -> float:
        return max(float(np.abs(self.theta).max()), np.finfo(float).tiny)

    @property
    def invariant(self) -> bool:
        """The new residual is at float64 rounding or at the operator's noise level."""
        return self.b <= max(1e3 * _EPS64 * self.scale, 10 * self.noise)

    def product(self, v: Tensor) -> Tensor:
        self.products += 1
        return self.matvec(v)

    def step(self) -> None:
        """One product :math:`w = A q_j`; the three-term recurrence's :math:`\\alpha_j q_j +
        \\beta_{j-1} q_{j-1}` subtracted first, then one float64 full re-orthogonalisation
        pass (twice when it drops the norm by more than 0.7, the DGKS criterion: rare once the
        large components are gone, so one pass over the basis per step instead of two);
        :math:`\\alpha_j`, :math:`\\beta_j`, and the coefficients :math:`h_j`."""
        j = self.m
        q = self.Q[j].to(torch.float64)
        w = self.product(q.to(self.dtype)).to(torch.float64)
        local = torch.zeros(j + 1, dtype=torch.float64, device=w.device)
        local[j] = q @ w
        w = w - local[j] * q
        if j > 0:
            local[j - 1] = self.beta[j - 1]
            w = w - self.beta[j - 1] * self.Q[j - 1].to(torch.float64)
        before = float(w.norm())
        c = self.Q.coefficients(w)  # deviations from the tridiagonal (alpha_j absorbs c[j])
        deviation = torch.cat([c[:j], c[j + 1 :]])
        self.noise = max(self.noise, float(deviation.abs().max()) if j else 0.0)
        w = w - self.Q.combine(c)
        if float(w.norm()) < 0.7 * before:
            again = self.Q.coefficients(w)
            w = w - self.Q.combine(again)
            c = c + again
        h = local + c
        self.alpha.append(float(h[j]))
        self.h.append(h.cpu().numpy())
        self.w, self.b = w, float(w.norm())
        self.theta, self.S = _tridiagonal_eigh(self.alpha, self.beta)

    def extend(self) -> None:
        """Append :math:`w / \\beta_j`, or a random vector orthogonal to the basis (and a zero
        off-diagonal) when the Krylov space is invariant."""
        if not self.invariant:
            self.beta.append(self.b)
            self.Q.append(self.w / self.b)
            return
        self.lost[self.m - 1] = self.b
        w = torch.randn(self.D, generator=self.restarts, dtype=torch.float64).to(self.device)
        for _ in range(2):
            w = w - self.Q.combine(self.Q.coefficients(w))
        self.beta.append(0.0)
        self.Q.append(w / w.norm())

    def estimate(self, ends, k: int) -> float:
        """The recurrence's largest error bound over the wanted Ritz values."""
        estimates = self.b * np.abs(self.S[-1])
        bounds = _quadratic(estimates, _gaps(self.theta, estimates))
        return max(float(bounds[idx].max()) for idx in _ends_index(self.m, ends, k).values())

    def ritz_vectors(self, idx: np.ndarray) -> Tensor:
        """Unit Ritz vectors ``[D, len(idx)]`` (float64 combination, then the basis dtype)."""
        S = torch.as_tensor(self.S[:, idx].copy(), dtype=torch.float64, device=self.device)
        U = self.Q.combine(S)
        return (U / U.norm(dim=0)).to(self.dtype)

    def hessenberg(self) -> np.ndarray:
        """:math:`H_m` ``[m, m]``: column ``j`` holds :math:`h_j` and :math:`\\beta_j` below
        it, so that :math:`A Q_m = Q_m H_m + w_m e_m^\\top` (module docstring)."""
        m = self.m
        H = np.zeros((m, m))
        for j, h in enumerate(self.h):
            H[: j + 1, j] = h
            if j + 1 < m:
                H[j + 1, j] = self.beta[j]
        return H

    def residuals(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rayleigh quotients :math:`s_i^\\top H_m s_i` and true residual norms of the Ritz
        vectors :math:`Q_m s_i`, ``i`` in ``idx``, from the recorded coefficients (no product;
        module docstring)."""
        S = self.S[:, idx]
        HS = self.hessenberg() @ S
        values = (S * HS).sum(axis=0)
        res = np.sqrt(((HS - S * values) ** 2).sum(axis=0) + (self.b * S[-1]) ** 2)
        for j, norm in self.lost.items():
            res = res + norm * np.abs(S[j])
        return values, res

    def check(self, ends, k: int, tol: float) -> _Check:
        """True residuals and error bounds of the wanted Ritz pairs (no products)."""
        estimates = self.b * np.abs(self.S[-1])
        gaps, target = _gaps(self.theta, estimates), _target(tol, self.scale)
        pairs, bounds, converged, limited = {}, {}, True, True
        for end, idx in _ends_index(self.m, ends, k).items():
            values, res = self.residuals(idx)
            quad = _quadratic(res, gaps[idx])
            bounds[end] = quad + self.noise
            pairs[end] = (values, idx, res)
            failing = bounds[end] > target
            converged &= not failing.any()
            # more products cannot help: the residual is at the noise level, the target is
            # under twice the noise (the bound's floor), or the residual stopped following
            # the recurrence's estimate
            stuck = (quad <= self.noise) | (target <= 2 * self.noise) | (res > 10 * estimates[idx])
            limited &= bool(stuck[failing].all())
        return _Check(self.m, pairs, bounds, converged, limited and not converged)

    def finish(self, ends, k: int, tol: float, check: _Check | None, residuals: bool) -> dict:
        """The returned dictionary (see :func:`lanczos`)."""
        m = self.m
        out: dict[str, Any] = {
            "alpha": np.array(self.alpha),
            "beta": np.array(self.beta[: m - 1]),
            "nodes": self.theta,
            "weights": self.S[0] ** 2,
            "noise": self.noise,
            "steps": m,
        }
        if residuals:
            check = check if check is not None else self.check(ends, k, tol)
            for end in ends:
                values, idx, res = check.pairs[end]
                out[end] = (values, self.ritz_vectors(idx), res)
            out["bounds"], out["converged"] = check.bounds, check.converged
        else:
            estimates = self.b * np.abs(self.S[-1])
            gaps = _gaps(self.theta, estimates)
            out["bounds"] = {}
            for end, idx in _ends_index(m, ends, k).items():
                out[end] = (self.theta[idx], self.ritz_vectors(idx), estimates[idx])
                out["bounds"][end] = _quadratic(estimates[idx], gaps[idx]) + self.noise
            target = _target(tol, self.scale)
            out["converged"] = all(bool((b <= target).all()) for b in out["bounds"].values())
        out["num_products"] = self.products
        return out
