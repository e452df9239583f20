"""DomainBed's ``Debug28`` / ``Debug224``: three environments of 16 random samples.

Facts from facebookresearch/DomainBed (``domainbed/datasets.py``): for each of the three
environments in turn, ``torch.randn(16, *INPUT_SHAPE)`` then ``torch.randint(0, 2, (16,))``
on the global CPU stream seeded by ``torch.manual_seed(args.seed)``. Here a
``torch.Generator`` seeded with ``--seed`` draws the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

DEBUG_SIZE = 16


class TensorEnvironment(Dataset):
    """An environment held as float tensors ``X [n, ...]`` and ``y [n]``."""

    def __init__(self, X: Tensor, y: Tensor) -> None:
        self.X, self.y = X, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.X[index], self.y[index]

    def __getitems__(self, indices) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.X[index], self.y[index]

    def subset(self, indices: np.ndarray) -> TensorEnvironment:
        """The samples at ``indices``, in that order."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return TensorEnvironment(self.X[index], self.y[index])


def debug_environments(input_shape: tuple[int, ...], *, seed: int = 0) -> list[TensorEnvironment]:
    """The three environments of DomainBed's ``Debug`` data set of ``input_shape``, ``--seed``."""
    generator = torch.Generator().manual_seed(seed)
    envs = []
    for _ in range(3):
        X = torch.randn(DEBUG_SIZE, *input_shape, generator=generator)
        y = torch.randint(0, 2, (DEBUG_SIZE,), generator=generator)
        envs.append(TensorEnvironment(X, y))
    return envs
