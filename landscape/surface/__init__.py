"""Per-domain 2D loss-surface slices on shared, seeded directions (Li et al. 2018).

For directions :math:`\\delta, \\eta` (a :class:`~landscape.surface.directions.Directions`),
an origin :math:`\\theta_0` (the model's parameters unless the directions fix one) and a grid
of coordinates :math:`(\\alpha_i, \\beta_j)`, :func:`loss_surface` evaluates for every
domain ``e``

.. math::

    L_e[i, j] = R_e(\\theta_0 + \\alpha_i \\delta + \\beta_j \\eta), \\qquad
    R_e(\\theta) = \\frac{1}{N_e} \\sum_{n=1}^{N_e} \\ell(f_\\theta(x_n), y_n),

and the accuracy likewise, on the **same** plane and grid for all domains, plus the
differences :math:`L_B - L_A` for every ordered pair of domains and the deviations
:math:`L_e - \\frac{1}{E}\\sum_{e'} L_{e'}` from the mean over domains.

Cost. A grid point costs one forward pass over the chosen data and nothing more: parameters
are never copied into the model; each point calls :func:`torch.func.functional_call` with
the displaced parameters (so the user's model is never modified). When the first layer
that owns parameters is an ``nn.Linear`` fed directly by the data, its products with the
data are computed once per domain and each grid point skips them
(:mod:`~landscape.surface.first_layer`); when the directions move one submodule only (e.g.
the head) and the model returns its output, the layers before it run once per domain and a
point runs that submodule alone (:mod:`~landscape.surface.prefix`). With ``points_per_call >
1`` several grid points go through one call (:func:`torch.func.vmap` over stacked parameter
sets), which pays on a GPU. Any ``nn.Module`` whose forward takes a tensor batch works
(convolutions, normalisation layers, residual blocks); each shortcut applies only where a
probe batch shows it is exact.

Data larger than memory. A domain given as an unshuffled DataLoader is streamed: every grid
point reads it again, one batch at a time, and the risk accumulates over the batches
(:mod:`~landscape.surface.data`); lists of batches are moved to the device once.

Batch norm and dropout. Surfaces are evaluated in **eval mode with the model's own running
statistics** (those of :math:`\\theta^*`) at every grid point: the model must already be in
eval mode (a module whose behaviour depends on the mode, batch norm or dropout, found in
training mode raises a ``ValueError``; nothing silently calls ``model.eval()``; a model
without such modules may stay in train mode). This is what the reference loss-landscape
code does (it calls ``net.eval()``). With ``batch_norm="recompute"``, the statistics of every
batch-norm layer are instead recomputed at each grid point on each domain's (subsampled)
data (:mod:`~landscape.surface.batchnorm`): this costs a second forward pass per point.

Resuming. With ``checkpoint_dir``, every row of the grid (one :math:`\\alpha_i`, all
:math:`\\beta_j`, all domains) is written as it finishes; a call with the same settings
skips the rows already there, and gives the same result as an uninterrupted run. Other
settings in the same folder raise a ``ValueError`` (:mod:`~landscape.surface.store`).

Modules:

* :mod:`~landscape.surface.directions`: the :class:`Directions` of a plane and how to make
  them (random, eigen, inconsistency, plane through checkpoints, trajectory);
* :mod:`~landscape.surface.grid`: :func:`make_grid`, the coordinates;
* :mod:`~landscape.surface.options`: :class:`SurfaceOptions`, the evaluation options;
* :mod:`~landscape.surface.data`: each domain's (subsampled) batches on the device, or
  streamed from a DataLoader;
* :mod:`~landscape.surface.plane`: the plane resolved on the model, parameters at a point;
* :mod:`~landscape.surface.first_layer`: the first-linear-layer shortcut;
* :mod:`~landscape.surface.prefix`: the frozen-prefix shortcut (directions that move one
  submodule, e.g. the head: what runs before it is evaluated once);
* :mod:`~landscape.surface.batchnorm`: batch-norm statistics recomputed at a point;
* :mod:`~landscape.surface.evaluators`: risk and accuracy at the points of a row;
* :mod:`~landscape.surface.store`: the row store that makes a surface resumable;
* :mod:`~landscape.surface.result`: :class:`SurfaceResult`;
* :mod:`~landscape.surface.surface`: :func:`loss_surface`, the orchestrator.
"""

from landscape.surface.directions import (
    Directions,
    eigen_directions,
    inconsistency_directions,
    normalize_direction,
    plane_directions,
    random_directions,
    trajectory_directions,
)
from landscape.surface.first_layer import first_linear_layer
from landscape.surface.grid import DEFAULT_GRID, make_grid
from landscape.surface.options import SurfaceOptions
from landscape.surface.result import SurfaceResult
from landscape.surface.surface import loss_surface

__all__ = [
    "SurfaceResult",
    "SurfaceOptions",
    "loss_surface",
    "make_grid",
    "DEFAULT_GRID",
    "first_linear_layer",
    "Directions",
    "random_directions",
    "eigen_directions",
    "inconsistency_directions",
    "plane_directions",
    "trajectory_directions",
    "normalize_direction",
]
