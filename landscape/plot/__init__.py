"""One function per figure. Each takes saved results and returns ``(fig, axes)``.

* :func:`plot_training_curves`: per-domain accuracy / loss over training (a run folder);
* :func:`plot_alignment`: the paper's Hessian-alignment figure (distances and cosines
  between the domains' gradient variances and Hessian diagonals over training);
* :func:`plot_pairwise`, :func:`plot_pairs`, :func:`plot_score_parts`: the inconsistency
  score I^ε (pairwise matrices on one colour scale; its parts beside its empirical check);
* :func:`plot_surface`: per-domain loss surfaces on a shared plane, and their difference;
* :func:`plot_surface_grid`: algorithms × (domain A, domain B, difference), one colour scale;

Every figure is drawn under :func:`landscape.plot.style.style` and saved with
:func:`landscape.plot.style.save_figure` (PNG at 300 dpi and PDF, one column or full width).
* :func:`plot_table2`: Table 2, ours beside the paper's;
* :func:`plot_curvature`: per-domain spectra of ``landscape curvature``'s results.
"""

from landscape.plot.alignment import plot_alignment
from landscape.plot.curvature import plot_curvature
from landscape.plot.inconsistency import plot_pairs, plot_pairwise, plot_score_parts
from landscape.plot.surface import plot_surface, plot_surface_grid
from landscape.plot.table2 import plot_table2
from landscape.plot.training import plot_training_curves

__all__ = [
    "plot_alignment",
    "plot_curvature",
    "plot_pairs",
    "plot_pairwise",
    "plot_score_parts",
    "plot_surface",
    "plot_surface_grid",
    "plot_table2",
    "plot_training_curves",
]
