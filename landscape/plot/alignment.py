"""The Fishr paper's Hessian-alignment figure: distances between domains over training."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from landscape.alignment import AlignmentTrajectory
from landscape.plot.style import algorithm_color, algorithm_name, style


def plot_alignment(traj: AlignmentTrajectory, hessian_scale: float = 100.0):
    """Left: ``‖v_B − v_A‖²`` (solid) and ``‖diag H_B − diag H_A‖² × hessian_scale``
    (dashed) against the step, mean over restarts; right: the matching cosines. A dotted
    line marks the anneal step (as in the paper's figure).

    Returns:
        ``(fig, axes)``.
    """
    a, b = traj.pair
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for algo in traj.algorithms:
            color, name = algorithm_color(algo), algorithm_name(algo)
            curves = [
                (0, traj.variance_distance, 1.0, "-", "o", f"{name}: Var"),
                (0, traj.diagonal_distance, hessian_scale, "--", "s",
                 f"{name}: Hessian ×{hessian_scale:g}"),
                (1, traj.variance_cosine, 1.0, "-", "o", f"{name}: Var"),
                (1, traj.diagonal_cosine, 1.0, "--", "s", f"{name}: Hessian"),
            ]  # fmt: skip
            for panel, values, scale, ls, marker, label in curves:
                mean = scale * np.nanmean(values[algo], axis=0)
                axes[panel].plot(traj.steps, mean, color=color, ls=ls, marker=marker, ms=3,
                                 label=label)  # fmt: skip
        axes[0].set_yscale("log")
        axes[0].set_ylabel(f"squared distance {b} vs {a}")
        axes[1].set_ylabel(f"cosine {b} vs {a}")
        for ax in axes:
            ax.set_xlabel("step")
            if traj.anneal_step is not None:
                ax.axvline(traj.anneal_step, color="k", ls=":", lw=1)
        axes[0].legend(fontsize=7, ncol=2)
        axes[0].set_title("Distance between domain-level curvature (head)")
        axes[1].set_title("Cosine similarity")
        fig.tight_layout()
    return fig, axes
