"""I^ε and its two parts over training, from a run's saved checkpoints.

For every checkpoint of restart ``restart`` of each algorithm,
:func:`landscape.inconsistency.inconsistency_score` of the head (dense, top-``k`` remedy,
with its empirical check on the true losses) gives the winning pair's quadratic score
:math:`I^\\varepsilon = (R_B - R_A) + \\varepsilon\\,\\lambda_{\\max}(H_B, H_A)` and the
score on the true losses; :func:`plot_score_trajectory` draws them against the step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from landscape.io import SavedResult
from landscape.names import NOTATION, algorithm_name, ordered_algorithms, parameter_name
from landscape.plot.captions import samples_caption
from landscape.plot.inconsistency import winner_parts
from landscape.plot.style import REFERENCE, algorithm_style, caption, new_figure, style

#: (field, label) of the four panels, row-major.
PANELS = [
    ("score", f"quadratic {NOTATION['score']}"),
    ("empirical", NOTATION["empirical"]),
    ("risk_gap", f"risk gap {NOTATION['risk_gap']}"),
    ("curvature_term", f"curvature term {NOTATION['curvature_term']}"),
]


@dataclass
class ScoreTrajectory(SavedResult):
    """``{algorithm: [S]}`` arrays over the checkpoint steps ``steps[algorithm]``."""

    steps: dict
    score: dict
    risk_gap: dict
    curvature_term: dict
    empirical: dict
    epsilon: float
    params: str = "head"
    anneal_step: int | None = None
    num_samples: dict = field(default_factory=dict)


def score_trajectory(
    run_dir: str | os.PathLike,
    algorithms: Sequence[str],
    loss_func,
    domains: Mapping,
    epsilon: float,
    *,
    k: int = 20,
    restart: int = 0,
    device: str = "cpu",
    check: bool = True,
) -> ScoreTrajectory:
    """I^ε of the head (dense, ``remedy="top-k"``) at every checkpoint of ``restart`` of each
    algorithm, on ``domains`` (the training pair)."""
    from landscape.checkpoint import load_checkpoint
    from landscape.inconsistency import inconsistency_score
    from landscape.runs import RunFolder

    run = RunFolder(run_dir)
    out = {name: {} for name in ("steps", "score", "risk_gap", "curvature_term", "empirical")}
    num_samples = {}
    for algo in algorithms:
        steps = run.checkpoint_steps(algo, restart)
        rows = []
        for step in steps:
            model, _ = load_checkpoint(run.checkpoint_path(algo, restart, step), device=device)
            res = inconsistency_score(model, loss_func, domains, epsilon, params="classifier",
                                      method="dense", remedy="top-k", k=k, check=check,
                                      progress=False)  # fmt: skip
            risk, curv, emp = winner_parts(res, 0)
            rows.append((float(res.scores[0]), risk, curv, emp))
            num_samples = res.num_samples
        values = np.array(rows, dtype=np.float64).reshape(-1, 4)
        out["steps"][algo] = np.asarray(steps)
        for col, name in enumerate(("score", "risk_gap", "curvature_term", "empirical")):
            out[name][algo] = values[:, col]
    anneal = run.read_config().get("anneal_step")
    return ScoreTrajectory(**out, epsilon=float(epsilon), anneal_step=anneal,
                           num_samples=dict(num_samples))  # fmt: skip


def plot_score_trajectory(traj: ScoreTrajectory):
    """Four panels against the step, one line per algorithm (the names table's order): the
    quadratic I^ε, I^ε on the true losses (log scale when positive), the risk gap and the
    curvature term of the winning pair; a dotted line at the anneal step.

    Returns:
        ``(fig, axes)``: a 2 × 2 array.
    """
    algos = ordered_algorithms(traj.score)
    if not algos:
        raise ValueError("the trajectory holds no algorithm")
    with style():
        fig, axes = new_figure("full", 4.2, 2, 2, sharex=True)
        for ax, (name, label) in zip(axes.flat, PANELS, strict=True):
            for algo in algos:
                ax.plot(traj.steps[algo], getattr(traj, name)[algo],
                        label=algorithm_name(algo), **algorithm_style(algo))  # fmt: skip
            ax.set_ylabel(label)
            if traj.anneal_step is not None:
                ax.axvline(traj.anneal_step, color=REFERENCE, ls=":", lw=0.8)
        values = np.concatenate([np.asarray(traj.empirical[a]) for a in algos])
        if np.all(values[np.isfinite(values)] > 0):
            axes[0, 1].set_yscale("log")
        for ax in axes[1]:
            ax.set_xlabel("step")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
        size = samples_caption(traj.num_samples)
        caption(fig, f"{NOTATION['score']} of the {parameter_name(traj.params)} over training, "
                f"winning pair, {NOTATION['epsilon']} = {traj.epsilon:g}"
                + (f", {size}" if size else "") + "; dotted: anneal step")  # fmt: skip
    return fig, axes
