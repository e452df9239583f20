"""The plane through two or three checkpoints (e.g. initial weights, ERM, Fishr)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from landscape.params import ParamSpec, flatten
from landscape.surface.directions.base import Directions, unflatten_as
from landscape.surface.directions.checkpoints import checkpoint_label, checkpoint_states
from landscape.surface.directions.random import orthogonal_random

__all__ = ["plane_directions"]


def _check_plane_args(checkpoints, origin, labels) -> None:
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, str | Mapping):
        raise TypeError("checkpoints must be a list of two or three models / state dicts / paths")
    if len(checkpoints) not in (2, 3):
        raise ValueError(f"a plane goes through two or three checkpoints, got {len(checkpoints)}")
    if not (isinstance(origin, int) and 0 <= origin < len(checkpoints)):
        raise ValueError(f"origin must be an index in [0, {len(checkpoints) - 1}], got {origin!r}")
    if labels is not None and len(labels) != len(checkpoints):
        raise ValueError(f"got {len(labels)} labels for {len(checkpoints)} checkpoints")


def _third_point(v: torch.Tensor, d1: torch.Tensor):
    """``(d2, a, b)``: the second direction through ``v`` (relative to the origin) and the
    coordinates ``(a, b)`` of ``v`` on the plane."""
    n1 = d1.norm()
    a = torch.dot(v, d1) / (n1 * n1)
    u = v - a * d1
    nu = u.norm()
    if nu <= 1e-12 * max(float(n1), float(v.norm())):
        raise ValueError("the three checkpoints are collinear; they span no plane")
    return u * (n1 / nu), float(a), float(nu / n1)


def plane_directions(
    model: nn.Module,
    checkpoints: Sequence,
    params: ParamSpec = None,
    origin: int = 0,
    labels: Sequence[str] | None = None,
    seed: int = 0,
) -> Directions:
    """The plane through two or three checkpoints (e.g. initial weights, ERM, Fishr).

    With checkpoints :math:`c_0, c_1, c_2` and origin :math:`c_o` (``origin`` picks which),
    the others are :math:`c_a, c_b` in order and

    .. math::

        \\delta = c_a - c_o, \\qquad
        \\eta = \\frac{\\|\\delta\\|}{\\|u\\|} u, \\quad
        u = (c_b - c_o) - \\frac{\\langle c_b - c_o, \\delta\\rangle}{\\|\\delta\\|^2}\\delta,

    so both directions have the same length and are orthogonal, the origin sits at
    :math:`(0, 0)`, :math:`c_a` at :math:`(1, 0)` and :math:`c_b` at
    :math:`(\\langle c_b - c_o, \\delta\\rangle/\\|\\delta\\|^2, \\|u\\|/\\|\\delta\\|)`: the plane
    passes through all three. With two checkpoints, :math:`\\eta` is a Gaussian vector drawn
    with ``seed``, made orthogonal to :math:`\\delta` and rescaled to its length. The
    coordinates are stored in ``info["points"]``.

    Args:
        model: a network of the same architecture (names and shapes are checked).
        checkpoints: two or three models, state dicts or checkpoint paths.
        params: the parameters that move (the others stay at the values of the model the
            surface is computed for).
        origin: index of the checkpoint at the origin.
        labels: names of the checkpoints (default: file names or ``checkpoint i``).
        seed: seed of the random second direction (two checkpoints only).
    """
    _check_plane_args(checkpoints, origin, labels)
    like, states = checkpoint_states(model, checkpoints, params)
    o = flatten(states[origin])
    others = [i for i in range(len(states)) if i != origin]
    d1 = flatten(states[others[0]]) - o
    if d1.norm() == 0:
        raise ValueError("the checkpoints coincide on the chosen parameters; there is no plane")
    labs = [checkpoint_label(c, i, labels) for i, c in enumerate(checkpoints)]
    points = {labs[origin]: [0.0, 0.0], labs[others[0]]: [1.0, 0.0]}
    if len(states) == 3:
        d2, a, b = _third_point(flatten(states[others[1]]) - o, d1)
        points[labs[others[1]]] = [a, b]
        used_seed = None
    else:
        d2 = orthogonal_random(d1, like, seed)
        used_seed = seed
    return Directions(
        d1=unflatten_as(d1, like),
        d2=unflatten_as(d2, like),
        origin=unflatten_as(o, like),
        kind="plane",
        seed=used_seed,
        normalization="none",
        info={"points": points, "labels": labs, "origin_label": labs[origin]},
    )
