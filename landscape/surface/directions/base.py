"""The :class:`Directions` of a plane: two directions (and an origin) per parameter name.

A plane in parameter space is

.. math::

    \\theta(\\alpha, \\beta) = \\theta_0 + \\alpha\\,\\delta + \\beta\\,\\eta,

with :math:`\\delta, \\eta` held as tensors per parameter name and :math:`\\theta_0` either
fixed (planes through checkpoints) or the parameters of the model the surface is computed
for. The description (kind, seed, normalisation, points of interest) travels with the
tensors and is saved with them (``.npz`` + ``.json``), so that two domains, two runs or two
machines evaluate the exact same plane.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.curvature import cosine
from landscape.io import SavedResult
from landscape.params import flatten, unflatten

__all__ = ["Directions", "unflatten_as"]


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


def unflatten_as(vector, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A flat ``[D]`` vector as new tensors with the names, shapes, dtypes and devices of
    ``like`` (:func:`landscape.params.unflatten`, then each part cast and copied)."""
    parts = unflatten(torch.as_tensor(vector).reshape(-1), dict(like))
    return {n: t.to(like[n]).clone() for n, t in parts.items()}


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
        """The JSON-friendly description stored in every surface result.

        ``cosine`` is :math:`\\cos(\\delta, \\eta)`, and 0 when a direction is zero (e.g. only
        biases selected, which get zero random directions by default).
        """
        return {
            "kind": self.kind,
            "seed": self.seed,
            "normalization": self.normalization,
            "params": self.names,
            "shapes": self.shapes,
            "norms": [float(flatten(self.d1).norm()), float(flatten(self.d2).norm())],
            "cosine": self._cosine(),
            "origin": "fixed" if self.origin is not None else "model",
            "fingerprint": self.fingerprint(),
            **self.info,
        }

    def _cosine(self) -> float:
        u, v = flatten(self.d1), flatten(self.d2)
        if not (u.any() and v.any()):
            # a zero direction (e.g. only biases, zero by default): recorded as 0 as always,
            # not cosine's NaN, so the description stays plain JSON
            return 0.0
        return cosine(u, v)

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
