"""Fishr's premise, Var ≈ Hessian: per-domain gradient variance against the Hessian diagonal.

Fishr matches the domains' gradient variances :math:`v_e` as a proxy for their Hessian
diagonals :math:`\\operatorname{diag} H_e`; each point is one parameter at
:math:`(\\operatorname{diag} H_e, v_e)`, and the legend gives
:math:`\\cos(v_e, \\operatorname{diag} H_e)` (``ComparisonResult.within_cosine``, from
:func:`landscape.curvature.compare_domains`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from landscape.names import algorithm_name, domain_name, ordered_algorithms, parameter_name
from landscape.plot.captions import samples_caption
from landscape.plot.style import REFERENCE, caption, domain_style, new_figure, style


def positive_pairs(variance, diagonal) -> tuple[np.ndarray, np.ndarray]:
    """The parameters where both values are positive (what a log-log scatter can show)."""
    v, h = np.asarray(variance, np.float64).ravel(), np.asarray(diagonal, np.float64).ravel()
    keep = (v > 0) & (h > 0)
    return h[keep], v[keep]


def plot_variance_hessian(comparisons: Mapping[str, object], kind: str = "head"):
    """One log-log panel per algorithm (the names table's order): gradient variance against
    Hessian diagonal per parameter, one colour and marker per domain, the cosine in the
    legend, the line :math:`v = \\operatorname{diag} H` dashed; shared axes.

    Args:
        comparisons: ``{algorithm: ComparisonResult}``.
        kind: ``"head"`` or ``"network"`` (for the caption).

    Returns:
        ``(fig, axes)``.
    """
    if not comparisons:
        raise ValueError("nothing to draw; pass {algorithm: ComparisonResult}")
    algos = ordered_algorithms(comparisons)
    with style():
        fig, axes = new_figure("full", 2.9, 1, len(algos), sharex=True, sharey=True)
        low, high = np.inf, -np.inf
        for ax, algo in zip(axes[0], algos, strict=True):
            res = comparisons[algo]
            for k, domain in enumerate(res.domains):
                h, v = positive_pairs(res.variance[domain], res.diagonal[domain])
                cue = domain_style(domain, k)
                cos = float(np.asarray(res.within_cosine)[k])
                ax.scatter(h, v, s=4, color=cue["color"], marker=cue["marker"], alpha=0.6,
                           lw=0, label=f"{domain_name(domain)}: cos = {cos:.3f}")  # fmt: skip
                if h.size:
                    low = min(low, h.min(), v.min())
                    high = max(high, h.max(), v.max())
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(algorithm_name(algo))
            ax.set_xlabel(r"Hessian diagonal $\mathrm{diag}\,H_e$")
            # lower right: the points lie along the diagonal, that corner is empty
            ax.legend(loc="lower right", markerscale=2, handletextpad=0.2)
        if np.isfinite(low):
            for ax in axes[0]:
                ax.plot([low, high], [low, high], color=REFERENCE, ls="--", lw=0.8)
        axes[0, 0].set_ylabel(r"gradient variance $v_e$")
        first = comparisons[algos[0]]
        size = samples_caption(getattr(first, "num_samples", None))
        caption(fig, f"Var ≈ Hessian, the premise of Fishr: per parameter of the "
                f"{parameter_name(kind)}, per domain" + (f", {size}" if size else "")
                + "; dashed: equality")  # fmt: skip
    return fig, axes
