r"""A loss surface over ranks: grid rows dealt out, directions checked, rows gathered once.

Row :math:`i` of an :math:`A \times B` grid belongs to rank :math:`i \bmod W` (dealt
round-robin: rows cost the same, so ranks get :math:`\lceil A/W \rceil` or
:math:`\lfloor A/W \rfloor`). Every rank holds every domain's whole data and the same plane:
the directions (regenerated from their seed, or loaded) and the model's weights are compared
by checksum first (:func:`~landscape.distributed.shard.check_replicas`: a mismatch is one
error on every rank, not a hang or a wrong surface). A rank saves each finished row to the
checkpoint folder (resumable: a rerun, with any number of ranks, skips the rows there), and
:func:`gather_rows` sums the ranks' rows, zero elsewhere, in one all-reduce of
``[K, A, B]`` numbers (``K`` = loss and accuracy per domain).
"""

from __future__ import annotations

import numpy as np
import torch

from landscape.distributed.group import all_reduce, rank, world_size
from landscape.distributed.shard import check_replicas, record_share

__all__ = ["owned_rows", "gather_rows", "check_plane"]


def owned_rows(num_rows: int) -> list[int]:
    """The grid rows this rank evaluates (all of them on one rank); records the shares."""
    W = world_size()
    if W > 1:
        record_share("surface/rows", [len(range(r, num_rows, W)) for r in range(W)])
    return list(range(rank(), num_rows, W))


def check_plane(model, directions) -> None:
    """Raise on every rank if the directions or the model's weights differ across ranks."""
    if world_size() == 1:
        return
    tensors = [*directions.d1.values(), *directions.d2.values()]
    tensors += list((directions.origin or {}).values())
    tensors += [p.detach() for p in model.parameters()]
    check_replicas("the surface's directions or model weights", *tensors, rtol=1e-12)


def gather_rows(rows: dict[int, dict], mine: list[int], names: list[str], shape: tuple):
    """Every row ``{i: {"loss/<d>": [B], "acc/<d>": [B]}}`` of the ``shape = (A, B)`` grid on
    every rank, from each rank's own rows ``mine`` (one all-reduce); ``rows`` unchanged on
    one rank."""
    if world_size() == 1:
        return rows
    keys = [f"{kind}/{n}" for n in names for kind in ("loss", "acc")]
    grid = torch.zeros(len(keys), *shape, dtype=torch.float64)
    for i in mine:
        for k, key in enumerate(keys):
            grid[k, i] = torch.from_numpy(np.asarray(rows[i][key], dtype=np.float64))
    all_reduce(grid)
    return {i: {key: grid[k, i].numpy() for k, key in enumerate(keys)} for i in range(shape[0])}
