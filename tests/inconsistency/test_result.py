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
