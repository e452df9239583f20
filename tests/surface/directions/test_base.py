"""Tests for landscape.surface.directions.base: the Directions dataclass."""

from __future__ import annotations

import pytest
from torch import nn

from landscape.surface.directions import (
    Directions,
    plane_directions,
    random_directions,
)
from tests.cases import make_mlp
from tests.surface.helpers import equal


def test_directions_from_another_model_are_rejected():
    dirs = random_directions(make_mlp(dim=6), seed=0)
    with pytest.raises(
        ValueError, match=r"built for another model: 'featurizer.1.weight' has shape"
    ):
        dirs.check_model(make_mlp(dim=7))
    with pytest.raises(ValueError, match="built for another model: it has no parameter"):
        dirs.check_model(nn.Sequential(nn.Linear(6, 1)))


def test_directions_save_and_load(tmp_path):
    model = make_mlp()
    dirs = random_directions(model, seed=5)
    dirs.save(tmp_path / "dirs")
    back = Directions.load(tmp_path / "dirs")
    assert equal(back.d1, dirs.d1) and equal(back.d2, dirs.d2)
    assert back.origin is None and back.seed == 5 and back.kind == "random"
    assert back.fingerprint() == dirs.fingerprint()
    assert back.describe()["normalization"] == "filter"

    plane = plane_directions(model, [make_mlp(seed=1), make_mlp(seed=2), make_mlp(seed=3)])
    plane.save(tmp_path / "plane.json")
    back = Directions.load(tmp_path / "plane.npz")
    assert equal(back.origin, plane.origin)
    assert back.info["points"] == plane.info["points"]
