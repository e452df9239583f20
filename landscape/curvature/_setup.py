"""Inputs of every public curvature function, resolved once at its entry.

:func:`prepare` validates the model, loss, domains and parameter selection and runs the guard
rails (eval mode where it matters, one deterministic forward pass per domain); the
:class:`Setup` it returns is passed down to the backends, which never re-resolve anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.curvature.operators import (
    CurvatureOperator,
    check_deterministic,
    check_eval_mode,
    check_loss,
    is_backpack_extended,
    plain_copy,
)
from landscape.domains import Domains, check_domains, check_finite
from landscape.params import ParamSpec, select_params


@dataclass
class Setup:
    """Resolved inputs of one public call.

    Attributes:
        model: the plain (never BackPACK-extended) model to analyse; may be the user's.
        loss_func: the mean-reduced loss.
        loss: its short name (``"bce"``, ``"ce"``, ``"mse"``).
        domains: ``{name: data}`` checked (non-empty, in the caller's order).
        params: the selection as the caller gave it (``None``, a prefix, or a list).
        names: selected parameter names, in model order.
        shapes: their shapes.
        dim: ``D``, the number of selected scalars.
    """

    model: nn.Module
    loss_func: nn.Module
    loss: str
    domains: dict
    params: ParamSpec
    names: list[str]
    shapes: list[list[int]]
    dim: int

    def base(self, **settings) -> dict[str, Any]:
        """The common fields of every result, with ``settings`` recorded."""
        return {
            "domains": list(self.domains),
            "param_names": self.names,
            "param_shapes": self.shapes,
            "loss": self.loss,
            "settings": {"params": self.params, **settings},
        }

    @property
    def like(self) -> Tensor:
        """A parameter of the model: the dtype and device of the computation."""
        return next(self.model.parameters())

    def split_params(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Detached ``(selected, fixed)`` tensors for ``torch.func.functional_call``: the
        selected parameters, and every other parameter and buffer."""
        selected = set(self.names)
        named = dict(self.model.named_parameters())
        leaves = {n: named[n].detach() for n in self.names}
        fixed = {n: p.detach() for n, p in named.items() if n not in selected}
        fixed.update(dict(self.model.named_buffers()))
        return leaves, fixed

    def operator(self, data, curvature, progress: bool = False) -> CurvatureOperator:
        """The curvature operator of one domain (the guard rails already ran)."""
        return CurvatureOperator(
            self.model, self.loss_func, data, self.params, curvature, progress, check=False
        )


SHARDED = ("top_eigenpairs", "spectral_density")
"""Analyses whose every pass over the data is a curvature operator's (its products, risk and
gradient are all-reduced over the ranks' shards: :mod:`landscape.distributed.operator`);
the others run on every rank's whole data under torchrun (replicated, exact)."""


def prepare(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec,
    what: str,
    min_domains: int = 1,
) -> Setup:
    """Validate inputs and run the guard rails (eval mode, deterministic pass)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    name = check_loss(loss_func)
    checked = check_domains(domains, min_domains=min_domains, what=what)
    if what in SHARDED:  # under torchrun: this rank's exact shard of every domain
        from landscape.distributed import shard_domains

        checked = shard_domains(checked)
    selected = select_params(model, params)
    if is_backpack_extended(model):
        model = plain_copy(model)
    check_eval_mode(model)
    check_finite(checked)
    for domain, data in checked.items():
        check_deterministic(model, next(iter(data)), domain=domain)
    spec = params if isinstance(params, str) or params is None else list(params)
    return Setup(
        model=model,
        loss_func=loss_func,
        loss=name,
        domains=checked,
        params=spec,
        names=list(selected),
        shapes=[list(p.shape) for p in selected.values()],
        dim=sum(p.numel() for p in selected.values()),
    )


def check_positive_int(value, what: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``, else one clear ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return int(value)


def numpy(t: Tensor) -> np.ndarray:
    """A detached CPU copy of ``t`` as a NumPy array (same dtype)."""
    return t.detach().to("cpu").numpy()


def rademacher(dim: int, num: int, seed: int, dtype: torch.dtype, device) -> Tensor:
    """``[num, dim]`` Rademacher (+-1) probes from ``torch.Generator().manual_seed(seed)``.

    Drawn on the CPU, so the probes are the same on every device.
    """
    g = torch.Generator().manual_seed(int(seed))
    signs = torch.randint(0, 2, (num, dim), generator=g, dtype=torch.int8)
    return (2 * signs - 1).to(device=device, dtype=dtype)
