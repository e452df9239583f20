"""Guard rails before curvature work (landscape.curvature.checks), through the operator and
the public API (issue 8 items 6 and 8)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import landscape
from landscape.curvature import reference as ref
from landscape.curvature.checks import (
    check_deterministic,
    check_eval_mode,
    is_backpack_extended,
    plain_copy,
    to_like,
)
from landscape.curvature.operators import curvature_operator
from tests.cases import make_binary_domains, make_mlp

TRAIN_MODE = r"train mode with {}; call model\.eval\(\)"


def _linear_domains(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    domains = {}
    for e in range(2):
        X = torch.randn(40, 8, generator=g, dtype=dtype) + 0.5 * e
        y = (torch.rand(40, 1, generator=g, dtype=dtype) < 0.5).to(dtype)
        domains[f"d{e}"] = [(X, y)]
    return domains


class _NoisyWhenTraining(nn.Module):
    """A custom module whose forward depends on ``self.training`` (not dropout, not BN)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 1)

    def forward(self, x):
        if self.training:
            x = x + torch.rand_like(x)
        return self.lin(x)


def test_guard_rails_of_the_loss():
    model = make_mlp()
    data = make_binary_domains(n_domains=1, n=30)["d0"]
    loss_func = nn.BCEWithLogitsLoss()
    with pytest.raises(ValueError, match="reduction='sum'.*reduction='mean'"):
        curvature_operator(model, nn.BCEWithLogitsLoss(reduction="sum"), data)
    with pytest.raises(ValueError, match="unknown curvature 'fisher'; use one of hessian, ggn, ef"):
        curvature_operator(model, loss_func, data, curvature="fisher")
    with pytest.raises(ValueError, match="unsupported loss L1Loss"):
        curvature_operator(model, nn.L1Loss(), data)
    with pytest.raises(TypeError, match="loss module"):
        curvature_operator(model, lambda a, b: a, data)
    with pytest.raises(ValueError, match="pos_weight set"):
        curvature_operator(model, nn.BCEWithLogitsLoss(pos_weight=torch.ones(1)), data)
    with pytest.raises(ValueError, match="no parameter named or prefixed 'head'"):
        curvature_operator(model, loss_func, data, params="head")


def test_train_mode_is_accepted_where_nothing_depends_on_it(dtype):
    """A fresh ``nn.Linear(8, 1)`` (train mode) and an MLP in train mode: the operator equals
    the dense reference, and the model stays in train mode."""
    domains = _linear_domains(dtype)
    torch.manual_seed(0)
    model = nn.Linear(8, 1).to(dtype)
    assert model.training
    check_eval_mode(model)
    op = curvature_operator(model, nn.BCEWithLogitsLoss(), domains["d0"])
    expected = ref.dense_hessian(model, nn.BCEWithLogitsLoss(), domains["d0"])
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {}
    torch.testing.assert_close(op.dense(method="products").double(), expected, **tol)
    mlp = make_mlp(dtype=dtype).train()
    data = make_binary_domains(n_domains=1, n=30, dtype=dtype)["d0"]
    curvature_operator(mlp, nn.BCEWithLogitsLoss(), data)
    assert model.training and mlp.training  # never switched silently
    # batch norm without running statistics uses the batch's statistics in both modes
    check_eval_mode(nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4, track_running_stats=False)))
    check_eval_mode(nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.0)))


def test_train_mode_is_accepted_by_the_public_api():
    """The same fresh ``nn.Linear(8, 1)`` through every public entry that checks the mode."""
    domains = _linear_domains()
    torch.manual_seed(0)
    model = nn.Linear(8, 1).double()
    loss_func = nn.BCEWithLogitsLoss()
    H = ref.dense_hessian(model, loss_func, domains["d0"])
    var = ref.gradient_variance(model, loss_func, domains["d0"])
    res = landscape.gradient_variance(model, loss_func, domains)
    torch.testing.assert_close(torch.as_tensor(res.variance["d0"]).double(), var)
    res = landscape.hessian_diagonal(model, loss_func, domains)
    torch.testing.assert_close(torch.as_tensor(res.diagonal["d0"]).double(), torch.diag(H))
    res = landscape.top_eigenpairs(model, loss_func, domains, k=1, method="eigsh")
    top = float(torch.linalg.eigvalsh(H)[-1])
    assert float(res.largest_eigenvalues["d0"][0]) == pytest.approx(top, rel=1e-6)
    score = landscape.inconsistency_score(model, loss_func, domains, 0.1, progress=False)
    assert score.score > 0
    assert model.training


@pytest.mark.parametrize(
    "make, culprit",
    [
        (lambda: nn.Sequential(nn.Linear(8, 4), nn.Dropout(0.5), nn.Linear(4, 1)),
         r"Dropout \(1\)"),
        (lambda: nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)),
         r"BatchNorm1d \(1\)"),
        (lambda: nn.Sequential(nn.Linear(8, 4), nn.SyncBatchNorm(4), nn.Linear(4, 1)),
         r"SyncBatchNorm \(1\)"),
        (lambda: nn.Sequential(nn.Dropout(0.1)), r"Dropout \(0\)"),
    ],
    ids=["dropout", "batchnorm", "sync-batchnorm", "dropout-first"],
)  # fmt: skip
def test_modules_that_differ_in_train_mode_are_refused(make, culprit):
    domains = _linear_domains()
    model = make().double().train()
    if isinstance(model[-1], nn.Dropout):
        model = nn.Sequential(model[0], nn.Linear(8, 1)).double().train()
    loss_func = nn.BCEWithLogitsLoss()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=TRAIN_MODE.format(culprit)):
        curvature_operator(model, loss_func, domains["d0"])
    with pytest.raises(ValueError, match=TRAIN_MODE.format(culprit)):
        landscape.hessian_diagonal(model, loss_func, domains)
    with pytest.raises(ValueError, match=TRAIN_MODE.format(culprit)):
        landscape.inconsistency_score(model, loss_func, domains, 0.1, progress=False)
    assert model.training
    for k, v in model.state_dict().items():  # no running statistics were updated
        assert torch.equal(v, state[k]), k
    model.eval()
    curvature_operator(model, loss_func, domains["d0"])


def test_custom_module_random_in_train_mode_is_refused_by_the_determinism_check():
    domains = _linear_domains()
    model = _NoisyWhenTraining().double()
    check_eval_mode(model)  # nothing known to differ: left to the determinism check
    why = r"not deterministic .*the model is in train mode: if a module behaves differently"
    with pytest.raises(ValueError, match=why):
        check_deterministic(model, domains["d0"][0])
    with pytest.raises(ValueError, match=why):
        curvature_operator(model, nn.BCEWithLogitsLoss(), domains["d0"])
    with pytest.raises(ValueError, match="not deterministic"):
        landscape.top_eigenpairs(model, nn.BCEWithLogitsLoss(), domains)
    model.eval()
    curvature_operator(model, nn.BCEWithLogitsLoss(), domains["d0"])

    class Noisy(nn.Module):  # random in eval mode too: no train-mode hint
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(8, 1).double()

        def forward(self, x):
            return self.lin(x + torch.randn_like(x))

    with pytest.raises(ValueError, match=r"not deterministic \(random layers or augmentation\?\)"):
        check_deterministic(Noisy().eval(), domains["d0"][0])


def test_backpack_extended_model_is_analysed_through_a_plain_copy_without_warnings():
    """No BackPACK warning ('Full backward hook is firing ...') reaches the caller, whatever
    the warning filters of the caller (pytest's configuration is overridden here)."""
    from backpack import extend

    model = make_mlp(out=1)
    data = make_binary_domains(n_domains=1, n=30)["d0"]
    loss_func = nn.BCEWithLogitsLoss()
    expected = ref.dense_hessian(model, loss_func, data, "classifier")
    extend(model)
    assert is_backpack_extended(model)
    clone = plain_copy(model)
    assert not is_backpack_extended(clone) and is_backpack_extended(model)
    assert not clone.classifier._forward_hooks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for curvature in ("hessian", "ggn", "ef"):
            op = curvature_operator(model, loss_func, data, "classifier", curvature)
            op @ torch.ones(op.dim, dtype=torch.float64)
            op.gradient()
        op = curvature_operator(model, loss_func, data, "classifier")
        torch.testing.assert_close(op.dense(method="products"), expected)
    assert not [str(w.message) for w in caught], [str(w.message) for w in caught]
    assert is_backpack_extended(model)  # the user's model keeps its hooks


def test_to_like_keeps_integer_labels():
    like = torch.zeros(2, dtype=torch.float64)
    assert to_like(torch.ones(3), like).dtype == torch.float64
    assert to_like(torch.ones(3, dtype=torch.long), like).dtype == torch.long
