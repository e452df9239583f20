"""``--threads``: every command runs with the chosen torch and BLAS thread counts."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info

import landscape.cli.data as data_cmd
from landscape.cli import main


def _pools() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info()]


@pytest.mark.parametrize("threads", [1, 2])
def test_command_runs_with_the_chosen_threads_and_restores_them(threads, monkeypatch, tmp_path):
    seen = {}

    def fake_run(args):
        seen["torch"] = torch.get_num_threads()
        seen["pools"] = _pools()
        return 0

    monkeypatch.setattr(data_cmd, "run", fake_run)
    before_torch, before_pools = torch.get_num_threads(), _pools()
    assert main(["data", "where", "--threads", str(threads), "--data-dir", str(tmp_path)]) == 0
    assert seen["torch"] == threads
    assert seen["pools"] and all(n == threads for n in seen["pools"])
    assert torch.get_num_threads() == before_torch
    assert _pools()[: len(before_pools)] == before_pools


def test_default_threads_come_from_omp_num_threads(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(data_cmd, "run", lambda args: seen.setdefault("n", torch.get_num_threads()))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    main(["data", "where", "--data-dir", str(tmp_path)])
    assert seen["n"] == 1
