"""Figures of the inconsistency score I^ε: pairwise matrices and the parts of the score."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np

from landscape.plot.style import SEQUENTIAL, style


def plot_pairwise(result, epsilon_index: int = 0, ax=None):
    """Heatmap of the pairwise values ``R_B − R_A + ε·λ_max(H_B, H_A)`` (rows A, cols B),
    the winning pair outlined.

    Returns:
        ``(fig, ax)``.
    """
    values = np.asarray(result.values)[epsilon_index]
    names = list(result.domains)
    with style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.2, 1.0 * len(names) + 1.4))
        else:
            fig = ax.figure
        im = ax.imshow(values, cmap=SEQUENTIAL)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{values[i, j]:.3g}", ha="center", va="center", fontsize=8,
                        color="w" if values[i, j] < values.mean() else "k")  # fmt: skip
        pair = result.winner(epsilon_index)
        i, j = names.index(pair[0]), names.index(pair[1])
        ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="r", lw=2))
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("B")
        ax.set_ylabel("A")
        eps = float(np.asarray(result.epsilon)[epsilon_index])
        ax.set_title(f"I^ε pairs, ε = {eps:g} ({result.method}, {result.curvature})")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig, ax


def plot_score_parts(results: Mapping[str, object], epsilon_index: int = 0):
    """Bars of the winning pair's risk gap and curvature term for several checkpoints (e.g.
    ERM and Fishr), with the empirical check on the true losses as a marker.

    Args:
        results: ``{label: InconsistencyResult}``.

    Returns:
        ``(fig, ax)``.
    """
    labels = list(results)
    if not labels:
        raise ValueError("no result to draw; pass {label: InconsistencyResult}")
    risk, curv, empirical = [], [], []
    for res in results.values():
        pair = res.winner(epsilon_index)
        i, j = res.domains.index(pair[0]), res.domains.index(pair[1])
        risk.append(float(np.asarray(res.risk_gap)[i, j]))
        curv.append(float(np.asarray(res.curvature_term)[epsilon_index, i, j]))
        check = res.check or {}
        emp = check.get("empirical_score")
        empirical.append(float(np.asarray(emp).reshape(-1)[epsilon_index]) if emp is not None
                         else np.nan)  # fmt: skip
    x = np.arange(len(labels))
    with style():
        fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2.5, 3.4))
        ax.bar(x, risk, color="#4C72B0", label="risk gap R_B − R_A")
        ax.bar(x, curv, bottom=np.maximum(risk, 0), color="#DD8452",
               label="curvature term ε·λ_max(H_B, H_A)")  # fmt: skip
        ax.plot(x, empirical, "kD", label="empirical check (true losses)")
        ax.set_xticks(x, labels)
        ax.set_ylabel("I^ε and its parts")
        ax.axhline(0, color="k", lw=0.6)
        ax.legend(fontsize=8)
        fig.tight_layout()
    return fig, ax
