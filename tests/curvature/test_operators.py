"""Matrix-free curvature operators against the dense float64 references."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.curvature import reference as ref
from landscape.curvature.operators import (
    Curvature,
    check_deterministic,
    curvature_operator,
    is_backpack_extended,
    plain_copy,
)
from tests.cases import make_binary_domains, make_mlp, make_multiclass_domains

CASES = {
    "bce": (nn.BCEWithLogitsLoss, make_binary_domains, 1),
    "ce": (nn.CrossEntropyLoss, make_multiclass_domains, 3),
}


def _case(loss: str, batches: int = 1, dtype=torch.float64, n: int = 30):
    loss_cls, make, out = CASES[loss]
    model = make_mlp(out=out, dtype=dtype)
    X, y = make(n_domains=1, n=n, dtype=dtype)["d0"][0]
    size = -(-n // batches)
    data = [(X[i : i + size], y[i : i + size]) for i in range(0, n, size)]
    return model, loss_cls(), data


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
    )


def _assert_unchanged(model, snap):
    state, flags, modes = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert [m.training for m in model.modules()] == modes
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("loss", ["bce", "ce"])
@pytest.mark.parametrize("params", [None, "classifier"], ids=["all", "head"])
@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_matches_reference(loss, params, curvature):
    model, loss_func, data = _case(loss, batches=1)
    X, y = data[0]
    expected = ref.dense_curvature(model, loss_func, data, params, curvature)
    grad = ref.gradient(model, loss_func, data, params)
    R = ref.risk(model, loss_func, data)
    snap = _snapshot(model)
    op = curvature_operator(model, loss_func, data, params, curvature)
    assert op.retain_graph
    torch.testing.assert_close(op.dense(method="products"), expected)
    assert op.num_products == expected.shape[0] and op.dense_method == "products"
    # several batches (uneven sizes): looping over batches, or one retained graph per batch
    batches = [(X[:7], y[:7]), (X[7:20], y[7:20]), (X[20:], y[20:])]
    V = torch.randn(expected.shape[0], 2, dtype=torch.float64)
    for retain in (False, True):
        op = curvature_operator(model, loss_func, batches, params, curvature, retain_graph=retain)
        assert op.retain_graph == retain and op.num_batches == 3
        torch.testing.assert_close(op @ V, expected @ V)
        torch.testing.assert_close(op.gradient(), grad)
        assert op.risk() == pytest.approx(R, rel=1e-12)
    _assert_unchanged(model, snap)


def test_products_interfaces():
    model, loss_func, data = _case("ce", batches=2)
    H = ref.dense_hessian(model, loss_func, data)
    op = curvature_operator(model, loss_func, data, curvature=Curvature.HESSIAN)
    assert op.shape == (H.shape[0], H.shape[0]) and op.dim == H.shape[0]
    assert op.dtype == torch.float64 and op.device == torch.device("cpu")
    g = torch.Generator().manual_seed(3)
    V = torch.randn(op.dim, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(op @ V[:, 0], H @ V[:, 0])
    torch.testing.assert_close(op.matmat(V), H @ V)
    torch.testing.assert_close(op @ V, H @ V)
    assert op.num_products == 7
    A = op.to_scipy()
    x = V[:, 1].numpy()
    out = A @ x
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, (H @ V[:, 1]).numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(A.matmat(V.numpy()), (H @ V).numpy(), rtol=1e-10, atol=1e-12)
    assert op.num_products == 7 + 1 + 3
    with pytest.raises(ValueError, match=r"v has shape \(5,\); expected \[\d+\]"):
        op.matvec(torch.zeros(5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        op.matvec([0.0])


def test_linear_mse_closed_form_and_float32():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 4, generator=g, dtype=torch.float64)
    y = torch.randn(50, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double().eval()
    for curvature in ("hessian", "ggn"):
        op = curvature_operator(model, nn.MSELoss(), [(X, y)], curvature=curvature)
        torch.testing.assert_close(op.dense(), 2 / 50 * X.T @ X)
    model32 = nn.Linear(4, 1, bias=False).eval()
    model32.weight.data = model.weight.data.float()
    op32 = curvature_operator(model32, nn.MSELoss(), [(X.float(), y.float())])
    assert op32.dtype == torch.float32
    torch.testing.assert_close(op32.dense().double(), 2 / 50 * X.T @ X, rtol=1e-5, atol=1e-5)


def test_dataloader_and_single_pair():
    model, loss_func, data = _case("bce", batches=1, n=24)
    X, y = data[0]
    expected = ref.dense_ggn(model, loss_func, data, "classifier")
    loader = DataLoader(TensorDataset(X, y), batch_size=10, shuffle=False)
    for d in (loader, (X, y)):
        op = curvature_operator(model, loss_func, d, "classifier", "ggn")
        torch.testing.assert_close(op.dense(), expected)
    assert op.num_samples == 24


def test_model_unchanged_with_frozen_params_and_release():
    model, loss_func, data = _case("bce")
    model.featurizer[1].weight.requires_grad_(False)
    snap = _snapshot(model)
    with curvature_operator(model, loss_func, data, curvature="hessian") as op:
        v = torch.ones(op.dim, dtype=torch.float64)
        op @ v
        _assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="released"):
        op @ v
    _assert_unchanged(model, snap)


def test_changed_weights_are_detected():
    model, loss_func, data = _case("bce", batches=2)
    for retain in (True, False):
        op = curvature_operator(model, loss_func, data, retain_graph=retain)
        with torch.no_grad():
            model.classifier.bias.add_(0.1)
        with pytest.raises(ValueError, match="'classifier.bias' changed in place"):
            op @ torch.ones(op.dim, dtype=torch.float64)


def test_guard_rails():
    model, loss_func, data = _case("bce")
    with pytest.raises(ValueError, match="reduction='sum'.*reduction='mean'"):
        curvature_operator(model, nn.BCEWithLogitsLoss(reduction="sum"), data)
    with pytest.raises(ValueError, match="unknown curvature 'fisher'; use one of hessian, ggn, ef"):
        curvature_operator(model, loss_func, data, curvature="fisher")
    with pytest.raises(ValueError, match="unsupported loss L1Loss"):
        curvature_operator(model, nn.L1Loss(), data)
    with pytest.raises(TypeError, match="loss module"):
        curvature_operator(model, lambda a, b: a, data)
    with pytest.raises(ValueError, match="no parameter named or prefixed 'head'"):
        curvature_operator(model, loss_func, data, params="head")
    op = curvature_operator(model, loss_func, data, "classifier")
    with pytest.raises(ValueError, match="above the limit 3"):
        op.dense(max_dim=3)
    model.train()
    with pytest.raises(ValueError, match=r"model is in train mode; call model.eval\(\)"):
        curvature_operator(model, loss_func, data)
    assert model.training  # never switched silently
    dropout = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), nn.Linear(4, 1)).double().train()
    with pytest.raises(ValueError, match=r"train mode with Dropout \(1\); call model.eval\(\)"):
        curvature_operator(dropout, loss_func, data)

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(6, 1).double()

        def forward(self, x):
            return self.lin(x + torch.randn_like(x))

    with pytest.raises(ValueError, match="not deterministic"):
        check_deterministic(Noisy().eval(), data[0])
    with pytest.raises(ValueError, match="not deterministic"):
        curvature_operator(Noisy().eval(), loss_func, data)


def test_backpack_extended_model_is_analysed_through_a_plain_copy():
    from backpack import extend

    model, loss_func, data = _case("ce")
    expected = ref.dense_hessian(model, loss_func, data, "classifier")
    extend(model)
    assert is_backpack_extended(model)
    copy = plain_copy(model)
    assert not is_backpack_extended(copy) and is_backpack_extended(model)
    assert not copy.classifier._forward_hooks
    op = curvature_operator(model, loss_func, data, "classifier")
    torch.testing.assert_close(op.dense(), expected)
    assert is_backpack_extended(model)  # the user's model keeps its hooks


# --------------------------------------------------------------------------- dense paths

HEAD_FORM = "closed-form (output layer: H = GGN)"
EF_FORM = "closed-form (nn.Linear per-sample gradients)"
SUBSETS = {
    "head": "classifier",
    "head-weight": "classifier.weight",
    "head-bias": "classifier.bias",
    "hidden": "featurizer.3",
    "mixed": ["featurizer.1.bias", "classifier.weight"],
}


@pytest.mark.parametrize("loss", ["bce", "ce"])
@pytest.mark.parametrize("subset", list(SUBSETS))
@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_dense_paths_match_reference(loss, subset, curvature):
    """Every dense path (closed forms, batched products, the loop) against torch.func, over
    three uneven batches; a closed-form pass also gives the exact risk and gradient."""
    model, loss_func, data = _case(loss)
    params = SUBSETS[subset]
    X, y = data[0]
    batches = [(X[:7], y[:7]), (X[7:20], y[7:20]), (X[20:], y[20:])]
    expected = ref.dense_curvature(model, loss_func, batches, params, curvature)
    grad = ref.gradient(model, loss_func, batches, params)
    R = ref.risk(model, loss_func, batches)
    head = subset.startswith("head")
    closed = EF_FORM if curvature == "ef" else HEAD_FORM if head else None
    snap = _snapshot(model)
    for method in ("auto", "batched", "products"):
        for retain in (True, False):
            op = curvature_operator(
                model, loss_func, batches, params, curvature, retain_graph=retain
            )
            got = op.dense(method=method, block_size=4)
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
            want = closed or "products" if method == "auto" else method
            assert op.dense_method == want
            assert op.num_products == (0 if want.startswith("closed") else expected.shape[0])
            torch.testing.assert_close(op.gradient(), grad)
            assert op.risk() == pytest.approx(R, rel=1e-12)
            if want.startswith("closed"):
                assert op._graphs is None  # nothing retained: the graph is built lazily
    if closed:
        op = curvature_operator(model, loss_func, batches, params, curvature)
        torch.testing.assert_close(op.dense(method="closed-form"), expected)
        if curvature != "ef":  # on the output layer the Hessian equals the GGN exactly
            other = "ggn" if curvature == "hessian" else "hessian"
            torch.testing.assert_close(
                ref.dense_curvature(model, loss_func, batches, params, other), expected
            )
    else:
        op = curvature_operator(model, loss_func, batches, params, curvature)
        with pytest.raises(ValueError, match=f"no closed form for the dense {curvature}: "):
            op.dense(method="closed-form")
    _assert_unchanged(model, snap)
    assert all(not m._forward_hooks for m in model.modules())


class _Squeezed(nn.Module):
    """Output reshaped after the last layer: not the layer's output tensor."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.classifier = nn.Linear(4, 1)

    def forward(self, x):
        return self.classifier(torch.tanh(self.body(x))).reshape(-1, 1)


class _UsedUpstream(nn.Module):
    """The head's bias also shifts the hidden layer: the output is not affine in it."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.classifier = nn.Linear(4, 1)

    def forward(self, x):
        return self.classifier(torch.tanh(self.body(x) + self.classifier.bias))


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
        (_UsedUpstream, "classifier", "hessian", "depends on the selected parameters"),
        (_UsedUpstream, "classifier", "ef", "do not add up to the gradient"),
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
    loss_func, make_data, _ = CASES["bce"]
    data = make_data(n_domains=1, n=20)["d0"]
    expected = ref.dense_curvature(model, loss_func(), data, params, curvature)
    op = curvature_operator(model, loss_func(), data, params, curvature)
    torch.testing.assert_close(op.dense(), expected)
    assert op.dense_method == "products"
    with pytest.raises(ValueError, match=f"no closed form .*{why}.*; use method='products'"):
        op.dense(method="closed-form")
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


def test_dense_arguments_and_lazy_graph():
    model, loss_func, data = _case("bce")
    op = curvature_operator(model, loss_func, data, "classifier")
    with pytest.raises(ValueError, match="unknown dense method 'fast'; use one of auto, closed-fo"):
        op.dense(method="fast")
    with pytest.raises(ValueError, match="block_size must be a positive integer, got 0"):
        op.dense(method="batched", block_size=0)
    assert op._graphs is None  # nothing built at construction
    graphs = op.build()
    assert len(graphs) == 1 and op.build() is graphs
    op.release()
    with pytest.raises(ValueError, match="released"):
        op.dense()
    op = curvature_operator(model, loss_func, data, "classifier")
    with torch.no_grad():
        model.classifier.weight.mul_(1.0)
    with pytest.raises(ValueError, match="'classifier.weight' changed in place"):
        op.dense()


def test_closed_forms_in_row_chunks(monkeypatch):
    """Loss Hessians [rows, C, C] and per-sample gradient blocks [rows, D] taken a few rows at
    a time give the same matrices."""
    import landscape.curvature.operators as ops

    monkeypatch.setattr(ops, "_LAMBDA_ELEMENTS", 40)  # C = 3: 4 rows per chunk
    monkeypatch.setattr(ops, "_EF_BLOCK_ELEMENTS", 50)  # D = 15: 3 rows per block
    model, loss_func, data = _case("ce")
    for curvature in ("hessian", "ef"):
        op = curvature_operator(model, loss_func, data, "classifier", curvature)
        expected = ref.dense_curvature(model, loss_func, data, "classifier", curvature)
        torch.testing.assert_close(op.dense(method="closed-form"), expected)
