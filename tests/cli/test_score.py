"""``landscape score``: the empirical check's steps default to the library's."""

from __future__ import annotations

import pytest
import torch

import landscape.inconsistency
from landscape.cli import build_parser, main


def _score_parser():
    parser = build_parser()
    (sub,) = parser._subparsers._group_actions
    return sub.choices["score"]


def test_check_steps_help_states_the_library_default_and_the_cost():
    from landscape.inconsistency import CheckOptions

    (action,) = [a for a in _score_parser()._actions if a.dest == "check_steps"]
    assert action.default is None  # not passed: the library decides
    text = " ".join(action.help.split())
    assert f"Default {CheckOptions().steps}, the library's" in text
    assert "two gradients" in text and "lower bound" in text


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import data_spec
    from landscape.models import MLP

    torch.manual_seed(0)
    model = MLP(5, [4], 1).double()
    spec = data_spec("gaussian_classification", n_domains=2, n=40, dim=4)
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta)


@pytest.mark.parametrize("given, passed", [([], None), (["--check-steps", "3"], 3)])
def test_check_steps_reach_the_library_only_when_given(
    checkpoint, tmp_path, monkeypatch, given, passed
):
    real, seen = landscape.inconsistency.inconsistency_score, {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(landscape.inconsistency, "inconsistency_score", spy)
    argv = ["score", str(checkpoint), "--params", "classifier", "--quiet",
            "--out", str(tmp_path / "out"), *given]  # fmt: skip
    assert main(argv) == 0
    assert seen.get("check_steps") == passed and seen["check"] is True
