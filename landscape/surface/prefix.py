"""The frozen-prefix shortcut: when the plane moves the parameters of one submodule only (the
head), what runs before it is evaluated once per domain.

If every parameter the plane moves lies in one submodule :math:`h` (e.g. the classifier head,
Fishr's parameters) and the model's output is :math:`h`'s output, then at every grid point

.. math::

    f_\\theta(x) = h\\big(\\phi(x); \\theta_h\\big), \\qquad \\phi(x) = \\text{the input of } h,

and no moving parameter enters :math:`\\phi(x)`. So :math:`\\phi(x)` is computed once per batch
of each domain (at the plane's origin) and a grid point runs :math:`h` alone on it: on the
Colored MNIST MLP with head directions a point costs one ``[N, 390] x [390, 1]`` product
instead of the whole forward pass.

The head and its cached inputs come from
:func:`landscape.inconsistency.head.cache_head_inputs`, the rule by which I^ε's risks run the
head alone (it ran once, its output is the model's, no moving parameter reaches its input,
alone it reproduces the model's output, its cache stays under ``HEAD_CACHE_BYTES`` per
domain). A surface further needs the same head on every domain, called on one tensor. Inside
the head the first-layer shortcut (:mod:`~landscape.surface.first_layer`) still applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from torch import Tensor, nn

from landscape.surface.data import Domain
from landscape.surface.plane import Plane

__all__ = ["frozen_prefix", "head_plane"]


def _origin_tensors(model: nn.Module, plane: Plane) -> dict[str, Tensor]:
    """The ``functional_call`` mapping at the plane's origin: parameters and buffers, the
    moving entries requiring grad and nothing else (what ``cache_head_inputs`` expects)."""
    tensors = {n: p.detach() for n, p in model.named_parameters()}
    tensors.update(model.named_buffers())
    tensors.update({n: t.detach() for n, t in plane.origin.items()})
    tensors.update({n: plane.origin[n].detach().requires_grad_() for n in plane.d1})
    return tensors


def frozen_prefix(model: nn.Module, plane: Plane, domains: Mapping[str, Domain]):
    """``(head, domains)``: the :class:`~landscape.inconsistency.head.HeadCache` of the last
    domain (its ``name``, ``module`` and ``local`` renaming) and every domain with its batches
    replaced by the head's cached inputs; ``None`` when the shortcut does not apply (module
    docstring)."""
    from landscape.inconsistency.head import cache_head_inputs

    if not plane.d1:
        return None
    tensors = _origin_tensors(model, plane)
    head, names, cached = None, set(), {}
    for key, domain in domains.items():
        head, _ = cache_head_inputs(model, tensors, list(plane.d1), domain.batches)
        if head is None:
            return None
        if any(len(args) != 1 or not isinstance(args[0], Tensor) or kwargs
               for args, kwargs, _ in head.batches):  # fmt: skip
            return None
        names.add(head.name)
        batches = [(args[0], y) for args, _, y in head.batches]
        cached[key] = dataclasses.replace(domain, batches=batches)
    return (head, cached) if len(names) == 1 else None


def head_plane(head, plane: Plane) -> Plane:
    """``plane`` restricted to ``head``'s parameters, named relative to it."""
    local = head.local
    return Plane(local(plane.origin), local(plane.d1), local(plane.d2), local(plane.fixed),
                 plane.device, plane.dtype)  # fmt: skip
