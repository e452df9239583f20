"""Tests for landscape.surface.directions.random: seeding, normalisation, bad inputs."""

from __future__ import annotations

import pytest
import torch

from landscape.surface.directions import (
    normalize_direction,
    random_directions,
)
from tests.cases import make_mlp
from tests.surface.helpers import ConvNet, equal


def test_same_seed_same_directions_different_seed_different():
    model = make_mlp()
    a = random_directions(model, seed=7)
    b = random_directions(model, seed=7)
    c = random_directions(model, seed=8)
    assert equal(a.d1, b.d1) and equal(a.d2, b.d2)
    assert a.fingerprint() == b.fingerprint()
    assert not torch.equal(a.d1["featurizer.1.weight"], c.d1["featurizer.1.weight"])
    assert a.fingerprint() != c.fingerprint()
    assert a.seed == 7 and c.seed == 8
    # the two directions of one draw differ
    assert not torch.equal(a.d1["featurizer.1.weight"], a.d2["featurizer.1.weight"])


def test_none_normalization_is_the_seeded_gaussian():
    model = make_mlp()
    dirs = random_directions(model, normalization="none", seed=3, include_biases=True)
    g = torch.Generator().manual_seed(3)
    names = [n for n, _ in model.named_parameters()]
    expected1 = {
        n: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for n, p in model.named_parameters()
    }
    expected2 = {
        n: torch.randn(p.shape, generator=g, dtype=torch.float64)
        for n, p in model.named_parameters()
    }
    assert dirs.names == names
    assert equal(dirs.d1, expected1) and equal(dirs.d2, expected2)


@pytest.mark.parametrize("make", [make_mlp, ConvNet], ids=["mlp", "conv+bn"])
def test_filter_normalized_directions_have_the_filter_norms_of_the_weights(make, dtype):
    model = make().to(dtype)
    dirs = random_directions(model, normalization="filter", seed=1)
    for n, p in model.named_parameters():
        for d in (dirs.d1[n], dirs.d2[n]):
            assert d.dtype == dtype
            if p.dim() <= 1:  # biases and batch-norm parameters: zero by default
                assert torch.count_nonzero(d) == 0
            else:
                torch.testing.assert_close(
                    d.reshape(d.shape[0], -1).norm(dim=1),
                    p.detach().reshape(p.shape[0], -1).norm(dim=1),
                )


def test_include_biases_and_layer_normalization():
    model = ConvNet()
    dirs = random_directions(model, normalization="layer", seed=2, include_biases=True)
    for n, p in model.named_parameters():
        torch.testing.assert_close(dirs.d1[n].norm(), p.detach().norm())
    # norm-layer weights (ones) get the norm of the weights, not zero
    assert torch.count_nonzero(dirs.d1["bn.weight"]) == 4


def test_filter_normalization_of_zero_filters_and_params_subset():
    w = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    out = normalize_direction(d, w, "filter")
    torch.testing.assert_close(out, torch.tensor([[5.0, 0.0], [0.0, 0.0]]))
    model = make_mlp()
    dirs = random_directions(model, params="classifier", seed=0)
    assert dirs.names == ["classifier.weight", "classifier.bias"]


def test_bad_inputs_give_clear_errors():
    model = make_mlp()
    with pytest.raises(ValueError, match="unknown normalization 'batch'; use one of filter"):
        random_directions(model, normalization="batch")
    with pytest.raises(TypeError, match="seed must be an int"):
        random_directions(model, seed=1.5)
    with pytest.raises(ValueError, match="no parameter named or prefixed 'head'"):
        random_directions(model, params="head")
