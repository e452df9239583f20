r"""The inconsistency score :math:`I^\varepsilon` over every ordered pair of domains.

:func:`inconsistency_score` validates and resolves its arguments once (:class:`ScoreSettings`;
``method="auto"`` by the selection's size), builds one backend per domain (dense, matrix-free
or diagonal: the protocol of :mod:`landscape.inconsistency.protocol`), solves every ordered
pair, assembles the pairwise values and runs the empirical check on the true losses.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from landscape.inconsistency.checks import run_checks
from landscape.inconsistency.definiteness import REMEDY_HINT, NotConvergedError
from landscape.inconsistency.dense import DenseCurvature, dense_curvatures
from landscape.inconsistency.diagonal import DiagonalCurvature, diagonals
from landscape.inconsistency.matrix_free import MatrixFreeCurvature
from landscape.inconsistency.options import (
    AUTO_DENSE_DIM,
    CURVATURES,
    DIAGONAL_SOURCES,
    METHODS,
    PD_RTOL,
    CheckOptions,
    SolverOptions,
    check_epsilon,
    choice,
)
from landscape.inconsistency.protocol import GeneralizedEig
from landscape.inconsistency.remedy import Remedy
from landscape.inconsistency.result import InconsistencyResult, as_given
from landscape.inconsistency.risk import DisplacedRisk


@dataclass(frozen=True)
class ScoreSettings:
    """Every setting of one :func:`inconsistency_score` call, validated once.

    Attributes:
        epsilon: ``[E]``; ``scalar``: whether the caller gave one number.
        method, curvature, diagonal_source: see :func:`inconsistency_score`.
        remedy: the :class:`~landscape.inconsistency.remedy.Remedy`.
        solver: :class:`~landscape.inconsistency.options.SolverOptions` (``rtol`` and
            ``seed`` apply to every method).
        check: :class:`~landscape.inconsistency.options.CheckOptions`.
        progress: show progress bars.
    """

    epsilon: np.ndarray
    scalar: bool
    method: str
    curvature: str
    diagonal_source: str
    remedy: Remedy
    solver: SolverOptions
    check: CheckOptions
    progress: bool = True

    @classmethod
    def resolve(
        cls, epsilon, method, curvature, diagonal_source, remedy, solver, check, progress
    ) -> ScoreSettings:
        """Validate the plain arguments of :func:`inconsistency_score` (``method="auto"``
        stays unresolved until the selection's size is known)."""
        eps, scalar = check_epsilon(epsilon)
        return cls(
            epsilon=eps,
            scalar=scalar,
            method=choice(method, METHODS, "method"),
            curvature=choice(curvature, CURVATURES, "curvature"),
            diagonal_source=choice(diagonal_source, DIAGONAL_SOURCES, "diagonal_source"),
            remedy=remedy,
            solver=solver,
            check=check,
            progress=progress,
        )


def inconsistency_score(
    model,
    loss_func,
    domains: Mapping,
    epsilon: float | Sequence[float],
    params=None,
    method: str = "auto",
    *,
    curvature: str = "hessian",
    diagonal_source: str = "hessian",
    remedy: str | None = None,
    damping: float = 1e-3,
    k: int | None = None,
    check: bool = True,
    check_steps: int = 30,
    check_restarts: int = 0,
    solver: str = "lobpcg",
    tol: float = 1e-6,
    maxiter: int = 100,
    block_size: int = 2,
    lanczos_steps: int = 30,
    rtol: float = PD_RTOL,
    seed: int = 0,
    progress: bool = True,
    solver_options: SolverOptions | None = None,
    check_options: CheckOptions | None = None,
) -> InconsistencyResult:
    r"""The inconsistency score :math:`I^\varepsilon` of a model over its domains.

    The largest :math:`R_B - R_A + \varepsilon \max(\lambda_{\max}(H_B, H_A), 0)` over ordered
    pairs ``(A, B)``, at least ``ε`` (the package docstring; docs/method.md section 3).

    Args:
        model: any ``nn.Module`` whose forward takes a tensor batch, at :math:`\theta^*`
            (eval mode; never changed).
        loss_func: mean-reduced ``BCEWithLogitsLoss``, ``CrossEntropyLoss`` or ``MSELoss``.
        domains: ``{name: data}``, at least two; ``data`` a list of ``(X, y)`` batches or an
            unshuffled DataLoader (every pass accumulates over batches: memory holds one).
        epsilon: ``ε > 0``, or a list; ``params``: what ``θ`` moves (``None`` = all, a prefix
            such as ``"classifier"``, or names).
        method: ``"auto"`` (``"dense"`` for ``D <=`` :data:`AUTO_DENSE_DIM`, else
            ``"matrix-free"``), ``"dense"`` (float64 ``[D, D]`` matrices: the output layer's
            closed form from the model's features where it applies, else products on a
            float64 copy of the model; ``D <= MAX_DENSE_DIM``), ``"matrix-free"`` (LOBPCG /
            ARPACK on curvature-vector products) or ``"diagonal"`` (ratios
            :math:`\max_k h_{B,k}/h_{A,k}` of diagonals, the approximation Fishr matches).
        curvature: ``"hessian"``, ``"ggn"`` or ``"ef"``; ``diagonal_source`` (diagonal method):
            ``"hessian"`` (the curvature's diagonal) or ``"variance"`` (Fishr's variances).
        remedy, damping, k: for an ``H_A`` not positive definite: ``None`` (raise),
            ``"damping"`` (``H_A + δI``, ``δ = damping·λ_max(H_A)``) or ``"top-k"`` (the span
            of the ``k`` leading eigenvectors; the ``k`` largest entries for diagonals); a
            null space every ``H_B`` shares is solved on the range (``remedy="range"``).
        check, check_steps, check_restarts: the empirical check on the true losses
            (:mod:`landscape.inconsistency.checks`, :class:`CheckOptions`); a head selection
            runs the head alone on its cached input (``result.check["evaluator"]``).
        solver, tol, maxiter, block_size, lanczos_steps, rtol, seed: :class:`SolverOptions`;
            ``solver_options``, ``check_options``: the groups whole (override the keywords).
        progress: show progress bars.

    Returns:
        An :class:`InconsistencyResult` (``result.method``: the method that ran).

    Raises:
        ValueError: ``ε ≤ 0``, fewer than two domains, unknown method / curvature / remedy,
            an explicit method that cannot handle the model (one line naming one that can).
        NotPositiveDefiniteError: some ``H_A`` is singular or indefinite and ``remedy`` is
            ``None`` (the message names the remedies; ``err.report`` has the details).
        NotConvergedError: an iterative solver did not meet its tolerance.
    """
    t_start = time.perf_counter()
    settings = ScoreSettings.resolve(
        epsilon, method, curvature, diagonal_source, Remedy.resolve(remedy, damping, k),
        solver_options
        or SolverOptions(solver, tol, maxiter, block_size, lanczos_steps, None, rtol, seed),
        check_options or CheckOptions(check, check_steps, check_restarts, seed=seed),
        progress,
    )  # fmt: skip
    domains, selected, settings = _checked_inputs(model, loss_func, domains, params, settings)
    with _model_state_kept(model):
        return _score(model, loss_func, domains, selected, settings, t_start)


def _checked_inputs(model, loss_func, domains, params, settings: ScoreSettings):
    """Validate the model, loss and domains; resolve ``params`` to the selected parameters
    and ``method="auto"`` to the method that runs: ``(domains, selected, settings)``."""
    import torch

    from landscape.curvature import (
        MAX_DENSE_DIM,
        check_eval_mode,
        check_finite_output,
        check_loss,
    )
    from landscape.domains import check_domains, check_finite
    from landscape.params import select_params

    domains = check_domains(domains, min_domains=2, what="the inconsistency score")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_loss(loss_func)
    check_eval_mode(model)
    check_finite(domains)
    for name, data in domains.items():
        check_finite_output(model, name, next(iter(data)))
    selected = select_params(model, params)
    dim = sum(p.numel() for p in selected.values())
    if settings.method == "auto":
        method = "dense" if dim <= AUTO_DENSE_DIM else "matrix-free"
        settings = dataclasses.replace(settings, method=method)
    if settings.method == "dense" and dim > MAX_DENSE_DIM:
        raise ValueError(
            f"method='dense' builds [D, D] matrices and D={dim} is above {MAX_DENSE_DIM}; use "
            "method='matrix-free' (or 'auto') or fewer parameters (e.g. params='classifier')"
        )
    if settings.method != "diagonal":  # under torchrun: exact shards, means all-reduced
        from landscape.distributed import shard_domains

        domains = shard_domains(domains)
    return domains, selected, settings


@contextlib.contextmanager
def _model_state_kept(model):
    """Restore every ``requires_grad`` flag and module mode on the way out."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    try:
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        for n, m in model.named_modules():
            if m.training != modes[n]:
                m.train(modes[n])


def _score(model, loss_func, domains, selected, settings: ScoreSettings, t_start: float):
    """The body of :func:`inconsistency_score` on validated, resolved inputs."""
    from landscape.distributed import check_replicas, total_samples

    names, params = list(domains), list(selected)  # params resolved to exact names
    evaluators = {d: DisplacedRisk(model, loss_func, domains[d], params, name=d) for d in names}
    pairs = [(a, b) for a in names for b in names if a != b]
    at_theta = {}
    if settings.method != "dense" or settings.check.enabled:  # before the curvature work
        at_theta = {d: evaluators[d].value_and_grad(None) for d in names}
    with contextlib.ExitStack() as stack:
        backends, dense_at_theta = _backends(model, loss_func, domains, params, settings, stack)
        at_theta = at_theta or dense_at_theta
        eigs = _solve_pairs(backends, pairs, settings)
        check_replicas("the eigenpairs of the pairs", *[  # torchrun: replicas agree
            np.r_[e.value, np.ravel(e.vector if e.vector is not None else [])]
            for e in eigs.values()
        ])  # fmt: skip
        solver_info = {f"{a} -> {b}": eig.record() for (a, b), eig in eigs.items()}
        for d, backend in backends.items():
            if backend.setup_record() is not None:
                solver_info[f"operator {d}"] = backend.setup_record()
        reports = {d: backend.report.as_dict() for d, backend in backends.items()}
    parts = _assemble(names, pairs, eigs, at_theta, settings.epsilon)
    checked = None
    if settings.check.enabled:
        checked = run_checks(
            evaluators, pairs, parts["vectors"], settings.epsilon,
            {d: at_theta[d][0] for d in names}, parts["winners"], settings.check,
            settings.progress,
        )  # fmt: skip
    scalar = settings.scalar
    return InconsistencyResult(
        score=as_given(parts["scores"], scalar),
        pair=as_given(parts["winners"], scalar),
        domains=names,
        epsilon=settings.epsilon,
        values=parts["values"],
        risk_gap=parts["risk_gap"],
        curvature_term=parts["curvature_term"],
        eigenvalues=parts["eigenvalues"],
        risks={d: float(at_theta[d][0]) for d in names},
        gradient_norms={d: float(np.linalg.norm(at_theta[d][1])) for d in names},
        first_order=parts["first_order"],
        direction=as_given(parts["directions"], scalar),
        unit_directions=parts["vectors"],
        pairs=pairs,
        param_names=params,
        param_shapes=[tuple(p.shape) for p in selected.values()],
        method=settings.method,
        curvature=settings.curvature,
        diagonal_source=settings.diagonal_source if settings.method == "diagonal" else None,
        remedy=settings.remedy.kind,
        **settings.remedy.settings,
        definiteness=reports,
        solver=solver_info,
        check=checked,
        seed=int(settings.solver.seed),
        num_samples={d: total_samples(domains[d]) for d in names},
        seconds=time.perf_counter() - t_start,
    )


def _backends(model, loss_func, domains, params, settings: ScoreSettings, stack):
    """One backend per domain, and ``{domain: (risk, gradient)}`` where the dense pass gives
    them for free (else empty). Operators are released when ``stack`` closes."""
    from landscape.curvature import curvature_operator

    s, rtol = settings, settings.solver.rtol
    if s.method == "dense":
        mats = dense_curvatures(model, loss_func, domains, params, s.curvature)
        for d, (_, risk, _) in mats.items():
            if not math.isfinite(float(risk)):
                raise ValueError(
                    f"domain {d!r}: the risk at theta* (the unmoved weights) is {float(risk)}: "
                    "the model's output is not finite there; check the weights and the data"
                )
        backends = {d: DenseCurvature(H, d, rtol, s.remedy) for d, (H, _, _) in mats.items()}
        return backends, {d: (risk, grad) for d, (_, risk, grad) in mats.items()}
    if s.method == "diagonal":
        diag = diagonals(
            model, loss_func, domains, params, s.curvature, s.diagonal_source, s.progress
        )
        return {d: DiagonalCurvature(h, d, rtol, s.remedy) for d, h in diag.items()}, {}
    backends = {}
    for d, data in domains.items():
        # the products' bar: Lanczos on a whole network runs hundreds of them per domain
        op = curvature_operator(model, loss_func, data, params, s.curvature, progress=s.progress)
        stack.callback(op.release)
        backends[d] = MatrixFreeCurvature(op, d, remedy=s.remedy, options=s.solver)
    return backends, {}


def _solve_pairs(backends, pairs, settings: ScoreSettings) -> dict[tuple, GeneralizedEig]:
    """Inspect every domain against the others, then solve every ordered pair.

    Raises:
        NotPositiveDefiniteError: from a backend (no remedy, ``H_A`` not positive definite).
        NotConvergedError: an iterative solve stopped short of its tolerance.
    """
    from tqdm.auto import tqdm

    for a, backend in backends.items():
        backend.inspect({b: other for b, other in backends.items() if b != a})
    eigs = {}
    for p, (a, b) in enumerate(tqdm(pairs, desc="I^eps pairs", disable=not settings.progress,
                                    leave=False)):  # fmt: skip
        eig = backends[a].solve(backends[b], seed=settings.solver.seed + p)
        if not eig.converged:
            o = settings.solver
            raise NotConvergedError(
                f"the eigensolver ({eig.solver}) did not reach tol={o.tol:g} within "
                f"maxiter={o.maxiter} for the pair ({a!r}, {b!r}) (relative residual "
                f"{eig.residual:.2g}; its value {eig.value:.4g} is only a lower bound, not "
                f"reported); an ill-conditioned H_A of domain {a!r} (near-zero eigenvalues, "
                f"{backends[a].report.status} by {backends[a].report.how}) stalls it: "
                f"{REMEDY_HINT}, or raise maxiter",
                pair=(a, b),
                residual=eig.residual,
                tol=o.tol,
            )
        eigs[(a, b)] = eig
    return eigs


def _assemble(names, pairs, eigs, at_theta, eps: np.ndarray) -> dict:
    r"""Pairwise values ``R_B − R_A + ε·max(λ_AB, 0)`` (diagonal ``ε``), the winner per ``ε``,
    its maximiser :math:`\sqrt{2\varepsilon}\,v` and the first-order terms along it."""
    n, index = len(names), {d: i for i, d in enumerate(names)}
    lam = np.eye(n)
    for (a, b), eig in eigs.items():
        lam[index[a], index[b]] = eig.value
    vectors = np.stack([eigs[p].vector for p in pairs])
    R = np.array([at_theta[d][0] for d in names])
    risk_gap = R[None, :] - R[:, None]  # [A, B] = R_B - R_A
    curv_term = eps[:, None, None] * np.maximum(lam, 0.0)[None]
    values = risk_gap[None] + curv_term
    diag = np.arange(n)
    values[:, diag, diag] = curv_term[:, diag, diag] = eps[:, None]
    off = ~np.eye(n, dtype=bool)
    winners = []
    for e in range(eps.size):
        i, j = np.unravel_index(int(np.argmax(np.where(off, values[e], -np.inf))), (n, n))
        winners.append((names[i], names[j]))
    directions = np.stack([
        math.sqrt(2 * ep) * vectors[pairs.index(w)] * (lam[index[w[0]], index[w[1]]] > 0)
        for ep, w in zip(eps, winners, strict=True)
    ])  # fmt: skip
    first_order = np.array([
        [at_theta[a][1] @ theta, at_theta[b][1] @ theta]
        for theta, (a, b) in zip(directions, winners, strict=True)
    ])  # fmt: skip
    return {
        "eigenvalues": lam,
        "vectors": vectors,
        "risk_gap": risk_gap,
        "curvature_term": curv_term,
        "values": values,
        "scores": np.maximum(values[:, off].max(axis=1), eps),
        "winners": winners,
        "directions": directions,
        "first_order": first_order,
    }
