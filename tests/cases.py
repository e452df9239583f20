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


def make_image_domains(n_domains=2, n=24, shape=(1, 6, 6), classes=3, seed=0, dtype=torch.float64):
    """Small image domains for CrossEntropyLoss: ``{name: [(X [n, *shape], y [n])]}``."""
    g = torch.Generator().manual_seed(seed)
    domains = {}
    for e in range(n_domains):
        X = torch.randn(n, *shape, generator=g, dtype=dtype) + 0.3 * e
        y = torch.randint(0, classes, (n,), generator=g)
        domains[f"d{e}"] = [(X, y)]
    return domains


class GroupNormCNN(nn.Module):
    """Conv → GroupNorm → ReLU → Conv (stride 2) → GroupNorm → Tanh → mean pool → head
    ``classifier``: ``[N, 1, 6, 6] -> [N, classes]`` (DomainBed's MNIST_CNN in miniature)."""

    def __init__(self, classes=3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.GroupNorm(2, 4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.GroupNorm(2, 4),
            nn.Tanh(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class ResidualBlock(nn.Module):
    """torchvision's BasicBlock shape: conv-BN-ReLU-conv-BN, plus the identity, ReLU."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class BatchNormResNet(nn.Module):
    """Stem conv-BN-ReLU, one residual block, mean pool, head ``classifier`` (BatchNorm in
    eval mode with non-trivial running statistics): ``[N, 1, 6, 6] -> [N, classes]``."""

    def __init__(self, classes=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.block = ResidualBlock(4)
        self.classifier = nn.Linear(4, classes)

    def forward(self, x):
        x = self.block(torch.relu(self.stem(x)))
        return self.classifier(x.mean(dim=(2, 3)))


def make_conv_model(kind, seed=0, dtype=torch.float64):
    """A seeded :class:`GroupNormCNN` (``"groupnorm"``) or :class:`BatchNormResNet`
    (``"batchnorm"``) in eval mode, with random affine and running statistics."""
    torch.manual_seed(seed)
    model = {"groupnorm": GroupNormCNN, "batchnorm": BatchNormResNet}[kind]().to(dtype)
    for module in model.modules():
        if isinstance(module, nn.GroupNorm | nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.2)
            nn.init.normal_(module.bias, 0.0, 0.2)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def split(batch, cuts):
    """``[(X[a:b], y[a:b])]``: one batch ``(X, y)`` cut at the rows ``cuts`` (uneven batches)."""
    X, y = batch
    bounds = [0, *cuts, X.shape[0]]
    return [(X[a:b], y[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


@dataclass(frozen=True)
class Case:
    """One model, loss, parameter selection and its domains, built lazily.

    Attributes:
        id: readable test id, e.g. ``"mlp-bce-all"``.
        model: ``(dtype) -> nn.Module`` (seeded, eval mode).
        loss: ``() -> nn.Module`` (mean reduction).
        domains: ``(dtype, **sizes) -> {name: [(X, y)]}`` (seeded; ``sizes`` such as ``n``
            and ``n_domains`` go to the ``make_*_domains`` constructor).
        params: the selection passed as ``params=`` (``None``, a prefix or names).
        loss_name: the loss's key, ``"bce"``, ``"ce"`` or ``"mse"``.
    """

    id: str
    model: Callable[[torch.dtype], nn.Module]
    loss: Callable[[], nn.Module]
    domains: Callable[..., dict]
    params: object = None
    loss_name: str = ""

    def build(self, dtype: torch.dtype = torch.float64, device: str = "cpu", *, cuts=None, **sizes):
        """``(model, loss_func, domains, params)`` in ``dtype`` on ``device``.

        ``sizes`` (``n``, ``n_domains``, ...) go to the domain constructor; ``cuts`` maps a
        domain's name to the rows at which its one batch is cut into uneven batches, e.g.
        ``cuts={"d0": [11]}`` (see :func:`split`).
        """
        model = self.model(dtype).to(device)
        domains = self.domains(dtype, **sizes)
        for name, rows in (cuts or {}).items():
            (batch,) = domains[name]
            domains[name] = split(batch, rows)
        domains = {
            name: [(X.to(device), y.to(device)) for X, y in batches]
            for name, batches in domains.items()
        }
        return model, self.loss(), domains, self.params

    def build_one(self, dtype: torch.dtype = torch.float64, device: str = "cpu", *, n=30,
                  batches=1):  # fmt: skip
        """``(model, loss_func, data, params)``: one domain of ``n`` samples as ``data``, in
        ``batches`` batches of ``ceil(n / batches)`` samples (the last takes the rest)."""
        size = -(-n // batches)
        cuts = {"d0": list(range(size, n, size))}
        model, loss_func, domains, params = self.build(dtype, device, n=n, n_domains=1, cuts=cuts)
        return model, loss_func, domains["d0"], params


def _mlp_case(loss_name, loss, make_domains, out, params=None, suffix="all"):
    return Case(
        f"mlp-{loss_name}-{suffix}",
        lambda dt: make_mlp(out=out, dtype=dt),
        loss,
        lambda dt, **sizes: make_domains(dtype=dt, **sizes),
        params,
        loss_name,
    )


def _conv_case(kind, params=None, suffix="all"):
    return Case(
        f"{kind}-ce-{suffix}",
        lambda dt: make_conv_model(kind, dtype=dt),
        nn.CrossEntropyLoss,
        lambda dt, **sizes: make_image_domains(dtype=dt, **sizes),
        params,
        "ce",
    )


CONV_CASES = [
    _conv_case("groupnorm"),
    _conv_case("groupnorm", "classifier", "head"),
    _conv_case("batchnorm"),
]
"""Convolutional cases (issue 10: any ``nn.Module``): a GroupNorm CNN and a BatchNorm
residual block in eval mode. Not in :data:`CASES` yet: opt in with ``CASES + CONV_CASES``."""

CASES = [
    _mlp_case("bce", nn.BCEWithLogitsLoss, make_binary_domains, 1),
    _mlp_case("bce", nn.BCEWithLogitsLoss, make_binary_domains, 1, "classifier", "head"),
    _mlp_case("ce", nn.CrossEntropyLoss, make_multiclass_domains, 3),
    _mlp_case("ce", nn.CrossEntropyLoss, make_multiclass_domains, 3, "classifier", "head"),
    _mlp_case("mse", nn.MSELoss, make_regression_domains, 2),
]
"""Every case; the ``case`` fixture runs each test over all of them."""

_ANY = object()


def cases(loss=None, params=_ANY) -> list[Case]:
    """The cases of :data:`CASES` with this loss key (or keys) and parameter selection.

    ``cases(loss="ce")``, ``cases(loss=("bce", "ce"))``, ``cases(params=None)`` (the whole
    network of every loss).
    """
    losses = (loss,) if isinstance(loss, str) else loss
    return [
        c
        for c in CASES
        if (losses is None or c.loss_name in losses) and (params is _ANY or c.params == params)
    ]


CASES_BY_LOSS = {c.loss_name: c for c in cases(params=None)}
"""The whole-network case of each loss: ``{"bce": ..., "ce": ..., "mse": ...}``."""


def ids(selection) -> list[str]:
    """Readable test ids of a list of cases."""
    return [c.id for c in selection]
