"""Figures of ``landscape curvature``'s results: one panel per result, a line per domain."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from landscape.plot.style import domain_color, style

# result type -> (its per-domain field, y label, sort descending by magnitude, log scale)
_SPECTRA = {
    "EigenpairsResult": ("largest_eigenvalues", "top eigenvalues", True, False),
    "HessianDiagonalResult": ("diagonal", "|diagonal| (sorted)", True, True),
    "GradientVarianceResult": ("variance", "gradient variance (sorted)", True, True),
    "SpectralDensityResult": ("density", "spectral density", False, False),
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
        fig, ax = plt.subplots(figsize=(5.0, 3.4))
        for i, name in enumerate(result.domains):
            y = np.asarray(values[name], dtype=np.float64).ravel()
            if kind == "SpectralDensityResult":
                x = np.asarray(result.grid[name], dtype=np.float64).ravel()
            else:
                y = np.sort(np.abs(y) if log else y)[::-1] if descending else y
                x = np.arange(1, y.size + 1)
            ax.plot(x, y, marker="." if y.size <= 50 else None, lw=1.2,
                    color=domain_color(name, i), label=name)  # fmt: skip
        if log:
            ax.set_yscale("symlog", linthresh=max(1e-12, _smallest_positive(values)))
        ax.set_xlabel("eigenvalue" if kind == "SpectralDensityResult" else "index")
        ax.set_ylabel(label)
        ax.set_title(f"{kind.removesuffix('Result')}: {label}", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
    return fig, ax


def _smallest_positive(values: dict) -> float:
    flat = np.abs(np.concatenate([np.asarray(v, np.float64).ravel() for v in values.values()]))
    positive = flat[flat > 0]
    return float(positive.min()) if positive.size else 1.0
