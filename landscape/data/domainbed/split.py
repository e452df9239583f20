"""DomainBed's in / out split of each environment, index for index.

Facts from facebookresearch/DomainBed (``domainbed/lib/misc.py``, ``domainbed/scripts/train.py``):

* ``seed_hash(*args) = int(md5(str(args).encode("utf-8")).hexdigest(), 16) % 2**31``;
* ``split_dataset(dataset, n, seed)`` shuffles ``keys = list(range(len(dataset)))`` with
  ``np.random.RandomState(seed).shuffle`` and returns ``(keys[:n], keys[n:])``;
* ``train.py`` splits environment ``env_i`` (its index among *all* environments) into
  ``out, in_ = split_dataset(env, int(len(env) * holdout_fraction),
  seed_hash(trial_seed, env_i))``; for a test environment it then splits ``in_`` once more,
  ``uda, in_ = split_dataset(in_, int(len(in_) * uda_holdout_fraction),
  seed_hash(trial_seed, env_i))`` (with the default ``uda_holdout_fraction = 0`` the same
  samples in another order).

The ``in`` split of a training environment is what DomainBed trained on; ``out`` is its
validation split (training-domain model selection).
"""

from __future__ import annotations

import hashlib
import math
from numbers import Real

import numpy as np

#: The splits :func:`environment_indices` knows.
SPLITS = ("in", "out", "all", "uda")


def seed_hash(*args) -> int:
    """DomainBed's seed of ``args``: the md5 of ``str(args)`` modulo ``2**31``.

    Example:
        >>> seed_hash(0, 0) == int(hashlib.md5(b"(0, 0)").hexdigest(), 16) % 2**31
        True
    """
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % (2**31)


def split_keys(n: int, n_first: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DomainBed's ``split_dataset`` on ``range(n)``: ``(keys[:n_first], keys[n_first:])``.

    ``keys`` is ``0 .. n-1`` shuffled by ``np.random.RandomState(seed).shuffle`` (the same
    permutation whether the keys are a list, as in DomainBed, or an array, as here).

    Returns:
        Two ``int64`` arrays ``[n_first]`` and ``[n - n_first]`` of positions in ``range(n)``.
    """
    if not 0 <= n_first <= n:
        raise ValueError(f"cannot take {n_first} of {n} samples")
    keys = np.arange(n, dtype=np.int64)
    np.random.RandomState(seed).shuffle(keys)
    return keys[:n_first], keys[n_first:]


def _check_fraction(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{what} must be a number in [0, 1], got {value!r}")
    if math.isnan(value) or not 0 <= value <= 1:
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return float(value)


def environment_indices(
    n: int,
    env_i: int,
    split: str,
    *,
    holdout_fraction: float = 0.2,
    trial_seed: int = 0,
    test_env: bool = False,
    uda_holdout_fraction: float = 0.0,
) -> np.ndarray:
    """Which samples of environment ``env_i`` (``n`` samples) form ``split``, in DomainBed's order.

    Args:
        n: the environment's size.
        env_i: its index among all of the data set's environments (the seed depends on it).
        split: ``"in"`` (trained on, for a training environment), ``"out"`` (held out),
            ``"all"`` (``0 .. n-1``) or ``"uda"`` (a test environment's unlabelled part, empty
            unless ``uda_holdout_fraction > 0``).
        holdout_fraction: ``--holdout_fraction`` of the run.
        trial_seed: ``--trial_seed`` of the run.
        test_env: whether ``env_i`` is one of the run's ``--test_envs``.
        uda_holdout_fraction: ``--uda_holdout_fraction`` of the run.

    Returns:
        ``int64 [m]`` positions in the environment, e.g. ``m = n - int(n * holdout_fraction)``
        for ``"in"``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    holdout_fraction = _check_fraction(holdout_fraction, "holdout_fraction")
    uda_holdout_fraction = _check_fraction(uda_holdout_fraction, "uda_holdout_fraction")
    if split == "all":
        return np.arange(n, dtype=np.int64)
    seed = seed_hash(trial_seed, env_i)
    out, in_ = split_keys(n, int(n * holdout_fraction), seed)
    if split == "out":
        return out
    uda = in_[:0]
    if test_env:
        uda_keys, in_keys = split_keys(len(in_), int(len(in_) * uda_holdout_fraction), seed)
        uda, in_ = in_[uda_keys], in_[in_keys]
    return in_ if split == "in" else uda
