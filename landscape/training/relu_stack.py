"""Hidden ``Linear -> ReLU`` layers as one autograd Function: biases folded into the products.

For layers :math:`l = 1, \\dots, L` with weights :math:`W_l` ``[H_l, H_{l-1}]``, biases
:math:`b_l` and input :math:`a_0`,

.. math::

    z_l = W_l a_{l-1} + b_l = [W_l \\; b_l] \\begin{bmatrix} a_{l-1} \\\\ 1 \\end{bmatrix},
    \\qquad a_l = \\max(z_l, 0),

so each layer is one GEMM of the previous activations with a column of ones appended (kept
in the activation buffer itself), followed by an in-place ReLU. With
:math:`\\delta_l = \\partial L / \\partial z_l` and the incoming gradient :math:`\\bar a_L`,

.. math::

    \\delta_L = \\bar a_L \\odot [a_L > 0], \\qquad
    [\\partial_{W_l} L \\;\\; \\partial_{b_l} L] = \\delta_l^\\top [a_{l-1} \\;\\; 1],
    \\qquad \\delta_{l-1} = (\\delta_l W_l) \\odot [a_{l-1} > 0]:

the bias gradient is the ones column's share of the weight gradient's GEMM. Against
``nn.Linear`` and ``nn.ReLU`` modules, every layer saves two passes over its ``[N, H]``
array per step (the bias add and the bias gradient's column sum, on the NumPy backend of
:mod:`landscape.gemm`) and the ReLU's fresh output buffer, which on the Colored MNIST step
(``[25,000, 390]`` per domain) made the step 6-25 % faster (old and new code in turn).

The first layer reads its input as **row groups**: rows ``start:stop`` of the batch are
``x_g`` ``[n_g, |K_g| + 1]`` (its last column ones) and multiply only the weight's columns
``K_g``; the others get zero gradient from those rows. That is the colour split's input
(:mod:`landscape.training.colour_split`: the lit channel's non-zero pixels); a plain input
is one group holding every column.

The result equals the modules' up to the float summation order (the bias joins the GEMM's
sum). The Function is differentiable once: the training step's penalties differentiate
twice only through the loss and the head (IRM's scale, Fishr's per-sample head gradients),
never through these layers; a second derivative through them raises PyTorch's error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from landscape import gemm


def relu_stack(
    parts: Sequence[Tensor],
    rows: Sequence[tuple[int, int]],
    columns: Sequence[Tensor],
    layers: Sequence[tuple[Tensor, Tensor]],
    backend: str = "torch",
) -> Tensor:
    """``relu(W_L ... relu(W_1 x + b_1) ... + b_L)`` ``[N, H_L]`` of row-grouped inputs.

    Args:
        parts: per group ``x_g`` ``[stop - start, |K_g| + 1]``, its last column ones.
        rows: per group ``(start, stop)``, covering ``0 .. N`` in order.
        columns: per group ``K_g``, indices into the first layer's inputs.
        layers: per layer ``(weight [H_l, H_{l-1}], bias [H_l])``, each followed by a ReLU
            (an ``nn.Linear``'s ``weight`` and ``bias``).
        backend: whose BLAS computes the products (:mod:`landscape.gemm`).
    """
    params = [p for weight, bias in layers for p in (weight, bias)]
    return _ReLUStack.apply(tuple(parts), tuple(rows), tuple(columns), backend, *params)


def _activation_buffer(weight: Tensor, n: int, ones: bool) -> Tensor:
    """A layer's output buffer ``[n, H (+ 1)]`` (``H = weight.shape[0]``), uninitialised;
    with ``ones`` its last column is ones (the next layer's bias input)."""
    width = weight.shape[0]
    out = weight.new_empty((n, width + int(ones)))
    if ones:
        out[:, width] = 1
    return out


def _hidden(buffer: Tensor, weight: Tensor) -> Tensor:
    """The layer's own columns of its output buffer (without the ones column)."""
    return buffer[:, : weight.shape[0]]


def _with_bias(weight: Tensor, bias: Tensor, columns: Tensor | None = None) -> Tensor:
    """``[W_{:, K} b]^T`` ``[|K| + 1, H]``: the right operand of a layer's product."""
    weight = weight if columns is None else weight[:, columns]
    return torch.cat([weight, bias[:, None]], dim=1).t()


class _ReLUStack(torch.autograd.Function):
    """See :mod:`landscape.training.relu_stack`; ``params`` = ``W_1, b_1, ..., W_L, b_L``."""

    @staticmethod
    def forward(ctx, parts, rows, columns, backend, *params):
        weights, biases = params[0::2], params[1::2]
        n, last = rows[-1][1], len(weights) - 1
        acts = []  # the inputs of layers 2 .. L, each with its ones column
        a = _activation_buffer(weights[0], n, ones=last > 0)
        for x, (start, stop), k in zip(parts, rows, columns, strict=True):
            w = _with_bias(weights[0], biases[0], k)
            gemm.mm_into(x, w, _hidden(a, weights[0])[start:stop], backend)
        torch.relu_(_hidden(a, weights[0]))
        for i in range(1, last + 1):
            acts.append(a)
            a = _activation_buffer(weights[i], n, ones=i < last)
            gemm.mm_into(acts[-1], _with_bias(weights[i], biases[i]), _hidden(a, weights[i]),
                         backend)  # fmt: skip
            torch.relu_(_hidden(a, weights[i]))
        ctx.save_for_backward(*weights, a)
        ctx.acts, ctx.backend = acts, backend
        ctx.parts, ctx.rows, ctx.columns = parts, rows, columns
        return a

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        *weights, out = ctx.saved_tensors
        backend = ctx.backend
        # δ_L = ā_L ⊙ [a_L > 0]: what autograd's ReLU backward computes, in one pass
        delta = torch.ops.aten.threshold_backward(grad, out, 0)
        grads = []
        for weight, a in zip(weights[:0:-1], ctx.acts[::-1], strict=True):
            both = gemm.mm(delta.t(), a, backend)  # [∂W_l ∂b_l]
            grads.append((both[:, :-1].contiguous(), both[:, -1].contiguous()))
            delta = gemm.mm(delta, weight, backend)  # δ_{l-1} = (δ_l W_l) ⊙ [a_{l-1} > 0]
            torch.ops.aten.threshold_backward.grad_input(delta, a[:, :-1], 0, grad_input=delta)
        blocks = [
            gemm.mm(delta[start:stop].t(), x, backend)
            for x, (start, stop) in zip(ctx.parts, ctx.rows, strict=True)
        ]
        grad_weight = delta.new_zeros(weights[0].shape).index_add_(
            1, torch.cat(ctx.columns), torch.cat([b[:, :-1] for b in blocks], dim=1)
        )
        grads.append((grad_weight, torch.stack([b[:, -1] for b in blocks]).sum(0)))
        flat = [g for pair in grads[::-1] for g in pair]
        wanted = ctx.needs_input_grad[4:]
        return (None,) * 4 + tuple(g if w else None for g, w in zip(flat, wanted, strict=True))
