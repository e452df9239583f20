"""Tests for landscape.surface.store: an interrupted surface resumes."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from landscape.surface import (
    loss_surface,
)
from landscape.surface.directions import (
    random_directions,
)
from tests.cases import make_binary_domains, make_mlp


class Interrupting(nn.BCEWithLogitsLoss):
    """Raises KeyboardInterrupt after ``limit`` calls (a run stopped half-way)."""

    def __init__(self, limit):
        super().__init__()
        self.calls, self.limit = 0, limit

    def forward(self, input, target):
        self.calls += 1
        if self.calls > self.limit:
            raise KeyboardInterrupt
        return super().forward(input, target)


def test_resumed_surface_equals_uninterrupted(tmp_path):
    model = make_mlp(dim=10)
    domains = make_binary_domains(2, n=20, dim=10)
    dirs = random_directions(model, seed=2)
    kw = dict(grid=(-1, 1, 5), progress=False)
    full = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, **kw)
    with pytest.raises(KeyboardInterrupt):  # stops inside the third row
        loss_surface(model, Interrupting(23), domains, dirs, checkpoint_dir=tmp_path / "c", **kw)
    assert sorted(p.name for p in (tmp_path / "c").glob("row_*.npz")) == [
        "row_00000.npz",
        "row_00001.npz",
    ]
    resumed_loss = Interrupting(10**6)
    res = loss_surface(model, resumed_loss, domains, dirs, checkpoint_dir=tmp_path / "c", **kw)
    assert resumed_loss.calls == 3 * 5 * 2  # only the missing rows were computed
    for name in domains:
        np.testing.assert_array_equal(res.losses[name], full.losses[name])
        np.testing.assert_array_equal(res.accuracies[name], full.accuracies[name])
    # other settings in the same folder: a clear error
    with pytest.raises(
        ValueError, match=r"holds a surface computed with other settings \(betas differs\)"
    ):
        loss_surface(
            model,
            nn.BCEWithLogitsLoss(),
            domains,
            dirs,
            grid=((-1, 1, 5), (-1, 1, 4)),
            checkpoint_dir=tmp_path / "c",
            progress=False,
        )
    with pytest.raises(ValueError, match=r"other settings \(directions differs\)"):
        loss_surface(
            model,
            nn.BCEWithLogitsLoss(),
            domains,
            random_directions(model, seed=3),
            checkpoint_dir=tmp_path / "c",
            **kw,
        )
