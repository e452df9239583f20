"""Training curves of a run folder: per-domain accuracy or loss against the step."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from landscape.names import algorithm_name, domain_name, metric_label, ordered_algorithms
from landscape.plot.captions import run_caption
from landscape.plot.style import REFERENCE, algorithm_style, caption, new_figure, style
from landscape.runs import RunFolder


def load_histories(
    run_dir: str | os.PathLike, algorithm: str, steps: int | None = None
) -> list[dict[str, np.ndarray]]:
    """Every finished restart's ``history.csv`` of ``algorithm`` as ``{column: [T]}`` arrays.

    With ``steps``, restarts whose history does not reach that step (still running, or
    interrupted) are left out, so that the curves average complete runs only.
    """
    from landscape.training import read_history

    out = []
    for path in RunFolder(run_dir).history_paths(algorithm):
        rows = read_history(path)
        if rows and (steps is None or int(rows[-1]["step"]) == steps):
            out.append({k: np.array([r[k] for r in rows]) for k in rows[0]})
    if not out:
        raise FileNotFoundError(f"no finished history of {algorithm!r} in {run_dir}")
    return out


def _finished(run_dir, algorithm: str, steps: int) -> bool:
    try:
        load_histories(run_dir, algorithm, steps)
    except FileNotFoundError:
        return False
    return True


def plot_training_curves(
    run_dir: str | os.PathLike,
    algorithms: Sequence[str] | None = None,
    domains: Sequence[str] | None = None,
    metric: str = "acc",
):
    """One panel per domain: ``metric`` (``"acc"`` or ``"loss"``) against the step.

    Lines are the mean over restarts, bands ± one standard deviation (none for an algorithm
    with a single restart: there is no spread); the dotted vertical
    line marks the anneal step of the penalty weight.

    Returns:
        ``(fig, axes)``.
    """
    if metric not in ("acc", "loss"):
        raise ValueError(f"unknown metric {metric!r}; use 'acc' or 'loss'")
    config = RunFolder(run_dir).read_config()
    if algorithms is None:  # those with at least one finished restart
        algorithms = [a for a in config["algorithms"] if _finished(run_dir, a, config["steps"])]
    histories = {a: load_histories(run_dir, a, config["steps"]) for a in algorithms}
    first = histories[algorithms[0]][0]
    available = [c.split("/", 1)[1] for c in first if c.startswith(f"{metric}/")]
    if domains is None:
        domains = available
    unknown = [d for d in domains if d not in available]
    if unknown:
        raise ValueError(f"unknown domain {unknown[0]!r}; available: {', '.join(available)}")
    scale = 100.0 if metric == "acc" else 1.0
    with style():
        fig, axes = new_figure("full", 2.3, 1, len(domains), sharey=True)
        for ax, domain in zip(axes[0], domains, strict=True):
            for algo in ordered_algorithms(histories):
                runs = histories[algo]
                values = scale * np.stack([h[f"{metric}/{domain}"] for h in runs])
                # rows that evaluate no test domain hold NaN there (``eval_every``): draw the
                # evaluated steps only, so that the line joins them
                evaluated = np.isfinite(values).all(0)
                steps, values = runs[0]["step"][evaluated], values[:, evaluated]
                mean, std = values.mean(0), values.std(0)
                cue = algorithm_style(algo)
                ax.plot(steps, mean, label=algorithm_name(algo), markevery=max(1, len(steps) // 8),
                        ms=3, **cue)  # fmt: skip
                if len(runs) > 1:  # one restart has no spread to draw
                    ax.fill_between(steps, mean - std, mean + std, color=cue["color"],
                                    alpha=0.2, lw=0)  # fmt: skip
            ax.axvline(config["anneal_step"], color=REFERENCE, ls=":", lw=0.8)
            ax.set_title(f"domain {domain_name(domain)}")
            ax.set_xlabel("step")
        axes[0, 0].set_ylabel(metric_label(metric))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
        spread = "mean ± std over restarts" if config.get("restarts", 1) > 1 else "one restart"
        caption(fig, f"Training curves: {run_caption(config)}; {spread}; dotted: anneal step "
                f"{config['anneal_step']}")  # fmt: skip
    return fig, axes
