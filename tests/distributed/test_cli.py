"""``torchrun --nproc_per_node 2 -m landscape score ...`` equals the one-process command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from landscape.cli import main
from landscape.inconsistency import InconsistencyResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import data_spec
    from landscape.models import MLP

    torch.manual_seed(0)
    model = MLP(5, [4], 1).double()
    spec = data_spec("gaussian_classification", n_domains=2, n=41, dim=4)  # 41: odd shards
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta)


def test_torchrun_score_equals_one_process(checkpoint, tmp_path):
    args = ["score", str(checkpoint), "--params", "classifier", "--quiet", "--check-steps", "3"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         "2", "-m", "landscape", *args, "--threads", "1", "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("wrote ") == 1  # rank 0 alone prints
    one = InconsistencyResult.load(tmp_path / "one" / "score")
    two = InconsistencyResult.load(tmp_path / "two" / "score")
    np.testing.assert_allclose(two.values, one.values, rtol=1e-9)
    assert two.num_samples == one.num_samples == {"d0": 41, "d1": 41}
    meta = json.loads((tmp_path / "two" / "score.json").read_text())["distributed"]
    assert meta["world_size"] == 2 and meta["shares"]["data/d0"] == [21, 20]
