"""Batch-norm statistics recomputed at a grid point (``batch_norm="recompute"``).

By default a surface is evaluated in eval mode with the model's own running statistics
(those of :math:`\\theta^*`). With recomputation, before the evaluation pass at
:math:`\\theta`, every batch-norm layer's statistics are estimated on the domain's batches
by a forward pass at :math:`\\theta` in training mode with ``momentum=None``, i.e. the
cumulative average over the batches

.. math::

    \\hat\\mu = \\frac1K \\sum_{k=1}^{K} \\mu_k(\\theta), \\qquad
    \\hat\\sigma^2 = \\frac1K \\sum_{k=1}^{K} \\sigma^2_k(\\theta) \\ \\text{(unbiased)},

written into fresh buffers passed through :func:`torch.func.functional_call` (the model's
own buffers are never written). This costs a second forward pass per point.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["batch_norm_layers", "recompute_batch_norm"]


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """The batch-norm modules of ``model``, in order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recompute_batch_norm(
    model: nn.Module,
    layers: Sequence[nn.Module],
    params: dict[str, Tensor],
    batches: Sequence[tuple[Tensor, Tensor]],
) -> dict[str, Tensor]:
    """Batch-norm buffers ``{name: tensor}`` of the model at ``params`` on ``batches``.

    Every layer of ``layers`` is put in training mode with ``momentum=None`` (cumulative
    average) on fresh buffers passed through ``functional_call``; the modes and momenta are
    set back afterwards, also when the pass fails.
    """
    names = {id(m): n for n, m in model.named_modules()}
    buffers: dict[str, Tensor] = {}
    for m in layers:
        prefix = names[id(m)]
        if m.running_mean is None:
            continue
        buffers[f"{prefix}.running_mean"] = torch.zeros_like(m.running_mean)
        buffers[f"{prefix}.running_var"] = torch.ones_like(m.running_var)
        buffers[f"{prefix}.num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
    saved = [(m, m.training, m.momentum) for m in layers]
    try:
        for m in layers:
            m.train()
            m.momentum = None
        for X, _ in batches:
            functional_call(model, {**params, **buffers}, (X,))
    finally:
        for m, mode, momentum in saved:
            m.training = mode
            m.momentum = momentum
    return buffers
