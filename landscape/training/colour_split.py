"""Colour-split first layer: the same logits with half the first layer's arithmetic.

Every Colored MNIST *training* image has exactly one lit colour channel: the other channel
is all zeros (the "gray" test domain lights both). For a sample ``x = (x_1, ..., x_C)`` (one
block of ``D`` inputs per channel) whose only non-zero channel is ``c``,

.. math::

    W x + b = \\sum_{c'} W_{:, c'} x_{c'} + b = W_{:, c}\\, x_c + b,

and the weight gradient of a loss ``L`` through that layer is, for the samples ``S_c`` lit
in channel ``c``,

.. math::

    \\frac{\\partial L}{\\partial W_{:, c}} = \\sum_{i \\in S_c} \\delta_i x_{i, c}^\\top,
    \\qquad \\frac{\\partial L}{\\partial W_{:, c'}}\\Big|_{S_c} = 0 \\ (c' \\ne c),

so with the samples grouped by lit channel, the first layer is one dense GEMM per group on
``D`` inputs instead of one on ``C D``: for two channels, half the first layer's FLOPs in the
forward and in the weight gradient. Inputs that are zero in every sample of a group (the
border pixels of MNIST digits: 25-30 of 196 per Colored MNIST domain and channel) add
nothing either, so each group's GEMM reads only its group's non-zero columns ``K_c``:
``W_{:, c} x_c = W_{:, K_c} x_{K_c}``, and the weight gradient's other columns are zero. The
result is the plain forward's up to the float summation order (the grouping reorders the
samples, and the zero products are skipped).

:func:`colour_split` detects the structure from the data (never assumed) and sorts a
domain's samples by lit channel once (stable, so the order is deterministic);
:class:`ColourSplitForward` computes the logits of that sorted batch, its hidden
``Linear -> ReLU`` layers as one Function with the biases folded into the products
(:mod:`landscape.training.relu_stack`), falling back to ``model(X)`` whenever the
reformulation does not apply (another tensor, a hook on the first layer as per-sample
moments of every layer need, a hook on the model, its featurizer or its ``Flatten``, which
the split forward does not call, a global module hook, an input that requires grad).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape import gemm
from landscape.training.relu_stack import relu_stack


def lit_channels(X: Tensor) -> Tensor | None:
    """Per sample of ``X [N, C, ...]``, the index of its only channel with a non-zero entry
    (channel 0 for an all-zero sample); ``None`` when some sample lights two or more channels
    or ``X`` has no channel axis (fewer than 3 dimensions, or one channel)."""
    if X.dim() < 3 or X.shape[1] < 2 or not X.is_floating_point():
        return None
    lit = (X.flatten(2) != 0).any(dim=2)  # [N, C]; NaN counts as lit
    if bool((lit.sum(dim=1) > 1).any()):
        return None
    return lit.to(torch.uint8).argmax(dim=1)


@dataclass
class ColourSplit:
    """A domain's samples grouped by lit channel.

    Attributes:
        X, y: the samples, reordered so that the channel-0 samples come first, then channel
            1, ... (``X[i] = original[order[i]]``).
        order: ``[N]`` the permutation applied (a stable sort by lit channel).
        groups: ``(channel, start, stop)`` per non-empty group: rows ``start:stop`` of ``X``.
        columns: per group, the indices ``K_c`` (into the ``D`` inputs of its channel) that
            are non-zero in some sample of the group.
        parts: per group, ``X[start:stop, channel]`` flattened to ``[stop - start, D]`` and
            restricted to ``columns``, then a column of ones (the bias's input), contiguous:
            the first layer's GEMM operand.
        weight_columns: per group, ``columns`` as indices into the first layer's ``C D``
            inputs (``channel * D + columns``).
    """

    X: Tensor
    y: Tensor
    order: Tensor
    groups: list[tuple[int, int, int]]
    columns: list[Tensor]
    parts: list[Tensor]
    weight_columns: list[Tensor]


def colour_split(X: Tensor, y: Tensor) -> ColourSplit | None:
    """Group the samples of ``(X, y)`` by lit channel (see :func:`lit_channels`); ``None``
    when some sample lights more than one channel."""
    channel = lit_channels(X)
    if channel is None:
        return None
    order = torch.sort(channel, stable=True).indices
    X, y, channel = X[order], y[order], channel[order]
    counts = torch.bincount(channel, minlength=X.shape[1]).tolist()
    groups, columns, parts, weight_columns, start = [], [], [], [], 0
    for c, count in enumerate(counts):
        if count:
            part = X[start : start + count, c].reshape(count, -1)
            lit = (part != 0).any(dim=0).nonzero().squeeze(1)
            groups.append((c, start, start + count))
            columns.append(lit)
            parts.append(torch.cat([part[:, lit], part.new_ones((count, 1))], dim=1))
            weight_columns.append(c * part.shape[1] + lit)
            start += count
    return ColourSplit(X, y, order, groups, columns, parts, weight_columns)


_GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


def _hooked(module: nn.Module) -> bool:
    """Whether ``module`` carries hooks that a fused computation would skip: its own, or
    torch's global module hooks (``nn.modules.module.register_module_forward_hook`` and
    kin), which fire on every module."""
    registry = nn.modules.module
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or getattr(module, "_backward_pre_hooks", None)
        or any(getattr(registry, name, None) for name in _GLOBAL_HOOKS)
    )


def _after_flatten(model: nn.Module) -> list[nn.Module] | None:
    """The modules from the first layer to the logits of a model shaped ``featurizer =
    Sequential(Flatten, Linear, ...)`` plus ``classifier``
    (:class:`landscape.models.mlp.MLP` with a hidden layer); ``None`` for any other model."""
    featurizer = getattr(model, "featurizer", None)
    classifier = getattr(model, "classifier", None)
    if not (isinstance(featurizer, nn.Sequential) and isinstance(classifier, nn.Module)):
        return None
    if len(featurizer) < 3 or type(featurizer[0]) is not nn.Flatten:
        return None
    return [*featurizer[1:], classifier]


def fused_layers(modules: list[nn.Module]) -> int:
    """How many leading ``(nn.Linear, nn.ReLU)`` pairs of ``modules`` carry no hooks and a
    bias (the layers :func:`~landscape.training.relu_stack.relu_stack` computes)."""
    count = 0
    while 2 * count + 1 < len(modules):
        linear, relu = modules[2 * count], modules[2 * count + 1]
        if type(linear) is not nn.Linear or type(relu) is not nn.ReLU or linear.bias is None:
            break
        if _hooked(linear) or _hooked(relu):
            break
        count += 1
    return count


class ColourSplitForward:
    """``model(X)`` of one colour-split batch, its first layer as one GEMM per lit channel.

    Called with the batch it was built for (the same tensor ``split.X``) it returns the
    logits computed as :mod:`this module <landscape.training.colour_split>` says: the leading
    hidden ``Linear -> ReLU`` layers without hooks (:func:`fused_layers`; at least the first)
    as :func:`~landscape.training.relu_stack.relu_stack`, the later modules called as modules
    so that their hooks (the head's per-sample moments) fire as usual. Called with anything
    else, while the first layer carries hooks (per-sample moments of that layer), while the
    model, its featurizer or its ``Flatten`` (never called here) or every module (torch's
    global hooks) carries hooks, or on an input that requires grad, it returns ``model(X)``.
    ``backend`` says whose BLAS computes the fused layers' products, forward and backward
    (:mod:`landscape.gemm`).
    """

    def __init__(self, model: nn.Module, split: ColourSplit, backend: str = "torch"):
        self.model = model
        self.split = split
        self.backend = gemm.check_backend(backend)
        self._modules = _after_flatten(model)
        if self._modules is not None:
            first, width = self._modules[0], split.X[0].numel()
            if not isinstance(first, nn.Linear) or first.in_features != width:
                self._modules = None

    def applies(self, X: Tensor) -> bool:
        """Whether the split forward computes ``model(X)`` (else the plain forward does)."""
        if self._modules is None or X is not self.split.X or X.requires_grad:
            return False
        skipped = (self.model, self.model.featurizer, self.model.featurizer[0])
        if any(_hooked(module) for module in skipped):  # never called by the split forward
            return False
        return fused_layers(self._modules) > 0

    def __call__(self, X: Tensor) -> Tensor:
        if not self.applies(X):
            return self.model(X)
        count = fused_layers(self._modules)
        split = self.split
        rows = [(start, stop) for _, start, stop in split.groups]
        layers = [(m.weight, m.bias) for m in self._modules[: 2 * count : 2]]
        out = relu_stack(split.parts, rows, split.weight_columns, layers, self.backend)
        for module in self._modules[2 * count :]:
            out = module(out)
        return out
