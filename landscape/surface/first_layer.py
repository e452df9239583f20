"""The first-layer shortcut: a linear first layer's product computed once per domain.

When the first layer that owns parameters is an ``nn.Linear`` fed directly by the data
(e.g. ``Flatten -> Linear``), its output is linear in its weights,

.. math::

    (W_0 + \\alpha D_1 + \\beta D_2)\\,x = W_0 x + \\alpha (D_1 x) + \\beta (D_2 x),

so :math:`W_0 x, D_1 x, D_2 x` are computed once per batch of each domain
(:meth:`FirstLayer.attach`) and each grid point skips the layer's matrix product (on the
Colored MNIST MLP, the 392 -> 390 layer holds half the flops). During one forward pass
(:meth:`FirstLayer.inject`, given the batch's products and the point's :math:`\\alpha,
\\beta` as arguments) the layer receives an input with 0 features and a weight ``[out, 0]``
(so ``F.linear`` only broadcasts the displaced bias) and a forward hook adds the sum.
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
        self.weight_name = f"{name}.weight"
        self.empty_weight = self.module.weight.new_zeros((self.module.out_features, 0)).detach()

    def attach(self, domain: Domain, plane: Plane) -> Domain:
        """``domain`` with, per batch, the products :math:`(W_0 x, D_1 x, D_2 x)` of the
        layer's input ``x`` (``None`` for a direction that does not move the weight)."""
        w = self.weight_name
        w0 = plane.origin[w] if w in plane.origin else self.module.weight.detach()
        dw1, dw2 = plane.d1.get(w), plane.d2.get(w)
        pieces = []
        for X, _ in domain.batches:
            x = capture_input(self.model, self.module, {}, X)
            z1 = None if dw1 is None else x @ dw1.T
            z2 = None if dw2 is None else x @ dw2.T
            pieces.append((x @ w0.T, z1, z2))
        return dataclasses.replace(domain, pieces=pieces)

    def params(self, params: dict[str, Tensor]) -> dict[str, Tensor]:
        """``params`` with the layer's weight replaced by an empty ``[out, 0]`` one."""
        return {**params, self.weight_name: self.empty_weight}

    @contextmanager
    def inject(self, pieces: Pieces, a, b) -> Iterator[None]:
        """While active, the layer outputs :math:`b_{\\theta} + W_0 x + a D_1 x + b D_2 x` from
        ``pieces`` of the current batch; ``a, b`` are floats (one point: fused in-place adds)
        or batched scalars under :func:`torch.func.vmap`."""
        z0, z1, z2 = pieces

        def pre(mod, args):
            return (args[0][..., :0],) + tuple(args[1:])

        def post(mod, args, output):
            if isinstance(a, float):  # one point: fused in-place adds (memory-bound)
                out = output.add_(z0)
                if z1 is not None:
                    out = out.add_(z1, alpha=a).add_(z2, alpha=b)
                return out
            out = output + z0  # vmap: a, b are batched scalars
            if z1 is not None:
                out = out + a * z1 + b * z2
            return out

        h1 = self.module.register_forward_pre_hook(pre)
        h2 = self.module.register_forward_hook(post)
        try:
            yield
        finally:
            h1.remove()
            h2.remove()
