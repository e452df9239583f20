"""Shared test fixtures: small seeded models and domains, float32 and float64."""

from __future__ import annotations

import pytest
import torch

from landscape.models import MLP


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    return request.param


def make_binary_domains(n_domains=2, n=64, dim=6, seed=0, dtype=torch.float64):
    """Small two-class domains for BCEWithLogitsLoss: ``{name: [(X [n, dim], y [n, 1])]}``."""
    g = torch.Generator().manual_seed(seed)
    domains = {}
    for e in range(n_domains):
        X = torch.randn(n, dim, generator=g, dtype=dtype) + 0.3 * e
        y = (torch.rand(n, 1, generator=g, dtype=dtype) < 0.5).to(dtype)
        domains[f"d{e}"] = [(X, y)]
    return domains


def make_multiclass_domains(n_domains=2, n=64, dim=6, classes=3, seed=0, dtype=torch.float64):
    """Small domains for CrossEntropyLoss: ``{name: [(X [n, dim], y [n])]}``."""
    g = torch.Generator().manual_seed(seed)
    domains = {}
    for e in range(n_domains):
        X = torch.randn(n, dim, generator=g, dtype=dtype) + 0.3 * e
        y = torch.randint(0, classes, (n,), generator=g)
        domains[f"d{e}"] = [(X, y)]
    return domains


def make_mlp(dim=6, hidden=(5, 4), out=1, seed=0, dtype=torch.float64):
    """A small seeded :class:`landscape.models.MLP` in ``dtype``."""
    torch.manual_seed(seed)
    model = MLP(dim, list(hidden), out).to(dtype)
    for p in model.parameters():  # non-zero biases so bias paths are exercised
        if p.dim() == 1:
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()
