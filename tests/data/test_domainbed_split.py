"""DomainBed's in / out split (``misc.split_dataset`` + ``misc.seed_hash`` as ``train.py`` calls
them), against a literal re-implementation of DomainBed's code, and its random streams."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from landscape.data.domainbed import environment_indices, seed_hash, split_keys


def domainbed_seed_hash(*args):
    """DomainBed's ``misc.seed_hash``, as written there."""
    args_str = str(args)
    return int(hashlib.md5(args_str.encode("utf-8")).hexdigest(), 16) % (2**31)


def domainbed_split_dataset(n, n_first, seed):
    """DomainBed's ``misc.split_dataset`` on ``range(n)``: the keys of its two parts."""
    keys = list(range(n))
    np.random.RandomState(seed).shuffle(keys)
    return keys[:n_first], keys[n_first:]


def domainbed_env_splits(n, env_i, *, holdout, trial_seed, test_env, uda=0.0):
    """``train.py``'s splitting of environment ``env_i``: ``(in, out, uda)`` keys."""
    out, in_ = domainbed_split_dataset(n, int(n * holdout), domainbed_seed_hash(trial_seed, env_i))
    uda_keys = []
    if test_env:
        first, rest = domainbed_split_dataset(
            len(in_), int(len(in_) * uda), domainbed_seed_hash(trial_seed, env_i)
        )
        uda_keys, in_ = [in_[k] for k in first], [in_[k] for k in rest]
    return in_, out, uda_keys


def test_seed_hash_is_domainbeds():
    for args in [(0, 0), (0, 5), (3, 1), (12345, 2), ("a", 1)]:
        assert seed_hash(*args) == domainbed_seed_hash(*args)
    assert seed_hash(0, 0) == 894182419 and seed_hash(1, 2) == 1981683110  # pinned


@pytest.mark.parametrize("n", [1, 7, 11667])
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.5, 1.0])
def test_split_keys_is_split_dataset(n, fraction):
    seed = domainbed_seed_hash(2, 3)
    first, rest = split_keys(n, int(n * fraction), seed)
    want_first, want_rest = domainbed_split_dataset(n, int(n * fraction), seed)
    assert first.tolist() == want_first and rest.tolist() == want_rest
    assert first.dtype == rest.dtype == np.int64


@pytest.mark.parametrize("test_env", [False, True])
@pytest.mark.parametrize(
    ("n", "holdout", "uda"), [(11667, 0.2, 0.0), (23334, 0.1, 0.3), (9, 0.5, 0.5)]
)
def test_environment_indices_are_train_py_splits(n, holdout, uda, test_env):
    env_i, trial = 2, 4
    want_in, want_out, want_uda = domainbed_env_splits(
        n, env_i, holdout=holdout, trial_seed=trial, test_env=test_env, uda=uda
    )
    got = {
        split: environment_indices(
            n, env_i, split, holdout_fraction=holdout, trial_seed=trial, test_env=test_env,
            uda_holdout_fraction=uda,
        ).tolist()
        for split in ("in", "out", "uda", "all")
    }  # fmt: skip
    assert got["in"] == want_in and got["out"] == want_out and got["uda"] == want_uda
    assert len(got["out"]) == int(n * holdout)
    assert got["all"] == list(range(n))
    assert sorted(got["in"] + got["out"] + got["uda"]) == list(range(n))


def test_split_depends_on_env_index_and_trial_seed():
    a = environment_indices(100, 0, "out", trial_seed=0)
    assert a.tolist() != environment_indices(100, 1, "out", trial_seed=0).tolist()
    assert a.tolist() != environment_indices(100, 0, "out", trial_seed=1).tolist()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"split": "train"}, r"unknown split 'train'; use one of in, out, all, uda"),
        ({"holdout_fraction": 1.5}, r"holdout_fraction must be in \[0, 1\], got 1.5"),
        ({"holdout_fraction": float("nan")}, r"holdout_fraction must be in \[0, 1\]"),
        ({"uda_holdout_fraction": -0.1}, r"uda_holdout_fraction must be in \[0, 1\]"),
    ],
)
def test_bad_split_arguments(kwargs, match):
    args = {"split": "in", **kwargs}
    with pytest.raises(ValueError, match=match):
        environment_indices(10, 0, args.pop("split"), **args)


@pytest.mark.parametrize("seed", [0, 1, 2024])
def test_generator_draws_what_the_global_stream_draws(seed):
    """DomainBed draws from the global CPU stream after torch.manual_seed(args.seed); we draw
    from a torch.Generator seeded the same: randperm, rand, randn and randint must agree."""
    torch.manual_seed(seed)
    want = [torch.randperm(70_000), torch.rand(23_334), torch.rand(23_333)]
    want += [torch.randn(16, 3, 5, 5), torch.randint(0, 2, (16,))]
    g = torch.Generator().manual_seed(seed)
    got = [torch.randperm(70_000, generator=g), torch.rand(23_334, generator=g)]
    got += [torch.rand(23_333, generator=g), torch.randn(16, 3, 5, 5, generator=g)]
    got += [torch.randint(0, 2, (16,), generator=g)]
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)
