"""The frozen-prefix shortcut: when the plane moves one submodule only, what runs before it
is evaluated once per domain.

If every parameter the plane moves lies in one submodule :math:`M` (e.g. the classifier
head, Fishr's parameters) and the model's output is :math:`M`'s output, then at every grid
point

.. math::

    f_\\theta(x) = M_{\\theta_M}\\big(h(x)\\big), \\qquad h(x) = \\text{the input of } M,

and no moving parameter enters :math:`h(x)`. So :math:`h(x)` is computed once per batch of
each domain (at the plane's origin) and a grid point runs :math:`M` alone on it: on the
Colored MNIST MLP with head directions a point costs one ``[N, 390] x [390, 1]`` product
instead of the whole forward pass. The shortcut is exact (the same operations on the same
input) and is used only when a probe batch shows it applies: :math:`M` runs once per forward
pass, takes one tensor and no keyword argument, returns the model's output (the very tensor
the model returns), shares no parameter with the rest of the model, and its input does not
change when its own parameters are perturbed. Inside :math:`M` the
first-layer shortcut (:mod:`~landscape.surface.first_layer`) still applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.surface.data import Domain
from landscape.surface.first_layer import capture_input, input_unchanged
from landscape.surface.plane import Plane

__all__ = ["frozen_prefix", "FrozenPrefix", "moving_module_name"]


def moving_module_name(names: Iterable[str]) -> str:
    """The deepest module name that contains every parameter name of ``names`` (``""``:
    the root), e.g. ``["classifier.weight", "classifier.bias"] -> "classifier"``."""
    paths = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*paths, strict=False):
        if any(part != level[0] for part in level):
            break
        common.append(level[0])
    return ".".join(common)


def _shares_parameters(model: nn.Module, name: str, module: nn.Module) -> bool:
    """Whether a parameter of ``module`` (named ``name``) is also used outside it."""
    inside = {id(p) for p in module.parameters()}
    return any(
        id(p) in inside
        for n, p in model.named_parameters(remove_duplicate=False)
        if not n.startswith(name + ".")
    )


def _returns_module_output(model: nn.Module, module: nn.Module, params, probe: Tensor) -> bool:
    """Whether, on ``probe``, ``module`` runs once on one tensor and the model returns the
    tensor ``module`` returned."""
    calls: list[bool] = []
    outputs: list[object] = []

    def pre(mod, args, kwargs):
        calls.append(len(args) == 1 and isinstance(args[0], Tensor) and not kwargs)

    def post(mod, args, output):
        outputs.append(output)

    handles = [
        module.register_forward_pre_hook(pre, with_kwargs=True),
        module.register_forward_hook(post),
    ]
    try:
        with torch.no_grad():
            out = functional_call(model, params, (probe,))
    except Exception:  # noqa: BLE001 - any failure means: do not use the shortcut
        return False
    finally:
        for handle in handles:
            handle.remove()
    return calls == [True] and len(outputs) == 1 and out is outputs[0]


def frozen_prefix(model: nn.Module, plane: Plane, probe: Tensor) -> str | None:
    """The name of the submodule that the frozen-prefix shortcut runs alone (module
    docstring), or ``None`` when the shortcut does not apply to ``plane`` on ``model``.

    Args:
        model: the network.
        plane: the resolved plane (its moving names decide the submodule).
        probe: a small input batch.
    """
    name = moving_module_name(plane.d1) if plane.d1 else ""
    if not name:
        return None
    module = dict(model.named_modules())[name]
    if _shares_parameters(model, name, module):
        return None
    if not _returns_module_output(model, module, plane.origin, probe):
        return None

    def inside(n: str) -> bool:  # one of them read before the module runs would move its input
        return n.startswith(name + ".")

    return name if input_unchanged(model, module, plane.origin, inside, probe) else None


class FrozenPrefix:
    """The shortcut for one submodule (see the module docstring).

    Args:
        model: the network.
        name: the submodule's name (from :func:`frozen_prefix`).
    """

    def __init__(self, model: nn.Module, name: str):
        self.model = model
        self.name = name
        self.module: nn.Module = dict(model.named_modules())[name]

    def domain(self, domain: Domain, plane: Plane) -> Domain:
        """``domain`` with each batch's inputs replaced by the submodule's input at the
        plane's origin (one pass of the layers before it)."""
        batches = [(capture_input(self.model, self.module, plane.origin, X), y)
                   for X, y in domain.batches]  # fmt: skip
        return dataclasses.replace(domain, batches=batches)

    def plane(self, plane: Plane) -> Plane:
        """``plane`` restricted to the submodule's parameters, named relative to it."""
        start = len(self.name) + 1

        def inside(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
            return {n[start:]: t for n, t in tensors.items() if n.startswith(self.name + ".")}

        return Plane(inside(plane.origin), inside(plane.d1), inside(plane.d2),
                     inside(plane.fixed), plane.device, plane.dtype)  # fmt: skip
