"""One function per figure. Each takes saved results and returns ``(fig, axes)``.

* :func:`plot_training_curves`: per-domain accuracy / loss over training (a run folder);
* :func:`plot_alignment`: the paper's Hessian-alignment figure (distances and cosines
  between the domains' gradient variances and Hessian diagonals over training);
* :func:`plot_pairwise`, :func:`plot_score_parts`: the inconsistency score I^ε;
* :func:`plot_surface`: per-domain loss surfaces on a shared plane, and their difference;
* :func:`plot_curvature`: per-domain spectra of ``landscape curvature``'s results.
"""

from landscape.plot.alignment import plot_alignment
from landscape.plot.curvature import plot_curvature
from landscape.plot.inconsistency import plot_pairwise, plot_score_parts
from landscape.plot.surface import plot_surface
from landscape.plot.training import plot_training_curves

__all__ = [
    "plot_alignment",
    "plot_curvature",
    "plot_pairwise",
    "plot_score_parts",
    "plot_surface",
    "plot_training_curves",
]
