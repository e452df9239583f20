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


@pytest.fixture
def trained_relu(tmp_path):
    """A small ReLU network trained to a minimum: its Hessian is indefinite."""
    from torch.nn.functional import binary_cross_entropy_with_logits as bce

    from landscape.checkpoint import save_checkpoint
    from landscape.data import build_domains, data_spec
    from landscape.models import MLP

    spec = data_spec("gaussian_classification", n_domains=2, n=40, dim=4)
    batches = [batch[0] for batch in build_domains(spec).values()]
    torch.manual_seed(0)
    model = MLP(5, [6], 1).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        sum(bce(model(x), y.double().reshape(-1, 1)) for x, y in batches).backward()
        opt.step()
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "relu", model, meta)


def test_default_remedy_scores_a_trained_relu_network(trained_relu, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    assert main(["score", str(trained_relu), "--quiet", "--no-check", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "remedy: top-k (k=20)" in text and "--remedy none" in text
    saved = json.loads((out / "score_summary.json").read_text())
    assert saved["remedy"] == "top-k"


def test_remedy_none_is_the_strict_score(trained_relu, tmp_path, capsys):
    argv = ["score", str(trained_relu), "--quiet", "--no-check", "--remedy", "none",
            "--out", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "indefinite" in line and "--remedy" in line


def test_default_k_is_below_the_dimension():
    from landscape.cli._common import default_k

    assert default_k(43) == 20 and default_k(5) == 4 and default_k(1) == 1


def test_spelled_out_constants_are_the_library_s():
    """The command spells out the library's numbers (no torch import to parse)."""
    from landscape.cli import score as cli_score
    from landscape.inconsistency import AUTO_DENSE_DIM

    assert cli_score.AUTO_DENSE_DIM == AUTO_DENSE_DIM
    assert build_parser().parse_args(["score", "x.safetensors"]).method == "auto"
