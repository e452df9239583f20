"""Shared helpers of the curvature tests: small MLP cases, snapshots, tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.cases import make_binary_domains, make_mlp, make_multiclass_domains

CASES = {
    "bce": (nn.BCEWithLogitsLoss, make_binary_domains, 1),
    "ce": (nn.CrossEntropyLoss, make_multiclass_domains, 3),
}

PARAMS = [None, "classifier"]


def small_case(loss: str, n: int = 30):
    """A small MLP and two domains; domain d0 comes in two uneven batches."""
    loss_cls, make, out = CASES[loss]
    model = make_mlp(out=out)
    domains = make(n_domains=2, n=n)
    X, y = domains["d0"][0]
    domains["d0"] = [(X[:11], y[:11]), (X[11:], y[11:])]
    return model, loss_cls(), domains


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


@pytest.fixture(params=["bce", "ce"])
def case(request):
    return (request.param, *small_case(request.param))
