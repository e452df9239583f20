"""The first-layer shortcut: a linear first layer's product computed once per domain.

When the first layer that owns parameters is an ``nn.Linear`` fed directly by the data
(e.g. ``Flatten -> Linear``), its output is linear in its weights,

.. math::

    (W_0 + \\alpha D_1 + \\beta D_2)\\,x = W_0 x + \\alpha (D_1 x) + \\beta (D_2 x),

so the affine pieces :math:`Z_0 = W_0 x + c_0`, :math:`Z_1 = D_1 x + c_1`, :math:`Z_2 = D_2 x +
c_2` (with the layer's bias :math:`c_0` and its directions :math:`c_1, c_2`; zero where the
bias does not move) are computed once per batch of each domain (:meth:`FirstLayer.attach`)
and the layer's output at :math:`(\\alpha, \\beta)` is :math:`Z_0 + \\alpha Z_1 + \\beta Z_2`:
each grid point skips the layer's matrix product (on the Colored MNIST MLP, the 392 -> 390
layer holds half the flops). Along a grid row (:meth:`FirstLayer.at_row`) :math:`Z_0 +
\\alpha Z_1` is formed once, and a point costs one fused pass :math:`Z_r + \\beta Z_2` (read
two ``[N, out]`` arrays, write one; before: a bias broadcast and three in-place adds, ten
passes over ``[N, out]`` arrays, memory-bound once the pieces outgrow the cache). During one
forward pass (:meth:`FirstLayer.inject`, given the batch's pieces and the point's
:math:`\\alpha, \\beta`) the layer receives one input row with 0 features and a weight ``[out,
0]`` (so ``F.linear`` costs nothing) and a forward hook returns the sum in its place.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.surface.data import Domain
from landscape.surface.plane import Plane

__all__ = ["FirstLayer", "first_linear_layer", "choose_first_layer"]

Pieces = tuple[Tensor, Tensor | None, Tensor | None]


class _Stop(Exception):
    pass


def _first_owner(model: nn.Module, owners: dict[str, nn.Module], X: Tensor) -> str | None:
    """The name of the first module of ``owners`` that runs on ``X`` (a forward stopped there)."""
    first: list[str] = []

    def make_hook(name):
        def hook(module, args):
            first.append(name)
            raise _Stop

        return hook

    handles = [m.register_forward_pre_hook(make_hook(n)) for n, m in owners.items()]
    try:
        with torch.no_grad():
            model(X)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return first[0] if first else None


def capture_input(model: nn.Module, module: nn.Module, params, X: Tensor) -> Tensor | None:
    """The input of ``module`` when ``model`` runs on ``X`` with ``params`` substituted (the
    forward stops there)."""
    got: list[Tensor] = []

    def hook(mod, args):
        got.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            functional_call(model, params, (X,))
    except _Stop:
        pass
    finally:
        handle.remove()
    return got[0] if got else None


def _input_is_data(model: nn.Module, name: str, module: nn.Module, X: Tensor) -> bool:
    """Whether the input of ``module`` stays the same when every other parameter moves."""
    g = torch.Generator().manual_seed(12345)
    perturbed = {
        n: p.detach() + torch.randn(p.shape, generator=g, dtype=torch.float64).to(p)
        for n, p in model.named_parameters()
        if not n.startswith(name + ".")
    }
    try:
        a = capture_input(model, module, {}, X)
        b = capture_input(model, module, perturbed, X)
    except Exception:  # noqa: BLE001 - any failure means: do not use the shortcut
        return False
    return a is not None and b is not None and torch.equal(a, b)


def first_linear_layer(model: nn.Module, X: Tensor) -> str | None:
    """The name of the first parameterised module if it is an ``nn.Linear`` fed by the data.

    The first-layer shortcut of :func:`landscape.surface.loss_surface` is exact when the
    input of that layer does not depend on any parameter. Checked here: (1) the first module
    owning parameters to run is an ``nn.Linear`` (exactly that class, not a subclass); (2)
    none of its enclosing modules owns parameters of its own; (3) its weight is not shared;
    (4) its input is unchanged when every other parameter is perturbed. Returns ``None``
    otherwise.

    Args:
        model: the network.
        X: a small input batch ``[n, *]``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> first_linear_layer(net, torch.randn(2, 2, 2))
        '1'
    """
    owners = {
        name: m
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    }
    name = _first_owner(model, owners, X) if owners else None
    if name is None or type(owners[name]) is not nn.Linear:
        return None
    if any(n != name and (n == "" or name.startswith(n + ".")) for n in owners):
        return None  # an enclosing module owns parameters
    weight = owners[name].weight
    if sum(1 for _, p in model.named_parameters(remove_duplicate=False) if p is weight) != 1:
        return None
    return name if _input_is_data(model, name, owners[name], X) else None


def choose_first_layer(model: nn.Module, X: Tensor, option: bool | str) -> str | None:
    """The layer the shortcut applies to, per ``option``.

    Args:
        model: the network.
        X: a small input batch.
        option: ``"auto"`` (when :func:`first_linear_layer` allows it and the layer has at
            least 8 inputs), ``True`` (required) or ``False`` (never).

    Raises:
        ValueError: ``option=True`` and the model's first layer does not allow it.
    """
    if option is False:
        return None
    name = first_linear_layer(model, X)
    if name is not None and option == "auto":
        if dict(model.named_modules())[name].in_features < 8:
            name = None
    if option is True and name is None:
        raise ValueError(
            "first_layer=True, but the model's first parameterised layer is not an "
            "nn.Linear fed directly by the data; use first_layer='auto' or False"
        )
    return name


class FirstLayer:
    """The shortcut for one ``nn.Linear`` layer of a model (see the module docstring).

    Args:
        model: the network.
        name: the layer's module name (from :func:`choose_first_layer`).
    """

    def __init__(self, model: nn.Module, name: str):
        self.model = model
        self.name = name
        self.module: nn.Linear = dict(model.named_modules())[name]
        prefix = f"{name}." if name else ""  # "": the model is the layer itself
        self.weight_name, self.bias_name = f"{prefix}weight", f"{prefix}bias"
        self.empty_weight = self.module.weight.new_zeros((self.module.out_features, 0)).detach()

    def attach(self, domain: Domain, plane: Plane) -> Domain:
        """``domain`` with, per batch, the affine pieces :math:`(Z_0, Z_1, Z_2)` of the
        layer's input ``x`` (module docstring; ``None`` for a direction that moves neither
        the weight nor the bias)."""
        w, c = self.weight_name, self.bias_name
        w0 = plane.origin[w] if w in plane.origin else self.module.weight.detach()
        c0 = self.module.bias
        c0 = plane.origin[c] if c in plane.origin else (None if c0 is None else c0.detach())
        moves = [(plane.d1.get(w), plane.d1.get(c)), (plane.d2.get(w), plane.d2.get(c))]
        pieces = []
        for X, _ in domain.batches:
            x = capture_input(self.model, self.module, {}, X)
            z = [None if dw is None and dc is None else _affine(x, dw, dc) for dw, dc in moves]
            pieces.append((_affine(x, w0, c0), z[0], z[1]))
        return dataclasses.replace(domain, pieces=pieces)

    def at_row(self, domain: Domain, a: float) -> Domain:
        """``domain`` with pieces :math:`(Z_0 + a Z_1, None, Z_2)` for the points of one grid
        row (``a`` fixed): a point then costs one fused pass (module docstring)."""
        if domain.pieces is None:
            return domain
        pieces = [
            (z0 if z1 is None else torch.add(z0, z1, alpha=a), None, z2)
            for z0, z1, z2 in domain.pieces
        ]
        return dataclasses.replace(domain, pieces=pieces)

    def params(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """``params`` with the layer's weight replaced by an empty ``[out, 0]`` one."""
        return {**params, self.weight_name: self.empty_weight}

    @contextmanager
    def inject(self, pieces: Pieces, a, b) -> Iterator[None]:
        """While active, the layer outputs :math:`Z_0 + a Z_1 + b Z_2` from ``pieces`` of the
        current batch (its own bias is in the pieces); ``a, b`` are floats (one point: one
        fused pass per term) or batched scalars under :func:`torch.func.vmap`."""
        z0, z1, z2 = pieces

        def pre(mod, args):
            x = args[0]
            return (x[:1, ..., :0] if x.dim() > 1 else x[..., :0],) + tuple(args[1:])

        def post(mod, args, output):
            terms = [(z, c) for z, c in ((z1, a), (z2, b)) if z is not None]
            if not terms:
                return z0.clone()  # a fresh tensor: the next module may work in place
            if isinstance(a, float):  # one point: fused multiply-adds, a fresh tensor
                out = torch.add(z0, terms[0][0], alpha=terms[0][1])
                return out.add_(terms[1][0], alpha=terms[1][1]) if len(terms) > 1 else out
            out = z0  # vmap: a, b are batched scalars
            for z, c in terms:
                out = out + c * z
            return out

        h1 = self.module.register_forward_pre_hook(pre)
        h2 = self.module.register_forward_hook(post)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()


def _affine(x: Tensor, dw: Tensor | None, dc: Tensor | None) -> Tensor:
    """:math:`D x + c` for a direction ``D`` of the weight and ``c`` of the bias (either may
    be ``None``: zero)."""
    if dw is None:
        return dc.expand(*x.shape[:-1], -1).clone()
    out = x @ dw.T
    return out if dc is None else out.add_(dc)
