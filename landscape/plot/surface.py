"""Per-domain 2D loss-surface slices on one shared plane (Li et al. 2018, per domain)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from landscape.plot.style import DIVERGING, SEQUENTIAL, style


def _overlay(ax, directions: dict) -> None:
    """Mark the origin, and the checkpoints or trajectory a plane was built from."""
    ax.plot(0, 0, marker="*", color="white", mec="k", ms=11, zorder=5)
    for label, (x, y) in (directions.get("points") or {}).items():
        ax.plot(x, y, "o", color="white", mec="k", ms=6, zorder=5)
        ax.annotate(label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8)
    traj = directions.get("trajectory")
    if traj is not None:
        traj = np.asarray(traj)
        ax.plot(traj[:, 0], traj[:, 1], "-o", color="white", mec="k", ms=3, lw=1, zorder=5)


def plot_surface(
    result,
    value: str = "loss",
    domains: Sequence[str] | None = None,
    difference: str | None = "auto",
    levels: int = 20,
    log: bool = True,
):
    """One contour panel per domain on the same plane and colour scale, plus a difference.

    Args:
        result: a :class:`landscape.surface.SurfaceResult` (saved results load with
            ``SurfaceResult.load(path)``).
        value: ``"loss"`` or ``"accuracy"``.
        domains: which domains (default: all in the result).
        difference: a key of ``result.differences`` (``"B - A"``) drawn with a diverging
            map; ``"auto"`` takes the first pair of the chosen domains; ``None`` for none.
        levels: contour levels.
        log: log-scale colours for losses.

    Returns:
        ``(fig, axes)``.
    """
    if value not in ("loss", "accuracy"):
        raise ValueError(f"unknown value {value!r}; use 'loss' or 'accuracy'")
    domains = list(domains or result.domains)
    source = result.losses if value == "loss" else result.accuracies
    if not source:
        raise ValueError(f"the result has no {value} values")
    unknown = [d for d in domains if d not in source]
    if unknown:
        raise ValueError(f"unknown domain {unknown[0]!r}; available: {', '.join(source)}")
    if difference == "auto":
        difference = f"{domains[1]} - {domains[0]}" if len(domains) > 1 else None
    if difference is not None and difference not in result.differences:
        raise ValueError(
            f"no difference {difference!r}; available: {', '.join(result.differences)}"
        )
    alphas, betas = np.asarray(result.alphas), np.asarray(result.betas)
    grids = {d: np.asarray(source[d]) for d in domains}
    use_log = log and value == "loss" and min(g.min() for g in grids.values()) > 0
    stack = np.stack([np.log10(g) if use_log else g for g in grids.values()])
    bounds = np.linspace(stack.min(), stack.max(), levels + 1)
    panels = len(domains) + (difference is not None)
    with style():
        fig, axes = plt.subplots(
            1, panels, figsize=(3.3 * panels, 3.1), squeeze=False, sharex=True, sharey=True
        )
        axes = axes[0]
        for ax, (domain, grid) in zip(axes, grids.items(), strict=False):
            shown = np.log10(grid) if use_log else grid
            cs = ax.contourf(alphas, betas, shown.T, levels=bounds, cmap=SEQUENTIAL)
            ax.contour(alphas, betas, shown.T, levels=bounds[::4], colors="k", linewidths=0.4)
            _overlay(ax, result.directions)
            ax.set_title(f"{domain}: {value}")
        fig.colorbar(cs, ax=axes[: len(domains)].tolist(), shrink=0.85,
                     label=f"log10 {value}" if use_log else value)  # fmt: skip
        if difference is not None:
            ax = axes[-1]
            diff = np.asarray(result.differences[difference])
            vmax = float(np.abs(diff).max()) or 1.0
            cs = ax.contourf(alphas, betas, diff.T, levels=levels, cmap=DIVERGING,
                             vmin=-vmax, vmax=vmax)  # fmt: skip
            _overlay(ax, result.directions)
            ax.set_title(f"loss {difference}")
            fig.colorbar(cs, ax=ax, shrink=0.85)
        kind = result.directions.get("kind", "")
        for ax in axes:
            ax.set_xlabel(f"α ({kind})")
        axes[0].set_ylabel("β")
    return fig, axes
