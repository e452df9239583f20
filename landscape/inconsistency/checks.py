r"""The empirical check of :math:`I^\varepsilon` on the true losses (docs/method.md section 3).

The quadratic model answers :math:`\max_{\frac12\theta^\top H_A\theta\le\varepsilon}`; the
original definition (Parascandolo et al. 2021) asks for
:math:`\max_{\theta\in N_A} |R_B(\theta) - R_A(\theta^*)|` with :math:`N_A` the region around
:math:`\theta^*` where :math:`|R_A(\theta) - R_A(\theta^*)| \le \varepsilon`. Two lower bounds
of it, each at points of :math:`N_A`:

* :func:`line_check`: along the quadratic maximiser's ray :math:`\theta^* \pm s\,\theta_q`, the
  first step where :math:`R_A` has changed by :math:`\varepsilon`, and :math:`R_B` there;
* :func:`constrained_search`: projected gradient ascent on :math:`R_B` inside :math:`N_A`.

Cost: a line check takes a handful of risk evaluations per sign (a coarse scan, then Brent's
method in :math:`s^2`, exact in one secant step on quadratic losses); the search takes about
three evaluations per ascent step. When the selection lies in the head, e.g.
``params="classifier"``, an evaluation runs the head alone on its input cached at
:math:`\theta^*` (:mod:`landscape.inconsistency.head`), so the whole check costs about one
more forward pass of each domain; otherwise each evaluation is a full forward.
:func:`run_checks` runs the line on every pair and the search on the winning pair of every
:math:`\varepsilon`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from landscape.inconsistency.options import CheckOptions
from landscape.inconsistency.risk import DisplacedRisk

#: steps (in units of the quadratic maximiser) scanned for the first crossing: fine near the
#: quadratic model's answer ``s = 1``, then coarse
LINE_GRID = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0)


@dataclass
class LineCheck:
    """The maximiser's ray ``θ* + s·θ_q`` followed until ``|R_A − R_A(θ*)|`` reaches ``ε``.

    Attributes:
        step: ``s`` (signed: the better of ``±θ_q``; ``+`` unless ``−`` is larger beyond the
            line's precision) at the first crossing, or the largest ``s`` tried when ``R_A``
            never changed by ``ε`` (``reached=False``).
        reached: whether the crossing was found.
        risk_a: ``R_A`` at that point (just inside ``N_A``).
        risk_b: ``R_B`` at that point.
        value: ``|R_B − R_A(θ*)|`` there: a point of ``N_A``, so a lower bound of the original
            definition for the pair (up to the scan's resolution of the path).
        evaluations: risk evaluations spent.
    """

    step: float
    reached: bool
    risk_a: float
    risk_b: float
    value: float
    evaluations: int


class _Ray:
    """``R_A`` along ``sign·s·d``, each step evaluated once."""

    def __init__(self, risk_a: DisplacedRisk, d: np.ndarray, sign: float, ra0: float):
        self.risk_a, self.d, self.sign, self.ra0 = risk_a, d, sign, ra0
        self.values: dict[float, float] = {0.0: ra0}

    def rise(self, s: float) -> float:
        if s not in self.values:
            self.values[s] = self.risk_a.value(self.sign * s * self.d)
        return abs(self.values[s] - self.ra0)

    def crossing(self, epsilon: float, tol: float) -> tuple[float, bool]:
        """The largest feasible step before the first crossing, and whether one was found."""
        lo = 0.0
        for hi in LINE_GRID:
            if self.rise(hi) >= epsilon:
                break
            lo = hi
        else:
            return lo, False
        # Brent in t = s² (a quadratic rise is linear in t: one secant step is exact)
        t = scipy.optimize.brentq(
            lambda t: self.rise(math.sqrt(t)) - epsilon, lo**2, hi**2, xtol=tol * hi**2
        )
        s = math.sqrt(t)
        feasible = [x for x in self.values if lo <= x <= s and self.rise(x) < epsilon]
        best = max(feasible, default=lo)
        if s - best > tol * hi and self.rise(s * (1 - tol)) < epsilon:
            best = s * (1 - tol)
        return best, True


def line_check(
    risk_a: DisplacedRisk,
    risk_b: DisplacedRisk,
    direction: np.ndarray,
    epsilon: float,
    *,
    ra0: float | None = None,
    tol: float = 1e-6,
) -> LineCheck:
    r"""Where along :math:`\pm\theta_q` does the true :math:`R_A` change by :math:`\varepsilon`?

    For each sign the ray is scanned at the steps of :data:`LINE_GRID` (``s`` in units of the
    quadratic maximiser ``direction``; ``s = 1`` is where the quadratic model of ``R_A`` rises
    by ``ε``); the first bracket where :math:`|R_A(\theta^*+s\theta_q) - R_A(\theta^*)| \ge
    \varepsilon` is solved by Brent's method in :math:`s^2` to relative width ``tol``, and the
    feasible end kept. Of the two signs the one with the larger :math:`|R_B - R_A(\theta^*)|`
    is returned; a tie within the line's precision (``10·tol`` relative, or rounding of the
    risks) goes to ``+``, so that rounding never decides the sign.
    """
    ra0 = risk_a.value() if ra0 is None else ra0
    d = np.asarray(direction, dtype=np.float64)
    start = risk_a.evaluations + risk_b.evaluations
    if not np.any(d):
        rb = risk_b.value()
        return LineCheck(0.0, False, ra0, rb, abs(rb - ra0), 1)
    best: LineCheck | None = None
    for sign in (1.0, -1.0):
        ray = _Ray(risk_a, d, sign, ra0)
        s, reached = ray.crossing(epsilon, tol)
        rb = risk_b.value(sign * s * d)
        cand = LineCheck(sign * s, reached, ray.values[s], rb, abs(rb - ra0), 0)
        if best is None or cand.value > best.value + _tie(best, epsilon, tol, risk_a):
            best = cand
    best.evaluations = risk_a.evaluations + risk_b.evaluations - start
    return best


def _tie(best: LineCheck, epsilon: float, tol: float, risk: DisplacedRisk) -> float:
    """How much larger the ``−`` ray must be to win: the line's precision plus rounding."""
    import torch

    rounding = 64 * torch.finfo(risk.dtype).eps * max(abs(best.risk_a), abs(best.risk_b), 1.0)
    return 10 * tol * max(best.value, epsilon) + rounding


@dataclass
class SearchCheck:
    """Projected ascent on ``R_B`` inside ``N_A`` (see :func:`constrained_search`).

    Attributes:
        value: the largest ``|R_B(θ) − R_A(θ*)|`` over the feasible points visited: a lower
            bound of the original definition for the pair (the path between consecutive
            points is checked only at the points).
        risk_a, risk_b: ``R_A`` and ``R_B`` at that point.
        displacement_norm: ``‖θ − θ*‖`` there.
        steps: ascent steps accepted; ``history``: ``R_B`` after each accepted step.
        starts: how many starting points were used (the maximiser's ray ± and ``restarts``
            seeded random ones); ``seed``: the seed of the random starts.
        evaluations: risk and gradient evaluations spent.
    """

    value: float
    risk_a: float
    risk_b: float
    displacement_norm: float
    steps: int
    history: list[float]
    starts: int
    seed: int
    evaluations: int


def constrained_search(
    risk_a: DisplacedRisk,
    risk_b: DisplacedRisk,
    direction: np.ndarray,
    epsilon: float,
    *,
    steps: int = 30,
    restarts: int = 0,
    seed: int = 0,
    step_size: float = 0.1,
    ra0: float | None = None,
    line: LineCheck | None = None,
    progress=None,
) -> SearchCheck:
    r"""A lower bound of :math:`\max_{\theta\in N_A} |R_B(\theta) - R_A(\theta^*)|`.

    Projected gradient ascent on :math:`R_B` subject to :math:`|R_A(\theta) -
    R_A(\theta^*)| \le \varepsilon`. Starts: the quadratic maximiser ``direction`` moved
    along its ray onto the boundary of :math:`N_A` (:func:`line_check`, the better sign;
    ``line`` when already computed), plus ``restarts`` seeded Gaussian directions of the same
    norm, likewise moved. A step follows :math:`\nabla R_B`, minus its component along
    :math:`\nabla R_A` when the constraint is nearly active and the step would push through
    it; a point that leaves :math:`N_A` is pulled back along :math:`\nabla R_A` once, and the
    step is halved when that fails or :math:`R_B` does not increase. The step length starts
    at ``step_size`` times the start's norm. ``progress`` (a tqdm bar) advances per step.
    """
    ra0 = risk_a.value() if ra0 is None else ra0
    rng = np.random.default_rng(seed)
    start_evals = risk_a.evaluations + risk_b.evaluations
    d = np.asarray(direction, dtype=np.float64)
    starts = [d] + [
        rng.standard_normal(d.size) * (np.linalg.norm(d) / math.sqrt(d.size))
        for _ in range(int(restarts))
    ]
    best = None
    for n, s0 in enumerate(starts):
        ray = line if (n == 0 and line is not None) else None
        ray = ray or line_check(risk_a, risk_b, s0, epsilon, ra0=ra0)
        found = _ascend(risk_a, risk_b, ray.step * s0, d, epsilon, ra0, steps, step_size, progress)
        if best is None or found[0][0] > best[0][0]:
            best = found
    (value, fa, fb, norm), accepted, history = best
    return SearchCheck(
        value=value,
        risk_a=fa,
        risk_b=fb,
        displacement_norm=norm,
        steps=accepted,
        history=history,
        starts=len(starts),
        seed=seed,
        evaluations=risk_a.evaluations + risk_b.evaluations - start_evals,
    )


def _ascend(risk_a, risk_b, x, d, epsilon, ra0, steps, step_size, progress):
    """One projected ascent from ``x``: ``((value, R_A, R_B, ‖x‖), accepted, history)``."""
    fa, ga = risk_a.value_and_grad(x)
    fb, gb = risk_b.value_and_grad(x)
    history = [fb]
    local = (abs(fb - ra0), fa, fb, float(np.linalg.norm(x)))
    eta = step_size * max(float(np.linalg.norm(x)), float(np.linalg.norm(d)), 1e-12)
    accepted = 0
    for _ in range(int(steps)):
        g, gaa = gb.copy(), float(ga @ ga)
        if gaa > 0 and (
            (fa - ra0 > 0.5 * epsilon and g @ ga > 0) or (fa - ra0 < -0.5 * epsilon and g @ ga < 0)
        ):
            g -= (g @ ga) / gaa * ga
        ng = float(np.linalg.norm(g))
        if ng == 0:
            break
        moved = False
        for _ in range(8):
            y = x + eta * g / ng
            fa_y = risk_a.value(y)
            if abs(fa_y - ra0) > epsilon and gaa > 0:
                target = math.copysign(0.9 * epsilon, fa_y - ra0)
                y = y - ((fa_y - ra0 - target) / gaa) * ga
                fa_y = risk_a.value(y)
            if abs(fa_y - ra0) <= epsilon and risk_b.value(y) > fb:
                x, moved = y, True
                break
            eta *= 0.5
        if progress is not None:
            progress.update(1)
        if not moved:
            break
        accepted += 1
        eta *= 1.5
        fa, ga = risk_a.value_and_grad(x)
        fb, gb = risk_b.value_and_grad(x)
        history.append(fb)
        if abs(fb - ra0) > local[0]:
            local = (abs(fb - ra0), fa, fb, float(np.linalg.norm(x)))
    return local, accepted, history


def _line_checks(evaluators, pairs, vectors, epsilon: float, risks, tol: float, bar) -> dict:
    """``{(A, B): LineCheck}`` along every pair's quadratic maximiser ``√(2ε)·v``."""
    lines = {}
    for p, (a, b) in enumerate(pairs):
        theta = math.sqrt(2 * epsilon) * vectors[p]
        lines[(a, b)] = line_check(
            evaluators[a], evaluators[b], theta, epsilon, ra0=risks[a], tol=tol
        )
        bar.update(1)
    return lines


def run_checks(
    evaluators: dict[str, DisplacedRisk],
    pairs: list[tuple[str, str]],
    vectors: np.ndarray,
    epsilon: np.ndarray,
    risks: dict[str, float],
    winners: list[tuple[str, str]],
    options: CheckOptions,
    progress: bool = False,
) -> dict:
    """The line check on every ordered pair and the search on each ``ε``'s winning pair.

    Args:
        evaluators: ``{domain: DisplacedRisk}``.
        pairs: the ``P`` ordered pairs, in the order of ``vectors`` ``[P, D]`` (``vᵀH̃_Av = 1``).
        epsilon: ``[E]``; ``risks``: ``R_e(θ*)`` from the same evaluators.
        winners: the winning pair per ``ε``.

    Returns:
        The ``check`` dictionary of :class:`~landscape.inconsistency.result.InconsistencyResult`
        (``evaluator``: per domain, how the risks were evaluated: the head alone on its cached
        input, or full forwards and why).
    """
    from tqdm.auto import tqdm

    names = list(evaluators)
    n, E = len(names), epsilon.size
    index = {d: i for i, d in enumerate(names)}
    line_value, line_rb, line_step = (np.zeros((E, n, n)) for _ in range(3))
    line_reached = np.ones((E, n, n), dtype=bool)
    search_value, search_steps, search_history = np.zeros(E), np.zeros(E, dtype=np.int64), []
    per_search = options.steps * (1 + options.restarts)
    bar = tqdm(
        total=E * (len(pairs) + per_search),
        desc=f"I^eps check on the true losses: line on {len(pairs)} pairs, then {per_search} "
        "ascent steps on the winner, per eps",
        disable=not progress,
        leave=False,
    )
    for e, ep in enumerate(epsilon):
        for i, a in enumerate(names):
            line_value[e, i, i], line_rb[e, i, i] = ep, risks[a]
        lines = _line_checks(evaluators, pairs, vectors, ep, risks, options.line_tol, bar)
        for (a, b), lc in lines.items():
            i, j = index[a], index[b]
            line_value[e, i, j], line_rb[e, i, j] = lc.value, lc.risk_b
            line_step[e, i, j], line_reached[e, i, j] = lc.step, lc.reached
        a, b = winners[e]
        done = bar.n
        sc = constrained_search(
            evaluators[a], evaluators[b], math.sqrt(2 * ep) * vectors[pairs.index((a, b))], ep,
            steps=options.steps, restarts=options.restarts, seed=options.seed, ra0=risks[a],
            line=lines[(a, b)], progress=bar,
        )  # fmt: skip
        bar.update(done + per_search - bar.n)
        search_value[e], search_steps[e] = sc.value, sc.steps
        search_history.append(np.asarray(sc.history))
    bar.close()
    off = ~np.eye(n, dtype=bool)
    empirical = np.maximum(np.maximum(line_value[:, off].max(axis=1), search_value), epsilon)
    return {
        "line_value": line_value,
        "line_risk_b": line_rb,
        "line_step": line_step,
        "line_reached": line_reached,
        "search_value": search_value,
        "search_pair": [list(w) for w in winners],
        "search_steps": search_steps,
        "search_history": search_history,
        "search_restarts": int(options.restarts),
        "empirical_score": empirical,
        "evaluator": {d: evaluators[d].evaluator for d in names},
    }
