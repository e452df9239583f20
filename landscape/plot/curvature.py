"""Figures of ``landscape curvature``'s results: one panel per result, a line per domain."""

from __future__ import annotations

import numpy as np

from landscape.names import domain_name
from landscape.plot.captions import samples_caption
from landscape.plot.style import caption, domain_style, new_figure, style

# result type -> (its per-domain field, y label, sort descending by magnitude, log scale)
_SPECTRA = {
    "EigenpairsResult": ("largest_eigenvalues", "top eigenvalues", True, False),
    "HessianDiagonalResult": ("diagonal", "|diagonal| (sorted)", True, True),
    "GradientVarianceResult": ("variance", "gradient variance (sorted)", True, True),
    "SpectralDensityResult": ("density", "spectral density", False, False),
}


_TITLES = {
    "EigenpairsResult": "Top Hessian eigenvalues",
    "HessianDiagonalResult": "Hessian diagonal",
    "GradientVarianceResult": "Gradient variance",
    "SpectralDensityResult": "Hessian spectral density (SLQ)",
}


def can_plot_curvature(result) -> bool:
    """Whether :func:`plot_curvature` draws ``result`` (traces and comparisons: tables)."""
    return type(result).__name__ in _SPECTRA


def plot_curvature(result):
    """Per-domain spectrum of a curvature result: eigenvalues (descending), sorted
    diagonals or gradient variances (log scale), or the spectral density over its grid.

    Returns:
        ``(fig, ax)``.

    Raises:
        ValueError: a result this function does not draw (:func:`can_plot_curvature`).
    """
    kind = type(result).__name__
    if kind not in _SPECTRA:
        raise ValueError(f"no curvature figure for a {kind}; its numbers are in the table")
    field, label, descending, log = _SPECTRA[kind]
    values = getattr(result, field)
    with style():
        fig, axes = new_figure("column", 2.6)
        ax = axes[0, 0]
        for i, name in enumerate(result.domains):
            y = np.asarray(values[name], dtype=np.float64).ravel()
            if kind == "SpectralDensityResult":
                x = np.asarray(result.grid[name], dtype=np.float64).ravel()
            else:
                y = np.sort(np.abs(y) if log else y)[::-1] if descending else y
                x = np.arange(1, y.size + 1)
            cue = domain_style(name, i)
            if y.size > 50:
                cue["marker"] = None
            ax.plot(x, y, lw=1.0, ms=2.5, label=domain_name(name), **cue)
        if log:
            ax.set_yscale("symlog", linthresh=max(1e-12, _smallest_positive(values)))
        ax.set_xlabel("eigenvalue" if kind == "SpectralDensityResult" else "index")
        ax.set_ylabel(label)
        ax.legend()
        what = _TITLES.get(kind, kind)
        size = samples_caption(getattr(result, "num_samples", None))
        caption(fig, f"{what} per domain" + (f", {size}" if size else ""))
    return fig, ax


def _smallest_positive(values: dict) -> float:
    flat = np.abs(np.concatenate([np.asarray(v, np.float64).ravel() for v in values.values()]))
    positive = flat[flat > 0]
    return float(positive.min()) if positive.size else 1.0


def plot_spectral_densities(results, floor: float = 1e-6):
    """Overlaid per-domain Hessian spectral densities (SLQ): one row per algorithm (the
    names table's order), one column per parameter set (``"head"``, ``"network"``), one
    line per domain on a log density axis (values below ``floor`` times the peak clipped).

    Args:
        results: ``{algorithm: {"head" | "network": SpectralDensityResult}}``.

    Returns:
        ``(fig, axes)``: rows × columns.
    """
    from landscape.names import algorithm_name, ordered_algorithms, parameter_name

    algos = ordered_algorithms(results)
    if not algos:
        raise ValueError("nothing to draw; pass {algorithm: {kind: SpectralDensityResult}}")
    kinds = [k for k in ("head", "network") if any(k in results[a] for a in algos)]
    with style():
        fig, axes = new_figure("full", 1.6 * len(algos) + 0.9, len(algos), len(kinds),
                               sharex="col")  # fmt: skip
        for row, algo in zip(axes, algos, strict=True):
            for ax, kind in zip(row, kinds, strict=True):
                res = results[algo].get(kind)
                if res is None:
                    ax.set_visible(False)
                    continue
                peak = max(float(np.max(res.density[d])) for d in res.domains)
                for i, domain in enumerate(res.domains):
                    cue = domain_style(domain, i)
                    density = np.maximum(np.asarray(res.density[domain]), floor * peak)
                    ax.plot(res.grid[domain], density, lw=1.0, label=domain_name(domain),
                            color=cue["color"], ls=cue["ls"])  # fmt: skip
                ax.set_yscale("log")
                ax.set_ylim(floor * peak, 2 * peak)
                ax.set_title(f"{algorithm_name(algo)}, {parameter_name(kind)}")
            row[0].set_ylabel("spectral density")
        for ax in axes[-1]:
            ax.set_xlabel("Hessian eigenvalue")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels))
        first = results[algos[0]][kinds[0]]
        size = samples_caption(getattr(first, "num_samples", None))
        settings = first.settings or {}
        probes = settings.get("num_probes")
        caption(fig, "Hessian spectral densities per domain (stochastic Lanczos quadrature"
                + (f", {probes} probes" if probes else "") + ")"
                + (f", {size}" if size else ""))  # fmt: skip
    return fig, axes
