"""Shared helpers of the curvature tests: small cases of the registry, snapshots, tolerances."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.cases import CASES_BY_LOSS

UNEVEN = {"d0": [11]}
"""Domain d0 in two uneven batches (11 + the rest)."""


def build_small(case, n: int = 30):
    """``(model, loss_func, domains, params)`` of a registry case: two domains of ``n``
    samples, d0 in two uneven batches."""
    return case.build(n=n, n_domains=2, cuts=UNEVEN)


def small_case(loss: str, n: int = 30):
    """The whole-network registry case of ``loss``: ``(model, loss_func, domains)``."""
    return build_small(CASES_BY_LOSS[loss], n)[:3]


def snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
        [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()],
    )


def assert_unchanged(model, snap):
    state, flags, modes, hooks = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert [m.training for m in model.modules()] == modes
    assert [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())


def close(a, b, rtol=1e-9, atol=1e-11):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


class UsedUpstream(nn.Module):
    """The head's bias also shifts the hidden layer: the output is not affine in the head and
    a per-sample gradient of the bias is not its output error alone."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.classifier = nn.Linear(4, 1)

    def forward(self, x):
        return self.classifier(torch.tanh(self.body(x) + self.classifier.bias))
