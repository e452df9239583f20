"""The Fishr paper's Hessian-alignment figure: distances between domains over training."""

from __future__ import annotations

import numpy as np

from landscape.alignment import AlignmentTrajectory
from landscape.names import NOTATION, algorithm_name, ordered_algorithms, parameter_name
from landscape.plot.captions import pair_caption
from landscape.plot.style import (
    REFERENCE,
    algorithm_style,
    caption,
    new_figure,
    round_log_ticks,
    style,
)

#: (field of the trajectory, label, whether the panel shows 1 - value) per panel, row-major.
PANELS = [
    ("variance_distance", "variance_distance", False),
    ("diagonal_distance", "hessian_distance", False),
    ("variance_cosine", "variance_cosine", True),
    ("diagonal_cosine", "hessian_cosine", True),
]


def _spread(values: np.ndarray, complement: bool):
    """Mean, min and max over restarts (rows) of ``values`` or of ``1 - values``, ignoring
    missing checkpoints (NaN)."""
    v = 1.0 - values if complement else values
    with np.errstate(all="ignore"):
        return np.nanmean(v, axis=0), np.nanmin(v, axis=0), np.nanmax(v, axis=0)


def plot_alignment(traj: AlignmentTrajectory):
    """Four panels against the step, one line per algorithm (mean over restarts, a band from
    the smallest to the largest restart when there are several): ``‖v_B − v_A‖²`` and
    ``‖diag H_B − diag H_A‖²`` (log scales of their own, not one rescaled onto the other), and
    the cosines as ``1 − cos`` on a log scale (cosines near 1 differ in how close they are).
    A dotted line marks the anneal step, as in the paper's figure.

    Returns:
        ``(fig, axes)``, ``axes`` a 2 × 2 array.
    """
    params = {"classifier": "head", None: "network"}.get(
        traj.params if isinstance(traj.params, str | None) else "", "selected parameters"
    )
    restarts = max((np.asarray(v).shape[0] for v in traj.variance_distance.values()), default=1)
    with style():
        fig, axes = new_figure("full", 4.4, 2, 2, sharex=True)
        for ax, (field, label, complement) in zip(axes.flat, PANELS, strict=True):
            for algo in ordered_algorithms(traj.algorithms):
                values = np.asarray(getattr(traj, field)[algo], dtype=np.float64)
                mean, low, high = _spread(values, complement)
                cue = algorithm_style(algo)
                ax.plot(traj.steps, mean, label=algorithm_name(algo), **cue)
                if values.shape[0] > 1:
                    ax.fill_between(traj.steps, low, high, color=cue["color"], alpha=0.2, lw=0)
            ax.set_yscale("log")
            round_log_ticks(ax)
            ax.set_ylabel(NOTATION[label])
            if traj.anneal_step is not None:
                ax.axvline(traj.anneal_step, color=REFERENCE, ls=":", lw=0.8)
        for ax in axes[1]:
            ax.set_xlabel("step")
        axes[0, 0].set_title("gradient variances")
        axes[0, 1].set_title("Hessian diagonals")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
        band = f"mean and range over {restarts} restarts" if restarts > 1 else "one restart"
        caption(fig, f"Domain-level curvature alignment of the {parameter_name(params)}, "
                f"{pair_caption(traj.pair)}; {band}; dotted: anneal step")  # fmt: skip
    return fig, axes
