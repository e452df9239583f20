"""Directions for 2D loss-surface slices: seeded, described, saved, shared across domains.

A slice (Li et al. 2018, "Visualizing the loss landscape of neural nets") evaluates

.. math::

    f_e(\\alpha, \\beta) = R_e(\\theta_0 + \\alpha\\,\\delta + \\beta\\,\\eta)

on a grid, for every domain ``e``, where :math:`\\theta_0` is the origin (the model's
parameters :math:`\\theta^*` unless the directions fix another one) and
:math:`\\delta, \\eta` are two directions in parameter space. Comparing domains needs the
**same** plane for all of them, so a :class:`Directions` object holds the two directions as
tensors per parameter name, the origin when the plane fixes one, and a description (kind,
seed, normalisation, parameter names and shapes, points of interest); it saves to and loads
from ``.npz`` + ``.json`` so that two domains, two runs or two machines share the exact
plane.

Modules:

* :mod:`~landscape.surface.directions.base`: the :class:`Directions` dataclass;
* :mod:`~landscape.surface.directions.random`: :func:`random_directions` (Gaussian, filter- /
  layer- / un-normalised, seeded) and :func:`normalize_direction`;
* :mod:`~landscape.surface.directions.eigen`: :func:`eigen_directions`, the top two Hessian
  eigenvectors of one domain (:func:`landscape.curvature.top_eigenpairs`);
* :mod:`~landscape.surface.directions.inconsistency`: :func:`inconsistency_directions`, the
  maximiser of :math:`I^\\varepsilon` (:func:`landscape.inconsistency.inconsistency_score`)
  and a seeded random direction orthogonal to it;
* :mod:`~landscape.surface.directions.plane`: :func:`plane_directions`, the plane through
  two or three checkpoints;
* :mod:`~landscape.surface.directions.trajectory`: :func:`trajectory_directions`, the first
  two principal components of a trajectory of checkpoints, with the trajectory projected
  onto the plane;
* :mod:`~landscape.surface.directions.checkpoints`: reading checkpoints on a model's names.
"""

from landscape.surface.directions.base import Directions
from landscape.surface.directions.eigen import eigen_directions
from landscape.surface.directions.inconsistency import inconsistency_directions
from landscape.surface.directions.plane import plane_directions
from landscape.surface.directions.random import (
    Normalization,
    normalize_direction,
    random_directions,
)
from landscape.surface.directions.trajectory import trajectory_directions

__all__ = [
    "Directions",
    "Normalization",
    "random_directions",
    "eigen_directions",
    "inconsistency_directions",
    "plane_directions",
    "trajectory_directions",
    "normalize_direction",
]
