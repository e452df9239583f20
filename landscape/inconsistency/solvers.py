r"""Iterative eigensolvers on float64 SciPy operators that count their products.

* :func:`lanczos_ritz`: extreme Ritz pairs of one curvature operator, by the project's one
  Lanczos (:func:`landscape.curvature.lanczos`, full reorthogonalisation, stops when the
  wanted Ritz values meet ``tol``); the smallest Ritz value bounds :math:`\lambda_{\min}`
  from above and the largest bounds :math:`\lambda_{\max}` from below (Cauchy interlacing),
  so a Ritz value at or below zero *proves* the operator is not positive definite;
* :func:`lobpcg_max`, :func:`eigsh_max`: the largest generalized eigenpair of
  :math:`H_B v = \lambda H_A v` (LOBPCG with ``B = H_A``; ARPACK with ``M = H_A`` and a
  conjugate-gradient inverse), on the pair divided by a common scale.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla


class CountingOperator(spla.LinearOperator):
    """A float64 SciPy ``LinearOperator`` that counts the vectors it multiplies.

    Wraps anything with ``matvec`` / ``matmat`` (a SciPy operator, a curvature operator's
    ``to_scipy()``, or a dense array), optionally shifted: ``(H + shift·I) x``.
    """

    def __init__(self, op, shift: float = 0.0):
        self.torch_op = None  # a torch operator (``@`` on tensors of its device), if given
        if hasattr(op, "to_scipy"):
            self.torch_op = op
            op = op.to_scipy()
        if isinstance(op, np.ndarray):
            op = spla.aslinearoperator(np.asarray(op, dtype=np.float64))
        n = op.shape[0]
        super().__init__(dtype=np.float64, shape=(n, n))
        self.op = op
        self.shift = float(shift)
        self.products = 0

    def _matvec(self, x):
        self.products += 1
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        y = np.asarray(self.op.matvec(x), dtype=np.float64).reshape(-1)
        return y + self.shift * x if self.shift else y

    def _matmat(self, X):
        X = np.asarray(X, dtype=np.float64)
        self.products += X.shape[1]
        Y = np.asarray(self.op.matmat(X), dtype=np.float64)
        return Y + self.shift * X if self.shift else Y

    def _adjoint(self):
        return self


@dataclass
class RitzPairs:
    r"""Ritz pairs of one operator from :func:`lanczos_ritz`.

    Attributes:
        values: the wanted Ritz values, ascending ``[m]``.
        vectors: their Ritz vectors ``[D, m]``.
        residuals: their residual norms ``‖Hu − θu‖`` (the recurrence's) ``[m]``.
        spectrum: every Ritz value of the Krylov space, ascending (its ends bound the
            spectrum) ``[s]``.
        products: operator products spent; ``converged``: whether ``tol`` was met.
        noise: the operator's noise level :math:`\eta` seen by Lanczos (absolute).
        bounds: eigenvalue error bounds of the wanted values ``[m]``.
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    spectrum: np.ndarray
    products: int
    converged: bool
    noise: float = 0.0
    bounds: np.ndarray | None = None

    @property
    def noise_limited(self) -> bool:
        """Not converged only because of the operator's noise (more products cannot help)."""
        scale = max(abs(self.spectrum).max(), np.finfo(float).tiny)
        return bool(
            not self.converged
            and self.bounds is not None
            and self.bounds.max() <= 2 * self.noise + 1e-14 * scale
        )


def lanczos_ritz(
    op: CountingOperator,
    *,
    k: int = 1,
    which: str = "both",
    tol: float = 1e-8,
    steps: int | None = None,
    max_iter: int | None = None,
    seed: int = 0,
) -> RitzPairs:
    """Ritz pairs of ``op`` from a seeded start, in float64 (see the module docstring).

    Args:
        op: the operator (float64 NumPy products).
        k: Ritz pairs wanted at each end.
        which: ``"largest"``, ``"smallest"`` or ``"both"`` (values of both ends, ascending).
        tol: relative accuracy of the wanted Ritz values (ignored with ``steps``).
        steps: run exactly this many products (no convergence test).
        max_iter: product limit otherwise.
        seed: seed of the start vector.

    Example:
        >>> pairs = lanczos_ritz(CountingOperator(np.diag([1.0, 2.0, 5.0])), k=2, which="largest")
        >>> pairs.values.round(10).tolist(), pairs.converged
        ([2.0, 5.0], True)
    """
    from landscape.curvature import lanczos

    n = op.shape[0]
    v0, matvec = _device_products(op, np.random.default_rng(seed).standard_normal(n))

    out = lanczos(matvec, v0, k=min(k, n), which=which, tol=tol, max_iter=max_iter, steps=steps)
    ends = [out[e] for e in ("smallest", "largest") if e in out]
    values = np.concatenate([np.asarray(e[0], dtype=np.float64) for e in ends])
    vectors = np.concatenate([_numpy(e[1]) for e in ends], axis=1)
    residuals = np.concatenate([np.asarray(e[2], dtype=np.float64) for e in ends])
    bounds = out.get("bounds", {})
    bounds = np.concatenate([np.asarray(bounds[e], float) for e in ("smallest", "largest")
                             if e in bounds]) if bounds else None  # fmt: skip
    order = np.argsort(values, kind="stable")
    alpha, beta = np.asarray(out["alpha"], float), np.asarray(out["beta"], float)
    spectrum = (
        scipy.linalg.eigvalsh_tridiagonal(alpha, beta[: alpha.size - 1])
        if alpha.size > 1
        else alpha.copy()
    )
    return RitzPairs(
        values=values[order],
        vectors=vectors[:, order],
        residuals=residuals[order],
        spectrum=np.sort(spectrum),
        products=int(out["num_products"]),
        converged=bool(out["converged"]),
        noise=float(out.get("noise", 0.0)),
        bounds=bounds,
    )


def _device_products(op: CountingOperator, v0: np.ndarray):
    """``(start vector, matvec)`` in float64 torch tensors for :func:`lanczos`: on the torch
    operator's device when ``op`` wraps one (Krylov basis and re-orthogonalisation stay there;
    the products are the same as through SciPy: float64 vectors rounded to the operator's
    dtype, results widened back, counted in ``op.products``), else through ``op`` on the host."""
    import torch

    inner = getattr(op, "torch_op", None)
    if inner is None:

        def host(v):
            return torch.from_numpy(np.asarray(op.matvec(v.numpy()), dtype=np.float64))

        return torch.from_numpy(v0), host

    def device(v):
        op.products += 1
        w = (inner @ v.to(inner.dtype)).to(torch.float64)
        return w + op.shift * v if op.shift else w

    return torch.from_numpy(v0).to(inner.device), device


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if hasattr(t, "detach") else np.asarray(t, float)


def scaled(op: CountingOperator, scale: float) -> spla.LinearOperator:
    n = op.shape[0]
    return spla.LinearOperator(
        (n, n),
        matvec=lambda x: op.matvec(x) / scale,
        matmat=lambda X: op.matmat(X) / scale,
        dtype=np.float64,
    )


def lobpcg_max(B, A, scale, tol_abs, n, block_size, maxiter, rng):
    """LOBPCG on ``(B/scale, A/scale)`` (same eigenvalues, unit-scale residuals)."""
    m = max(1, min(int(block_size), n))
    if n < 5 * m + 1:
        # LOBPCG needs n > 5·block; tiny problems are solved densely from the operators
        HB, HA = B.matmat(np.eye(n)), A.matmat(np.eye(n))
        try:
            lam, V = scipy.linalg.eigh(0.5 * (HB + HB.T), 0.5 * (HA + HA.T))
        except np.linalg.LinAlgError:
            return None
        return float(lam[-1]), V[:, -1], 0, True
    X = rng.standard_normal((n, m))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            lam, V, res_hist = spla.lobpcg(
                scaled(B, scale),
                X,
                B=scaled(A, scale),
                tol=tol_abs,
                maxiter=maxiter,
                largest=True,
                retResidualNormsHistory=True,
            )
        except np.linalg.LinAlgError:
            return None
    iters = max(len(res_hist) - 1, 0)
    history = [np.asarray(h).reshape(-1) for h in res_hist] or [np.array([np.inf])]
    j = int(np.argmax(lam))
    column = [h[min(j, h.size - 1)] for h in history]
    # LOBPCG stops once every residual meets tol; its final Rayleigh-Ritz step may leave the
    # returned pair's a hair above (seen: 1.007 tol, with a true relative residual of 1.7e-9
    # for tol 1e-8): met during the iterations and within 2 tol at the end is converged
    converged = bool(min(column) <= tol_abs and column[-1] <= 2 * tol_abs)
    return float(lam[j]), np.asarray(V[:, j]), iters, converged


def eigsh_max(B, A, scale, tol, n, maxiter, rng, cg_rtol=1e-10):
    """ARPACK ``eigsh(B, M=A, Minv=CG(A))`` on the scaled pair."""
    As = scaled(A, scale)
    cg_iters = [0]

    def solve(x):
        y, info = spla.cg(As, x, rtol=cg_rtol, maxiter=10 * n)
        cg_iters[0] += 1
        if info != 0:
            raise np.linalg.LinAlgError(f"CG on H_A did not converge (info={info})")
        return y

    Minv = spla.LinearOperator((n, n), matvec=solve, dtype=np.float64)
    try:
        lam, V = spla.eigsh(
            scaled(B, scale),
            k=1,
            M=As,
            Minv=Minv,
            which="LA",
            v0=rng.standard_normal(n),
            tol=tol,
            maxiter=maxiter,
        )
        converged = True
    except spla.ArpackNoConvergence as err:
        if err.eigenvalues.size == 0:
            return float("nan"), rng.standard_normal(n), maxiter, False
        lam, V, converged = err.eigenvalues, err.eigenvectors, False
    except np.linalg.LinAlgError:
        return None
    return float(lam[-1]), np.asarray(V[:, -1]), cg_iters[0], converged
