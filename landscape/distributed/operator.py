r"""Curvature operators over a sharded domain: one all-reduce per block of products.

A rank's operator (:class:`~landscape.curvature.operators.CurvatureOperator` on its shard of
:math:`n_r` samples) computes the mean over its shard, :math:`A_r V`. The domain's matrix is
:math:`A = \frac1N \sum_i A_i = \sum_r \frac{n_r}{N} A_r`, so a block ``V [D, k]`` gives

.. math:: A V = \frac1N \operatorname{all\_reduce}_r\bigl(n_r\, A_r V\bigr)

in **one** collective of ``k D`` numbers (plus ``3 W`` checksum numbers: each rank writes
:func:`~landscape.distributed.shard.checksums` of its input ``V`` in its own slot, so every
rank sees whether all multiplied the same vectors; a replica that drifted raises
:class:`~landscape.distributed.group.ReplicaDriftError` on every rank at once, not a wrong
sum). Risks, gradients and closed-form dense matrices are means too (one collective each).
No DDP: it does not support double backward, and it would reduce after every backward.

:func:`sharded_class` derives, once per operator class, the class whose ``_block`` (the one
place every product goes through: ``matvec``, ``matmat``, ``dense``, SciPy and curvlinops
products) reduces; ``CurvatureOperator`` builds it for data that is a shard
(:func:`~landscape.distributed.shard.shard_of`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape.distributed.group import all_reduce, rank, world_size
from landscape.distributed.shard import checksums, compare_slots, mean_over_ranks, shard_of

__all__ = ["ShardedProducts", "sharded_class", "reduce_block"]

_CLASSES: dict[type, type] = {}


def reduce_block(local: Tensor, info, Vt: Tensor) -> Tensor:
    """``(A V)^T [k, D]`` from this rank's ``(A_r V)^T`` (module docstring), checking that
    every rank multiplied the same ``Vt [k, D]``."""
    W = world_size()
    if W == 1:
        return local
    m = local.numel()
    buffer = torch.zeros(m + 3 * W, dtype=local.dtype, device=local.device)
    buffer[:m] = local.reshape(-1) * info.size
    buffer[m + 3 * rank() : m + 3 * rank() + 3] = checksums(Vt).to(buffer)
    all_reduce(buffer)
    rtol = 1e-5 if local.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
    compare_slots(buffer[m:].reshape(W, 3).double().cpu(), "the vectors of a product", rtol)
    return (buffer[:m] / info.total).reshape(local.shape)


class ShardedProducts:
    """Mixin placed before a curvature operator class: its products, risk, gradient and
    closed-form dense matrix are those of the whole domain (module docstring)."""

    def __init__(self, model, loss_func, data, *args, **kwargs):
        super().__init__(model, loss_func, data, *args, **kwargs)
        self.shard = shard_of(data)

    def _block(self, Vt: Tensor) -> Tensor:
        return reduce_block(super()._block(Vt), self.shard, Vt)

    def risk(self) -> float:
        return mean_over_ranks(self.shard, super().risk())[0]

    def gradient(self) -> Tensor:
        return mean_over_ranks(self.shard, super().gradient())[0]

    def dense(self, max_dim=None, method="auto", block_size=16, accumulate=None) -> Tensor:
        """The domain's ``[D, D]``: products are reduced already; a closed form (a mean of
        the shard) is reduced here, after the ranks agree that each has one (else all take
        products)."""
        from landscape.curvature.closed_form import NoClosedForm
        from landscape.curvature.operators import MAX_DENSE_DIM

        max_dim = MAX_DENSE_DIM if max_dim is None else max_dim
        if method not in ("auto", "closed-form"):
            return super().dense(max_dim, method, block_size, accumulate)
        try:
            mat, why = super().dense(max_dim, "closed-form", block_size, accumulate), None
        except NoClosedForm as err:
            mat, why = None, err
        missing = all_reduce(torch.tensor([0.0 if why is None else 1.0]))
        if float(missing) == 0:
            return mean_over_ranks(self.shard, mat)[0]
        self._closed = None
        if method == "closed-form":
            raise NoClosedForm(str(why) if why else "another rank has no closed form")
        return super().dense(max_dim, "products", block_size, accumulate)

    def __repr__(self) -> str:
        info = self.shard
        return f"{super().__repr__()[:-1]}, shard={info.start}:{info.stop} of {info.total})"


def sharded_class(cls: type) -> type:
    """The class of ``cls``'s operators on a shard (built once per class)."""
    if issubclass(cls, ShardedProducts):
        return cls
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Sharded{cls.__name__}", (ShardedProducts, cls), {})
    return _CLASSES[cls]
