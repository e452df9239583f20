"""The shared test case registry: model × loss × parameters × dtype × device.

A case is plain data: lazy constructors plus a seed (as in curvlinops' test suite), so that
every module's tests run the same models, losses, parameter selections and domains, and a
new case added here reaches every test that iterates over :data:`CASES`. The ``case``,
``dtype`` and ``device`` fixtures in ``conftest.py`` serve them; ``device`` includes CUDA
when one is present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from landscape.models import MLP

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


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


def make_regression_domains(n_domains=2, n=64, dim=6, outputs=2, seed=0, dtype=torch.float64):
    """Small domains for MSELoss: ``{name: [(X [n, dim], y [n, outputs])]}``."""
    g = torch.Generator().manual_seed(seed)
    domains = {}
    for e in range(n_domains):
        X = torch.randn(n, dim, generator=g, dtype=dtype) + 0.3 * e
        y = torch.randn(n, outputs, generator=g, dtype=dtype)
        domains[f"d{e}"] = [(X, y)]
    return domains


def make_mlp(dim=6, hidden=(5, 4), out=1, seed=0, dtype=torch.float64):
    """A small seeded :class:`landscape.models.MLP` in ``dtype`` (eval mode)."""
    torch.manual_seed(seed)
    model = MLP(dim, list(hidden), out).to(dtype)
    for p in model.parameters():  # non-zero biases so bias paths are exercised
        if p.dim() == 1:
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()


@dataclass(frozen=True)
class Case:
    """One model, loss, parameter selection and its domains, built lazily.

    Attributes:
        id: readable test id, e.g. ``"mlp-bce-all"``.
        model: ``(dtype) -> nn.Module`` (seeded, eval mode).
        loss: ``() -> nn.Module`` (mean reduction).
        domains: ``(dtype) -> {name: [(X, y)]}`` (seeded).
        params: the selection passed as ``params=`` (``None``, a prefix or names).
    """

    id: str
    model: Callable[[torch.dtype], nn.Module]
    loss: Callable[[], nn.Module]
    domains: Callable[[torch.dtype], dict]
    params: object = None

    def build(self, dtype: torch.dtype = torch.float64, device: str = "cpu"):
        """``(model, loss_func, domains, params)`` in ``dtype`` on ``device``."""
        model = self.model(dtype).to(device)
        domains = {
            name: [(X.to(device), y.to(device)) for X, y in batches]
            for name, batches in self.domains(dtype).items()
        }
        return model, self.loss(), domains, self.params


CASES = [
    Case(
        "mlp-bce-all",
        lambda dt: make_mlp(dtype=dt),
        lambda: nn.BCEWithLogitsLoss(),
        lambda dt: make_binary_domains(dtype=dt),
    ),
    Case(
        "mlp-bce-head",
        lambda dt: make_mlp(dtype=dt),
        lambda: nn.BCEWithLogitsLoss(),
        lambda dt: make_binary_domains(dtype=dt),
        "classifier",
    ),
    Case(
        "mlp-ce-all",
        lambda dt: make_mlp(out=3, dtype=dt),
        lambda: nn.CrossEntropyLoss(),
        lambda dt: make_multiclass_domains(dtype=dt),
    ),
    Case(
        "mlp-ce-head",
        lambda dt: make_mlp(out=3, dtype=dt),
        lambda: nn.CrossEntropyLoss(),
        lambda dt: make_multiclass_domains(dtype=dt),
        "classifier",
    ),
    Case(
        "mlp-mse-all",
        lambda dt: make_mlp(out=2, dtype=dt),
        lambda: nn.MSELoss(),
        lambda dt: make_regression_domains(dtype=dt),
    ),
]
