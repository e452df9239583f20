"""Per-domain 2D loss-surface slices on one shared plane (Li et al. 2018, per domain).

Both directions of the project's planes have the same length and are orthogonal, so every
panel has an equal aspect: distances on the figure are distances in parameter space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.patheffects import withStroke

from landscape.names import NOTATION, algorithm_name, domain_name, ordered_algorithms
from landscape.plot.captions import surface_caption
from landscape.plot.style import (
    DIVERGING,
    SEQUENTIAL,
    caption,
    new_figure,
    nice_ticks,
    style,
    width_inches,
)


def origin_value(alphas, betas, grid) -> float:
    """Bilinear interpolation of ``grid[i, j] = f(alphas[i], betas[j])`` at ``(0, 0)`` (the
    plane's origin, θ* for directions without a fixed origin)."""
    alphas, betas, grid = (np.asarray(x, dtype=np.float64) for x in (alphas, betas, grid))
    along_beta = np.array([np.interp(0.0, betas, row) for row in grid])
    return float(np.interp(0.0, alphas, along_beta))


def sublevel_level(result, domain: str, epsilon: float) -> float:
    """The loss bounding the ε-sublevel set ``{R_domain ≤ R_domain(origin) + ε}`` on the
    surface's own samples."""
    return origin_value(result.alphas, result.betas, result.losses[domain]) + float(epsilon)


def _difference(result, key: str) -> np.ndarray:
    if key in result.differences:
        return np.asarray(result.differences[key], dtype=np.float64)
    b, a = key.split(" - ", 1)
    return np.asarray(result.losses[b], np.float64) - np.asarray(result.losses[a], np.float64)


def _overlay(ax, directions: Mapping) -> None:
    """Mark the origin, the checkpoints or trajectory a plane was built from, and the
    maximiser of I^ε (at (1, 0) on the plane of the inconsistency direction)."""
    ax.plot(0, 0, marker="*", color="white", mec="k", ms=8, mew=0.6, zorder=5)
    for label, (x, y) in (directions.get("points") or {}).items():
        ax.plot(x, y, "o", color="white", mec="k", ms=4, mew=0.6, zorder=5)
        right = x > np.mean(ax.get_xlim())  # label towards the inside of the panel
        ax.annotate(algorithm_name(label), (x, y), xytext=(-4 if right else 4, 3),
                    textcoords="offset points", ha="right" if right else "left", fontsize=6,
                    color="k", path_effects=[withStroke(linewidth=2, foreground="w")])  # fmt: skip
    traj = directions.get("trajectory")
    if traj is not None:
        traj = np.asarray(traj)
        ax.plot(traj[:, 0], traj[:, 1], "-o", color="white", mec="k", ms=2, lw=0.8, zorder=5)
    if directions.get("kind") == "inconsistency":
        ax.plot(1, 0, marker="X", color="#E69F00", mec="k", ms=7, mew=0.6, zorder=6)


def loss_norm(grids, log: bool = True):
    """One colour scale for several loss grids: logarithmic when every value is positive."""
    stack = np.concatenate([np.asarray(g, np.float64).ravel() for g in grids])
    low, high = float(stack.min()), float(stack.max())
    if high <= low:
        high = low + 1.0
    return LogNorm(low, high) if log and low > 0 else Normalize(low, high)


def difference_norm(grids) -> Normalize:
    """One symmetric colour scale (centred on zero) for several difference grids."""
    vmax = max(float(np.abs(np.asarray(g)).max()) for g in grids) or 1.0
    return Normalize(-vmax, vmax)


def _panel(ax, result, grid, norm, cmap, levels: int):
    """Filled contours of ``grid`` on the plane, equal aspect, markers on top."""
    if isinstance(norm, LogNorm):
        bounds = np.geomspace(norm.vmin, norm.vmax, levels + 1)
    else:
        bounds = np.linspace(norm.vmin, norm.vmax, levels + 1)
    cs = ax.contourf(result.alphas, result.betas, np.asarray(grid).T, levels=bounds, cmap=cmap,
                     norm=norm, extend="neither")  # fmt: skip
    ax.set_xlim(float(np.min(result.alphas)), float(np.max(result.alphas)))
    _overlay(ax, result.directions or {})
    ax.set_aspect("equal")
    ax.grid(False)
    return cs


def _colorbar(fig, cs, axes, norm, label: str, **kw):
    log = isinstance(norm, LogNorm)
    kw.setdefault("shrink", 0.9)
    bar = fig.colorbar(cs, ax=axes, ticks=nice_ticks(norm.vmin, norm.vmax, log), **kw)
    bar.ax.minorticks_off()
    axis = bar.ax.xaxis if bar.orientation == "horizontal" else bar.ax.yaxis
    axis.set_major_formatter("{x:.3g}")
    bar.set_label(label)
    return bar


def _sublevel(ax, result, domain: str, epsilon: float, ls: str = "-") -> None:
    level = sublevel_level(result, domain, epsilon)
    ax.contour(result.alphas, result.betas, np.asarray(result.losses[domain]).T, levels=[level],
               colors="w", linestyles=ls, linewidths=1.0)  # fmt: skip


def plot_surface(
    result,
    value: str = "loss",
    domains: Sequence[str] | None = None,
    difference: str | None = "auto",
    levels: int = 20,
    log: bool = True,
    epsilon: float | None = None,
):
    """One contour panel per domain on the same plane and ONE colour scale (logarithmic for
    losses, ticks at round values), plus a difference on a symmetric diverging scale.

    Args:
        result: a :class:`landscape.surface.SurfaceResult` (saved results load with
            ``SurfaceResult.load(path)``).
        value: ``"loss"`` or ``"accuracy"``.
        domains: which domains (default: all in the result).
        difference: a key of ``result.differences`` (``"B - A"``) drawn with a diverging
            map; ``"auto"`` takes the first pair of the chosen domains; ``None`` for none.
        levels: contour levels.
        log: log-scale colours for losses.
        epsilon: draw each domain's ε-sublevel set (:func:`sublevel_level`).

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
    norm = loss_norm([source[d] for d in domains], log and value == "loss")
    panels = len(domains) + (difference is not None)
    with style():
        width = "full" if panels > 2 else "column"
        side = width_inches(width) / panels  # square panels (equal aspect) and their labels
        fig, axes = new_figure(width, 0.8 * side + 1.1, 1, panels, sharex=True, sharey=True)
        axes = axes[0]
        for ax, domain in zip(axes, domains, strict=False):
            cs = _panel(ax, result, source[domain], norm, SEQUENTIAL, levels)
            if epsilon is not None and value == "loss":
                _sublevel(ax, result, domain, epsilon)
            ax.set_title(f"{value} on {domain_name(domain)}")
        _colorbar(fig, cs, axes[: len(domains)].tolist(), norm, value)
        if difference is not None:
            diff = _difference(result, difference)
            dnorm = difference_norm([diff])
            cs = _panel(axes[-1], result, diff, dnorm, DIVERGING, levels)
            b, a = (domain_name(d) for d in difference.split(" - ", 1))
            axes[-1].set_title(f"{b} − {a}")  # short: the colour bar says what it is
            _colorbar(fig, cs, [axes[-1]], dnorm, f"{NOTATION['risk_gap']} (loss)")
        for ax in axes:
            ax.set_xlabel(r"$\alpha$")
        axes[0].set_ylabel(r"$\beta$")
        caption(fig, f"Loss surfaces: {surface_caption(result)}; ★ origin")
    return fig, axes


def plot_surface_grid(
    results: Mapping[str, object],
    domains: Sequence[str],
    epsilon: float | None = None,
    levels: int = 20,
):
    """Surfaces as one grid: algorithms (rows, the names table's order) × the two domains
    ``(A, B)`` and their difference ``R_B − R_A`` (columns), ONE loss colour scale and ONE
    difference scale for the whole grid, each domain's ε-sublevel set drawn (solid: A,
    dashed: B) and the maximiser of I^ε marked (×, at (1, 0) on its plane).

    Returns:
        ``(fig, axes)``: a rows × 3 array.
    """
    if not results:
        raise ValueError("no surface to draw; pass {algorithm: SurfaceResult}")
    a, b = domains
    algos = ordered_algorithms(results)
    key = f"{b} - {a}"
    norm = loss_norm([results[x].losses[d] for x in algos for d in (a, b)])
    dnorm = difference_norm([_difference(results[x], key) for x in algos])
    with style():
        fig, axes = new_figure("full", 1.75 * len(algos) + 0.7, len(algos), 3,
                               sharex=True, sharey=True)  # fmt: skip
        for row, algo in zip(axes, algos, strict=True):
            res = results[algo]
            for ax, d, ls in ((row[0], a, "-"), (row[1], b, "--")):
                cs = _panel(ax, res, res.losses[d], norm, SEQUENTIAL, levels)
                if epsilon is not None:
                    _sublevel(ax, res, d, epsilon, ls)
            dcs = _panel(row[2], res, _difference(res, key), dnorm, DIVERGING, levels)
            if epsilon is not None:
                _sublevel(row[2], res, a, epsilon, "-")
                _sublevel(row[2], res, b, epsilon, "--")
            row[0].set_ylabel(f"{algorithm_name(algo)}\n" + r"$\beta$")
        titles = [f"loss on A = {domain_name(a)}", f"loss on B = {domain_name(b)}",
                  f"{NOTATION['risk_gap']}"]  # fmt: skip
        for ax, title in zip(axes[0], titles, strict=True):
            ax.set_title(title)
        for ax in axes[-1]:
            ax.set_xlabel(r"$\alpha$")
        bottom = {"location": "bottom", "shrink": 0.8, "aspect": 25}
        _colorbar(fig, cs, axes[:, :2].ravel().tolist(), norm, "loss", **bottom)
        _colorbar(fig, dcs, axes[:, 2].tolist(), dnorm, "loss difference", **bottom)
        sub = f"; white: {NOTATION['epsilon']}-sublevel sets" if epsilon is not None else ""
        caption(fig, f"Loss surfaces on the plane of each model's {NOTATION['score']} "
                f"direction: {surface_caption(results[algos[0]])}; ★\u00a0θ*, ×\u00a0maximiser"
                f"{sub}")  # fmt: skip
    return fig, axes
