"""Parascandolo et al.'s Figure 1 for :math:`I^\\varepsilon`: a patchwork and a consistent
minimum of a two-parameter model, computed with the library's own score and line check.

The model is linear regression :math:`f_\\theta(x) = \\theta^\\top x`, :math:`\\theta \\in
\\mathbb R^2`, with the mean squared error, on two domains A and B whose inputs have
different covariances :math:`\\Sigma_A, \\Sigma_B` and whose targets are :math:`y = c_e^\\top x
+` noise, so that :math:`R_e(\\theta) = (\\theta - c_e)^\\top \\Sigma_e (\\theta - c_e) +
\\sigma^2` (up to sampling). :math:`\\theta^*` minimises the average risk. With
:math:`c_A \\ne c_B` it is a *patchwork*: a minimum of neither domain; with
:math:`c_A = c_B` it is *consistent*. The figure draws both domains' losses, the
:math:`\\varepsilon`-sublevel set :math:`\\{R_A \\le R_A(\\theta^*) + \\varepsilon\\}` of A,
and where the line check on the true losses finds the largest :math:`R_B` on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from landscape.io import SavedResult
from landscape.names import NOTATION
from landscape.plot.style import OKABE_ITO, caption, new_figure, style

#: Input covariances of the two domains: different shapes for the patchwork (A sharp along
#: θ₂, B along θ₁), the same for the consistent case.
COVARIANCES = {
    "patchwork": {"A": np.diag([0.3, 2.0]), "B": np.array([[2.0, 0.4], [0.4, 0.5]])},
    "consistent": {"A": np.diag([0.3, 2.0]), "B": np.diag([0.3, 2.0])},
}
#: Minimisers of the two domains: apart for the patchwork, shared for the consistent case.
CENTRES = {"patchwork": {"A": [0.6, -0.4], "B": [-0.6, 0.4]},
           "consistent": {"A": [0.0, 0.0], "B": [0.0, 0.0]}}  # fmt: skip


def two_domain_regression(kind: str, n: int = 400, noise: float = 0.1, seed: int = 0):
    """``(model, domains)``: a ``torch.nn.Linear(2, 1, bias=False)`` (float64) at the
    minimiser θ* of the average of the two domains' mean squared errors, and ``{"A":
    [(X, y)], "B": [(X, y)]}`` (see the module docstring)."""
    import torch

    if kind not in CENTRES:
        raise ValueError(f"unknown kind {kind!r}; use 'patchwork' or 'consistent'")
    rng = np.random.default_rng(seed)  # the same inputs for both kinds, up to their shape
    domains, gram, moment = {}, np.zeros((2, 2)), np.zeros(2)
    for name, cov in COVARIANCES[kind].items():
        X = rng.normal(size=(n, 2)) @ np.linalg.cholesky(cov).T
        y = X @ np.asarray(CENTRES[kind][name]) + noise * rng.normal(size=n)
        domains[name] = [(torch.from_numpy(X), torch.from_numpy(y[:, None]))]
        gram += X.T @ X / n
        moment += X.T @ y / n
    model = torch.nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(np.linalg.solve(gram, moment))[None, :])
    return model, domains


def risk_grid(domains, t1, t2) -> dict[str, np.ndarray]:
    """``{domain: [len(t1), len(t2)]}``: the mean squared error at every ``θ = (t1[i], t2[j])``
    (the loss of ``torch.nn.MSELoss``, evaluated exactly)."""
    T1, T2 = np.meshgrid(t1, t2, indexing="ij")
    thetas = np.stack([T1.ravel(), T2.ravel()])  # [2, G]
    out = {}
    for name, [(X, y)] in domains.items():
        residual = X.numpy() @ thetas - y.numpy()  # [n, G]
        out[name] = (residual**2).mean(0).reshape(T1.shape)
    return out


@dataclass
class PatchworkExample(SavedResult):
    """One panel: grid, losses, θ*, and the library's score and line check."""

    kind: str
    epsilon: float
    theta_star: np.ndarray
    t1: np.ndarray
    t2: np.ndarray
    losses: dict
    risks: dict
    score: float
    line_point: np.ndarray
    line_value: float
    search_value: float
    empirical: float
    pair: list = field(default_factory=list)


def patchwork_example(kind: str, epsilon: float = 0.1, grid: int = 121) -> PatchworkExample:
    """Score :math:`I^\\varepsilon` of the pair (A, B) with
    :func:`landscape.inconsistency.inconsistency_score` (dense, with its empirical check) at
    θ* of :func:`two_domain_regression`, and the losses on a grid around θ*. ``line_point``
    is θ* plus the line check's step times the quadratic maximiser: where the true
    :math:`R_A` has risen by ε and :math:`R_B` is largest along that line."""
    from landscape.inconsistency import inconsistency_score
    from landscape.losses import build_loss

    model, domains = two_domain_regression(kind)
    res = inconsistency_score(model, build_loss("mse"), domains, epsilon, params=None,
                              method="dense", progress=False)  # fmt: skip
    theta = model.weight.detach().numpy().ravel().copy()
    i, j = res.domains.index("A"), res.domains.index("B")
    pair_index = [tuple(p) for p in res.pairs].index(("A", "B"))
    unit = np.asarray(res.unit_directions)[pair_index]
    step = float(np.asarray(res.check["line_step"])[0, i, j])
    span = 2.0
    t1 = np.linspace(theta[0] - span, theta[0] + span, grid)
    t2 = np.linspace(theta[1] - span, theta[1] + span, grid)
    return PatchworkExample(
        kind=kind, epsilon=float(epsilon), theta_star=theta, t1=t1, t2=t2,
        losses=risk_grid(domains, t1, t2), risks={k: float(v) for k, v in res.risks.items()},
        score=float(np.asarray(res.values)[0, i, j]),
        line_point=theta + step * np.sqrt(2 * epsilon) * unit,
        line_value=float(np.asarray(res.check["line_value"])[0, i, j]),
        search_value=float(np.asarray(res.check["search_value"]).reshape(-1)[0]),
        empirical=float(np.asarray(res.check["empirical_score"]).reshape(-1)[0]), pair=["A", "B"],
    )  # fmt: skip


def plot_patchwork(examples: dict[str, PatchworkExample]):
    """One panel per example (patchwork, consistent): contours of :math:`R_A` (solid) and
    :math:`R_B` (dashed), A's ε-sublevel set shaded, θ* (★), the line check's point (◆),
    and the pair's quadratic :math:`I^\\varepsilon` with the value on the true losses.

    Returns:
        ``(fig, axes)``.
    """
    blue, red = OKABE_ITO["blue"], OKABE_ITO["vermillion"]
    with style():
        fig, axes = new_figure("full", 4.4, 1, len(examples), sharex=False, sharey=False)
        for ax, (name, ex) in zip(axes[0], examples.items(), strict=True):
            levels_a = ex.risks["A"] + np.array([0.25, 1, 2, 4]) * ex.epsilon * 4
            levels_b = np.quantile(ex.losses["B"], [0.02, 0.1, 0.25, 0.5])
            ax.contourf(ex.t1, ex.t2, ex.losses["A"].T, levels=[-np.inf, ex.risks["A"]
                        + ex.epsilon], colors=[blue], alpha=0.2)  # fmt: skip
            ax.contour(ex.t1, ex.t2, ex.losses["A"].T, levels=np.sort(levels_a), colors=blue,
                       linewidths=0.8)  # fmt: skip
            ax.contour(ex.t1, ex.t2, ex.losses["B"].T, levels=np.sort(levels_b), colors=red,
                       linewidths=0.8, linestyles="--")  # fmt: skip
            ax.plot(*ex.theta_star, marker="*", color="w", mec="k", ms=10, ls="")
            ax.plot(*ex.line_point, marker="D", color=red, mec="k", ms=5, ls="")
            ax.annotate("", ex.line_point, ex.theta_star,
                        arrowprops={"arrowstyle": "->", "lw": 0.8})  # fmt: skip
            ax.set_aspect("equal")
            ax.grid(False)
            ax.set_title(f"{name}: quadratic {NOTATION['score']} = {ex.score:.3g}\ntrue losses: "
                         f"line {ex.line_value:.3g}, ascent {ex.search_value:.3g}")  # fmt: skip
            ax.set_xlabel(r"$\theta_1$")
            ax.set_ylabel(r"$\theta_2$")
        eps = next(iter(examples.values())).epsilon
        caption(fig, "Two domains of a two-parameter linear regression: "
                r"$\mathcal{R}_A$ solid, $\mathcal{R}_B$ dashed; shaded: A's "
                f"{NOTATION['epsilon']}-sublevel set ({NOTATION['epsilon']} = {eps:g}); ★ θ*, "
                "the minimiser of the average risk; ◆ where the line check along the "
                "quadratic maximiser meets the set's boundary")  # fmt: skip
    return fig, axes
