"""The maximiser of :math:`I^\\varepsilon` and a seeded random direction orthogonal to it.

:math:`\\delta` is the displacement returned by
:func:`landscape.inconsistency.inconsistency_score` (it maximises the risk gap of the worst
pair :math:`(A, B)` within :math:`\\varepsilon`); :math:`\\eta` is a seeded Gaussian vector
made orthogonal to it by Gram-Schmidt and rescaled to :math:`\\|\\delta\\|`
(:func:`landscape.surface.directions.random.orthogonal_random`). On the plane,
:math:`(\\alpha, \\beta) = (1, 0)` is the maximiser itself.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from landscape.params import ParamSpec, flatten, select_params
from landscape.surface.directions.base import Directions, unflatten_as
from landscape.surface.directions.random import Normalization, orthogonal_random

__all__ = ["inconsistency_directions"]


def _maybe_float(x):
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _pick(result, index: int):
    """``(direction, pair, epsilon, score)`` of one value of ε of an inconsistency result.

    An :class:`~landscape.inconsistency.InconsistencyResult` is read through its per-``ε``
    accessors (``epsilon[index]``, ``scores``, :meth:`winner`, :meth:`direction_by_name`),
    whatever number of ``ε`` it holds; any other record (``direction`` as a flat vector or
    ``{name: tensor}``, ``pair``, optional ``epsilon`` and ``score``) describes one ``ε``.
    """
    from landscape.inconsistency import InconsistencyResult

    if getattr(result, "direction", None) is None:
        raise ValueError(
            "the inconsistency result has no maximising direction; compute it with a method "
            "that returns one"
        )
    if not isinstance(result, InconsistencyResult):
        return (result.direction, getattr(result, "pair", None),
                getattr(result, "epsilon", None), getattr(result, "score", None))  # fmt: skip
    count = len(result.epsilon)
    if isinstance(index, bool) or not (isinstance(index, int) and -count <= index < count):
        raise ValueError(f"index must pick one of the {count} values of epsilon, got {index!r}")
    direction = result.direction_by_name(index) if result.param_names else result.directions[index]
    return direction, result.winner(index), result.epsilon[index], result.scores[index]


def _by_name(direction, result, model: nn.Module | None, params: ParamSpec):
    """The direction as ``{name: tensor}`` (model's dtype / device when a model is given) and
    the weights ``{name: tensor}`` on the CPU (``None`` without a model)."""
    if isinstance(direction, Mapping):
        like = {
            str(n): torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v)
            for n, v in direction.items()
        }
        if model is None:
            return like, None
        Directions(d1=like, d2=like).check_model(model)
        named = dict(model.named_parameters())
        like = {n: t.to(device=named[n].device, dtype=named[n].dtype) for n, t in like.items()}
        return like, {n: named[n].detach().cpu() for n in like}
    if model is None:
        raise ValueError(
            "the inconsistency direction is a flat vector; pass model=... to split it by "
            "parameter name"
        )
    if params is None:
        params = getattr(result, "params", None)
    selected = select_params(model, params)
    vec = torch.as_tensor(np.asarray(direction) if not isinstance(direction, Tensor) else direction)
    like = unflatten_as(vec, {n: p.detach() for n, p in selected.items()})
    return like, {n: p.detach().cpu() for n, p in selected.items()}


def inconsistency_directions(
    result,
    model: nn.Module | None = None,
    params: ParamSpec = None,
    seed: int = 0,
    normalization: str | Normalization = "none",
    index: int = 0,
) -> Directions:
    """The maximiser of :math:`I^\\varepsilon` and a seeded random direction orthogonal to it.

    :math:`\\delta` is the direction returned by
    :func:`landscape.inconsistency.inconsistency_score` (the displacement that maximises the
    risk gap of the worst pair); :math:`\\eta` is a Gaussian vector drawn with ``seed``
    (optionally normalised to the weights), made orthogonal to :math:`\\delta` by
    Gram-Schmidt and rescaled to :math:`\\|\\delta\\|`. On the plane, :math:`\\alpha = 1` is the
    maximiser itself.

    Args:
        result: an :class:`~landscape.inconsistency.InconsistencyResult` (any number of
            ``ε``; ``index`` picks one), or any record of one ``ε`` with a ``direction`` (a
            flat vector or ``{name: tensor}``) and a ``pair``.
        model: needed when the direction is a flat vector (to split it by parameter name)
            and for ``normalization`` other than ``"none"``.
        params: the parameters the flat direction lives on (default: the result's ``params``
            when it has them, else all).
        seed: seed of the second direction, recorded.
        normalization: how the raw second direction is normalised before Gram-Schmidt.
        index: which value of :math:`\\varepsilon` when the result holds several.

    Example:
        >>> from types import SimpleNamespace
        >>> res = SimpleNamespace(direction={"w": torch.tensor([3.0, 4.0])}, pair=("A", "B"))
        >>> dirs = inconsistency_directions(res, seed=0)
        >>> float(torch.dot(dirs.d1["w"], dirs.d2["w"])), float(dirs.d2["w"].norm())
        (0.0, 5.0)
    """
    norm = Normalization.of(normalization)
    direction, pair, epsilon, score = _pick(result, index)
    like, weights = _by_name(direction, result, model, params)
    if norm is not Normalization.NONE and weights is None:
        raise ValueError(f"normalization={norm.value!r} needs model=... (the weights)")
    second = orthogonal_random(flatten(like).cpu(), like, seed, norm, weights)
    return Directions(
        d1={n: t.clone() for n, t in like.items()},
        d2=unflatten_as(second, like),
        origin=None,
        kind="inconsistency",
        seed=seed,
        normalization=norm.value,
        info={
            "pair": None if pair is None else [str(p) for p in pair],
            "epsilon": _maybe_float(epsilon),
            "score": _maybe_float(score),
        },
    )
