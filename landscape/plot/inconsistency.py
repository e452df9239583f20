"""Figures of the inconsistency score I^ε: pairwise matrices and the parts of the score."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize

from landscape.names import NOTATION, algorithm_name, domain_name, ordered_algorithms
from landscape.plot.captions import score_caption
from landscape.plot.style import SEQUENTIAL, caption, new_figure, nice_ticks, round_log_ticks, style


def pair_limits(results, epsilon_index: int = 0) -> tuple[float, float]:
    """One colour range for several pairwise matrices: min and max of their off-diagonal
    cells (the diagonal is ε by definition: :math:`\\lambda_{\\max}(H_A, H_A) = 1`)."""
    cells = []
    for res in results:
        v = np.asarray(res.values, dtype=np.float64)[epsilon_index]
        cells.append(v[~np.eye(len(v), dtype=bool)])
    cells = np.concatenate(cells) if cells else np.zeros(1)
    low, high = float(cells.min()), float(cells.max())
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def plot_pairwise(result, epsilon_index: int = 0, ax=None, limits=None, colorbar=True):
    """Heatmap of the pairwise values ``R_B − R_A + ε·λ_max(H_B, H_A)`` (rows A, cols B),
    the winning pair outlined; the diagonal (ε by definition) greyed out.

    Args:
        limits: ``(low, high)`` of the colour scale (:func:`pair_limits` shares one between
            panels); default: this matrix's off-diagonal cells.

    Returns:
        ``(fig, ax)``.
    """
    values = np.asarray(result.values, dtype=np.float64)[epsilon_index]
    names = list(result.domains)
    n = len(names)
    low, high = limits or pair_limits([result], epsilon_index)
    norm = Normalize(low, high)
    with style():
        if ax is None:
            fig, axes = new_figure("column", 0.45 * n + 1.2)
            ax = axes[0, 0]
        fig = ax.figure
        shown = np.ma.masked_array(values, mask=np.eye(n, dtype=bool))
        cmap = plt.get_cmap(SEQUENTIAL).with_extremes(bad="0.85")
        im = ax.imshow(shown, cmap=cmap, norm=norm)
        for i in range(n):
            for j in range(n):
                text = NOTATION["epsilon"] if i == j else f"{values[i, j]:.2g}"
                dark = i != j and norm(values[i, j]) < 0.5
                ax.text(j, i, text, ha="center", va="center", fontsize=6,
                        color="w" if dark else "k")  # fmt: skip
        pair = result.winner(epsilon_index)
        i, j = names.index(pair[0]), names.index(pair[1])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="k", lw=1.5))
        shown_names = [domain_name(d) for d in names]
        ax.set_xticks(range(n), shown_names)
        ax.set_yticks(range(n), shown_names)
        ax.grid(False)
        ax.set_xlabel("domain B")
        ax.set_ylabel("domain A")
        if colorbar:
            bar = fig.colorbar(im, ax=ax, shrink=0.9, ticks=nice_ticks(low, high))
            bar.set_label(f"{NOTATION['score']} of the pair")
    return fig, ax


def plot_pairs(results: Mapping[str, object], kind: str | None = None, epsilon_index: int = 0):
    """One pairwise heatmap per algorithm (in the names table's order), side by side, on ONE
    colour scale (:func:`pair_limits`) with one colour bar.

    Args:
        results: ``{algorithm: InconsistencyResult}``.
        kind: ``"head"`` or ``"network"`` (for the caption).

    Returns:
        ``(fig, axes)``.
    """
    if not results:
        raise ValueError("no result to draw; pass {algorithm: InconsistencyResult}")
    algos = ordered_algorithms(results)
    limits = pair_limits([results[a] for a in algos], epsilon_index)
    n = len(next(iter(results.values())).domains)
    with style():
        fig, axes = new_figure("full", 0.45 * n + 1.3, 1, len(algos))
        for ax, algo in zip(axes[0], algos, strict=True):
            plot_pairwise(results[algo], epsilon_index, ax=ax, limits=limits, colorbar=False)
            ax.set_title(algorithm_name(algo))
        for ax in axes[0, 1:]:
            ax.set_ylabel("")
        bar = fig.colorbar(axes[0, 0].get_images()[0], ax=axes[0].tolist(), shrink=0.9,
                           ticks=nice_ticks(*limits))  # fmt: skip
        bar.set_label(f"{NOTATION['score']} of the pair")
        first = results[algos[0]]
        caption(fig, f"{NOTATION['score']} of each pair (A, B), the winner outlined: "
                f"{score_caption(first, kind, epsilon_index)}")  # fmt: skip
    return fig, axes


def winner_parts(res, epsilon_index: int = 0) -> tuple[float, float, float]:
    """Risk gap, curvature term and empirical check (``NaN`` without one) of the winning
    pair of an :class:`~landscape.inconsistency.InconsistencyResult`."""
    a, b = res.winner(epsilon_index)
    i, j = res.domains.index(a), res.domains.index(b)
    risk = float(np.asarray(res.risk_gap)[i, j])
    curv = float(np.asarray(res.curvature_term)[epsilon_index, i, j])
    emp = (res.check or {}).get("empirical_score")
    emp = float(np.asarray(emp).reshape(-1)[epsilon_index]) if emp is not None else np.nan
    return risk, curv, emp


def plot_score_parts(results: Mapping[str, object], epsilon_index: int = 0, kind=None):
    """Left: the quadratic score I^ε of the winning pair as stacked bars, its risk gap and
    its curvature term, on a scale of its own; right, when the results carry the empirical
    check: I^ε on the true losses (line check and ascent) beside the quadratic score, on a
    log scale. The two differ by design: the quadratic model stops at second order, the
    true losses do not, and a caption says so instead of letting one set the other's scale.

    Args:
        results: ``{label: InconsistencyResult}`` (algorithm keys get their display name
            and the names table's order).
        kind: ``"head"`` or ``"network"`` (for the caption).

    Returns:
        ``(fig, axes)``: one or two axes.
    """
    if not results:
        raise ValueError("no result to draw; pass {label: InconsistencyResult}")
    keys = ordered_algorithms(results)
    labels = [algorithm_name(k) for k in keys]
    risk, curv, emp = (np.array(v) for v in zip(*(winner_parts(results[k], epsilon_index)
                                                  for k in keys), strict=True))  # fmt: skip
    checked = bool(np.isfinite(emp).any())
    x = np.arange(len(keys))
    with style():
        fig, axes = new_figure("full" if checked else "column", 2.5, 1, 1 + checked)
        ax = axes[0, 0]
        ax.bar(x, risk, color="#56B4E9", label=f"risk gap {NOTATION['risk_gap']}")
        ax.bar(x, curv, bottom=np.maximum(risk, 0), color="#E69F00", hatch="///", ec="w",
               lw=0, label=f"curvature term {NOTATION['curvature_term']}")  # fmt: skip
        ax.set_xticks(x, labels)
        ax.set_ylabel(f"quadratic {NOTATION['score']}")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title("quadratic model: the two parts")
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.18), ncol=1)
        if checked:
            _empirical_panel(axes[0, 1], x, labels, risk + curv, emp)
        note = (
            " Right: the same score on the true losses (line check and ascent); it is "
            "larger where the loss is not quadratic at that scale."
            if checked
            else ""
        )
        first = results[keys[0]]
        caption(fig, f"{NOTATION['score']} of the winning pair: "
                f"{score_caption(first, kind, epsilon_index)}.{note}")  # fmt: skip
    return fig, axes[0]


def _empirical_panel(ax, x, labels, quadratic, empirical) -> None:
    """Quadratic vs true-loss I^ε per model, side by side, log scale."""
    w = 0.38
    ax.bar(x - w / 2, quadratic, w, color="#0072B2", label=f"quadratic {NOTATION['score']}")
    ax.bar(x + w / 2, empirical, w, color="#D55E00", hatch="\\\\\\", ec="w", lw=0,
           label=NOTATION["empirical"])  # fmt: skip
    ax.set_xticks(x, labels)
    positive = np.concatenate([quadratic, empirical])
    if np.all(positive[np.isfinite(positive)] > 0):
        ax.set_yscale("log")
        round_log_ticks(ax)
    ax.set_ylabel(NOTATION["score"])
    ax.set_title("quadratic model vs true losses")
    ax.legend(loc="upper left", bbox_to_anchor=(0, -0.18), ncol=1)
