"""Table 2 as a figure: our accuracies beside the paper's, one panel per column."""

from __future__ import annotations

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from landscape.names import algorithm_name, ordered_algorithms
from landscape.paper import PAPER_TABLE2, tolerance
from landscape.plot.captions import run_caption
from landscape.plot.style import REFERENCE, algorithm_style, caption, new_figure, style

COLUMNS = ("Train acc.", "Test acc.", "Grey test acc.")


def table2_points(results) -> dict[str, dict[str, tuple]]:
    """``{algorithm: {column: (ours mean, ours std, paper mean, paper std)}}`` for the
    algorithms of the paper's Table 2 present in ``results`` (a
    :class:`~landscape.training.RunResults`), the std ``NaN`` with one restart (no spread)."""
    restarts = results.restarts()
    points = {}
    for algo in ordered_algorithms(a for a in results.table if a in PAPER_TABLE2):
        row = {}
        for col in COLUMNS:
            if col not in results.table[algo]:
                raise ValueError(f"{algo!r} has no {col!r} column; Table 2 needs a Colored MNIST "
                                 "run")  # fmt: skip
            mean, std = results.table[algo][col]
            std = float(std) if restarts.get(algo, 0) > 1 else np.nan
            row[col] = (float(mean), std, *PAPER_TABLE2[algo][col])
        points[algo] = row
    return points


def plot_table2(results):
    """One panel per column of Table 2 (train, test, grey test accuracy), one row per
    algorithm: ours (filled marker, ± std over restarts) above the paper's (open grey
    marker, ± its std), the paper's tolerance (``max(2·std, 1.5)`` points) shaded.

    Returns:
        ``(fig, axes)``.
    """
    points = table2_points(results)
    if not points:
        raise ValueError("no algorithm of the paper's Table 2 in these results")
    algos = list(points)
    y = np.arange(len(algos))[::-1].astype(float)
    with style():
        fig, axes = new_figure("full", 0.35 * len(algos) + 1.2, 1, len(COLUMNS), sharey=True)
        for ax, col in zip(axes[0], COLUMNS, strict=True):
            for k, algo in enumerate(algos):
                ours, ours_std, paper, paper_std = points[algo][col]
                tol = tolerance(paper_std)
                ax.fill_betweenx([y[k] - 0.35, y[k] + 0.35], paper - tol, paper + tol,
                                 color="0.9", lw=0)  # fmt: skip
                ax.errorbar(paper, y[k] - 0.15, xerr=paper_std, fmt="o", mfc="w",
                            color=REFERENCE, ms=4, capsize=2)  # fmt: skip
                cue = algorithm_style(algo)
                ax.errorbar(ours, y[k] + 0.15, xerr=None if np.isnan(ours_std) else ours_std,
                            fmt=cue["marker"], color=cue["color"], ms=4, capsize=2)  # fmt: skip
            ax.set_title(col)
            ax.set_xlabel("accuracy (%)")
        axes[0, 0].set_yticks(y, [algorithm_name(a) for a in algos])
        axes[0, 0].set_ylim(y.min() - 0.6, y.max() + 0.6)
        handles = [
            Line2D([], [], marker="o", color="k", ls="", ms=4, label="ours (± std over restarts)"),
            Line2D([], [], marker="o", mfc="w", color=REFERENCE, ls="", ms=4,
                   label="paper (± std)"),
            Patch(color="0.9", label="paper's tolerance"),
        ]  # fmt: skip
        fig.legend(handles=handles, loc="outside lower center", ncol=3)
        caption(fig, "Table 2, ours beside the paper's: "
                f"{run_caption(results.config)}")  # fmt: skip
    return fig, axes
