"""Tests for landscape.surface.directions.plane: planes through checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

from landscape.params import flatten
from landscape.surface.directions import (
    plane_directions,
)
from tests.cases import make_mlp
from tests.surface.helpers import equal


def test_plane_through_three_checkpoints_passes_through_all_three():
    model = make_mlp()
    ckpts = [make_mlp(seed=s) for s in (1, 2, 3)]
    for origin in (0, 2):
        plane = plane_directions(model, ckpts, origin=origin, labels=["init", "erm", "fishr"])
        u, v, o = flatten(plane.d1), flatten(plane.d2), flatten(plane.origin)
        assert abs(float(torch.dot(u, v))) < 1e-12 * float(u.norm() * v.norm())
        torch.testing.assert_close(u.norm(), v.norm())
        for label, ckpt in zip(["init", "erm", "fishr"], ckpts, strict=True):
            a, b = plane.info["points"][label]
            torch.testing.assert_close(
                o + a * u + b * v, flatten(dict(ckpt.named_parameters())).detach()
            )
        assert plane.info["points"][["init", "erm", "fishr"][origin]] == [0.0, 0.0]


def test_plane_inputs_state_dicts_and_paths(tmp_path):
    from landscape.checkpoint import save_checkpoint

    model = make_mlp()
    a, b = make_mlp(seed=1), make_mlp(seed=2)
    path = save_checkpoint(tmp_path / "b", b, {})
    p1 = plane_directions(model, [a.state_dict(), path], seed=4)
    p2 = plane_directions(model, [a, b], seed=4)
    assert equal(p1.d1, p2.d1) and equal(p1.d2, p2.d2)
    assert p1.info["labels"] == ["checkpoint 0", "b"]
    # two checkpoints: seeded orthogonal second direction of the same length
    u, v = flatten(p1.d1), flatten(p1.d2)
    assert abs(float(torch.dot(u, v))) < 1e-10 * float(u.norm() * v.norm())
    torch.testing.assert_close(u.norm(), v.norm())
    p3 = plane_directions(model, [a, b], seed=5)
    assert not torch.equal(flatten(p3.d2), v) and p1.seed == 4


def test_plane_bad_inputs():
    model = make_mlp()
    a, b = make_mlp(seed=1), make_mlp(seed=2)
    with pytest.raises(ValueError, match="two or three checkpoints, got 1"):
        plane_directions(model, [a])
    with pytest.raises(ValueError, match="coincide"):
        plane_directions(model, [a, copy.deepcopy(a)])
    c = copy.deepcopy(a)
    with torch.no_grad():
        for pc, pa, pb in zip(c.parameters(), a.parameters(), b.parameters(), strict=True):
            pc.copy_(2 * pb - pa)  # on the line through a and b
    with pytest.raises(ValueError, match="collinear"):
        plane_directions(model, [a, b, c])
    with pytest.raises(
        ValueError, match="saved from another model: 'featurizer.1.weight' has shape"
    ):
        plane_directions(model, [a, make_mlp(dim=7)])
    with pytest.raises(TypeError, match="expected a model, a state dict or a checkpoint path"):
        plane_directions(model, [a, 3])
