"""Tests for landscape.surface.options: SurfaceOptions and the plain keyword arguments."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from landscape.surface import SurfaceOptions, loss_surface
from landscape.surface.directions import random_directions
from tests.cases import make_binary_domains, make_mlp


def test_options_object_and_keywords_give_the_same_surface():
    model = make_mlp(dim=10)
    domains = make_binary_domains(2, n=30, dim=10)
    dirs = random_directions(model, seed=1)
    kw = dict(subsample=12, seed=3, batch_size=5, first_layer=False)
    plain = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3),
                         progress=False, **kw)  # fmt: skip
    opts = SurfaceOptions(**kw)
    res = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3),
                       options=opts, progress=False)  # fmt: skip
    assert res.settings == plain.settings
    for name in domains:
        np.testing.assert_array_equal(res.losses[name], plain.losses[name])
    # a keyword overrides the options object
    res = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3),
                       options=opts, subsample=None, progress=False)  # fmt: skip
    assert res.settings["subsample"] is None and res.num_samples == {"d0": 30, "d1": 30}


def test_bad_options_get_clear_errors():
    with pytest.raises(ValueError, match="unknown batch_norm 'fresh'; use 'running' or"):
        SurfaceOptions(batch_norm="fresh")
    with pytest.raises(ValueError, match="batch_size must be a positive integer or None"):
        SurfaceOptions(batch_size=0)
    with pytest.raises(ValueError, match="points_per_call must be a positive integer or 'auto'"):
        SurfaceOptions(points_per_call=0)
    with pytest.raises(ValueError, match="first_layer must be 'auto', True or False"):
        SurfaceOptions(first_layer="yes")
    with pytest.raises(TypeError, match="unexpected keyword argument 'subsampel'; options are"):
        SurfaceOptions.merge(None, {"subsampel": 3})
    with pytest.raises(TypeError, match="options must be a SurfaceOptions, got dict"):
        SurfaceOptions.merge({"seed": 1}, {})
    model = make_mlp(dim=10)
    with pytest.raises(TypeError, match="unexpected keyword argument 'grid_size'"):
        loss_surface(model, nn.BCEWithLogitsLoss(), make_binary_domains(1, n=8, dim=10),
                     random_directions(model), grid_size=3, progress=False)  # fmt: skip


def test_recompute_needs_one_point_per_call():
    import torch

    from tests.surface.helpers import ConvBN

    model = ConvBN().double().eval()
    data = {"a": (torch.randn(4, 1, 5, 5, dtype=torch.float64), torch.randint(0, 3, (4,)))}
    with pytest.raises(ValueError, match="batch_norm='recompute' evaluates one grid point"):
        loss_surface(model, nn.CrossEntropyLoss(), data, random_directions(model),
                     batch_norm="recompute", points_per_call=2, progress=False)  # fmt: skip
