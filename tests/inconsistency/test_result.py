"""The result: save / load, table, summary."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from landscape.inconsistency import (
    InconsistencyResult,
    inconsistency_score,
)
from tests.cases import make_binary_domains, make_mlp
from tests.inconsistency.helpers import (
    assert_unchanged,
    snapshot,
)


def test_result_saves_loads_and_prints(tmp_path):
    model = make_mlp(dim=4, hidden=(3,))
    domains = make_binary_domains(3, n=40, dim=4)
    model.featurizer[1].weight.requires_grad_(False)
    snap = snapshot(model)
    res = inconsistency_score(
        model,
        nn.BCEWithLogitsLoss(),
        domains,
        0.01,
        params="classifier",
        progress=False,
        check_steps=5,
    )
    assert_unchanged(model, snap)
    path = res.save(tmp_path / "score")
    back = InconsistencyResult.load(path)
    assert back.score == res.score and back.pair == res.pair
    np.testing.assert_array_equal(back.values, res.values)
    np.testing.assert_array_equal(back.direction, res.direction)
    assert back.definiteness["d0"]["status"] == res.definiteness["d0"]["status"]
    np.testing.assert_array_equal(back.check["line_value"], res.check["line_value"])
    named = back.direction_by_name()
    assert named["classifier.weight"].shape == (1, 3)
    np.testing.assert_array_equal(
        np.concatenate([v.ravel() for v in named.values()]), res.direction
    )
    text = str(back)
    assert "winning pair" in text and f"{res.pair[0]} -> {res.pair[1]}" in text
    assert "empirical" in text
    assert math.isfinite(res.summary()["scores"][0]["empirical_search"])


def test_table_cells_never_run_together():
    """Cells wider than the old fixed columns (10 or 12 characters) touched: ``0.0010.00523975``."""
    domains = make_binary_domains(2, n=20, dim=4)
    res = inconsistency_score(
        make_mlp(dim=4, hidden=(3,)), nn.BCEWithLogitsLoss(), domains, 0.001,
        params="classifier", check=False, progress=False,
    )  # fmt: skip
    wide = np.array([[0.001, -0.00523975123], [-1.23456789e-05, -123456.789]])
    res.risk_gap[...] = wide
    res.values[0] = wide
    res.first_order[...] = [[-1.23456789e-05, -9.87654321e-07]]
    lines = res.table().splitlines()
    for title in ("risk gap", "pairwise value at eps=0.001"):
        at = next(i for i, line in enumerate(lines) if line.startswith(title))
        for i, name in enumerate(res.domains):
            cells = lines[at + 2 + i].split()
            assert cells[0] == name
            np.testing.assert_allclose([float(c) for c in cells[1:]], wide[i], rtol=1e-5)
    at = next(i for i, line in enumerate(lines) if line == "winning pair and its parts")
    cells = lines[at + 2].split()
    assert cells[1:4] == [res.pair[0], "->", res.pair[1]]
    assert [float(c) for c in cells[7:9]] == [-1.23457e-05, -9.87654e-07]
