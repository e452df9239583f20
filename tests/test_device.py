"""landscape.device: device choice and one thread count for torch and BLAS."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

from landscape.device import (
    MAX_DEFAULT_THREADS,
    available_cores,
    default_threads,
    resolve_device,
    set_threads,
)


def _pools() -> dict[str, int]:
    return {pool["filepath"]: pool["num_threads"] for pool in threadpool_info()}


def test_set_threads_reaches_torch_and_every_blas_pool():
    before_torch = torch.get_num_threads()
    limits = set_threads(1)
    try:
        info = threadpool_info()
        assert any(pool["user_api"] == "blas" for pool in info)  # NumPy / SciPy loaded
        for pool in info:
            assert pool["num_threads"] == 1, pool
        assert torch.get_num_threads() == 1
    finally:
        limits.restore()
    assert torch.get_num_threads() == before_torch


def test_set_threads_as_a_context_manager_restores():
    set_threads(1).restore()  # load every library first, so the pools below are comparable
    before_torch, before_pools = torch.get_num_threads(), _pools()
    with set_threads(2) as limits:
        assert limits.threads == 2 and torch.get_num_threads() == 2
        assert all(n == 2 for n in _pools().values())
    assert torch.get_num_threads() == before_torch
    assert _pools() == before_pools


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_set_threads_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        set_threads(bad)


def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    for value in ("", "0", "x"):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert default_threads() == max(1, min(available_cores(), MAX_DEFAULT_THREADS))
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= default_threads() <= MAX_DEFAULT_THREADS


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("gpu0")


def test_set_threads_is_a_top_level_name():
    import landscape
    import landscape.device

    assert landscape.set_threads is landscape.device.set_threads
