"""Seeded Gaussian directions and their normalisation to the weights (Li et al. 2018).

Every entry is drawn from :math:`\\mathcal N(0, 1)` on the CPU in float64 with a seeded
``torch.Generator`` (the same seed gives the same directions on every device) and then
rescaled to the weights (:class:`Normalization`): with ``"filter"``, each filter
:math:`d_i` (first-axis slice) of a direction becomes

.. math::

    d_i \\leftarrow d_i \\, \\frac{\\|\\theta_i\\|}{\\|d_i\\|},

so that a step of 1 along the direction moves every filter by its own size.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor, nn

from landscape.params import ParamSpec, flatten, select_params
from landscape.surface.directions.base import Directions

__all__ = ["Normalization", "normalize_direction", "random_directions", "orthogonal_random"]


class Normalization(str, Enum):
    """How a random direction is rescaled to the weights (Li et al. 2018, section 4)."""

    FILTER = "filter"
    """Each filter (first-axis slice: an output row of a linear layer, an output channel of a
    convolution) is rescaled to the norm of the matching filter of the weights:
    :math:`d_{i} \\leftarrow d_{i} \\, \\|\\theta_{i}\\| / \\|d_{i}\\|`."""

    LAYER = "layer"
    """Each parameter tensor is rescaled to the norm of the matching weight tensor:
    :math:`d \\leftarrow d \\, \\|\\theta\\| / \\|d\\|`."""

    NONE = "none"
    """Raw standard Gaussian entries, no rescaling."""

    @classmethod
    def of(cls, value: str | Normalization) -> Normalization:
        """The member named ``value``; a one-line ``ValueError`` for an unknown name."""
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown normalization {value!r}; use one of {known}") from None


def normalize_direction(
    direction: Tensor, weight: Tensor, normalization: str | Normalization = "filter"
) -> Tensor:
    """Rescale one direction tensor to the weights (see :class:`Normalization`).

    Filters are first-axis slices; a tensor with at most one axis is one filter. A filter of
    the direction with zero norm stays zero; a filter of the weights with zero norm gives a
    zero filter (as in the reference loss-landscape code, up to its ``1e-10``).

    Args:
        direction: the raw direction, shaped like ``weight``.
        weight: the parameter :math:`\\theta`.
        normalization: ``"filter"``, ``"layer"`` or ``"none"``.
    """
    norm = Normalization.of(normalization)
    if norm is Normalization.NONE:
        return direction.clone()
    if norm is Normalization.LAYER or direction.dim() <= 1:
        d_norm = direction.norm()
        return direction * (weight.norm() / d_norm) if d_norm > 0 else torch.zeros_like(direction)
    d = direction.reshape(direction.shape[0], -1)
    w = weight.reshape(weight.shape[0], -1)
    d_norm = d.norm(dim=1, keepdim=True)
    scale = torch.where(d_norm > 0, w.norm(dim=1, keepdim=True) / d_norm.clamp_min(1e-300), 0.0)
    return (d * scale).reshape(direction.shape)


def _gaussian(like: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Standard Gaussian entries drawn on the CPU in float64 (same numbers on every device)."""
    return {
        n: torch.randn(p.shape, generator=generator, dtype=torch.float64) for n, p in like.items()
    }


def random_directions(
    model: nn.Module,
    params: ParamSpec = None,
    normalization: str | Normalization = "filter",
    seed: int = 0,
    include_biases: bool = False,
) -> Directions:
    """Two seeded Gaussian directions, normalised to the weights (Li et al. 2018).

    Every entry is drawn from :math:`\\mathcal N(0, 1)` with a ``torch.Generator`` seeded with
    ``seed`` (on the CPU in float64, then cast to the parameter's dtype and device, so the
    same seed gives the same directions on every device); :math:`\\delta` is drawn for all
    parameters in the model's order, then :math:`\\eta`. Each direction is then rescaled by
    :func:`normalize_direction`; with ``"filter"``, every output row of a linear layer /
    output channel of a convolution of :math:`\\delta` has the norm of the matching row of
    :math:`\\theta^*`.

    Args:
        model: the network at :math:`\\theta^*`.
        params: which parameters move (see :func:`landscape.params.select_params`); the
            others stay at the model's values.
        normalization: ``"filter"`` (default), ``"layer"`` or ``"none"``.
        seed: seed of the generator, recorded in the result.
        include_biases: biases and normalisation-layer parameters (every parameter with at
            most one axis) get a zero direction by default, as in Li et al.; ``True`` gives
            them a random direction too, normalised as one filter.

    Returns:
        :class:`Directions` of kind ``"random"`` whose origin is the model the surface is
        computed for.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(3, 2)
        >>> dirs = random_directions(model, seed=1)
        >>> bool(torch.allclose(dirs.d1["weight"].norm(dim=1), model.weight.norm(dim=1)))
        True
        >>> float(dirs.d1["bias"].abs().sum())
        0.0
    """
    norm = Normalization.of(normalization)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    selected = select_params(model, params)
    generator = torch.Generator().manual_seed(seed)
    raw = [_gaussian(selected, generator), _gaussian(selected, generator)]
    out = []
    for d in raw:
        nd = {}
        for n, p in selected.items():
            w = p.detach().to("cpu", torch.float64)
            if p.dim() <= 1 and not include_biases:  # bias-like: zero, as in Li et al.
                t = torch.zeros_like(w)
            else:
                t = normalize_direction(d[n], w, norm)
            nd[n] = t.to(device=p.device, dtype=p.dtype)
        out.append(nd)
    return Directions(
        d1=out[0],
        d2=out[1],
        origin=None,
        kind="random",
        seed=seed,
        normalization=norm.value,
        info={"include_biases": bool(include_biases)},
    )


def orthogonal_random(
    first: Tensor,
    like: dict[str, Tensor],
    seed: int,
    normalization: Normalization = Normalization.NONE,
    weights: dict[str, Tensor] | None = None,
) -> Tensor:
    """A seeded random ``[D]`` vector orthogonal to ``first``, with ``first``'s norm.

    A Gaussian vector :math:`v` (shaped like ``like``, normalised to ``weights`` unless
    ``normalization`` is ``"none"``) is projected twice (Gram-Schmidt, the second pass for
    round-off), :math:`v \\leftarrow v - \\frac{\\langle v, u\\rangle}{\\langle u,
    u\\rangle} u`, and rescaled to :math:`\\|u\\|`, in float64.
    """
    raw = _gaussian(like, torch.Generator().manual_seed(seed))
    if weights is not None and normalization is not Normalization.NONE:
        raw = {n: normalize_direction(raw[n], weights[n].double(), normalization) for n in raw}
    v = flatten(raw)
    u = first.double()
    uu = torch.dot(u, u)
    if uu == 0:
        raise ValueError("the first direction is zero; there is no plane to draw")
    v = v - torch.dot(v, u) / uu * u
    v = v - torch.dot(v, u) / uu * u  # second pass for round-off
    return v * (u.norm() / v.norm())
