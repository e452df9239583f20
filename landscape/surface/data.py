"""Each domain's data for a surface: checked, optionally subsampled and re-batched, on the
model's device and dtype."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.domains import check_domains, check_finite, concat

__all__ = ["Domain", "prepare_domains"]

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Domain:
    """One domain's batches as evaluated at every grid point.

    Attributes:
        name: the domain's name.
        batches: ``[(X, y), ...]`` on the model's device (floating inputs in its dtype).
        num_samples: the number of samples over all batches.
        pieces: with the first-layer shortcut, per batch the precomputed products
            ``(W_0 x, D_1 x, D_2 x)`` of :class:`landscape.surface.first_layer.FirstLayer`
            (``None`` for a direction that does not move the weight); else ``None``.
    """

    name: str
    batches: list[Batch]
    num_samples: int
    pieces: list[tuple[Tensor, Tensor | None, Tensor | None]] | None = None


def domain_seed(seed: int, name: str) -> int:
    """The subsampling seed of one domain: ``seed`` and the CRC-32 of its name."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _subsample(batches: list[Batch], count: int | None, seed: int) -> tuple[Tensor, Tensor, bool]:
    """``(X, y, drawn)``: all samples of ``batches``, or ``count`` of them drawn without
    replacement (kept in order) when there are more."""
    X, y = concat(batches)
    if count is None or count >= X.shape[0]:
        return X, y, False
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(X.shape[0], generator=g)[:count].sort().values
    return X[idx.to(X.device)], y[idx.to(y.device)], True


def prepare_domains(
    domains,
    subsample: int | None,
    seed: int,
    batch_size: int | None,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[dict[str, Domain], dict[str, int]]:
    """``({name: Domain}, {name: subsampling seed})`` of the domains actually subsampled.

    Args:
        domains: ``{name: data}`` (see :func:`landscape.domains.check_domains`).
        subsample: samples per domain drawn without replacement (seeded by ``seed`` and the
            domain's name, see :func:`domain_seed`); ``None`` = all.
        seed: seed of the subsampling.
        batch_size: re-batch each domain in batches of this size (``None``: the domain's own
            batches, or one batch after subsampling).
        device: where the batches go.
        dtype: the dtype of floating inputs and targets.
    """
    checked = check_domains(domains, what="loss_surface")
    check_finite(checked)

    def move(t):
        t = t.to(device)
        return t.to(dtype) if t.is_floating_point() else t

    out, seeds = {}, {}
    for name, data in checked.items():
        batches = [(X, y) for X, y in data]
        if subsample is not None or batch_size is not None:
            s = domain_seed(seed, name)
            X, y, drawn = _subsample(batches, subsample, s)
            if drawn:
                seeds[name] = s
            size = batch_size or X.shape[0]
            batches = [(X[i : i + size], y[i : i + size]) for i in range(0, X.shape[0], size)]
        batches = [(move(X), move(y)) for X, y in batches]
        out[name] = Domain(name, batches, sum(int(X.shape[0]) for X, _ in batches))
    return out, seeds
