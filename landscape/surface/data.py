"""Each domain's data for a surface: checked, optionally subsampled and re-batched, on the
model's device and dtype.

A domain given as a list of batches is in memory already: its batches are moved to the
model's device once. A DataLoader is **streamed**: every pass over the domain (one per grid
point) reads it again and moves one batch at a time, so memory holds one batch, whatever the
domain's size; subsampling and re-batching a stream select and regroup rows as they pass
(the same rows and batches as on the concatenated domain).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from landscape.domains import check_domains, check_finite, concat, num_samples

__all__ = ["Domain", "Stream", "prepare_domains"]

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Domain:
    """One domain's batches as evaluated at every grid point.

    Attributes:
        name: the domain's name.
        batches: ``[(X, y), ...]`` on the model's device (floating inputs in its dtype), or a
            :class:`Stream` of them (a DataLoader, read again at every pass).
        num_samples: the number of samples over all batches.
        pieces: with the first-layer shortcut, per batch the precomputed products
            ``(W_0 x, D_1 x, D_2 x)`` of :class:`landscape.surface.first_layer.FirstLayer`
            (``None`` for a direction that does not move the weight); else ``None``.
    """

    name: str
    batches: list[Batch] | Stream
    num_samples: int
    pieces: list[tuple[Tensor, Tensor | None, Tensor | None]] | None = None

    @property
    def streamed(self) -> bool:
        """Whether the batches are read from a DataLoader at every pass."""
        return isinstance(self.batches, Stream)

    def first_batch(self) -> Batch:
        """The first ``(X, y)`` batch (on the model's device)."""
        return next(iter(self.batches))


class Stream:
    """A re-iterable pass over a DataLoader: ``make()`` yields the domain's batches afresh,
    each moved to the device and dtype as it is used."""

    def __init__(self, make: Callable[[], Iterator[Batch]]):
        self.make = make

    def __iter__(self) -> Iterator[Batch]:
        return self.make()


def _select(batches: Iterable[Batch], rows: Tensor) -> Iterator[Batch]:
    """The rows ``rows`` (ascending global indices) of a stream of batches, batch by batch."""
    start = 0
    for X, y in batches:
        n = int(X.shape[0])
        local = rows[(rows >= start) & (rows < start + n)] - start
        start += n
        if local.numel():
            yield X[local.to(X.device)], y[local.to(y.device)]


def _rebatch(batches: Iterable[Batch], size: int) -> Iterator[Batch]:
    """The rows of a stream regrouped in batches of ``size`` (the last one takes the rest)."""
    Xs: list[Tensor] = []
    ys: list[Tensor] = []
    held = 0
    for X, y in batches:
        Xs.append(X)
        ys.append(y)
        held += int(X.shape[0])
        while held >= size:
            X_all, y_all = torch.cat(Xs), torch.cat(ys)
            yield X_all[:size], y_all[:size]
            Xs, ys, held = [X_all[size:]], [y_all[size:]], held - size
    if held:
        yield torch.cat(Xs), torch.cat(ys)


def domain_seed(seed: int, name: str) -> int:
    """The subsampling seed of one domain: ``seed`` and the CRC-32 of its name."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def _drawn_rows(total: int, count: int | None, seed: int) -> Tensor | None:
    """``count`` of ``total`` row indices drawn without replacement (ascending), or ``None``
    when all are kept."""
    if count is None or count >= total:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=g)[:count].sort().values


def _subsample(batches: list[Batch], count: int | None, seed: int) -> tuple[Tensor, Tensor, bool]:
    """``(X, y, drawn)``: all samples of ``batches``, or ``count`` of them drawn without
    replacement (kept in order) when there are more."""
    X, y = concat(batches)
    idx = _drawn_rows(X.shape[0], count, seed)
    if idx is None:
        return X, y, False
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
        build = _streamed if isinstance(data, DataLoader) else _in_memory
        out[name], drawn = build(name, data, subsample, seed, batch_size, move)
        if drawn:
            seeds[name] = domain_seed(seed, name)
    return out, seeds


def _batched(X: Tensor, y: Tensor, size: int | None, move) -> list[Batch]:
    """``(X, y)`` cut in batches of ``size`` rows (default: one batch), moved."""
    size = size or X.shape[0]
    return [(move(X[i : i + size]), move(y[i : i + size])) for i in range(0, X.shape[0], size)]


def _in_memory(name, data, subsample, seed, batch_size, move) -> tuple[Domain, bool]:
    """A list of batches' :class:`Domain` (moved once), and whether rows were drawn."""
    batches, drawn = list(data), False
    if subsample is not None or batch_size is not None:
        X, y, drawn = _subsample(batches, subsample, domain_seed(seed, name))
        batches = _batched(X, y, batch_size, move)
    else:
        batches = [(move(X), move(y)) for X, y in batches]
    return Domain(name, batches, sum(int(X.shape[0]) for X, _ in batches)), drawn


def _streamed(name, loader, subsample, seed, batch_size, move) -> tuple[Domain, bool]:
    """A DataLoader's :class:`Domain`, streamed (see the module docstring), and whether rows
    were drawn. A drawn subsample is held in memory (``subsample`` rows)."""
    total = num_samples(loader)
    rows = _drawn_rows(total, subsample, domain_seed(seed, name))
    if rows is not None:
        X, y = concat(list(_select(loader, rows)))
        return Domain(name, _batched(X, y, batch_size, move), int(X.shape[0])), True

    def make():
        source = loader if batch_size is None else _rebatch(loader, batch_size)
        return ((move(X), move(y)) for X, y in source)

    return Domain(name, Stream(make), total), False
