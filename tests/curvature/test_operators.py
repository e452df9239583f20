"""Matrix-free curvature operators against the dense float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.curvature import reference as ref
from landscape.curvature.operators import (
    Curvature,
    curvature_operator,
)
from tests.cases import CASES_BY_LOSS


def _case(loss: str, batches: int = 1, dtype=torch.float64, n: int = 30):
    """The whole-network registry case of ``loss``: ``(model, loss_func, data)``, one domain
    of ``n`` samples in ``batches`` batches."""
    return CASES_BY_LOSS[loss].build_one(dtype, n=n, batches=batches)[:3]


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


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_matches_reference(case, curvature):
    model, loss_func, data, params = case.build_one()
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


@pytest.mark.parametrize("subset", list(SUBSETS))
@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_dense_paths_match_reference(loss_case, subset, curvature):
    """Every dense path (closed forms, batched products, the loop) against torch.func, over
    three uneven batches; a closed-form pass also gives the exact risk and gradient."""
    model, loss_func, data, _ = loss_case.build_one()
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


# --------------------------------------------------------------------------- block products


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
@pytest.mark.parametrize("retain", [True, False], ids=["retained", "loop"])
def test_matmat_equals_matvecs(case, dtype, curvature, retain, monkeypatch):
    """k columns in vectorised blocks (one block, several blocks, one column per block) equal
    k single products, and the dense float64 reference; float32 and float64."""
    import landscape.curvature.operators as ops

    model, loss_func, domains, params = case.build(dtype)
    data = domains["d0"]
    X, y = data[0]
    batches = [(X[:20], y[:20]), (X[20:], y[20:])]
    expected = ref.dense_curvature(model, loss_func, data, params, curvature)
    op = curvature_operator(model, loss_func, batches, params, curvature, retain_graph=retain)
    g = torch.Generator().manual_seed(0)
    V = torch.randn(op.dim, 5, generator=g, dtype=torch.float64).to(dtype)
    singles = torch.stack([op.matvec(V[:, j]) for j in range(5)], dim=1)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    for columns in (8, 2, 1):
        monkeypatch.setattr(ops, "BLOCK_COLUMNS", columns)
        assert op.block_columns == columns
        before = op.num_products
        got = op.matmat(V)
        assert got.shape == (op.dim, 5) and got.dtype == dtype and got.is_contiguous()
        assert op.num_products == before + 5
        torch.testing.assert_close(got, singles, **tol)
        torch.testing.assert_close(got.double(), expected @ V.double(), **tol)
    assert op.matmat(V[:, :0]).shape == (op.dim, 0)


def test_block_columns_shrink_with_the_batch(monkeypatch):
    import landscape.curvature.operators as ops

    model, loss_func, data = _case("bce", n=30)
    op = curvature_operator(model, loss_func, data)
    assert op.block_columns == ops.BLOCK_COLUMNS
    monkeypatch.setattr(ops, "BLOCK_SAMPLE_COLUMNS", 90)  # 3 columns of 30 rows
    assert op.block_columns == 3
    monkeypatch.setattr(ops, "BLOCK_SAMPLE_COLUMNS", 10)
    assert op.block_columns == 1
    monkeypatch.setattr(ops, "BLOCK_SAMPLE_COLUMNS", 2**14)
    monkeypatch.setattr(ops, "BLOCK_MAX_DIM", op.dim - 1)  # large selections: one at a time
    assert op.block_columns == 1


def test_operators_are_curvlinops_operators():
    """Subclasses of curvlinops' CurvatureLinearOperator: the constructor by curvature name,
    adjoint, sums and scalings with other operators, tensor-list products, curvlinops'
    estimators and SciPy export all work on them."""
    from curvlinops import HessianLinearOperator, hutchinson_trace
    from curvlinops._torch_base import CurvatureLinearOperator

    from landscape.curvature.operators import (
        CurvatureOperator,
        EFOperator,
        GGNOperator,
        HessianOperator,
    )

    model, loss_func, data = _case("ce")
    H = ref.dense_hessian(model, loss_func, data)
    G = ref.dense_ggn(model, loss_func, data)
    op = CurvatureOperator(model, loss_func, data, curvature="ggn")
    assert type(op) is GGNOperator and isinstance(op, CurvatureLinearOperator)
    assert type(CurvatureOperator(model, loss_func, data)) is HessianOperator
    assert type(CurvatureOperator(model, loss_func, data, None, Curvature.EF)) is EFOperator
    with pytest.raises(ValueError, match="HessianOperator is the hessian, not ggn"):
        HessianOperator(model, loss_func, data, curvature="ggn")
    hess = curvature_operator(model, loss_func, data)
    assert hess.adjoint() is hess
    v = torch.randn(op.dim, dtype=torch.float64)
    torch.testing.assert_close((hess - 2.0 * op) @ v, (H - 2.0 * G) @ v)
    params = list(select_params_of(model).values())
    theirs = HessianLinearOperator(model, loss_func, params, data, check_deterministic=False)
    torch.testing.assert_close((hess + theirs) @ v, 2.0 * H @ v)
    parts = [t.clone() for t in v.split([p.numel() for p in params])]
    parts = [t.reshape(p.shape) for t, p in zip(parts, params, strict=True)]
    out = hess @ parts
    torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]), H @ v)
    estimate = hutchinson_trace(hess, 20)  # curvlinops' estimator on our operator
    assert torch.isfinite(torch.as_tensor(estimate))
    assert "HessianOperator(D=" in repr(hess)


def select_params_of(model):
    from landscape.params import select_params

    return select_params(model, None)


def _group_norm_cnn(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
        nn.Linear(100, 2),
    ).to(dtype).eval()  # fmt: skip
    X = torch.randn(10, 1, 5, 5, dtype=torch.float64).to(dtype)
    return model, [(X, torch.randint(0, 2, (10,)))]


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
@pytest.mark.parametrize("retain", [True, False], ids=["retained", "loop"])
def test_matmat_on_group_norm_equals_matvecs(dtype, curvature, retain):
    """PyTorch cannot batch the GroupNorm double backward (the Hessian's vectorised block
    raised a size mismatch): the operator falls back to one column at a time, once, and its
    blocks equal single products and the dense float64 reference."""
    model, data = _group_norm_cnn(dtype)
    op = curvature_operator(model, nn.CrossEntropyLoss(), data, None, curvature,
                            retain_graph=retain)  # fmt: skip
    V = torch.randn(op.dim, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)
    singles = torch.stack([op.matvec(V[:, j]) for j in range(3)], dim=1)
    got = op.matmat(V)
    assert op.vectorised is (curvature != "hessian")
    assert op.num_products == 6 and op.matmat(V).shape == (op.dim, 3)
    tol = {"rtol": 1e-4, "atol": 1e-5} if dtype == torch.float32 else {}
    torch.testing.assert_close(got, singles, **tol)
    m64, d64 = _group_norm_cnn(torch.float64)
    expected = ref.dense_curvature(m64, nn.CrossEntropyLoss(), d64, None, curvature)
    torch.testing.assert_close(got.double(), expected @ V.double(), **tol)


def test_matmat_fallback_does_not_swallow_other_errors(monkeypatch):
    """An error that one column at a time raises too propagates from matmat."""
    model, loss_func, data = _case("bce", n=30)
    op = curvature_operator(model, loss_func, data)

    def broken(graph, Vt, keep):
        raise RuntimeError("not a batching failure")

    monkeypatch.setattr(op, "_product", broken)
    with pytest.raises(RuntimeError, match="not a batching failure"):
        op.matmat(torch.randn(op.dim, 3, dtype=torch.float64))
    assert op.vectorised is None
