import pytest
import torch

from landscape.params import flatten, select_params, unflatten
from tests.cases import make_mlp


def test_select_all_prefix_and_names_keep_model_order():
    model = make_mlp()
    assert list(select_params(model)) == [n for n, _ in model.named_parameters()]
    assert list(select_params(model, "classifier")) == ["classifier.weight", "classifier.bias"]
    names = ["classifier.bias", "featurizer.1.weight"]
    assert list(select_params(model, names)) == ["featurizer.1.weight", "classifier.bias"]


def test_prefix_respects_module_boundaries():
    model = make_mlp()
    with pytest.raises(ValueError, match="no parameter named or prefixed 'class'"):
        select_params(model, "class")


def test_bad_params_give_clear_errors():
    model = make_mlp()
    with pytest.raises(ValueError, match="available: featurizer.1, featurizer.3, classifier"):
        select_params(model, "head")
    with pytest.raises(TypeError, match="params must be None"):
        select_params(model, 3)
    with pytest.raises(ValueError, match="empty list"):
        select_params(model, [])


def test_flatten_unflatten_round_trip():
    model = make_mlp()
    params = select_params(model)
    vec = flatten(params)
    back = unflatten(vec, params)
    assert all(torch.equal(back[k], params[k]) for k in params)
    with pytest.raises(ValueError, match="entries"):
        unflatten(vec[:-1], params)
