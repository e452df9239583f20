"""Tests for landscape.surface.directions.inconsistency: the I^eps maximiser as a direction."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from landscape.params import flatten
from landscape.surface.directions import (
    inconsistency_directions,
)
from tests.cases import make_binary_domains, make_mlp
from tests.surface.helpers import equal


def test_inconsistency_directions_from_a_result():
    model = make_mlp()
    named = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    direction = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in named.items()}
    result = SimpleNamespace(direction=direction, pair=("d0", "d1"), epsilon=0.1, score=2.0)
    dirs = inconsistency_directions(result, seed=3)
    assert equal(dirs.d1, direction)
    u, v = flatten(dirs.d1), flatten(dirs.d2)
    assert abs(float(u @ v)) < 1e-10 * float(u.norm() * v.norm())
    torch.testing.assert_close(u.norm(), v.norm())
    assert dirs.info["pair"] == ["d0", "d1"] and dirs.seed == 3 and dirs.kind == "inconsistency"
    again = inconsistency_directions(result, seed=3)
    other = inconsistency_directions(result, seed=4)
    assert equal(again.d2, dirs.d2) and not torch.equal(flatten(other.d2), v)
    # a flat vector on the head, split with the model
    head = torch.randn(5, generator=g, dtype=torch.float64)
    flat = SimpleNamespace(direction=head, pair=("d1", "d0"), params="classifier")
    dirs = inconsistency_directions(flat, model=model)
    assert dirs.names == ["classifier.weight", "classifier.bias"]
    torch.testing.assert_close(flatten(dirs.d1), head)
    with pytest.raises(ValueError, match="flat vector; pass model="):
        inconsistency_directions(flat)
    with pytest.raises(ValueError, match="no maximising direction"):
        inconsistency_directions(SimpleNamespace(direction=None, pair=("a", "b")))


def test_inconsistency_directions_from_inconsistency_score():
    from landscape.inconsistency import inconsistency_score

    model = make_mlp()
    domains = make_binary_domains(2)
    result = inconsistency_score(
        model,
        nn.BCEWithLogitsLoss(),
        domains,
        [0.1, 0.2],
        params="classifier",
        check=False,
        progress=False,
    )
    dirs = inconsistency_directions(result, seed=1, index=1)
    assert dirs.names == ["classifier.weight", "classifier.bias"]
    expected = result.direction_by_name(1)
    for n in dirs.names:
        np.testing.assert_array_equal(dirs.d1[n].numpy(), expected[n])
    assert dirs.info["pair"] == list(result.pair[1]) and dirs.info["epsilon"] == 0.2
    u, v = flatten(dirs.d1), flatten(dirs.d2)
    assert abs(float(u @ v)) < 1e-10 * float(u.norm() * v.norm())
    dirs.check_model(model)
    with pytest.raises(ValueError, match="index must pick one of the 2 values of epsilon"):
        inconsistency_directions(result, index=2)
