"""Closed-form dense matrices (landscape.curvature.closed_form) against the dense float64
references, the conditions under which they refuse, and the operator's ``dense`` using them."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from landscape.curvature import reference as ref
from landscape.curvature.closed_form import (
    LINEAR_EF,
    OUTPUT_LAYER,
    NoClosedForm,
    closed_form,
    functional_tensors,
    has_closed_form,
    linear_empirical_fisher,
    output_layer_curvature,
)
from landscape.curvature.operators import curvature_operator
from landscape.params import select_params
from tests.cases import CASES_BY_LOSS
from tests.curvature._common import UsedUpstream
from tests.curvature.test_operators import HEAD_FORM, _case

HEAD = ("mlp-bce-head", "mlp-ce-head")


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_closed_form_functions_match_reference(case, dtype, curvature):
    """closed_form() on every case of the registry, float32 and float64: the output-layer form
    on the head selections (Hessian and GGN alike), the nn.Linear empirical Fisher on every
    selection of the MLP; the risk and gradient of the same pass."""
    model, loss_func, domains, params = case.build(dtype)
    data = domains["d0"]
    tol = {"rtol": 2e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    if curvature != "ef" and case.id not in HEAD:
        with pytest.raises(NoClosedForm, match="spans 3 Linear layers"):
            closed_form(model, loss_func, data, params, curvature)
        return
    cf = closed_form(model, loss_func, data, params, curvature)
    assert cf.method == (LINEAR_EF if curvature == "ef" else OUTPUT_LAYER)
    assert cf.matrix.dtype == dtype and cf.gradient.dtype == dtype
    expected = ref.dense_curvature(model, loss_func, data, params, curvature)
    torch.testing.assert_close(cf.matrix.double(), expected, **tol)
    grad = ref.gradient(model, loss_func, data, params)
    torch.testing.assert_close(cf.gradient.double(), grad, **tol)
    assert cf.risk == pytest.approx(ref.risk(model, loss_func, data), rel=1e-5)


def test_closed_form_functions_take_their_inputs_explicitly():
    """The functions need only the model, loss, batches, the functional_call tensors and the
    selected names; they leave the model and its parameters untouched."""
    model, loss_func, data = _case("ce")
    selected = select_params(model, "classifier")
    tensors = functional_tensors(model, selected)
    assert all(tensors[n].requires_grad for n in selected)
    assert not any(t.requires_grad for n, t in tensors.items() if n not in selected)
    names = list(selected)
    H = output_layer_curvature(model, loss_func, data, tensors, names, torch.float64)
    F = linear_empirical_fisher(model, loss_func, data, tensors, names)
    torch.testing.assert_close(H.matrix, ref.dense_hessian(model, loss_func, data, "classifier"))
    torch.testing.assert_close(
        F.matrix, ref.dense_empirical_fisher(model, loss_func, data, "classifier")
    )
    torch.testing.assert_close(H.gradient, F.gradient)
    assert H.risk == pytest.approx(F.risk, rel=1e-12)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="unknown curvature 'fisher'"):
        closed_form(model, loss_func, data, "classifier", "fisher")


class _Squeezed(nn.Module):
    """Output reshaped after the last layer: not the layer's output tensor."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.classifier = nn.Linear(4, 1)

    def forward(self, x):
        return self.classifier(torch.tanh(self.body(x))).reshape(-1, 1)


class _Twice(nn.Module):
    """The same layer runs twice."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(6, 6)
        self.out = nn.Linear(6, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.classifier(torch.tanh(self.classifier(x)))))


@pytest.mark.parametrize(
    "make, params, curvature, why",
    [
        (_Squeezed, "classifier", "hessian", "the model's output is not the output of Linear"),
        (UsedUpstream, "classifier", "hessian", "depends on the selected parameters"),
        (UsedUpstream, "classifier", "ef", "do not add up to the gradient"),
        (_Twice, "classifier", "ef", "was called 2 times"),
        (_Twice, "classifier", "ggn", "Linear layer 'classifier' ran 2 times"),
        (_Squeezed, ["body.bias", "classifier.bias"], "ggn", "spans 2 Linear layers"),
    ],
    ids=["reshaped", "upstream-h", "upstream-ef", "twice-ef", "twice-ggn", "two-layers"],
)
def test_closed_forms_refuse_where_they_would_be_wrong(make, params, curvature, why):
    """Models that break a closed form's conditions: 'auto' falls back to the products (and
    is exact), 'closed-form' says why it cannot apply."""
    torch.manual_seed(1)
    model = make().double().eval()
    for p in model.parameters():
        nn.init.normal_(p, std=0.5)
    loss_func = CASES_BY_LOSS["bce"].loss
    data = CASES_BY_LOSS["bce"].domains(torch.float64, n_domains=1, n=20)["d0"]
    expected = ref.dense_curvature(model, loss_func(), data, params, curvature)
    op = curvature_operator(model, loss_func(), data, params, curvature)
    torch.testing.assert_close(op.dense(), expected)
    assert op.dense_method == "products"
    with pytest.raises(NoClosedForm, match=f"no closed form .*{why}.*; use method='products'"):
        op.dense(method="closed-form")
    assert not has_closed_form(model, loss_func(), params, curvature, data)
    assert all(not m._forward_hooks for m in model.modules())


def test_closed_form_refuses_hooked_layers_and_non_linear_owners():
    model, loss_func, data = _case("bce")
    handle = model.classifier.register_forward_hook(lambda m, i, o: o * 2.0)
    try:
        expected = ref.dense_hessian(model, loss_func, data, "classifier")
        op = curvature_operator(model, loss_func, data, "classifier")
        torch.testing.assert_close(op.dense(), expected)  # products see the hook too
        with pytest.raises(ValueError, match="'classifier' has forward hooks"):
            op.dense(method="closed-form")
    finally:
        handle.remove()
    conv = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1))
    conv = conv.double().eval()
    op = curvature_operator(conv, loss_func, data, "1", "ef")
    torch.testing.assert_close(op.dense(), ref.dense_empirical_fisher(conv, loss_func, data, "1"))
    with pytest.raises(ValueError, match="belongs to a Conv1d"):
        op.dense(method="closed-form")


def test_dense_float32_and_mse_closed_form():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 4, generator=g, dtype=torch.float64)
    Y = torch.randn(40, 3, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 3).double().eval()  # the whole model is the output layer
    op = curvature_operator(model, nn.MSELoss(), [(X, Y)], curvature="ggn")
    Xt = torch.cat([X, torch.ones(40, 1, dtype=torch.float64)], dim=1)
    # MSE over C=3 outputs: Lambda = 2/C I, so G = (2/3) I_3 (x) Xt^T Xt / N (weights, then bias)
    K = torch.kron(torch.eye(3, dtype=torch.float64), 2 / 3 * Xt.T @ Xt / 40)
    perm = [c * 5 + j for c in range(3) for j in range(4)] + [c * 5 + 4 for c in range(3)]
    torch.testing.assert_close(op.dense(), K[perm][:, perm])
    assert op.dense_method == HEAD_FORM
    model64, loss_func, data64 = _case("ce")
    model32 = copy.deepcopy(model64).float()
    data = [(X.float(), y) for X, y in data64]
    for curvature in ("hessian", "ef"):
        op32 = curvature_operator(model32, loss_func, data, "classifier", curvature)
        got = op32.dense()
        assert got.dtype == torch.float32 and op32.dense_method.startswith("closed-form")
        expected = ref.dense_curvature(model64, loss_func, data64, "classifier", curvature)
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


def test_output_layer_closed_form_accumulates_in_float64():
    """A float32 model's head matrix summed in float64 from its own float32 features: float64,
    equal to the reference up to the features' float32 rounding, and bit-equal to the default
    path for a float64 model; risk and gradient come back in float64 too."""
    model64, loss_func, data64 = _case("bce")
    model32 = copy.deepcopy(model64).float()
    data = [(X.float(), y.float()) for X, y in data64]
    op32 = curvature_operator(model32, loss_func, data, "classifier", "hessian")
    got = op32.dense(method="closed-form", accumulate=torch.float64)
    assert got.dtype == torch.float64 and op32.gradient().dtype == torch.float64
    expected = ref.dense_hessian(model64, loss_func, data64, "classifier")
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert op32.risk() == pytest.approx(ref.risk(model64, loss_func, data64), rel=1e-6)
    op64 = curvature_operator(model64, loss_func, data64, "classifier", "hessian")
    plain = op64.dense()
    op64b = curvature_operator(model64, loss_func, data64, "classifier", "hessian")
    assert torch.equal(op64b.dense(accumulate=torch.float64), plain)


def test_closed_forms_in_row_chunks(monkeypatch):
    """Loss Hessians [rows, C, C] and per-sample gradient blocks [rows, D] taken a few rows at
    a time give the same matrices."""
    import landscape.curvature.closed_form as cf

    monkeypatch.setattr(cf, "_LAMBDA_ELEMENTS", 40)  # C = 3: 4 rows per chunk
    monkeypatch.setattr(cf, "_EF_BLOCK_ELEMENTS", 50)  # D = 15: 3 rows per block
    model, loss_func, data = _case("ce")
    for curvature in ("hessian", "ef"):
        op = curvature_operator(model, loss_func, data, "classifier", curvature)
        expected = ref.dense_curvature(model, loss_func, data, "classifier", curvature)
        torch.testing.assert_close(op.dense(method="closed-form"), expected)


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_has_closed_form_predicts_dense(curvature):
    """has_closed_form answers what dense(method='closed-form') would do, without the matrix
    (other packages ask instead of matching an error message)."""
    import landscape.curvature as C

    model, loss_func, data = _case("bce")
    conv = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1))
    conv = conv.double().eval()
    for m, params in [(model, "classifier"), (model, None), (conv, "3"), (conv, "1")]:
        op = curvature_operator(m, loss_func, data, params, curvature)
        try:
            op.dense(method="closed-form")
            expected = True
        except C.NoClosedForm:
            expected = False
        assert C.has_closed_form(m, loss_func, params, curvature, data) is expected
        if expected:  # the structural conditions alone never refuse what applies
            assert C.has_closed_form(m, loss_func, params, curvature)
    assert C.has_closed_form(model, loss_func, "classifier", curvature)
    assert not C.has_closed_form(conv, loss_func, "1", curvature)
    with pytest.raises(ValueError, match="unknown curvature|curvature"):
        C.has_closed_form(model, loss_func, "classifier", "bogus")


def test_package_exports_what_other_packages_use():
    import landscape.curvature as C
    import landscape.curvature.checks as checks
    import landscape.curvature.operators as ops

    for name in ["curvature_operator", "CurvatureOperator", "MAX_DENSE_DIM", "check_loss",
                 "check_eval_mode", "check_deterministic"]:  # fmt: skip
        assert getattr(C, name) is getattr(ops, name) and name in C.__all__
    assert C.train_mode_modules is checks.train_mode_modules
    assert C.closed_form.closed_form is closed_form and "has_closed_form" in C.__all__
    assert C.NoClosedForm is NoClosedForm and issubclass(NoClosedForm, ValueError)
