"""Per-domain curvature against the dense float64 references, closed forms and convergence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature as C
from landscape.curvature import reference as ref
from landscape.models import colored_mnist_mlp
from tests.cases import make_binary_domains, make_mlp, make_multiclass_domains

CASES = {
    "bce": (nn.BCEWithLogitsLoss, make_binary_domains, 1),
    "ce": (nn.CrossEntropyLoss, make_multiclass_domains, 3),
}
PARAMS = [None, "classifier"]


def _case(loss: str, n: int = 30):
    """A small MLP and two domains; domain d0 comes in two uneven batches."""
    loss_cls, make, out = CASES[loss]
    model = make_mlp(out=out)
    domains = make(n_domains=2, n=n)
    X, y = domains["d0"][0]
    domains["d0"] = [(X[:11], y[:11]), (X[11:], y[11:])]
    return model, loss_cls(), domains


def _snapshot(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
        [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()],
    )


def _close(a, b, rtol=1e-9, atol=1e-11):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.fixture(params=["bce", "ce"])
def case(request):
    return (request.param, *_case(request.param))


@pytest.mark.parametrize("params", PARAMS, ids=["all", "head"])
def test_variances_and_diagonals_match_reference(case, params, tmp_path):
    loss, model, loss_func, domains = case
    snap = _snapshot(model)
    gv = C.gradient_variance(model, loss_func, domains, params)
    gv_raw = C.gradient_variance(model, loss_func, domains, params, centered=False)
    gv_ps = C.gradient_variance(
        model, loss_func, domains, params, method="per_sample", chunk_size=7
    )
    # every method, centered or not, in chunks that split d0's two uneven batches (11 + 19)
    others = {
        (m, c): C.gradient_variance(model, loss_func, domains, params, c, method=m, chunk_size=4)
        for m in ("linear", "backpack")
        for c in (True, False)
    }
    diag = {
        m: C.hessian_diagonal(model, loss_func, domains, params, method=m) for m in ("exact", "ggn")
    }
    for name, data in domains.items():
        var = ref.gradient_variance(model, loss_func, data, params).numpy()
        second = ref.gradient_variance(model, loss_func, data, params, centered=False).numpy()
        _close(gv.variance[name], var)
        _close(gv_ps.variance[name], var)
        _close(gv.empirical_fisher[name], second)
        _close(gv_raw.variance[name], second)
        _close(gv.mean_gradient[name], ref.gradient(model, loss_func, data, params).numpy())
        for (m, centered), other in others.items():
            assert other.settings["method"] == m
            _close(other.variance[name], var if centered else second)
            _close(other.empirical_fisher[name], second)
            _close(other.mean_gradient[name], gv.mean_gradient[name])
        assert gv.num_samples[name] == 30
        H = ref.dense_hessian(model, loss_func, data, params)
        G = ref.dense_ggn(model, loss_func, data, params)
        _close(diag["exact"].diagonal[name], torch.diagonal(H).numpy())
        _close(diag["ggn"].diagonal[name], torch.diagonal(G).numpy())
        if params is None:  # H and G differ on the whole network (off the diagonal for ReLU)
            assert float((H - G).abs().max()) > 1e-5
    assert gv.settings == {
        "params": params,
        "centered": True,
        "method": "linear",  # "auto" resolved: every parameter is in an nn.Linear
        "chunk_size": 2048,
    }
    loaded = C.GradientVarianceResult.load(gv.save(tmp_path / "gv"))
    _close(loaded.variance["d1"], gv.variance["d1"], 0, 0)
    assert loaded.settings == gv.settings and loaded.param_names == gv.param_names
    parts = loaded.unflatten(loaded.variance["d1"])
    assert list(parts) == gv.param_names
    assert [list(v.shape) for v in parts.values()] == gv.param_shapes
    _assert_unchanged(model, snap)


def _assert_unchanged(model, snap):
    state, flags, modes, hooks = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert [m.training for m in model.modules()] == modes
    assert [(len(m._forward_hooks), len(m._backward_hooks)) for m in model.modules()] == hooks
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("params", PARAMS, ids=["all", "head"])
@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_eigenpairs_and_traces_match_reference(case, params, curvature, tmp_path):
    loss, model, loss_func, domains = case
    snap = _snapshot(model)
    k = 3
    eig = C.top_eigenpairs(
        model, loss_func, domains, params, k=k, which="both", curvature=curvature, tol=1e-15
    )
    exact = C.hessian_trace(model, loss_func, domains, params, method="exact", curvature=curvature)
    for name, data in domains.items():
        A = ref.dense_curvature(model, loss_func, data, params, curvature)
        top, V = ref.eigenpairs(A, k)
        bottom, _ = ref.eigenpairs(A, k, largest=False)
        _close(eig.largest_eigenvalues[name], top.numpy(), 1e-8, 1e-10)
        if curvature == "hessian":
            _close(eig.smallest_eigenvalues[name], bottom.numpy(), 1e-8, 1e-10)
        else:  # a repeated 0 (rank-deficient PSD matrix) is found once by single-vector Lanczos
            _close(eig.smallest_eigenvalues[name][0], bottom[0].numpy(), 0, 1e-10)
        U = eig.largest_eigenvectors[name]
        # eigenvectors up to sign (top eigenvalues are simple here) ...
        _close(np.abs(U.T @ V.numpy()), np.eye(k), 0, 1e-6)
        # ... and every returned pair is an eigenpair (covers the degenerate smallest ones)
        for vals, vecs in (
            (eig.largest_eigenvalues, eig.largest_eigenvectors),
            (eig.smallest_eigenvalues, eig.smallest_eigenvectors),
        ):
            W = torch.as_tensor(vecs[name])
            residual = A @ W - W * torch.as_tensor(vals[name])
            assert float(residual.norm(dim=0).max()) < 1e-7
            _close(W.T @ W, np.eye(k), 0, 1e-8)
        assert eig.converged[name]
        assert exact.trace[name] == pytest.approx(ref.trace(A), rel=1e-10, abs=1e-12)
    loaded = C.EigenpairsResult.load(eig.save(tmp_path / "eig"))
    _close(loaded.eigenvalues["d0"], eig.largest_eigenvalues["d0"], 0, 0)
    assert loaded.settings["seed"] == 0 and loaded.settings["curvature"] == curvature
    _assert_unchanged(model, snap)


def test_eigsh_method_and_lanczos_uses_fewer_products():
    model, loss_func, domains = _case("bce")
    fast = C.top_eigenpairs(model, loss_func, domains, k=2, tol=1e-8)
    arpack = C.top_eigenpairs(model, loss_func, domains, k=2, method="eigsh", tol=1e-8)
    H = ref.dense_hessian(model, loss_func, domains["d1"])
    top, _ = ref.eigenpairs(H, 2)
    _close(arpack.eigenvalues["d1"], top.numpy(), 1e-8, 1e-10)
    _close(fast.eigenvalues["d1"], top.numpy(), 1e-8, 1e-10)
    assert fast.num_products["d1"] < arpack.num_products["d1"]


def test_linear_mse_closed_form():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=g, dtype=torch.float64)
    y = X @ torch.randn(5, 1, generator=g, dtype=torch.float64) + 0.1
    model = nn.Linear(5, 1, bias=False).double().eval()
    H = 2 / 60 * X.T @ X
    evals, evecs = torch.linalg.eigh(H)
    domains = {"a": [(X[:25], y[:25]), (X[25:], y[25:])]}
    for method in ("exact", "ggn"):
        d = C.hessian_diagonal(model, nn.MSELoss(), domains, method=method)
        _close(d.diagonal["a"], torch.diagonal(H).numpy())
    eig = C.top_eigenpairs(model, nn.MSELoss(), domains, k=2, tol=1e-12)
    _close(eig.eigenvalues["a"], evals.flip(0)[:2].numpy(), 1e-10)
    tr = C.hessian_trace(model, nn.MSELoss(), domains, method="exact")
    assert tr.trace["a"] == pytest.approx(float(torch.trace(H)), rel=1e-12)
    # SLQ with as many steps as dimensions finds the whole spectrum
    sd = C.spectral_density(model, nn.MSELoss(), domains, num_probes=3, lanczos_steps=5)
    _close(sd.nodes["a"], np.tile(evals.numpy(), (3, 1)), 1e-10)


def test_head_of_colored_mnist_mlp_exact_equals_ggn():
    """docs/method.md section 3: the logits are linear in the head, so its Hessian is its GGN."""
    torch.manual_seed(0)
    model = colored_mnist_mlp().double().eval()
    g = torch.Generator().manual_seed(0)
    X = torch.rand(64, 2, 14, 14, generator=g, dtype=torch.float64)
    y = (torch.rand(64, 1, generator=g) < 0.5).double()
    domains = {"+90%": [(X, y)]}
    exact = C.hessian_diagonal(model, nn.BCEWithLogitsLoss(), domains, "classifier", "exact")
    ggn = C.hessian_diagonal(model, nn.BCEWithLogitsLoss(), domains, "classifier", "ggn")
    assert exact.diagonal["+90%"].shape == (391,)
    assert np.abs(exact.diagonal["+90%"]).max() > 1e-4
    _close(exact.diagonal["+90%"], ggn.diagonal["+90%"], 1e-10, 1e-14)


def test_smooth_network_exact_differs_from_ggn_except_on_the_head():
    """With tanh the residual term changes the diagonal of the hidden layers (a test that can
    fail); the head's diagonals still coincide."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double().eval()
    g = torch.Generator().manual_seed(0)
    domains = {
        "a": [
            (
                torch.randn(40, 4, generator=g, dtype=torch.float64),
                torch.randint(0, 2, (40,), generator=g),
            )
        ]
    }
    loss_func = nn.CrossEntropyLoss()
    for params, same in ((None, False), ("2", True)):
        exact = C.hessian_diagonal(model, loss_func, domains, params, "exact").diagonal["a"]
        ggn = C.hessian_diagonal(model, loss_func, domains, params, "ggn").diagonal["a"]
        H = ref.dense_hessian(model, loss_func, domains["a"], params)
        _close(exact, torch.diagonal(H).numpy())
        assert np.allclose(exact, ggn, rtol=1e-10, atol=1e-14) == same


def test_hutchinson_estimators_converge_with_honest_standard_errors():
    model, loss_func, domains = _case("ce")
    data = {"d1": domains["d1"]}
    H = ref.dense_hessian(model, loss_func, data["d1"])
    true_diag, true_trace = torch.diagonal(H).numpy(), ref.trace(H)
    errors, trace_errors = [], []
    for m in (16, 256):
        d = C.hessian_diagonal(model, loss_func, data, method="hutchinson", num_probes=m, seed=1)
        err = d.diagonal["d1"] - true_diag
        se = d.standard_error["d1"]
        assert d.num_products["d1"] == m
        assert np.mean(np.abs(err) < 4 * se) > 0.95
        errors.append(np.sqrt(np.mean(err**2)))
        t = C.hessian_trace(model, loss_func, data, num_probes=m, seed=1)
        assert abs(t.trace["d1"] - true_trace) < 4 * t.standard_error["d1"]
        assert t.samples["d1"].shape == (m,)
        trace_errors.append(t.standard_error["d1"])
    # 16x more probes: the error and the standard error shrink by about 4
    assert 2 < errors[0] / errors[1] < 8
    assert 2.5 < trace_errors[0] / trace_errors[1] < 6.5


def test_fisher_mc_converges_to_ggn_diagonal():
    model, loss_func, domains = _case("bce")
    data = {"d1": domains["d1"]}
    ggn = torch.diagonal(ref.dense_ggn(model, loss_func, data["d1"], "classifier")).numpy()
    errors = []
    for mc in (20, 1280):
        rmse = []
        for seed in (0, 1, 2):
            d = C.hessian_diagonal(
                model, loss_func, data, "classifier", "fisher_mc", mc_samples=mc, seed=seed
            )
            rmse.append(np.sqrt(np.mean((d.diagonal["d1"] - ggn) ** 2)))
        again = C.hessian_diagonal(
            model, loss_func, data, "classifier", "fisher_mc", mc_samples=mc, seed=2
        )
        _close(d.diagonal["d1"], again.diagonal["d1"], 0, 0)  # seeded
        assert d.settings["seed"] == 2 and d.settings["mc_samples"] == mc
        errors.append(np.mean(rmse))
    assert errors[0] / errors[1] > 4  # 64x the samples: ~8x smaller


def test_spectral_density_against_dense_spectrum():
    model, loss_func, domains = _case("bce")
    data = {"d1": domains["d1"]}
    H = ref.dense_hessian(model, loss_func, data["d1"])
    evals = torch.linalg.eigvalsh(H).numpy()
    D = len(evals)
    sd = C.spectral_density(model, loss_func, data, num_probes=4, lanczos_steps=D, sigma=0.01)
    _close(sd.weights["d1"].sum(1), np.ones(4), 1e-12, 1e-12)
    grid, dens = sd.grid["d1"], sd.density["d1"]
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-3)
    assert sd.nodes["d1"].min() == pytest.approx(evals.min(), abs=1e-8)
    assert sd.nodes["d1"].max() == pytest.approx(evals.max(), rel=1e-8)
    # Gauss quadrature: sum_j w_j theta_j^p = v'H^p v / v'v for each probe, p < 2m (here
    # with m = 6 steps only), and the mean over probes estimates tr(H^p) / D
    short = C.spectral_density(model, loss_func, data, num_probes=4, lanczos_steps=6, seed=5)
    probes = C.rademacher(D, 4, 5, torch.float64, "cpu")
    for p in (1, 2, 5):
        Hp = torch.linalg.matrix_power(H, p)
        expected = [float(v @ Hp @ v / (v @ v)) for v in probes]
        got = np.sum(short.weights["d1"] * short.nodes["d1"] ** p, axis=1)
        _close(got, expected, 1e-8, 1e-14)
        assert short.moment("d1", p) == pytest.approx(np.mean(expected), rel=1e-8)
    assert short.settings["seed"] == 5 and short.nodes["d1"].shape == (4, 6)


def test_compare_domains(tmp_path):
    model, loss_func, domains = _case("ce")
    snap = _snapshot(model)
    twin = dict(domains)
    twin["d0_copy"] = domains["d0"]
    cmp = C.compare_domains(model, loss_func, twin, "classifier", k=2)
    names = ["d0", "d1", "d0_copy"]
    assert cmp.domains == names
    v = {n: ref.gradient_variance(model, loss_func, twin[n], "classifier").numpy() for n in names}
    h = {
        n: torch.diagonal(ref.dense_hessian(model, loss_func, twin[n], "classifier")).numpy()
        for n in names
    }
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    _close(cmp.variance_distance[0, 1], np.sum((v["d0"] - v["d1"]) ** 2))
    _close(cmp.variance_cosine[1, 0], cos(v["d0"], v["d1"]))
    _close(cmp.diagonal_distance[0, 1], np.sum((h["d0"] - h["d1"]) ** 2))
    _close(cmp.diagonal_cosine[0, 1], cos(h["d0"], h["d1"]))
    _close(cmp.within_cosine[1], cos(v["d1"], h["d1"]))
    assert cmp.variance_distance[0, 2] == 0 and cmp.diagonal_cosine[0, 2] == pytest.approx(1)
    _close(cmp.principal_angles[0, 2], np.zeros(2), 0, 1e-6)
    # principal angles between the dense top-2 eigenspaces
    U = [
        ref.eigenpairs(ref.dense_hessian(model, loss_func, twin[n], "classifier"), 2)[1]
        for n in ("d0", "d1")
    ]
    s = np.linalg.svd(U[0].numpy().T @ U[1].numpy(), compute_uv=False)
    _close(cmp.principal_angles[0, 1], np.sort(np.arccos(np.clip(s, -1, 1))), 0, 1e-4)
    assert cmp.principal_angles[0, 1].max() > 1e-3
    loaded = C.ComparisonResult.load(cmp.save(tmp_path / "cmp"))
    _close(loaded.principal_angles, cmp.principal_angles, 0, 0)
    # stochastic diagonals share probes: two identical domains give identical estimates
    hut = C.compare_domains(
        model, loss_func, twin, "classifier", k=0, diagonal_method="hutchinson", num_probes=8
    )
    assert hut.diagonal_distance[0, 2] == 0.0 and hut.principal_angles.shape == (3, 3, 0)
    with pytest.raises(ValueError, match="compare_domains needs at least 2 domains"):
        C.compare_domains(model, loss_func, {"d0": domains["d0"]})
    _assert_unchanged(model, snap)


def test_guard_rails_and_bad_inputs():
    model, loss_func, domains = _case("bce")
    with pytest.raises(ValueError, match=r"unknown method 'diag'; use one of exact, ggn"):
        C.hessian_diagonal(model, loss_func, domains, method="diag")
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        C.top_eigenpairs(model, loss_func, domains, k=0)
    with pytest.raises(ValueError, match="k=9 exceeds the number of selected parameters 5"):
        C.top_eigenpairs(model, loss_func, domains, "classifier", k=9)
    with pytest.raises(ValueError, match="which must be 'largest', 'smallest' or 'both'"):
        C.top_eigenpairs(model, loss_func, domains, which="top")
    with pytest.raises(ValueError, match="num_probes must be an integer >= 2"):
        C.hessian_trace(model, loss_func, domains, num_probes=1)
    with pytest.raises(ValueError, match="unknown method 'vmap'"):
        C.gradient_variance(model, loss_func, domains, method="vmap")
    with pytest.raises(ValueError, match="curvature='ggn' applies to method='hutchinson' only"):
        C.hessian_diagonal(model, loss_func, domains, curvature="ggn")
    with pytest.raises(ValueError, match="domain 'd1' is empty"):
        C.gradient_variance(model, loss_func, {"d1": [(torch.zeros(0, 6), torch.zeros(0, 1))]})
    with pytest.raises(TypeError, match="domains must be a mapping"):
        C.hessian_trace(model, loss_func, [(torch.zeros(2, 6), torch.zeros(2, 1))])
    bad = {"d": [(domains["d1"][0][0], domains["d1"][0][1] * 0.5)]}
    with pytest.raises(
        ValueError, match="need 0/1 targets for BCEWithLogitsLoss; use method='hutchinson'"
    ):
        C.hessian_diagonal(model, loss_func, bad)
    C.hessian_diagonal(model, loss_func, bad, method="hutchinson", num_probes=2)  # works
    model.featurizer.train()
    with pytest.raises(ValueError, match=r"model is in train mode; call model.eval\(\)"):
        C.gradient_variance(model, loss_func, domains)
    drop = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.3), nn.Linear(3, 1)).double().train()
    with pytest.raises(
        ValueError, match=r"model is in train mode with Dropout \(1\); call model.eval\(\)"
    ):
        C.hessian_diagonal(drop, loss_func, domains)
    assert drop.training


def test_backpack_extended_model_is_left_extended_and_unchanged():
    from backpack import extend

    model, loss_func, domains = _case("ce")
    expected = C.hessian_diagonal(model, loss_func, domains, method="exact")
    extend(model)
    snap = _snapshot(model)
    got = C.hessian_diagonal(model, loss_func, domains, method="exact")
    eig = C.top_eigenpairs(model, loss_func, domains, "classifier", k=1)
    _close(got.diagonal["d0"], expected.diagonal["d0"], 0, 0)
    assert eig.converged["d0"]
    _assert_unchanged(model, snap)


def test_float32_model():
    model, loss_func, domains = _case("bce")
    model32 = make_mlp(out=1, dtype=torch.float32)
    d32 = {n: [(X.float(), y.float()) for X, y in b] for n, b in domains.items()}
    eig = C.top_eigenpairs(model32, loss_func, d32, k=2, tol=1e-4)
    H = ref.dense_hessian(model, loss_func, domains["d1"])
    _close(eig.eigenvalues["d1"], ref.eigenpairs(H, 2)[0].numpy(), 1e-4, 1e-6)
    assert eig.largest_eigenvectors["d1"].dtype == np.float32
    gv = C.gradient_variance(model32, loss_func, d32)
    _close(
        gv.variance["d1"],
        ref.gradient_variance(model, loss_func, domains["d1"]).numpy(),
        1e-4,
        1e-7,
    )


def test_curvature_command(tmp_path, capsys):
    from landscape.checkpoint import save_checkpoint
    from landscape.cli import main
    from landscape.data import build_domains
    from landscape.models import MLP

    spec = {"name": "gaussian_classification", "n": 40, "dim": 4, "seed": 1}
    torch.manual_seed(0)
    model = MLP(5, [6], 1).double().eval()
    ckpt = save_checkpoint(
        tmp_path / "model", model, {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    )
    out = tmp_path / "out"
    argv = [
        "curvature", str(ckpt), "--params", "classifier", "--methods", "variance", "diagonal",
        "eigen", "trace", "compare", "--k", "2", "--smallest", "--probes", "8", "--quiet",
        "--out", str(out), "--subsample", "30",
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "lambda_max" in printed and "cos(Var, diag H)" in printed
    domains = build_domains(spec, dtype=torch.float64)
    sub = {n: [(b[0][0][:30], b[0][1][:30])] for n, b in domains.items()}
    expected = C.hessian_diagonal(model, nn.BCEWithLogitsLoss(), sub, "classifier")
    got = C.HessianDiagonalResult.load(out / "diagonal")
    _close(got.diagonal["d1"], expected.diagonal["d1"], 1e-12, 1e-14)
    eig = C.EigenpairsResult.load(out / "eigen")
    H = ref.dense_hessian(model, nn.BCEWithLogitsLoss(), sub["d0"], "classifier")
    _close(eig.largest_eigenvalues["d0"], ref.eigenpairs(H, 2)[0].numpy(), 1e-6)
    assert C.TraceResult.load(out / "trace_exact").trace["d0"] == pytest.approx(ref.trace(H))
    assert C.ComparisonResult.load(out / "compare").principal_angles.shape == (2, 2, 2)
    assert (out / "curvature_summary.json").is_file() and (out / "variance.npz").is_file()
    for bad, message in [
        (["--k", "0"], "--k must be a positive integer, got 0"),
        (["--domains", "d7"], "unknown domain 'd7'; available: d0, d1"),
        (["--domains", "d0", "--methods", "compare"], "compare needs at least 2 domains"),
        (["--params", "head"], "no parameter named or prefixed 'head'"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(["curvature", str(ckpt), "--quiet", "--out", str(out), *bad])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["curvature", str(tmp_path / "missing.safetensors"), "--quiet"])
    assert "does not exist" in capsys.readouterr().err


class _UsedUpstream(nn.Module):
    """The head's bias also shifts the hidden layer: g_i(b) is not delta_i alone."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.classifier = nn.Linear(4, 1)

    def forward(self, x):
        return self.classifier(torch.tanh(self.body(x) + self.classifier.bias))


def test_gradient_variance_linear_path_applies_only_where_exact():
    """'auto' takes the nn.Linear factorisation only where it is exact (else BackPACK or,
    when BackPACK fails too, a clear error); 'linear' says why it does not apply."""
    _, loss_func, domains = _case("bce")
    torch.manual_seed(1)
    tied = _UsedUpstream().double().eval()
    for p in tied.parameters():
        nn.init.normal_(p, std=0.5)
    expected = ref.gradient_variance(tied, loss_func, domains["d1"], "classifier").numpy()
    got = C.gradient_variance(tied, loss_func, domains, "classifier", method="per_sample")
    _close(got.variance["d1"], expected)
    with pytest.raises(ValueError, match="does not apply: .*do not add up.*'per_sample'"):
        C.gradient_variance(tied, loss_func, domains, "classifier", method="linear")
    # the factorisation (and BackPACK, per module) would miss the bias's upstream use: the
    # sum check sends 'auto' to the exact per-sample path
    auto = C.gradient_variance(tied, loss_func, domains, "classifier")
    assert auto.settings["method"] == "per_sample"
    _close(auto.variance["d1"], expected)
    body = C.gradient_variance(tied, loss_func, domains, "body", chunk_size=8)
    assert body.settings["method"] == "linear"
    _close(body.variance["d1"], ref.gradient_variance(tied, loss_func, domains["d1"], "body"))
    conv = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1))
    conv = conv.double().eval()
    for params, method in ((None, "backpack"), ("3", "linear")):
        gv = C.gradient_variance(conv, loss_func, domains, params, chunk_size=5)
        assert gv.settings["method"] == method
        _close(gv.variance["d0"], ref.gradient_variance(conv, loss_func, domains["d0"], params))
    with pytest.raises(ValueError, match="does not apply: .*belongs to a Conv1d"):
        C.gradient_variance(conv, loss_func, domains, method="linear")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        C.gradient_variance(conv, loss_func, domains, chunk_size=0)
