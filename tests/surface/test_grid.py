"""Tests for landscape.surface.grid: the forms a grid is given in, and the default grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.surface import DEFAULT_GRID, make_grid
from landscape.surface.directions import Directions


def test_grid_forms():
    a, b = make_grid((-1, 1, 5))
    np.testing.assert_array_equal(a, np.linspace(-1, 1, 5))
    np.testing.assert_array_equal(b, a)
    a, b = make_grid(((-1, 1, 3), (0, 2, 5)))
    assert a.tolist() == [-1, 0, 1] and b.tolist() == [0, 0.5, 1, 1.5, 2]
    a, b = make_grid(([0.0, 0.3], torch.tensor([1.0, 2.0, 4.0])))
    assert a.tolist() == [0.0, 0.3] and b.tolist() == [1.0, 2.0, 4.0]
    a, b = make_grid()
    assert len(a) == DEFAULT_GRID[2] and (a.min(), a.max()) == DEFAULT_GRID[:2]
    assert make_grid((0.5, 0.5, 1))[0].tolist() == [0.5]  # one point: min == max is fine


def test_default_grid_covers_the_points_with_a_quarter_margin():
    zero = {"w": torch.zeros(2)}
    dirs = Directions(d1={"w": torch.ones(2)}, d2=zero, info={"points": {"a": [0, 0], "b": [2, 1]}})
    a, b = make_grid(None, dirs)
    assert (a.min(), a.max(), len(a)) == pytest.approx((-0.5, 2.5, 21))
    assert (b.min(), b.max(), len(b)) == pytest.approx((-0.25, 1.25, 21))


def test_bad_grids():
    with pytest.raises(ValueError, match="the number of points must be an integer"):
        make_grid((-1, 1, 2.5))
    with pytest.raises(ValueError, match="bounds must be finite"):
        make_grid((-np.inf, 1, 3))
    with pytest.raises(ValueError, match="must be a 1-D array of coordinates"):
        make_grid((np.zeros((2, 2)), [0.0]))
    with pytest.raises(TypeError, match="grid must be"):
        make_grid({"alphas": [0.0]})
    with pytest.raises(ValueError, match="cannot read grid"):
        make_grid((1, 2, 3, 4))
