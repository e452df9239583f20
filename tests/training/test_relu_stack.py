"""The fused hidden layers (landscape.training.relu_stack) against nn.Linear / nn.ReLU modules
in float64: outputs and first derivatives of every weight and bias, for row groups reading
column subsets, on both BLAS backends; finite differences (gradcheck); and the clear error of
a second derivative."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.training.relu_stack import relu_stack

WIDTH = 10


def _groups(seed: int):
    """Three row groups of a 10-column input: ``(parts, rows, columns, dense X)``; the
    first group's first row is all zeros (its pre-activations are exactly the biases)."""
    g = torch.Generator().manual_seed(seed)
    columns = [torch.tensor([0, 2, 3, 7]), torch.tensor([1, 4, 5, 6, 8, 9]), torch.tensor([3])]
    sizes = [6, 5, 4]
    parts, rows, X, start = [], [], torch.zeros(sum(sizes), WIDTH, dtype=torch.float64), 0
    for k, n in zip(columns, sizes, strict=True):
        x = torch.randn(n, len(k), generator=g, dtype=torch.float64)
        if start == 0:
            x[0] = 0
        X[start : start + n, k] = x
        parts.append(torch.cat([x, x.new_ones(n, 1)], dim=1))
        rows.append((start, start + n))
        start += n
    return parts, rows, columns, X


def _layers(widths, seed: int) -> list[nn.Linear]:
    torch.manual_seed(seed)
    layers = [nn.Linear(a, b).double() for a, b in zip([WIDTH, *widths[:-1]], widths, strict=True)]
    with torch.no_grad():
        layers[0].bias[:2] = 0  # the zero row's first two units sit exactly at ReLU's kink
    return layers


def _pairs(layers):
    return [(layer.weight, layer.bias) for layer in layers]


def _plain(layers, X):
    return nn.Sequential(*(m for layer in layers for m in (layer, nn.ReLU())))(X)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("widths", [[7], [7, 6], [5, 8, 4]])
def test_outputs_and_gradients_equal_the_modules(widths, backend):
    parts, rows, columns, X = _groups(0)
    layers = _layers(widths, 1)
    params = [p for layer in layers for p in layer.parameters()]
    fast = relu_stack(parts, rows, columns, _pairs(layers), backend)
    plain = _plain(layers, X)
    torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(plain.shape, dtype=torch.float64)
    fast_grads = torch.autograd.grad(fast, params, upstream)
    plain_grads = torch.autograd.grad(plain, params, upstream)
    for g_fast, g_plain in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(g_fast, g_plain, rtol=1e-12, atol=1e-12)
    unused = [j for j in range(WIDTH) if j not in torch.cat(columns).tolist()]
    assert not unused or not fast_grads[0][:, unused].any()


def test_frozen_layers_get_no_gradient_and_the_others_the_modules_gradient():
    parts, rows, columns, X = _groups(2)
    layers = _layers([7, 6], 3)
    layers[0].requires_grad_(False)
    fast = relu_stack(parts, rows, columns, _pairs(layers), "torch")
    plain = _plain(layers, X)
    for layer in layers[1:]:
        params = list(layer.parameters())
        for g_fast, g_plain in zip(
            torch.autograd.grad(fast.sum(), params, retain_graph=True),
            torch.autograd.grad(plain.sum(), params, retain_graph=True),
            strict=True,
        ):
            torch.testing.assert_close(g_fast, g_plain, rtol=1e-12, atol=1e-12)
    fast.sum().backward()
    assert layers[0].weight.grad is None and layers[1].weight.grad is not None


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_gradients_match_finite_differences_and_a_second_derivative_is_refused(backend):
    parts, rows, columns, _ = _groups(4)
    layers = _layers([5, 4], 5)
    with torch.no_grad():
        layers[0].bias[:2] = 0.3  # keep the zero row away from the kink for finite differences
    params = tuple(p for layer in layers for p in layer.parameters())

    def stack(*values):
        pairs = list(zip(values[0::2], values[1::2], strict=True))
        return relu_stack(parts, rows, columns, pairs, backend).tanh()

    inputs = tuple(p.detach().clone().requires_grad_(True) for p in params)
    assert torch.autograd.gradcheck(stack, inputs)
    out = stack(*inputs).sum()
    (grad,) = torch.autograd.grad(out, inputs[:1], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()
