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

Kinds of directions:

* :func:`random_directions`: Gaussian, filter- / layer- / un-normalised, seeded;
* :func:`eigen_directions`: the top two Hessian eigenvectors of one domain
  (:func:`landscape.curvature.top_eigenpairs`);
* :func:`inconsistency_directions`: the maximiser of :math:`I^\\varepsilon`
  (:func:`landscape.inconsistency.inconsistency_score`) and a seeded random direction
  orthogonal to it;
* :func:`plane_directions`: the plane through two or three checkpoints;
* :func:`trajectory_directions`: the first two principal components of a trajectory of
  checkpoints, with the trajectory projected onto the plane.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.io import SavedResult
from landscape.params import ParamSpec, flatten, select_params, unflatten

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


def _normalization(value) -> Normalization:
    try:
        return Normalization(value)
    except ValueError:
        known = ", ".join(m.value for m in Normalization)
        raise ValueError(f"unknown normalization {value!r}; use one of {known}") from None


def _as_tensor_dict(obj: Mapping[str, Any]) -> dict[str, Tensor]:
    return {
        str(k): torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v)
        for k, v in obj.items()
    }


def _fingerprint(tensors: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256()
    for name, t in tensors.items():
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class Directions(SavedResult):
    """Two directions in parameter space (and optionally an origin), with their description.

    Attributes:
        d1: first direction :math:`\\delta`, ``{parameter name: tensor shaped like it}``.
        d2: second direction :math:`\\eta`, same names and shapes.
        origin: the plane's origin :math:`\\theta_0` for the same names, or ``None`` when the
            origin is the parameters of the model the surface is computed for (random,
            eigen and inconsistency directions).
        kind: ``"random"``, ``"eigen"``, ``"inconsistency"``, ``"plane"`` or
            ``"trajectory"``.
        seed: the seed of every random choice made (``None`` when none was made).
        normalization: ``"filter"``, ``"layer"`` or ``"none"``.
        info: everything else that describes the plane: eigenvalues, the domain pair,
            ``points`` (``{label: [alpha, beta]}`` of checkpoints on the plane),
            ``trajectory`` (``[T, 2]`` coordinates), explained variances, ...

    Two domains or two runs that use the same :class:`Directions` (or one loaded from the
    same file) evaluate the same plane exactly.
    """

    d1: dict[str, Any]
    d2: dict[str, Any]
    origin: dict[str, Any] | None = None
    kind: str = "random"
    seed: int | None = None
    normalization: str = "none"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.d1 = _as_tensor_dict(self.d1)
        self.d2 = _as_tensor_dict(self.d2)
        if self.origin is not None:
            self.origin = _as_tensor_dict(self.origin)
        if list(self.d1) != list(self.d2):
            raise ValueError("the two directions must cover the same parameter names")
        for name in self.d1:
            if self.d1[name].shape != self.d2[name].shape:
                raise ValueError(
                    f"direction tensors for {name!r} have shapes {tuple(self.d1[name].shape)} "
                    f"and {tuple(self.d2[name].shape)}; they must match"
                )
        if self.origin is not None and (
            list(self.origin) != list(self.d1)
            or any(self.origin[n].shape != self.d1[n].shape for n in self.d1)
        ):
            raise ValueError("the origin must have the same parameter names and shapes as d1")

    @property
    def names(self) -> list[str]:
        """The parameter names the directions cover, in the model's order."""
        return list(self.d1)

    @property
    def shapes(self) -> dict[str, list[int]]:
        """``{name: shape}`` of the covered parameters."""
        return {n: list(t.shape) for n, t in self.d1.items()}

    def fingerprint(self) -> str:
        """A short hash of the tensors (directions and origin): equal planes, equal hashes."""
        parts = {f"d1/{k}": v for k, v in self.d1.items()}
        parts.update({f"d2/{k}": v for k, v in self.d2.items()})
        if self.origin is not None:
            parts.update({f"origin/{k}": v for k, v in self.origin.items()})
        return _fingerprint(parts)

    def describe(self) -> dict[str, Any]:
        """The JSON-friendly description stored in every surface result."""
        return {
            "kind": self.kind,
            "seed": self.seed,
            "normalization": self.normalization,
            "params": self.names,
            "shapes": self.shapes,
            "norms": [float(flatten(self.d1).norm()), float(flatten(self.d2).norm())],
            "cosine": _cosine(flatten(self.d1), flatten(self.d2)),
            "origin": "fixed" if self.origin is not None else "model",
            "fingerprint": self.fingerprint(),
            **self.info,
        }

    def check_model(self, model: nn.Module) -> None:
        """Raise a one-line ``ValueError`` if ``model`` lacks a covered name or shape."""
        named = dict(model.named_parameters())
        for name, t in self.d1.items():
            if name not in named:
                raise ValueError(
                    f"the directions were built for another model: it has no parameter "
                    f"{name!r}; build directions for this model (e.g. random_directions(model))"
                )
            if tuple(named[name].shape) != tuple(t.shape):
                raise ValueError(
                    f"the directions were built for another model: {name!r} has shape "
                    f"{tuple(t.shape)} in the directions but {tuple(named[name].shape)} in the "
                    "model; build directions for this model"
                )

    def to(self, device=None, dtype=None) -> Directions:
        """A copy on another device / dtype (floating tensors only)."""

        def conv(d):
            return (
                None if d is None else {k: v.to(device=device, dtype=dtype) for k, v in d.items()}
            )

        return dataclasses.replace(
            self, d1=conv(self.d1), d2=conv(self.d2), origin=conv(self.origin), info=self.info
        )


def _cosine(u: Tensor, v: Tensor) -> float:
    nu, nv = float(u.norm()), float(v.norm())
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return float(torch.dot(u.double(), v.double()) / (nu * nv))


def _is_bias_like(param: Tensor) -> bool:
    return param.dim() <= 1


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
    norm = _normalization(normalization)
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


def _gaussian_like(p: Tensor, generator: torch.Generator) -> Tensor:
    """Standard Gaussian entries drawn on the CPU in float64 (same numbers on every device)."""
    return torch.randn(p.shape, generator=generator, dtype=torch.float64)


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
    norm = _normalization(normalization)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    selected = select_params(model, params)
    generator = torch.Generator().manual_seed(seed)
    raw = [
        {n: _gaussian_like(p, generator) for n, p in selected.items()},
        {n: _gaussian_like(p, generator) for n, p in selected.items()},
    ]
    out = []
    for d in raw:
        nd = {}
        for n, p in selected.items():
            w = p.detach().to("cpu", torch.float64)
            if _is_bias_like(p) and not include_biases:
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


def _orthogonal_random(
    first: Tensor, like: dict[str, Tensor], seed: int, normalization: Normalization, weights
) -> Tensor:
    """A seeded random vector orthogonal to ``first`` (Gram-Schmidt), with ``first``'s norm."""
    generator = torch.Generator().manual_seed(seed)
    raw = {
        n: torch.randn(t.shape, generator=generator, dtype=torch.float64) for n, t in like.items()
    }
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


def _domain_data(domain_data, domain: str | None):
    if isinstance(domain_data, Mapping):
        if domain is None:
            if len(domain_data) != 1:
                raise ValueError(
                    f"eigen_directions uses one domain's Hessian; pass domain=... (one of "
                    f"{', '.join(map(str, domain_data))})"
                )
            domain = str(next(iter(domain_data)))
        if domain not in domain_data:
            raise ValueError(
                f"unknown domain {domain!r}; available: {', '.join(map(str, domain_data))}"
            )
        return domain, {domain: domain_data[domain]}
    name = domain or "data"
    return name, {name: domain_data}


def eigen_directions(
    model: nn.Module,
    loss_func: nn.Module,
    domain_data,
    params: ParamSpec = None,
    k: int = 2,
    domain: str | None = None,
    seed: int = 0,
    **eigen_kwargs,
) -> Directions:
    """The top Hessian eigenvectors of one domain's risk as directions.

    Computes the ``k`` largest eigenpairs of :math:`\\nabla^2_\\theta R_e(\\theta^*)` with
    :func:`landscape.curvature.top_eigenpairs` and uses the first two eigenvectors (unit
    norm; sign fixed so that each vector's largest entry is positive) as
    :math:`\\delta, \\eta`. On the plane, a quadratic model of :math:`R_e` reads
    :math:`\\tfrac12(\\lambda_1\\alpha^2 + \\lambda_2\\beta^2)` plus the gradient term.

    Args:
        model: the network at :math:`\\theta^*`.
        loss_func: the loss.
        domain_data: ``{name: data}`` (one domain, or choose with ``domain``), or one
            domain's data.
        params: parameters the eigenvectors live on; the others stay fixed.
        k: how many eigenpairs to compute (at least 2).
        domain: the domain whose Hessian is used.
        seed: seed passed to the eigensolver (its random start), recorded.
        **eigen_kwargs: forwarded to ``top_eigenpairs``.
    """
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (two directions are needed), got {k!r}")
    from landscape.curvature import top_eigenpairs  # noqa: PLC0415 (lands separately)

    name, domains = _domain_data(domain_data, domain)
    selected = select_params(model, params)
    result = top_eigenpairs(
        model, loss_func, domains, params=params, k=k, which="largest", seed=seed, **eigen_kwargs
    )
    values, vectors = _eigen_of(result, name)
    like = {n: p.detach() for n, p in selected.items()}
    d = [_split_like(vectors[i], like) for i in range(2)]
    return Directions(
        d1=d[0],
        d2=d[1],
        origin=None,
        kind="eigen",
        seed=seed,
        normalization="none",
        info={
            "domain": name,
            "eigenvalues": [float(v) for v in values[:k]],
            "k": k,
            "curvature": str(eigen_kwargs.get("curvature", "hessian")),
            "converged": bool(result.converged.get(name, True)),
        },
    )


def _eigen_of(result, name: str):
    """Largest eigenvalues ``[k]`` (descending) and eigenvectors ``[k, D]`` of one domain."""
    values = torch.as_tensor(np.asarray(result.largest_eigenvalues[name]), dtype=torch.float64)
    vectors = torch.as_tensor(np.asarray(result.largest_eigenvectors[name]), dtype=torch.float64)
    order = torch.argsort(values, descending=True)
    vectors = vectors[:, order].T
    # sign convention: the largest entry (in absolute value) of each vector is positive
    signs = torch.sign(vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True)))
    return values[order], vectors * torch.where(signs == 0, 1.0, signs)


def _split_like(vector, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """A flat vector split into new tensors with the names, shapes, devices and dtypes of
    ``like``."""
    parts = unflatten(torch.as_tensor(vector).reshape(-1), like)
    return {n: t.to(device=like[n].device, dtype=like[n].dtype).clone() for n, t in parts.items()}


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
        result: an inconsistency result with a ``direction`` (a flat vector or
            ``{name: tensor}``) and a ``pair``.
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
    norm = _normalization(normalization)
    direction = getattr(result, "direction", None)
    if direction is None:
        raise ValueError(
            "the inconsistency result has no maximising direction; compute it with a method "
            "that returns one"
        )
    pair = getattr(result, "pair", None)
    epsilon = getattr(result, "epsilon", None)
    score = getattr(result, "score", None)
    several = np.ndim(np.asarray(direction)) == 2 if not isinstance(direction, Mapping) else False
    if several or (np.ndim(epsilon) == 1 and epsilon is not None):
        count = len(np.atleast_1d(epsilon)) if epsilon is not None else len(direction)
        if not (isinstance(index, int) and -count <= index < count):
            raise ValueError(f"index must pick one of the {count} values of epsilon, got {index!r}")
        epsilon = np.atleast_1d(epsilon)[index] if epsilon is not None else None
        score = np.atleast_1d(score)[index] if score is not None else None
        if pair is not None and len(pair) and isinstance(pair[0], list | tuple):
            pair = pair[index]
    if hasattr(result, "direction_by_name") and getattr(result, "param_names", None):
        direction = result.direction_by_name(index)
    if isinstance(direction, Mapping):
        like = {
            str(n): torch.as_tensor(np.asarray(v) if not isinstance(v, Tensor) else v)
            for n, v in direction.items()
        }
        weights = None
        if model is not None:
            Directions(d1=like, d2=like).check_model(model)
            named = dict(model.named_parameters())
            like = {n: t.to(device=named[n].device, dtype=named[n].dtype) for n, t in like.items()}
            weights = {n: named[n].detach().cpu() for n in like}
        first = flatten(like)
    else:
        if model is None:
            raise ValueError(
                "the inconsistency direction is a flat vector; pass model=... to split it by "
                "parameter name"
            )
        if params is None:
            params = getattr(result, "params", None)
        selected = select_params(model, params)
        like = {n: p.detach() for n, p in selected.items()}
        vec = torch.as_tensor(
            np.asarray(direction) if not isinstance(direction, Tensor) else direction
        )
        like = _split_like(vec.reshape(-1), like)
        weights = {n: p.detach().cpu() for n, p in selected.items()}
        first = flatten(like)
    if norm is not Normalization.NONE and weights is None:
        raise ValueError(f"normalization={norm.value!r} needs model=... (the weights)")
    second = _orthogonal_random(first.cpu(), like, seed, norm, weights)
    ref = next(iter(like.values()))
    d2 = {
        n: t.to(device=ref.device, dtype=like[n].dtype) for n, t in unflatten(second, like).items()
    }
    return Directions(
        d1={n: t.clone() for n, t in like.items()},
        d2=d2,
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


def _maybe_float(x):
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _state_of(item, selected_names: list[str], what: str) -> dict[str, Tensor]:
    """Parameters ``{name: tensor}`` (float64, CPU) of a model, a state dict or a path."""
    if isinstance(item, nn.Module):
        state = {n: p.detach() for n, p in item.named_parameters()}
    elif isinstance(item, Mapping):
        state = {str(k): torch.as_tensor(v) for k, v in item.items()}
    elif isinstance(item, str | os.PathLike):
        from landscape.checkpoint import load_tensors  # noqa: PLC0415

        state, _ = load_tensors(item)
    else:
        raise TypeError(
            f"{what}: expected a model, a state dict or a checkpoint path, got "
            f"{type(item).__name__}"
        )
    missing = [n for n in selected_names if n not in state]
    if missing:
        raise ValueError(f"{what} was saved from another model: it has no parameter {missing[0]!r}")
    return {n: state[n].detach().to("cpu", torch.float64) for n in selected_names}


def _label(item, i: int, labels) -> str:
    if labels is not None:
        return str(labels[i])
    if isinstance(item, str | os.PathLike):
        return os.path.splitext(os.path.basename(os.fspath(item)))[0]
    return f"checkpoint {i}"


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
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, str | Mapping):
        raise TypeError("checkpoints must be a list of two or three models / state dicts / paths")
    if len(checkpoints) not in (2, 3):
        raise ValueError(f"a plane goes through two or three checkpoints, got {len(checkpoints)}")
    if not (isinstance(origin, int) and 0 <= origin < len(checkpoints)):
        raise ValueError(f"origin must be an index in [0, {len(checkpoints) - 1}], got {origin!r}")
    if labels is not None and len(labels) != len(checkpoints):
        raise ValueError(f"got {len(labels)} labels for {len(checkpoints)} checkpoints")
    selected = select_params(model, params)
    names = list(selected)
    states = [_state_of(c, names, f"checkpoint {i}") for i, c in enumerate(checkpoints)]
    for i, s in enumerate(states):
        for n in names:
            if tuple(s[n].shape) != tuple(selected[n].shape):
                raise ValueError(
                    f"checkpoint {i} was saved from another model: {n!r} has shape "
                    f"{tuple(s[n].shape)}, the model expects {tuple(selected[n].shape)}"
                )
    like = {n: selected[n].detach() for n in names}
    o = flatten(states[origin])
    others = [i for i in range(len(states)) if i != origin]
    d1 = flatten(states[others[0]]) - o
    n1 = d1.norm()
    if n1 == 0:
        raise ValueError("the checkpoints coincide on the chosen parameters; there is no plane")
    if len(states) == 3:
        v = flatten(states[others[1]]) - o
        a = torch.dot(v, d1) / (n1 * n1)
        u = v - a * d1
        nu = u.norm()
        if nu <= 1e-12 * max(float(n1), float(v.norm())):
            raise ValueError("the three checkpoints are collinear; they span no plane")
        d2 = u * (n1 / nu)
        b = nu / n1
        used_seed = None
    else:
        d2 = _orthogonal_random(d1, like, seed, Normalization.NONE, None)
        used_seed = seed
    labs = [_label(c, i, labels) for i, c in enumerate(checkpoints)]
    points = {labs[origin]: [0.0, 0.0], labs[others[0]]: [1.0, 0.0]}
    if len(states) == 3:
        points[labs[others[1]]] = [float(a), float(b)]

    return Directions(
        d1=_split_like(d1, like),
        d2=_split_like(d2, like),
        origin=_split_like(o, like),
        kind="plane",
        seed=used_seed,
        normalization="none",
        info={"points": points, "labels": labs, "origin_label": labs[origin]},
    )


def trajectory_directions(
    model: nn.Module,
    checkpoints: Sequence,
    params: ParamSpec = None,
    origin: int = -1,
    center: bool = True,
) -> Directions:
    """The first two principal components of a training trajectory, and its projection.

    With checkpoints :math:`\\theta_0, \\dots, \\theta_{T-1}` and origin
    :math:`\\theta_o` (the last one by default, as in Li et al. 2018), the rows of
    :math:`M = [\\theta_t - \\theta_o]_t` ``[T, D]`` are (optionally) centred and their top two
    right singular vectors :math:`\\delta, \\eta` (unit norm, orthogonal) are the
    directions. The trajectory's coordinates
    :math:`(\\langle\\Delta_t, \\delta\\rangle, \\langle\\Delta_t, \\eta\\rangle)`,
    :math:`\\Delta_t = \\theta_t - \\theta_o`, go to ``info["trajectory"]`` ``[T, 2]``
    with the explained variance ratios. The sign of each component is fixed so that the
    first checkpoint has non-positive coordinates (deterministic output).

    Args:
        model: a network of the same architecture.
        checkpoints: at least three models, state dicts or checkpoint paths, in training
            order.
        params: the parameters that move.
        origin: index of the checkpoint at the origin (default: the last).
        center: centre the rows before the SVD (sklearn's PCA, used by Li et al., does).
    """
    if not isinstance(checkpoints, Sequence) or isinstance(checkpoints, str | Mapping):
        raise TypeError("checkpoints must be a list of models / state dicts / paths")
    if len(checkpoints) < 3:
        raise ValueError(
            f"a trajectory needs at least 3 checkpoints for two principal components, got "
            f"{len(checkpoints)}"
        )
    T = len(checkpoints)
    if not (isinstance(origin, int) and -T <= origin < T):
        raise ValueError(f"origin must be an index of the {T} checkpoints, got {origin!r}")
    selected = select_params(model, params)
    names = list(selected)
    like = {n: selected[n].detach() for n in names}
    rows = []
    for i, c in enumerate(checkpoints):
        s = _state_of(c, names, f"checkpoint {i}")
        for n in names:
            if tuple(s[n].shape) != tuple(selected[n].shape):
                raise ValueError(
                    f"checkpoint {i} was saved from another model: {n!r} has shape "
                    f"{tuple(s[n].shape)}, the model expects {tuple(selected[n].shape)}"
                )
        rows.append(flatten(s))
    thetas = torch.stack(rows)
    o = thetas[origin]
    M = thetas - o
    A = M - M.mean(dim=0, keepdim=True) if center else M
    _, S, Vh = torch.linalg.svd(A, full_matrices=False)
    if len(S) < 2 or S[1] <= 1e-12 * max(float(S[0]), 1e-300):
        raise ValueError("the trajectory spans fewer than two dimensions; there is no plane")
    dirs = Vh[:2].clone()
    coords = M @ dirs.T  # [T, 2]
    for j in range(2):
        if coords[0, j] > 0:
            dirs[j] = -dirs[j]
            coords[:, j] = -coords[:, j]
    var = S**2
    ratio = (var[:2] / var.sum()).tolist()

    return Directions(
        d1=_split_like(dirs[0], like),
        d2=_split_like(dirs[1], like),
        origin=_split_like(o, like),
        kind="trajectory",
        seed=None,
        normalization="none",
        info={
            "trajectory": coords.numpy(),
            "explained_variance_ratio": ratio,
            "origin_index": origin % T,
            "centered": bool(center),
            "labels": [_label(c, i, None) for i, c in enumerate(checkpoints)],
        },
    )
