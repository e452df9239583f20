"""Tests for landscape.surface.evaluators: every evaluation path against a brute-force loop."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.params import flatten
from landscape.surface import loss_surface
from landscape.surface.directions import plane_directions, random_directions
from tests.cases import make_binary_domains, make_mlp, make_multiclass_domains
from tests.surface.helpers import ConvBN, assert_untouched, brute_force, snapshot

CASES = {
    "mlp-bce": lambda dt: (
        make_mlp(dim=10, hidden=(7, 5), dtype=dt),
        nn.BCEWithLogitsLoss(),
        make_binary_domains(3, n=30, dim=10, dtype=dt),
    ),
    "mlp-ce-batches": lambda dt: (
        make_mlp(dim=10, hidden=(6,), out=3, dtype=dt),
        nn.CrossEntropyLoss(reduction="sum"),
        {
            k: [(v[0][0][:17], v[0][1][:17]), (v[0][0][17:], v[0][1][17:])]
            for k, v in make_multiclass_domains(2, n=30, dim=10, dtype=dt).items()
        },
    ),
    "conv-bn-dropout": lambda dt: (
        ConvBN().to(dt).eval(),
        nn.CrossEntropyLoss(),
        {
            f"d{e}": [(torch.randn(12, 1, 5, 5, dtype=dt) + e, torch.randint(0, 3, (12,)))]
            for e in range(2)
        },
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize(
    "path",
    [("auto", 1), (False, 1), (False, 3), ("auto", 4)],
    ids=["auto", "plain", "vmap", "auto-vmap"],
)
def test_every_path_equals_the_brute_force_loop(case, path, dtype):
    torch.manual_seed(0)
    model, loss_func, domains = CASES[case](dtype)
    with torch.no_grad():  # non-zero batch-norm statistics
        for b in model.buffers():
            if b.is_floating_point():
                b.add_(0.1 * torch.rand_like(b))
    dirs = random_directions(model, seed=1, include_biases=case != "mlp-bce")
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-0.5, 1, 4)
    first_layer, ppc = path
    snap = snapshot(model)
    res = loss_surface(
        model,
        loss_func,
        domains,
        dirs,
        grid=(alphas, betas),
        first_layer=first_layer,
        points_per_call=ppc,
        progress=False,
    )
    assert_untouched(model, snap)
    expected_first = case != "conv-bn-dropout" and first_layer == "auto"
    path = res.settings["path"].removeprefix("prefix+")  # head-only cases run the head alone
    assert path.startswith("first_layer" if expected_first else "plain")
    ref_loss, ref_acc = brute_force(model, loss_func, domains, dirs, alphas, betas)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for name in domains:
        expected = ref_loss[name]
        if loss_func.reduction == "sum":
            n = sum(b[0].shape[0] for b in domains[name])
            expected = ref_loss[name] / n  # the risk is the mean loss
        np.testing.assert_allclose(res.losses[name], expected, rtol=tol, atol=tol)
        if dtype == torch.float64:
            np.testing.assert_array_equal(res.accuracies[name], ref_acc[name])
    assert res.num_samples == {n: sum(b[0].shape[0] for b in d) for n, d in domains.items()}


@pytest.mark.parametrize("first_layer", [False, True], ids=["plain", "first-layer"])
@pytest.mark.parametrize("ppc", [1, 3], ids=["one", "vmap"])
def test_registry_cases_equal_the_brute_force_loop(case, dtype, device, first_layer, ppc):
    """Every case of tests/cases.py (its parameter selection moves), on every device."""
    model, loss_func, domains, params = case.build(dtype, device)
    dirs = random_directions(model, params=params, seed=2, include_biases=True)
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-0.5, 1, 4)
    res = loss_surface(
        model,
        loss_func,
        domains,
        dirs,
        grid=(alphas, betas),
        first_layer=first_layer,
        points_per_call=ppc,
        progress=False,
    )
    path = res.settings["path"].removeprefix("prefix+")  # head-only cases run the head alone
    assert path.startswith("first_layer" if first_layer else "plain")
    ref, _ = brute_force(model, loss_func, domains, dirs, alphas, betas)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for name in domains:
        np.testing.assert_allclose(res.losses[name], ref[name], rtol=tol, atol=tol)


@pytest.mark.parametrize("first_layer", [False, "auto"], ids=["plain", "first-layer"])
def test_vmap_shares_parameters_a_fixed_origin_pins(first_layer, dtype):
    """A plane through checkpoints pins parameters equal in all of them (no direction) to its
    origin. vmap mapped over them as if stacked: an error, or silently wrong numbers when
    their first axis had the number of points (the old code)."""
    torch.manual_seed(0)
    model = make_mlp(dim=10, hidden=(6,), dtype=dtype)
    ckpts = [copy.deepcopy(model) for _ in range(3)]
    for i, c in enumerate(ckpts[1:]):  # only the weights move: the biases are pinned
        with torch.no_grad():
            c.featurizer[1].weight.add_(torch.randn_like(c.featurizer[1].weight))
            c.classifier.weight.add_((i + 1) * torch.randn_like(c.classifier.weight))
    plane = plane_directions(model, ckpts)
    assert not flatten({"b": plane.d1["classifier.bias"], "c": plane.d2["classifier.bias"]}).any()
    domains = make_binary_domains(2, n=20, dim=10, dtype=dtype)
    alphas, betas = np.linspace(-1, 1, 3), np.linspace(-0.5, 1, 6)  # featurizer.1.bias is [6]
    kw = dict(grid=(alphas, betas), first_layer=first_layer, progress=False)
    one = loss_surface(model, nn.BCEWithLogitsLoss(), domains, plane, points_per_call=1, **kw)
    for ppc in (3, 6):
        res = loss_surface(model, nn.BCEWithLogitsLoss(), domains, plane, points_per_call=ppc, **kw)
        assert res.settings["path"].endswith("+vmap")
        tol = 1e-12 if dtype == torch.float64 else 2e-5
        for name in domains:
            np.testing.assert_allclose(res.losses[name], one.losses[name], rtol=tol, atol=tol)
    ref, _ = brute_force(model, nn.BCEWithLogitsLoss(), domains, plane, alphas, betas)
    for name in domains:
        np.testing.assert_allclose(one.losses[name], ref[name], rtol=tol, atol=tol)


def _in_train_mode(*modules):
    return nn.Sequential(*modules).double().train()


@pytest.mark.parametrize(
    "model, refused",
    [
        (lambda: _in_train_mode(nn.Linear(4, 4), nn.Dropout(0.5)), "Dropout"),
        (lambda: _in_train_mode(nn.Linear(4, 4), nn.BatchNorm1d(4)), "BatchNorm1d"),
        (lambda: _in_train_mode(nn.RNN(4, 4, num_layers=2, dropout=0.5)), "RNN"),
        (lambda: _in_train_mode(nn.MultiheadAttention(4, 2, dropout=0.1)), "MultiheadAttention"),
        (lambda: _in_train_mode(nn.Linear(4, 4), nn.Dropout(0.0)), None),
        (lambda: _in_train_mode(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False)),
         None),
        (lambda: _in_train_mode(nn.Unflatten(1, (1, 4)), nn.InstanceNorm1d(1)), None),
        (lambda: _in_train_mode(nn.Linear(4, 4)), None),
    ],
    ids=["dropout", "batchnorm", "rnn-dropout", "attention-dropout", "dropout-0",
         "batchnorm-no-stats", "instancenorm", "linear"],
)  # fmt: skip
def test_train_mode_follows_the_one_rule(model, refused):
    """Loss surfaces refuse train mode exactly where landscape.curvature does: a module that
    behaves differently in it (before: InstanceNorm without running statistics, Dropout(0)
    and BatchNorm without running statistics were refused, RNN / attention dropout missed)."""
    from landscape.curvature import check_eval_mode
    from landscape.surface.evaluators import check_mode

    m = model()
    if refused is None:
        check_mode(m)
        check_eval_mode(m)
        return
    with pytest.raises(ValueError, match=rf"\({refused}\) is in training mode.*call model\.eval"):
        check_mode(m)
    with pytest.raises(ValueError, match=refused):
        check_eval_mode(m)
