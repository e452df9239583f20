"""``landscape score`` end to end."""

from __future__ import annotations

import pytest
import torch

from landscape.inconsistency import (
    InconsistencyResult,
)


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import data_spec
    from landscape.models import MLP

    torch.manual_seed(0)
    model = MLP(5, [4], 1).double()
    spec = data_spec("gaussian_classification", n_domains=3, n=60, dim=4)
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta)


def test_cli_score_writes_the_result(checkpoint, tmp_path, capsys):
    from landscape.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "score",
            str(checkpoint),
            "--params",
            "classifier",
            "--epsilon",
            "1e-3",
            "1e-2",
            "--out",
            str(out),
            "--check-steps",
            "3",
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "winning pair" in text and "d0" in text and "d2" not in text
    res = InconsistencyResult.load(out / "score")
    assert res.domains == ["d0", "d1"] and res.epsilon.tolist() == [1e-3, 1e-2]
    assert (out / "score_summary.json").is_file()
    main(
        [
            "score",
            str(checkpoint),
            "--params",
            "classifier",
            "--domains",
            "d0",
            "d2",
            "--subsample",
            "20",
            "--no-check",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert InconsistencyResult.load(out / "score").num_samples == {"d0": 20, "d2": 20}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epsilon", "0"], "epsilon must be > 0"),
        (["--domains", "d0"], "needs at least 2 domains"),
        (["--domains", "d0", "d9"], "unknown domain 'd9'"),
        (["--method", "matrix-free", "--check", "--remedy", "none"], "--remedy damping|top-k"),
    ],
)
def test_cli_score_errors(checkpoint, tmp_path, capsys, args, message):
    from landscape.cli import main

    with pytest.raises(SystemExit) as info:
        main(["score", str(checkpoint), "--out", str(tmp_path), "--quiet", *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
