"""The Fishr paper's Figure 1 made from data: per-sample gradients of two training domains
projected on two parameter directions, with their covariance ellipses.

Fishr matches the domains' gradient covariances :math:`\\Sigma_A, \\Sigma_B` (their
diagonals). The plane shown is the one where they differ most: the two eigenvectors
:math:`u_1, u_2` of :math:`\\Sigma_B - \\Sigma_A` of largest absolute eigenvalue, and each
per-sample gradient :math:`g_i` is drawn at :math:`(u_1^\\top g_i, u_2^\\top g_i)`. Its
ellipse is :math:`\\{x : (x - \\mu)^\\top S^{-1} (x - \\mu) = k^2\\}` for the projected mean
:math:`\\mu` and covariance :math:`S = U^\\top \\Sigma U` (:func:`covariance_ellipse`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.patches import Ellipse

from landscape.io import SavedResult
from landscape.names import algorithm_name, domain_name, ordered_algorithms, parameter_name
from landscape.plot.captions import pair_caption
from landscape.plot.style import WIDTHS, caption, domain_style, new_figure, style


@dataclass
class GradientCloud(SavedResult):
    """Projected per-sample gradients of two domains.

    Attributes:
        points: ``{domain: [N, 2]}`` projections :math:`U^\\top g_i`.
        pair: ``(A, B)``.
        eigenvalues: ``[2]`` eigenvalues of :math:`\\Sigma_B - \\Sigma_A` along the directions.
        params: which parameters (``"head"`` or ``"network"``), for the caption.
        num_params: their number.
    """

    points: dict
    pair: list
    eigenvalues: np.ndarray
    params: str = "head"
    num_params: int = 0
    num_samples: dict = field(default_factory=dict)


def difference_directions(gradients: Mapping[str, np.ndarray], pair: Sequence[str]):
    """The two eigenvectors ``[D, 2]`` of :math:`\\Sigma_B - \\Sigma_A` of largest absolute
    eigenvalue, and those eigenvalues (covariances with the ``1/N`` normalisation)."""
    a, b = pair
    cov = {d: np.cov(np.asarray(gradients[d], np.float64).T, bias=True) for d in (a, b)}
    values, vectors = np.linalg.eigh(np.atleast_2d(cov[b] - cov[a]))
    order = np.argsort(-np.abs(values))[:2]
    return vectors[:, order], values[order]


def gradient_cloud(model, loss_func, domains, pair, params="classifier") -> GradientCloud:
    """Per-sample gradients of ``params`` on the two domains of ``pair``, projected on
    :func:`difference_directions` (float64, :mod:`landscape.curvature.reference`: meant for
    a head or a small model and a few thousand samples)."""
    from landscape.curvature.reference import per_sample_gradients

    grads = {d: per_sample_gradients(model, loss_func, domains[d], params).numpy()
             for d in pair}  # fmt: skip
    directions, values = difference_directions(grads, pair)
    kind = "head" if params == "classifier" else "network" if params is None else str(params)
    return GradientCloud(
        points={d: g @ directions for d, g in grads.items()}, pair=list(pair),
        eigenvalues=values, params=kind, num_params=int(directions.shape[0]),
        num_samples={d: int(g.shape[0]) for d, g in grads.items()},
    )  # fmt: skip


def covariance_ellipse(points, n_std: float = 2.0) -> tuple[np.ndarray, float, float, float]:
    """``(centre, width, height, angle in degrees)`` of the ellipse
    :math:`(x - \\mu)^\\top S^{-1} (x - \\mu) = k^2` of 2D points (``S`` with ``1/N``)."""
    points = np.asarray(points, np.float64)
    values, vectors = np.linalg.eigh(np.cov(points.T, bias=True))
    values = np.clip(values, 0.0, None)
    major = vectors[:, 1]
    angle = float(np.degrees(np.arctan2(major[1], major[0])))
    width, height = 2 * n_std * np.sqrt(values[1]), 2 * n_std * np.sqrt(values[0])
    return points.mean(0), float(width), float(height), angle


def plot_gradient_clouds(clouds: Mapping[str, GradientCloud], n_std: float = 2.0,
                         max_points: int = 400):  # fmt: skip
    """One panel per algorithm (the names table's order): each domain's projected
    per-sample gradients (at most ``max_points`` drawn, the ellipse uses all) and its
    ``n_std`` covariance ellipse; shared axes, equal aspect.

    Returns:
        ``(fig, axes)``.
    """
    if not clouds:
        raise ValueError("no gradient cloud to draw; pass {algorithm: GradientCloud}")
    algos = ordered_algorithms(clouds)
    ellipses = {(a, d): covariance_ellipse(clouds[a].points[d], n_std)
                for a in algos for d in clouds[a].pair}  # fmt: skip
    # one square window for every panel, around the ellipses (outliers may fall outside)
    reach = 1.3 * max(np.abs(c).max() + max(w, h) / 2 for c, w, h, _ in ellipses.values())
    side = WIDTHS["full"] / len(algos)
    with style():
        fig, axes = new_figure("full", side + 1.3, 1, len(algos), sharex=True, sharey=True)
        for ax, algo in zip(axes[0], algos, strict=True):
            cloud = clouds[algo]
            for k, domain in enumerate(cloud.pair):
                pts = np.asarray(cloud.points[domain])
                cue = domain_style(domain, k)
                shown = pts[:: max(1, len(pts) // max_points)]
                ax.scatter(shown[:, 0], shown[:, 1], s=2, color=cue["color"], alpha=0.35,
                           marker=cue["marker"], lw=0, rasterized=True)  # fmt: skip
                centre, w, h, angle = ellipses[(algo, domain)]
                ax.add_patch(Ellipse(centre, w, h, angle=angle, fill=False, lw=1.2,
                                     ec=cue["color"], ls=cue["ls"],
                                     label=f"{domain_name(domain)}"))  # fmt: skip
            ax.set_xlim(-reach, reach)
            ax.set_ylim(-reach, reach)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(algorithm_name(algo))
            ax.set_xlabel(r"$u_1^\top g_i$")
        axes[0, 0].set_ylabel(r"$u_2^\top g_i$")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
        first = clouds[algos[0]]
        caption(fig, f"Per-sample gradients of the {parameter_name(first.params)}, "
                f"{first.num_params:,} weights, {pair_caption(first.pair)}, projected on the "
                f"two directions where their covariances differ most (eigenvectors "
                f"$u_1, u_2$ of $\\Sigma_B - \\Sigma_A$); ellipses: {n_std:g} std")  # fmt: skip
    return fig, axes
