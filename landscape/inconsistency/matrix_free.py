r"""The matrix-free backend: curvature-vector products only (whole networks).

For one domain ``A`` a seeded Lanczos run (:func:`~landscape.inconsistency.solvers.lanczos_ritz`)
estimates :math:`\lambda_{\max}(H_A)` (for relative damping and scaling) and bounds
:math:`\lambda_{\min}(H_A)` from above: a Ritz value at or below ``rtol·λ_max`` proves that
:math:`H_A` is not positive definite. With ``remedy="top-k"`` Lanczos iterates until the ``k``
leading Ritz pairs :math:`(\Lambda_k, U_k)` meet the solver tolerance, or the operator's
noise level where that is higher (float32 products; their products, residuals, noise and
convergence are recorded); since :math:`U_k^\top H_A U_k = \Lambda_k` exactly,
the restricted problem :math:`\Lambda_k^{-1/2} U_k^\top H_B U_k \Lambda_k^{-1/2}` is then solved
exactly on their span (``k`` products with :math:`H_B`).

Without top-k, the pair is solved by LOBPCG or ARPACK on :math:`(H_B, \tilde H_A)`. When
:math:`H_A` is singular and every :math:`H_B` vanishes along its null direction ``u`` (no
curvature beyond ``rtol`` relative to :math:`\lambda_{\max}(H_B)`), the null direction is
deflated (:math:`\tilde H_A = H_A + \lambda_{\max}(H_A)\, uu^\top`, on which
:math:`H_B u = 0` contributes the eigenvalue 0), as the dense method solves on the range.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla

from landscape.inconsistency.definiteness import (
    DefinitenessReport,
    NotConvergedError,
    NotPositiveDefiniteError,
    mark_unbounded,
    report_from_spectrum,
)
from landscape.inconsistency.options import SolverOptions
from landscape.inconsistency.protocol import GeneralizedEig
from landscape.inconsistency.remedy import Remedy
from landscape.inconsistency.solvers import (
    CountingOperator,
    RitzPairs,
    eigsh_max,
    lanczos_ritz,
    lobpcg_max,
)


class MatrixFreeCurvature:
    """One domain's curvature operator ``H_A`` prepared for every pair ``(A, ·)``.

    Args:
        op: a curvature operator, SciPy operator or dense array.
        domain: name of ``A``.
        remedy, damping, k: the remedy (or a :class:`Remedy` as ``remedy``).
        options: :class:`~landscape.inconsistency.options.SolverOptions`; ``lanczos_steps``,
            ``rtol`` and ``seed`` given as keywords override it.

    Raises:
        NotConvergedError: the top-``k`` Ritz pairs did not meet ``options.tol`` within
            ``options.lanczos_maxiter`` products.
    """

    def __init__(
        self,
        op,
        domain: str = "A",
        *,
        remedy: str | Remedy | None = None,
        damping: float = 1e-3,
        k: int | None = None,
        options: SolverOptions | None = None,
        lanczos_steps: int | None = None,
        rtol: float | None = None,
        seed: int | None = None,
    ):
        overrides = {"lanczos_steps": lanczos_steps, "rtol": rtol, "seed": seed}
        options = options or SolverOptions()
        overrides = {key: v for key, v in overrides.items() if v is not None}
        self.options = SolverOptions(**{**options.__dict__, **overrides})
        self.remedy = Remedy.resolve(remedy, damping, k)
        self.op = op if isinstance(op, CountingOperator) else CountingOperator(op)
        self.domain = domain
        self.rtol = self.options.rtol
        if self.remedy.kind == "top-k" and self.remedy.k >= self.dim:
            raise ValueError(
                f"k={self.remedy.k} must be smaller than the dimension {self.dim}; use "
                "method='dense'"
            )
        start = self.op.products
        self.ritz = self._lanczos()
        self.report = self._report(self.ritz)
        self.lam_max = self.report.max_eigenvalue
        self.null_vectors: np.ndarray | None = None
        if self.remedy.kind == "top-k":
            lam, U = self.ritz.values[-self.remedy.k :], self.ritz.vectors[:, -self.remedy.k :]
            kept = self.remedy.restrict(lam, self.report, noun="top Ritz values")
            self.topk = (kept.values, U[:, kept.keep])
            self.delta = 0.0
        else:
            self.topk = None
            self.delta = 0.0 if self.remedy.kind is None else self._damping()
        self.setup_products = self.op.products - start

    @property
    def dim(self) -> int:
        return self.op.shape[0]

    def _lanczos(self) -> RitzPairs:
        o = self.options
        if self.remedy.kind != "top-k":
            return lanczos_ritz(self.op, which="both", steps=o.lanczos_steps, seed=o.seed)
        # the subspace matters, not only the values: an eigenvalue error bound
        # min(r, r²/gap) ≤ tol² keeps the residuals r below about tol·λ_max
        ritz = lanczos_ritz(
            self.op, k=self.remedy.k, which="largest", tol=max(o.tol**2, 1e-14),
            max_iter=o.lanczos_maxiter, seed=o.seed,
        )  # fmt: skip
        if not (ritz.converged or ritz.noise_limited):
            worst = float(ritz.residuals.max() / max(abs(ritz.values).max(), 1e-300))
            raise NotConvergedError(
                f"Lanczos did not find the top-{self.remedy.k} eigenpairs of H_A of domain "
                f"{self.domain!r} to tol={o.tol:g} within {ritz.products} products (largest "
                f"relative residual {worst:.2g}); pass a larger lanczos_maxiter, a larger tol "
                "or a smaller k",
                pair=(self.domain, None),
                residual=worst,
                tol=o.tol,
            )
        return ritz

    def _report(self, ritz: RitzPairs) -> DefinitenessReport:
        report = report_from_spectrum(
            self.domain, ritz.spectrum, None, self.rtol, f"lanczos({ritz.products})"
        )
        if report.status == "positive definite":
            report.status = "not disproved"
        elif self.remedy.kind != "top-k":  # the smallest Ritz vector is known
            u = ritz.vectors[:, 0]
            report.unbounded_direction = u / np.linalg.norm(u)
        return report

    def _damping(self) -> float:
        lam = np.array([self.ritz.spectrum[0], self.lam_max])
        return self.remedy.restrict(lam, self.report).delta

    def setup_record(self) -> dict:
        """Lanczos products, residuals and convergence of this domain's setup."""
        out = {"setup_products": self.setup_products, "products": self.op.products}
        if self.topk is not None:
            scale = max(abs(self.lam_max), 1e-300)
            out["lanczos_residuals"] = (self.ritz.residuals[-self.remedy.k :] / scale).tolist()
            out["lanczos_converged"] = self.ritz.converged
            out["lanczos_noise"] = self.ritz.noise / scale
        return out

    def inspect(self, others: Mapping[str, MatrixFreeCurvature]) -> DefinitenessReport:
        """Add ``uᵀH_Bu`` along the unbounded direction (one product per other domain);
        positive beyond ``rtol·λ_max(H_B)`` certifies ``+inf``. When ``H_A`` is singular and
        every ``H_B`` vanishes along ``u`` (``‖H_Bu‖ ≤ √rtol·λ_max(H_B)``), the null space is
        shared: without a remedy the pair is solved with ``u`` deflated (see the module
        docstring); with damping, on ``H_A + δI`` as the dense method does."""
        rep = self.report
        if rep.positive_definite or rep.unbounded_direction is None:
            return rep
        u = rep.unbounded_direction
        images = {b: other.op.matvec(u) for b, other in others.items()}
        scales = {b: other.lam_max for b, other in others.items()}
        mark_unbounded(rep, {b: float(u @ w) for b, w in images.items()}, scales)
        vanish = all(
            np.linalg.norm(w) <= math.sqrt(self.rtol) * abs(scales[b]) for b, w in images.items()
        )
        if rep.status == "singular" and images and vanish:
            rep.status = "singular, shared null space"
            if self.remedy.kind is None:  # a damped H_A is solved whole, as the dense one
                self.null_vectors = u[:, None]
        return rep

    def solve(
        self,
        other,
        *,
        solver: str | None = None,
        tol: float | None = None,
        maxiter: int | None = None,
        block_size: int | None = None,
        seed: int | None = None,
    ) -> GeneralizedEig:
        r"""Largest generalized eigenpair of ``(H_B, H̃_A)`` without forming a matrix.

        Solvers: ``"lobpcg"`` (``scipy.sparse.linalg.lobpcg(H_B, X, B=H̃_A)``, seeded block
        start) or ``"eigsh"`` (ARPACK on ``H_B`` with ``M=H̃_A`` and a conjugate-gradient
        inverse of ``H̃_A``). Both run on the pair divided by the Lanczos
        :math:`\lambda_{\max}(\tilde H_A)` (same eigenvalues); ``tol`` is relative to
        :math:`\lambda_{\max}(H_B)/\lambda_{\max}(\tilde H_A)`, a lower bound of the answer
        (when ``other`` is a :class:`MatrixFreeCurvature`). Keywords override the options.
        The result may be unconverged (``converged=False``, with its residual):
        :func:`~landscape.inconsistency.score.inconsistency_score` refuses to report it.

        Raises:
            NotPositiveDefiniteError: ``H_A`` proved not positive definite, no remedy.
        """
        t0 = time.perf_counter()
        given = {"solver": solver, "tol": tol, "maxiter": maxiter, "block_size": block_size}
        given = {key: v for key, v in given.items() if v is not None}
        o = SolverOptions(**{**self.options.__dict__, **given})
        scale_b = other.lam_max if isinstance(other, MatrixFreeCurvature) else None
        B = other.op if isinstance(other, MatrixFreeCurvature) else other
        B = B if isinstance(B, CountingOperator) else CountingOperator(B)
        if B.shape != self.op.shape:
            raise ValueError(f"H_B has shape {B.shape}, H_A has {self.op.shape}")
        b0, a0 = B.products, self.op.products
        if self.topk is not None:
            eig = self._solve_topk(B)
        else:
            # raises NotPositiveDefiniteError without a remedy unless H_A is (or is positive
            # definite on the range of) a shared null space
            used = self.remedy.restrict(self.ritz.spectrum, self.report).used
            name = other.domain if isinstance(other, MatrixFreeCurvature) else "B"
            seed = self.options.seed if seed is None else seed
            eig = self._solve_iterative(B, scale_b, name, o, seed)
            eig.remedy = used
        eig.products_a, eig.products_b = self.op.products - a0, B.products - b0
        eig.seconds = time.perf_counter() - t0
        return eig

    def _solve_topk(self, B: CountingOperator) -> GeneralizedEig:
        lam, U = self.topk
        W = U / np.sqrt(lam)
        C = W.T @ B.matmat(W)
        C = 0.5 * (C + C.T)
        mu, w = scipy.linalg.eigh(C)
        value = float(mu[-1])
        res = float(np.linalg.norm(C @ w[:, -1] - value * w[:, -1]))
        return GeneralizedEig(
            value=value,
            vector=W @ w[:, -1],
            method="matrix-free",
            solver="top-k",
            remedy="top-k",
            subspace_dim=int(lam.size),
            residual=res / max(abs(value), 1e-300),
        )

    def _operator_a(self) -> spla.LinearOperator:
        """``H̃_A``: damped, or with the shared null direction deflated."""
        if self.null_vectors is None:
            return CountingOperator(self.op, shift=self.delta) if self.delta else self.op
        N, s = self.null_vectors, max(self.lam_max, 1e-300)
        return CountingOperator(
            spla.LinearOperator(
                self.op.shape,
                matvec=lambda x: self.op.matvec(x) + s * (N @ (N.T @ x)),
                matmat=lambda X: self.op.matmat(X) + s * (N @ (N.T @ X)),
                dtype=np.float64,
            )
        )

    def _solve_iterative(self, B, scale_b, name, o: SolverOptions, seed: int) -> GeneralizedEig:
        A_t = self._operator_a()
        scale = max(self.lam_max + self.delta, 1e-300)
        # λ_max(H_B)/λ_max(H̃_A) is a lower bound of λ_max(H_B, H̃_A): a relative tolerance
        rel = scale_b / scale if scale_b is not None and scale_b > 0 else 1.0
        rng = np.random.default_rng(seed)
        if o.solver == "lobpcg":
            out = lobpcg_max(B, A_t, scale, o.tol * rel, self.dim, o.block_size, o.maxiter, rng)
        else:
            out = eigsh_max(B, A_t, scale, o.tol, self.dim, o.maxiter, rng)
        value, v, iters, converged = out if out is not None else (0.0, None, 0, False)
        HBv = B.matvec(v) if v is not None else None
        HAv = A_t.matvec(v) if v is not None else None
        norm_a = float(v @ HAv) if v is not None else 0.0
        if not norm_a > 0:  # a Cholesky / CG failure or vᵀH̃_Av ≤ 0: not positive definite
            self.report.status = "indefinite"
            raise NotPositiveDefiniteError(self.report.message(), self.report)
        v, HBv, HAv = (x / math.sqrt(norm_a) for x in (v, HBv, HAv))
        value = float(v @ HBv)  # Rayleigh quotient with vᵀH̃_Av = 1
        if self.remedy.kind is None:
            self._certify_not_singular(v, value, name, scale_b)
        denom = np.linalg.norm(HBv) + abs(value) * np.linalg.norm(HAv)
        return GeneralizedEig(
            value=value,
            vector=v,
            method="matrix-free",
            solver=o.solver,
            delta=self.delta,
            subspace_dim=self.dim,
            iterations=iters,
            residual=float(np.linalg.norm(HBv - value * HAv) / denom) if denom > 0 else 0.0,
            converged=converged,
        )

    def _certify_not_singular(self, v: np.ndarray, value: float, name: str, scale_b) -> None:
        """Raise when the solver's own vector proves ``H̃_A`` numerically singular.

        With :math:`v^\top \tilde H_A v = 1`, :math:`u = v/\\|v\\|` has the Rayleigh quotient
        :math:`1/\\|v\\|^2 \\ge \\lambda_{\\min}(\tilde H_A)`: at or below
        ``rtol·λ_max(H_A)`` it certifies what the dense method sees, a singular ``H_A``
        (Lanczos' few products may have missed it), and the pair is refused the same way.
        """
        norm2 = float(v @ v)
        quotient = 1.0 / norm2
        if quotient > self.rtol * max(self.lam_max, 0.0):
            return
        rep = self.report
        rep.status = "singular"
        rep.min_eigenvalue = min(rep.min_eigenvalue, quotient)
        rep.unbounded_direction = v / math.sqrt(norm2)
        rep.how += f" + {self.options.solver}"
        scale = scale_b if scale_b is not None else abs(value) / norm2
        mark_unbounded(rep, {name: value / norm2}, {name: scale})
        raise NotPositiveDefiniteError(rep.message(), rep)
