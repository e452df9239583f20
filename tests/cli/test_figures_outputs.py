"""``landscape figures PATH`` draws the outputs of ``landscape score``, ``surface`` and
``curvature`` (detected by the files present), not only a run folder."""

from __future__ import annotations

import pytest
import torch

from landscape.cli import main
from tests.plot.checks import png_size_and_dpi


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


COMMANDS = {
    "score": (["--params", "classifier", "--no-check"], {"score_parts", "score_pairs"}),
    "surface": (["--grid", "-1", "1", "3"], {"surface"}),
    "curvature": (["--params", "classifier", "--methods", "variance", "diagonal"],
                  {"curvature_variance", "curvature_diagonal"}),
}  # fmt: skip


@pytest.mark.parametrize("command", list(COMMANDS))
def test_figures_draws_a_command_output(command, checkpoint, tmp_path, capsys):
    options, expected = COMMANDS[command]
    out = tmp_path / command
    assert main([command, str(checkpoint), "--quiet", "--out", str(out), *options]) == 0
    figures = tmp_path / "figures"
    assert main(["figures", str(out), "--out", str(figures)]) == 0
    drawn = {p.name for p in figures.iterdir()}
    assert {f"{stem}.{fmt}" for stem in expected for fmt in ("png", "pdf")} <= drawn
    for stem in expected:  # 300 dpi, one column or the full width of a two-column paper
        width, _, dpi = png_size_and_dpi(figures / f"{stem}.png")
        assert dpi == pytest.approx(300, abs=1) and width in (990, 2070)
        assert (figures / f"{stem}.pdf").stat().st_size > 0


def test_figures_of_another_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["figures", str(tmp_path), "--out", str(tmp_path / "figures")])
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "score.json" in line and "not a run folder" in line
