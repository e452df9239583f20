"""The plane :math:`\\theta_0 + \\alpha\\delta + \\beta\\eta` resolved on a model, once.

:class:`Plane` holds the origin and the two directions on the model's device and in each
parameter's dtype, keeps only the parameters that move (a parameter whose two directions are
zero stays at the model's value, or at the fixed origin when the directions fix one), and
builds the parameter dictionaries passed to :func:`torch.func.functional_call` at one grid
point or at several stacked points (for :func:`torch.func.vmap`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.surface.directions import Directions

__all__ = ["Plane"]


@dataclass(frozen=True)
class Plane:
    """Origin and directions of a plane on a model's device, for the moving parameters.

    Attributes:
        origin: :math:`\\theta_0` ``{name: tensor}`` for every name the directions cover (the
            model's own parameters, not copied, unless the directions fix an origin).
        d1: :math:`\\delta` for the moving names (some direction non-zero).
        d2: :math:`\\eta` for the same names.
        fixed: parameters pinned to the directions' fixed origin that do not move.
        device: the device of the model's (first covered) parameter.
        dtype: its dtype.
    """

    origin: dict[str, Tensor]
    d1: dict[str, Tensor]
    d2: dict[str, Tensor]
    fixed: dict[str, Tensor]
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def resolve(cls, model: nn.Module, directions: Directions) -> Plane:
        """The plane of ``directions`` on ``model`` (names and shapes already checked)."""
        named = dict(model.named_parameters())
        ref = named[directions.names[0]]
        dirs = directions.to(device=ref.device)
        origin, d1, d2 = {}, {}, {}
        for n in dirs.names:
            p = named[n]
            o = dirs.origin[n] if dirs.origin is not None else p.detach()
            origin[n] = o.to(device=ref.device, dtype=p.dtype).detach()
            u, v = dirs.d1[n].to(p.dtype), dirs.d2[n].to(p.dtype)
            if bool(u.any()) or bool(v.any()):
                d1[n], d2[n] = u, v
        fixed = {n: t for n, t in origin.items() if n not in d1 and dirs.origin is not None}
        return cls(origin, d1, d2, fixed, ref.device, ref.dtype)

    def without(self, name: str) -> Plane:
        """The same plane with parameter ``name`` left to the caller (neither moved nor
        fixed here)."""
        return Plane(
            self.origin,
            {n: t for n, t in self.d1.items() if n != name},
            {n: t for n, t in self.d2.items() if n != name},
            {n: t for n, t in self.fixed.items() if n != name},
            self.device,
            self.dtype,
        )

    def at(self, a: float, b: float) -> dict[str, Tensor]:
        """Parameters at one point: :math:`\\theta_0 + a\\delta + b\\eta` (moving names) and the
        fixed ones."""
        out = dict(self.fixed)
        for n, u in self.d1.items():
            out[n] = torch.add(self.origin[n], u, alpha=a).add_(self.d2[n], alpha=b)
        return out

    def stacked(self, a: Tensor, b: Tensor) -> dict[str, Tensor]:
        """The moving parameters at ``P`` points ``(a [P], b [P])``, each with a leading
        ``[P]`` axis (the points share :attr:`fixed`)."""
        out = {}
        for n, u in self.d1.items():
            shape = (-1,) + (1,) * self.origin[n].dim()
            out[n] = self.origin[n] + a.view(shape) * u + b.view(shape) * self.d2[n]
        return out
