"""Two gloo ranks on the CPU (spawned here, one thread each) against one process."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from landscape import distributed as dist
from landscape.io import load_arrays
from tests.distributed import _cases


def test_shard_bounds_exact():
    for n in (1, 2, 7, 100, 101):
        for parts in (1, 2, 3, 4):
            if n < parts:
                continue
            bounds = dist.shard_bounds(n, parts)
            sizes = [b - a for a, b in bounds]
            assert bounds[0][0] == 0 and bounds[-1][1] == n and sum(sizes) == n
            assert max(sizes) - min(sizes) <= 1
            assert all(bounds[r][1] == bounds[r + 1][0] for r in range(parts - 1))


@pytest.mark.parametrize("kind", ["list", "loader"])
def test_shard_data_covers_each_sample_once(kind):
    X = torch.arange(23.0)[:, None]
    y = torch.arange(23)
    data = (
        [(X[:10], y[:10]), (X[10:11], y[10:11]), (X[11:], y[11:])]
        if kind == "list"
        else DataLoader(TensorDataset(X, y), batch_size=4, shuffle=False)
    )
    seen = []
    for r in range(3):
        shard = dist.shard_data(data, "d", parts=3, index=r)
        info = dist.shard_of(shard)
        assert info.total == 23 and info.counts == (8, 8, 7) and info.rank == r
        got = torch.cat([b[1] for b in shard]).tolist()
        assert got == list(range(info.start, info.stop))
        seen += got
    assert seen == list(range(23))  # no sample padded, dropped or repeated


def test_too_few_samples_and_single_process_identity():
    with pytest.raises(ValueError, match="fewer than the 3 ranks"):
        dist.shard_data([(torch.zeros(2, 1), torch.zeros(2))], "tiny", parts=3, index=0)
    domains = {"a": [(torch.zeros(3, 1), torch.zeros(3))]}
    assert dist.shard_domains(domains) is domains  # one process: untouched
    assert dist.world_size() == 1 and dist.rank() == 0 and dist.is_root()
    assert dist.mean_over_ranks(domains["a"], 1.5) == (1.5,)


def test_two_ranks_equal_one_process(tmp_path):
    """HVPs (blocks of 3, Hessian / GGN / EF), risks, gradients, top-3 eigenvalues, I^eps
    (dense head and matrix-free whole network) and a 5 x 5 surface: 2 ranks = 1 process, on
    domains of 101, 150 and 77 samples (lists of uneven batches and a DataLoader)."""
    outcomes = dist.run_ranks(_cases.compute, 2, str(tmp_path))
    assert outcomes == [None, None]
    single = _cases.compute()
    ranks = [load_arrays(tmp_path / f"rank{r}.npz") for r in range(2)]
    for key, want in single.items():
        for r, got in enumerate(ranks):
            np.testing.assert_allclose(got[key], want, rtol=1e-9, atol=1e-12, err_msg=f"{key} r{r}")
    meta = json.loads((tmp_path / "dense.json").read_text())  # only rank 0 wrote it
    assert meta["distributed"]["world_size"] == 2
    assert meta["distributed"]["shares"]["data/a"] == [51, 50]
    assert meta["distributed"]["shares"]["data/c"] == [39, 38]
    assert meta["distributed"]["shares"]["surface/rows"] == [3, 2]
    assert sorted(p.name for p in (tmp_path / "rows").glob("row_*.npz")) == [
        f"row_{i:05d}.npz" for i in range(5)
    ]  # each rank saved its rows: a rerun resumes


def test_failing_rank_stops_the_others_with_its_message():
    start = time.perf_counter()
    outcomes = dist.run_ranks(_cases.fail_on_rank_one, 2, timeout=60)
    assert outcomes[1] == "ValueError: domain 'b' is broken on rank 1; fix it"
    assert outcomes[0].startswith("RankFailedError: rank 1 failed: ValueError: domain 'b'")
    assert time.perf_counter() - start < 30  # no hang (the collective timeout is 60 s)


def test_directions_that_differ_raise_on_every_rank():
    outcomes = dist.run_ranks(_cases.other_directions, 2, timeout=60)
    assert all(o and o.startswith("ReplicaDriftError: the surface's directions") for o in outcomes)
