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
:class:`ColourSplitForward` computes the logits of that sorted batch, falling back to
``model(X)`` whenever the reformulation does not apply (another tensor, a hook on the first
layer as per-sample moments of every layer need, an input that requires grad).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape import gemm


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
            restricted to ``columns``, contiguous (the first layer's GEMM operand).
    """

    X: Tensor
    y: Tensor
    order: Tensor
    groups: list[tuple[int, int, int]]
    columns: list[Tensor]
    parts: list[Tensor]


def colour_split(X: Tensor, y: Tensor) -> ColourSplit | None:
    """Group the samples of ``(X, y)`` by lit channel (see :func:`lit_channels`); ``None``
    when some sample lights more than one channel."""
    channel = lit_channels(X)
    if channel is None:
        return None
    order = torch.sort(channel, stable=True).indices
    X, y, channel = X[order], y[order], channel[order]
    counts = torch.bincount(channel, minlength=X.shape[1]).tolist()
    groups, columns, parts, start = [], [], [], 0
    for c, count in enumerate(counts):
        if count:
            part = X[start : start + count, c].reshape(count, -1)
            lit = (part != 0).any(dim=0).nonzero().squeeze(1)
            groups.append((c, start, start + count))
            columns.append(lit)
            parts.append(part[:, lit].contiguous())
            start += count
    return ColourSplit(X, y, order, groups, columns, parts)


def first_linear(model: nn.Module) -> tuple[nn.Linear, nn.Module] | None:
    """``(first layer, rest)`` of a model shaped ``featurizer = Sequential(Flatten, Linear,
    ...)`` plus ``classifier`` (:class:`landscape.models.mlp.MLP` with a hidden layer);
    ``rest`` maps the first layer's output to the logits. ``None`` for any other model."""
    featurizer = getattr(model, "featurizer", None)
    classifier = getattr(model, "classifier", None)
    if not (isinstance(featurizer, nn.Sequential) and isinstance(classifier, nn.Module)):
        return None
    if len(featurizer) < 2 or not isinstance(featurizer[0], nn.Flatten):
        return None
    if not isinstance(featurizer[1], nn.Linear):
        return None
    return featurizer[1], nn.Sequential(*featurizer[2:], classifier)


class ColourSplitForward:
    """``model(X)`` of one colour-split batch, its first layer as one GEMM per lit channel.

    Called with the batch it was built for (the same tensor ``split.X``) it returns the
    logits computed as :mod:`this module <landscape.training.colour_split>` says; called with
    anything else, or while the first layer carries forward hooks (per-sample moments of that
    layer), or on an input that requires grad, it returns ``model(X)``. The later layers are
    called as modules, so their hooks (the head's per-sample moments) fire as usual.
    ``backend`` says whose BLAS computes the first layer's products, forward and backward
    (:mod:`landscape.gemm`; ``"torch"``: torch's).
    """

    def __init__(self, model: nn.Module, split: ColourSplit, backend: str = "torch"):
        self.model = model
        self.split = split
        self.backend = gemm.check_backend(backend)
        self._layers = first_linear(model)
        if self._layers is not None:
            width = split.X[0].numel()
            if self._layers[0].in_features != width or width % split.X.shape[1]:
                self._layers = None

    def applies(self, X: Tensor) -> bool:
        """Whether the split forward computes ``model(X)`` (else the plain forward does)."""
        if self._layers is None or X is not self.split.X or X.requires_grad:
            return False
        first = self._layers[0]
        return not (first._forward_hooks or first._forward_pre_hooks)

    def __call__(self, X: Tensor) -> Tensor:
        if not self.applies(X):
            return self.model(X)
        first, rest = self._layers
        split = self.split
        hidden = _SplitLinear.apply(first.weight, first.bias, split.parts, split.groups,
                                    split.columns, X.shape[1], self.backend)  # fmt: skip
        return rest(hidden)


class _SplitLinear(torch.autograd.Function):
    """``W x + b`` of samples grouped by lit channel: rows ``start:stop`` of the output are
    ``parts[g] W[:, K]^T + b`` for group ``g = (c, start, stop)`` and its columns ``K``
    (``columns[g]`` within channel ``c``'s block), written in place (no concatenation); the
    weight gradient's columns ``K`` are ``grad[start:stop]^T parts[g]``, the others zero.
    The backward is made of differentiable operations, so double backward works too. The
    products run on ``backend``'s BLAS (:mod:`landscape.gemm`), the backward's too."""

    @staticmethod
    def forward(ctx, weight, bias, parts, groups, columns, channels, backend="torch"):
        block = weight.shape[1] // channels
        index = [c * block + k for (c, _, _), k in zip(groups, columns, strict=True)]
        out = weight.new_empty((groups[-1][2], weight.shape[0]))
        for (_, start, stop), x, k in zip(groups, parts, index, strict=True):
            w = weight[:, k].t()
            if backend != "torch":
                gemm.mm_into(x, w, out[start:stop], backend)
            elif bias is None:
                torch.mm(x, w, out=out[start:stop])
            else:
                torch.addmm(bias, x, w, out=out[start:stop])
        if backend != "torch" and bias is not None:
            out.add_(bias)
        ctx.parts, ctx.groups, ctx.index, ctx.width = parts, groups, index, weight.shape[1]
        ctx.has_bias, ctx.backend = bias is not None, backend
        return out

    @staticmethod
    def backward(ctx, grad):
        blocks = [
            gemm.matmul(grad[start:stop].t(), x, backend=ctx.backend)
            for (_, start, stop), x in zip(ctx.groups, ctx.parts, strict=True)
        ]
        grad_weight = grad.new_zeros((grad.shape[1], ctx.width)).index_copy(
            1, torch.cat(ctx.index), torch.cat(blocks, dim=1)
        )
        grad_bias = grad.sum(0) if ctx.has_bias else None
        return grad_weight, grad_bias, None, None, None, None, None
