"""An unshuffled DataLoader that fetches whole batches and puts them on a device.

Environments here are ``torch.utils.data.Dataset`` objects with ``__getitems__(indices)``
returning one ``(X, y)`` batch (PyTorch's ``DataLoader`` calls it with the batch's indices),
so a batch of MNIST digits is converted in one tensor operation and an image batch is
decoded image by image; nothing but the current batch is held in memory. The loader casts
``X`` to the requested dtype and moves both tensors to the requested device, after the
batch has been built (on CPU, in a worker process when ``num_workers > 0``).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def _as_batch(batch):
    """``collate_fn``: the dataset's ``__getitems__`` already returned ``(X, y)``."""
    return batch


class DomainLoader(DataLoader):
    """An unshuffled loader of ``(X, y)`` batches of ``dataset`` on ``device``.

    Args:
        dataset: a dataset whose ``__getitems__(list_of_indices)`` returns ``(X, y)`` CPU
            tensors ``[B, ...]`` and ``[B]``.
        batch_size: samples per batch (the last batch may be smaller).
        device: where the batches go.
        dtype: floating dtype of ``X``.
        num_workers: worker processes building batches (``0``: in the calling process).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        num_workers: int = 0,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=_as_batch,
        )
        self.device = torch.device(device)
        self.dtype = dtype

    def __iter__(self):
        for X, y in super().__iter__():
            yield self._place(X, y)

    def _place(self, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return X.to(self.device, self.dtype), y.to(self.device)
