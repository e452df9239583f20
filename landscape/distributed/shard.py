r"""Exact sharding of a domain across ranks, and means over the shards.

A domain of :math:`N` samples is split into ``W`` contiguous shards (in the data's order),
rank ``r`` holding samples :math:`[s_r, s_{r+1})` with
:math:`n_r = \lfloor N/W \rfloor + [r < N \bmod W]`: sizes differ by at most one and no sample
is repeated or dropped (PyTorch's ``DistributedSampler`` pads with duplicates by default,
which biases full-data means). A list of ``(X, y)`` batches is cut along its batches; an
unshuffled ``DataLoader`` becomes a loader over the matching ``Subset`` of its dataset, with
its batch size and collate function. The shard carries a :class:`ShardInfo`.

Every quantity of the analyses is a mean over the domain,
:math:`\bar q = \frac1N \sum_i q_i = \sum_r \frac{n_r}{N} \bar q_r`, so a rank computes its
shard's mean :math:`\bar q_r` with the unchanged single-process code and
:func:`mean_over_ranks` returns :math:`\frac1N \operatorname{all\_reduce}(n_r \bar q_r)`:
one collective for everything packed together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from landscape.distributed.group import ReplicaDriftError, all_reduce, rank, world_size

__all__ = [
    "ShardInfo", "shard_bounds", "shard_data", "shard_domains", "shard_of", "total_samples",
    "mean_over_ranks", "record_share", "shares", "describe", "check_replicas", "checksums",
]  # fmt: skip

_SHARES: dict[str, list[int]] = {}


@dataclass(frozen=True)
class ShardInfo:
    """One rank's part of a domain: samples ``[start, stop)`` of ``total``; ``counts`` holds
    every rank's number of samples."""

    name: str
    rank: int
    total: int
    start: int
    stop: int
    counts: tuple[int, ...]

    @property
    def size(self) -> int:
        return self.stop - self.start


class ShardList(list):
    """A rank's batches of one domain (a list of ``(X, y)``) with its :class:`ShardInfo`."""

    shard: ShardInfo


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` of ``parts`` shards of ``n`` items, sizes differing by at
    most one (the first ``n mod parts`` one larger).

    >>> shard_bounds(7, 3)
    [(0, 3), (3, 5), (5, 7)]
    """
    base, extra = divmod(n, parts)
    stops = np.cumsum([base + (r < extra) for r in range(parts)])
    return [(int(b - (base + (r < extra))), int(b)) for r, b in enumerate(stops)]


def shard_of(data) -> ShardInfo | None:
    """The :class:`ShardInfo` of a rank's shard (or the info itself), ``None`` for plain
    data."""
    if isinstance(data, ShardInfo):
        return data
    return getattr(data, "shard", None) if isinstance(data, list | DataLoader) else None


def total_samples(data) -> int:
    """The domain's number of samples over all ranks."""
    info = shard_of(data)
    if info is not None:
        return info.total
    return sum(int(X.shape[0]) for X, _ in data)


def _cut_batches(batches: Sequence, start: int, stop: int) -> ShardList:
    out, offset = ShardList(), 0
    for X, y in batches:
        n = int(X.shape[0])
        lo, hi = max(start - offset, 0), min(stop - offset, n)
        if lo < hi:
            out.append((X[lo:hi], y[lo:hi]))
        offset += n
    return out


def _cut_loader(loader: DataLoader, start: int, stop: int, name: str) -> DataLoader:
    if loader.batch_size is None:
        raise ValueError(
            f"domain {name!r}: a DataLoader with a custom batch_sampler cannot be sharded "
            "exactly; give a list of (X, y) batches or a DataLoader with batch_size"
        )
    return DataLoader(
        Subset(loader.dataset, range(start, stop)), batch_size=loader.batch_size,
        shuffle=False, collate_fn=loader.collate_fn, num_workers=loader.num_workers,
        pin_memory=loader.pin_memory,
    )  # fmt: skip


def shard_data(data, name: str = "domain", parts: int | None = None, index: int | None = None):
    """This rank's exact shard of one domain (see the module docstring); ``parts`` and
    ``index`` default to the world size and this rank. Data already sharded is returned as is.

    Raises:
        ValueError: the domain has fewer samples than ranks.
    """
    if shard_of(data) is not None:
        return data
    from landscape.domains import as_batches

    parts = world_size() if parts is None else parts
    index = rank() if index is None else index
    batches = as_batches(data, name)
    n = len(batches.dataset) if isinstance(batches, DataLoader) else total_samples(batches)
    if n < parts:
        raise ValueError(
            f"domain {name!r} has {n} samples, fewer than the {parts} ranks; run on fewer "
            "processes (torchrun --nproc_per_node) or give it more samples"
        )
    bounds = shard_bounds(n, parts)
    start, stop = bounds[index]
    if isinstance(batches, DataLoader):
        out = _cut_loader(batches, start, stop, name)
    else:
        out = _cut_batches(batches, start, stop)
    counts = tuple(b - a for a, b in bounds)
    out.shard = ShardInfo(name, index, n, start, stop, counts)
    record_share(f"data/{name}", list(counts))
    return out


def shard_domains(domains: Mapping) -> Mapping:
    """``{name: this rank's shard}``; the mapping itself (unchanged) on one rank."""
    if world_size() == 1:
        return domains
    return {name: shard_data(data, str(name)) for name, data in domains.items()}


def mean_over_ranks(data, *values):
    r"""Means over the shards' means: :math:`\frac1N \sum_r n_r \bar q_r` for each value
    (floats or tensors), in ONE all-reduce; ``values`` unchanged for plain data.

    Returns a tuple (floats stay floats, tensors keep dtype, device and shape).
    """
    info = shard_of(data)
    if info is None or world_size() == 1:
        return values
    like = next((v for v in values if isinstance(v, Tensor)), None)
    dtype = torch.float64 if like is None or like.dtype == torch.float32 else like.dtype
    device = like.device if like is not None else "cpu"
    flat = [torch.as_tensor(v, dtype=dtype, device=device).reshape(-1) for v in values]
    buffer = torch.cat(flat) * info.size
    all_reduce(buffer)
    buffer /= info.total
    out, offset = [], 0
    for v, f in zip(values, flat, strict=True):
        part = buffer[offset : offset + f.numel()]
        offset += f.numel()
        out.append(part.reshape(v.shape).to(v.dtype) if isinstance(v, Tensor) else float(part))
    return tuple(out)


# ----------------------------------------------------------------------- replicas agree


_WEIGHTS: dict = {}


def checksums(*arrays) -> Tensor:
    r"""``[3]`` float64 checksums of arrays or tensors: :math:`\sum x`, :math:`\sum w_i x_i`
    (fixed pseudo-random weights, so a permutation changes it) and :math:`\sum |x|`."""
    parts = [a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a)) for a in arrays]
    device = parts[0].device
    x = torch.cat([p.detach().reshape(-1).to(device, torch.float64) for p in parts])
    key = (x.numel(), str(device))
    if _WEIGHTS.get("key") != key:
        w = torch.cos(torch.arange(x.numel(), dtype=torch.float64, device=device) * 0.618)
        _WEIGHTS.update(key=key, w=w)
    return torch.stack([x.sum(), (_WEIGHTS["w"] * x).sum(), x.abs().sum()])


def check_replicas(what: str, *arrays, rtol: float = 1e-9) -> None:
    """Check that every rank holds the same ``arrays`` (one all-reduce of ``3 W`` numbers):
    raise :class:`ReplicaDriftError` on every rank at once if not."""
    if world_size() == 1:
        return
    slots = torch.zeros(world_size(), 3, dtype=torch.float64)
    slots[rank()] = checksums(*arrays)
    all_reduce(slots)
    compare_slots(slots, what, rtol)


def compare_slots(slots: Tensor, what: str, rtol: float) -> None:
    """Raise :class:`ReplicaDriftError` if the ranks' checksum rows differ beyond ``rtol``."""
    scale = float(slots[:, 2].max()) or 1.0
    diff = (slots[:, :2] - slots[0, :2]).abs().max(dim=1).values
    bad = [r for r in range(slots.shape[0]) if float(diff[r]) > rtol * scale]
    if bad:
        raise ReplicaDriftError(
            f"{what} differ across ranks (rank {bad[0]} holds other values than rank 0); every "
            "rank must compute the same replicated state: same seed, code and library versions"
        )


# ----------------------------------------------------------------------- records


def record_share(what: str, counts: list[int]) -> None:
    """Remember each rank's share of ``what`` (a domain's samples, a surface's rows)."""
    _SHARES[what] = [int(c) for c in counts]


def shares() -> dict[str, list[int]]:
    return dict(_SHARES)


def describe() -> dict | None:
    """What a result records of the run: ``{"world_size", "backend", "shares"}`` (``None``
    on one rank)."""
    if world_size() == 1:
        return None
    from landscape.distributed.group import backend

    return {"world_size": world_size(), "backend": backend(), "shares": shares()}
