"""Infinite minibatch loaders of the training domains, DomainBed's ``InfiniteDataLoader`` made
resumable.

DomainBed (``domainbed/lib/fast_data_loader.py``) trains from each training environment's
*in* split with ``RandomSampler(replacement=True)`` wrapped in ``BatchSampler(batch_size,
drop_last=True)``, repeated forever: every batch is ``batch_size`` indices drawn uniformly
*with replacement*, independently of the previous batches. Here each batch is drawn as
``torch.randint(n, (batch_size,), generator=g)`` from the domain's own seeded
``torch.Generator`` (the same distribution; DomainBed's sampler draws from a seed taken off
the global stream), and, for an augmented image data set, one augmentation seed per sample
(``torch.randint(2**62, ...)``, :mod:`~landscape.training.minibatch.augment`) from the same
generator. Batches are built by ``DataLoader`` workers (``num_workers``), pinned on CUDA.

Resume: the sampler runs ahead of training by the workers' prefetch, so it remembers the
generator's state after each of its last batches; :meth:`InfiniteLoader.state` is the state
after the batches training has *consumed*, and :meth:`InfiniteLoader.restore` continues from
it, so a resumed run draws exactly the batches an uninterrupted one draws.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from landscape.data.domainbed.images import ImageEnvironment
from landscape.training.minibatch.augment import augment_image

#: Upper bound (exclusive) of the per-sample augmentation seeds.
AUGMENT_SEED_BOUND = 2**62


def _as_batch(batch):
    """``collate_fn``: the dataset's ``__getitems__`` already returned ``(X, y)``."""
    return batch


class AugmentedImages(Dataset):
    """An image environment read with DomainBed's training augmentation.

    ``__getitems__([(index, seed), ...])`` returns ``X`` float32 ``[B, 3, 224, 224]`` (sample
    ``index`` augmented as seed ``seed`` says) and ``y`` int64 ``[B]``.
    """

    def __init__(self, env: ImageEnvironment) -> None:
        self.env = env

    def __len__(self) -> int:
        return len(self.env)

    def __getitems__(self, pairs) -> tuple[Tensor, Tensor]:
        picked = [(self.env.samples[int(i)], int(seed)) for i, seed in pairs]
        X = torch.stack([augment_image(path, seed) for (path, _), seed in picked])
        return X, torch.tensor([label for (_, label), _ in picked], dtype=torch.int64)


class InfiniteBatchSampler:
    """Batches of ``batch_size`` indices of ``range(n)`` drawn with replacement, forever.

    Args:
        n: samples in the domain (> 0).
        batch_size: indices per batch.
        seed: seed of the sampler's own ``torch.Generator``.
        augment: also draw one augmentation seed per index (batches of ``(index, seed)``).
        keep: how many of the latest states to remember (more than the batches the loader
            may prefetch).
    """

    def __init__(self, n: int, batch_size: int, seed: int, augment: bool, keep: int = 64):
        if n < 1:
            raise ValueError("cannot draw minibatches from an empty domain")
        self.n, self.batch_size, self.augment, self.keep = n, batch_size, augment, keep
        self.generator = torch.Generator().manual_seed(int(seed))
        self.drawn = 0
        self._states = {0: self.generator.get_state()}

    def __iter__(self) -> Iterator[list]:
        while True:
            index = torch.randint(self.n, (self.batch_size,), generator=self.generator)
            if self.augment:
                seeds = torch.randint(
                    AUGMENT_SEED_BOUND, (self.batch_size,), generator=self.generator
                )
                batch = list(zip(index.tolist(), seeds.tolist(), strict=True))
            else:
                batch = index.tolist()
            self.drawn += 1
            self._states[self.drawn] = self.generator.get_state()
            self._states.pop(self.drawn - self.keep, None)
            yield batch

    def state_after(self, batches: int) -> Tensor:
        """The generator's state after ``batches`` batches (``uint8`` tensor)."""
        if batches not in self._states:
            raise RuntimeError(
                f"the sampler no longer knows its state after batch {batches} (it drew "
                f"{self.drawn}); raise keep above the loader's prefetch"
            )
        return self._states[batches].clone()

    def restore(self, state: Tensor, batches: int) -> None:
        """Continue as after ``batches`` batches whose generator state was ``state``."""
        self.generator.set_state(state.clone())
        self.drawn = batches
        self._states = {batches: self.generator.get_state()}


class InfiniteLoader:
    """An endless iterator of ``(X, y)`` minibatches of one training domain.

    Args:
        dataset: an environment with ``__getitems__`` (indices, or ``(index, seed)`` pairs
            when ``augment``) returning ``(X, y)`` CPU tensors.
        batch_size: samples per batch.
        seed: seed of the domain's sampler.
        augment: the dataset takes ``(index, seed)`` pairs (augmented images).
        num_workers: DataLoader worker processes building the batches.
        pin_memory: pin the batches (when training on CUDA).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        seed: int,
        augment: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        keep = 4 * max(num_workers, 1) + 16  # DataLoader prefetches 2 batches per worker
        self.sampler = InfiniteBatchSampler(len(dataset), batch_size, seed, augment, keep)
        self.loader = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=_as_batch,
            pin_memory=pin_memory,
            # its own generator for the workers' base seed, so that starting the iterator
            # draws nothing from the global stream (the algorithm's dropout, say)
            generator=torch.Generator().manual_seed(int(seed)),
        )
        self._iterator = None
        self.consumed = 0

    def __iter__(self) -> InfiniteLoader:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        batch = next(self._iterator)
        self.consumed += 1
        return batch

    def state(self) -> Tensor:
        """The sampler's generator state after the batches consumed so far."""
        return self.sampler.state_after(self.consumed)

    def restore(self, state: Tensor, consumed: int) -> None:
        """Continue after ``consumed`` batches (call before the first ``next``)."""
        if self._iterator is not None:
            raise RuntimeError("restore a loader before drawing from it")
        self.sampler.restore(state, consumed)
        self.consumed = consumed

    def close(self) -> None:
        """Stop the worker processes."""
        self._iterator = None
