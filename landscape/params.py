"""Choosing parameters by name: the one convention every analysis in ``landscape`` uses.

``params`` is one of

* ``None``: every parameter of the model;
* a string: a name prefix on module boundaries, e.g. ``"classifier"`` selects
  ``classifier.weight`` and ``classifier.bias`` (Fishr's head) but not ``classifier2.weight``;
  an exact parameter name works too;
* a sequence of exact parameter names (or prefixes), in any order.

The result keeps the model's own order, so flattened vectors are laid out identically
whatever order the user listed the names in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

ParamSpec = str | Sequence[str] | None


def _matches(name: str, key: str) -> bool:
    return name == key or name.startswith(key + ".")


def select_params(model: nn.Module, params: ParamSpec = None) -> dict[str, nn.Parameter]:
    """Return ``{name: parameter}`` for the parameters chosen by ``params``.

    Args:
        model: the network.
        params: ``None`` (all), a prefix / exact name, or a list of them.

    Raises:
        ValueError: a name or prefix matches no parameter (the message lists the top-level
            prefixes that exist), or the selection is empty.
        TypeError: ``params`` is of another type.
    """
    named = dict(model.named_parameters())
    if params is None:
        selected = named
    else:
        if isinstance(params, str):
            keys = [params]
        elif isinstance(params, Sequence) and all(isinstance(k, str) for k in params):
            keys = list(params)
        else:
            raise TypeError(
                f"params must be None, a name prefix or a list of parameter names, "
                f"got {type(params).__name__}"
            )
        if not keys:
            raise ValueError("params is an empty list; pass None to select every parameter")
        for key in keys:
            if not any(_matches(name, key) for name in named):
                raise ValueError(
                    f"no parameter named or prefixed {key!r}; available: "
                    f"{', '.join(available_prefixes(model))}"
                )
        selected = {n: p for n, p in named.items() if any(_matches(n, k) for k in keys)}
    if not selected:
        raise ValueError("the model has no parameters to analyse")
    return selected


def available_prefixes(model: nn.Module) -> list[str]:
    """Module prefixes (``featurizer.0``, ``classifier``, ...) owning parameters, in order."""
    prefixes: list[str] = []
    for name, _ in model.named_parameters():
        prefix = name.rsplit(".", 1)[0] if "." in name else name
        if prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def num_params(params: dict[str, Tensor]) -> int:
    """Total number of scalars in a ``{name: tensor}`` mapping."""
    return sum(p.numel() for p in params.values())


def flatten(tensors: dict[str, Tensor] | Sequence[Tensor]) -> Tensor:
    """Concatenate tensors (a mapping in its order, or a sequence) into one ``[D]`` vector."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return torch.cat([t.reshape(-1) for t in values])


def split(vector, shapes: Mapping[str, Sequence[int]]) -> dict:
    """Split a flat ``[D]`` vector (a tensor or an array) into parts of ``shapes`` (same order),
    each a view of ``vector``."""
    sizes = [math.prod(shape) for shape in shapes.values()]
    if vector.shape[0] != sum(sizes):
        raise ValueError(f"vector has {vector.shape[0]} entries, the parameters have {sum(sizes)}")
    out, start = {}, 0
    for (name, shape), size in zip(shapes.items(), sizes, strict=True):
        out[name] = vector[start : start + size].reshape(tuple(shape))
        start += size
    return out


def unflatten(vector: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    """Split a ``[D]`` vector into tensors shaped like the values of ``like`` (same order)."""
    return split(vector.reshape(-1), {name: p.shape for name, p in like.items()})
