"""``landscape curvature``: the diagonal method's choices, default and record."""

from __future__ import annotations

import json

import pytest
import torch

from landscape.cli import build_parser, main


def test_diagonal_method_offers_every_library_method_and_defaults_to_auto():
    from landscape.curvature import DiagonalMethod

    parser = build_parser()
    (action,) = [
        a
        for sub in parser._subparsers._group_actions
        for a in sub.choices["curvature"]._actions
        if a.dest == "diagonal_method"
    ]
    assert action.choices == [m.value for m in DiagonalMethod]
    assert action.default == DiagonalMethod.AUTO.value == "auto"
    text = " ".join(action.help.split())
    for choice in action.choices:
        assert f"{choice} " in text, choice
    assert "standard error" in text and "torch.func" in text and "BackPACK" in text


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.models import MLP

    torch.manual_seed(0)
    model = MLP(5, [6], 1).double().eval()
    spec = {"name": "gaussian_classification", "n": 40, "dim": 4, "seed": 1}
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta)


@pytest.mark.parametrize(
    "given, method, exact",
    [([], "exact", True), (["--diagonal-method", "hutchinson"], "hutchinson", False)],
)
def test_diagonal_records_the_method_that_ran(checkpoint, tmp_path, given, method, exact):
    from landscape.curvature import HessianDiagonalResult

    out = tmp_path / "out"
    argv = ["curvature", str(checkpoint), "--params", "classifier", "--methods", "diagonal",
            "--probes", "4", "--quiet", "--out", str(out), *given]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "curvature_summary.json").read_text())
    assert summary["diagonal"]["method"] == method and summary["diagonal"]["exact"] is exact
    saved = HessianDiagonalResult.load(out / "diagonal")
    assert saved.settings["method"] == method
    assert bool(saved.standard_error) is not exact  # Hutchinson reports its standard error
