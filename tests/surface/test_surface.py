"""Tests for landscape.surface: closed forms, every path against a brute-force loop, resume."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from landscape.surface.directions import plane_directions, random_directions, trajectory_directions
from landscape.models import MLP
from landscape.params import flatten
from landscape.surface import SurfaceResult, first_linear_layer, loss_surface, make_grid
from tests.cases import make_binary_domains, make_mlp, make_multiclass_domains


class ConvBN(nn.Module):
    """A small conv net with batch norm and dropout (first layer is not linear)."""

    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3 * 3 * 3, classes)

    def forward(self, x):
        return self.fc(self.drop(torch.relu(self.bn(self.conv(x)))).flatten(1))


def brute_force(model, loss_func, domains, dirs, alphas, betas, bn_recompute=False):
    """Copy every displaced parameter set into a deep copy of the model and evaluate."""
    net = copy.deepcopy(model)
    params = dict(net.named_parameters())
    origin = dirs.origin or {n: params[n].detach().clone() for n in dirs.names}
    out, acc = {}, {}
    for name, batches in domains.items():
        X = torch.cat([b[0] for b in batches])
        y = torch.cat([b[1] for b in batches])
        L = np.empty((len(alphas), len(betas)))
        A = np.empty_like(L)
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                with torch.no_grad():
                    for n in dirs.names:
                        params[n].copy_(origin[n] + a * dirs.d1[n] + b * dirs.d2[n])
                    if bn_recompute:
                        for m in net.modules():
                            if isinstance(m, nn.BatchNorm2d):
                                m.reset_running_stats()
                                m.momentum = None
                                m.train()
                        for Xb, _ in batches:
                            net(Xb)
                        net.eval()
                    logits = net(X)
                    L[i, j] = float(loss_func(logits, y))
                    if logits.shape[-1] == 1:
                        A[i, j] = float(((logits > 0).to(y.dtype) == y).double().mean())
                    else:
                        A[i, j] = float((logits.argmax(-1) == y).double().mean())
        out[name], acc[name] = L, A
    return out, acc


def snapshot(model):
    return (
        {n: p.detach().clone() for n, p in model.named_parameters()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: m.training for n, m in model.named_modules()},
        {n: b.clone() for n, b in model.named_buffers()},
    )


def assert_untouched(model, snap):
    params, flags, modes, buffers = snap
    after = snapshot(model)
    assert all(torch.equal(params[n], after[0][n]) for n in params)
    assert flags == after[1]
    assert modes == after[2]
    assert all(torch.equal(buffers[n], after[3][n]) for n in buffers)


# --------------------------------------------------------------------- closed form


@pytest.mark.parametrize("first_layer", [False, True], ids=["plain", "first-layer"])
def test_quadratic_loss_gives_half_dthd_on_the_grid(first_layer):
    """Linear model + MSE around its least-squares minimum: R(θ*+Δ) - R* = ½ΔᵀHΔ exactly."""
    g = torch.Generator().manual_seed(0)
    N, dim = 40, 9
    X = torch.randn(N, dim, generator=g, dtype=torch.float64)
    y = X @ torch.randn(dim, 1, generator=g, dtype=torch.float64) + 0.3 * torch.randn(
        N, 1, generator=g, dtype=torch.float64
    )
    model = MLP(dim, [], 1).double().eval()
    Xb = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(Xb, y).solution
    with torch.no_grad():
        model.classifier.weight.copy_(sol[:dim].T)
        model.classifier.bias.copy_(sol[dim])
    H = 2.0 / N * Xb.T @ Xb  # Hessian of the mean squared error
    dirs = random_directions(model, seed=3, include_biases=True)
    D = torch.stack([flatten(dirs.d1), flatten(dirs.d2)], 1)  # [D, 2] in (weight, bias) order
    C = D.T @ H @ D
    alphas, betas = np.linspace(-1, 1, 5), np.linspace(-2, 1.5, 4)
    res = loss_surface(
        model,
        nn.MSELoss(),
        {"e": [(X, y)]},
        dirs,
        grid=(alphas, betas),
        first_layer=first_layer,
        progress=False,
    )
    assert res.settings["path"] == ("first_layer" if first_layer else "plain")
    r0 = float(nn.MSELoss()(Xb @ sol, y))
    for i, a in enumerate(alphas):
        for j, b in enumerate(betas):
            v = torch.tensor([a, b], dtype=torch.float64)
            assert res.losses["e"][i, j] == pytest.approx(r0 + 0.5 * float(v @ C @ v), rel=1e-12)
    assert res.accuracies == {}  # regression: no accuracy


def test_eigen_directions_give_half_lambda_on_a_quadratic():
    """At the least-squares minimum along unit eigenvectors: R* + ½(λ₁α² + λ₂β²)."""
    from landscape.surface.directions import eigen_directions

    g = torch.Generator().manual_seed(1)
    N, dim = 30, 4
    X = torch.randn(N, dim, generator=g, dtype=torch.float64)
    y = torch.randn(N, 1, generator=g, dtype=torch.float64)
    model = MLP(dim, [], 1).double().eval()
    Xb = torch.cat([X, torch.ones(N, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(Xb, y).solution
    with torch.no_grad():
        model.classifier.weight.copy_(sol[:dim].T)
        model.classifier.bias.copy_(sol[dim])
    dirs = eigen_directions(model, nn.MSELoss(), {"e": [(X, y)]}, k=2, tol=1e-10)
    lam = torch.linalg.eigvalsh(2.0 / N * Xb.T @ Xb).flip(0)
    np.testing.assert_allclose(dirs.info["eigenvalues"], lam[:2].numpy(), rtol=1e-8)
    res = loss_surface(model, nn.MSELoss(), {"e": [(X, y)]}, dirs, grid=(-1, 1, 3), progress=False)
    r0 = float(nn.MSELoss()(Xb @ sol, y))
    A, B = np.meshgrid(res.alphas, res.betas, indexing="ij")
    expected = r0 + 0.5 * (float(lam[0]) * A**2 + float(lam[1]) * B**2)
    np.testing.assert_allclose(res.losses["e"], expected, rtol=1e-7)


# ------------------------------------------------------------ paths vs brute force

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
    assert res.settings["path"].startswith("first_layer" if expected_first else "plain")
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


def test_first_layer_detection():
    model = make_mlp(dim=10)
    assert first_linear_layer(model, torch.randn(2, 10, dtype=torch.float64)) == "featurizer.1"
    assert (
        first_linear_layer(ConvBN().double(), torch.randn(2, 1, 5, 5, dtype=torch.float64)) is None
    )

    class Scaled(nn.Module):  # a parameter used before the first linear layer
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(2.0))
            self.lin = nn.Linear(10, 1)

        def forward(self, x):
            return self.lin(self.scale * x)

    assert first_linear_layer(Scaled(), torch.randn(2, 10)) is None

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(10, 10)
            self.b = nn.Linear(10, 10)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    assert first_linear_layer(Tied(), torch.randn(2, 10)) is None
    with pytest.raises(ValueError, match="first_layer=True, but the model's first parameterised"):
        model = ConvBN().eval()
        loss_surface(
            model,
            nn.CrossEntropyLoss(),
            {"a": (torch.randn(4, 1, 5, 5), torch.randint(0, 3, (4,)))},
            random_directions(model),
            grid=(-1, 1, 2),
            first_layer=True,
            progress=False,
        )


# ------------------------------------------------------------------------ planes


def test_plane_through_three_checkpoints_passes_through_all_three():
    domains = make_binary_domains(2, n=40, dim=10)
    ckpts = [make_mlp(dim=10, seed=s) for s in (1, 2, 3)]
    model = make_mlp(dim=10, seed=9)  # any model of the architecture: the plane fixes the origin
    plane = plane_directions(model, ckpts, labels=["init", "erm", "fishr"])
    (a0, b0), (a1, b1), (a2, b2) = (plane.info["points"][k] for k in ("init", "erm", "fishr"))
    alphas, betas = np.array([a0, a1, a2]), np.array([b0, b1, b2])
    loss_func = nn.BCEWithLogitsLoss()
    res = loss_surface(model, loss_func, domains, plane, grid=(alphas, betas), progress=False)
    for k, ckpt in enumerate(ckpts):
        for name, batches in domains.items():
            X, y = batches[0]
            with torch.no_grad():
                own = float(loss_func(ckpt(X), y))
            assert res.losses[name][k, k] == pytest.approx(own, rel=1e-12)
    assert res.directions["kind"] == "plane"
    assert res.directions["points"]["erm"] == [1.0, 0.0]
    # the default grid covers every checkpoint
    ga, gb = make_grid(None, plane)
    assert ga.min() < min(alphas) and ga.max() > max(alphas)
    assert gb.min() < min(betas) and gb.max() > max(betas)


def test_trajectory_surface_default_grid_covers_the_trajectory():
    model = make_mlp(dim=10)
    ckpts = [make_mlp(dim=10, seed=s) for s in range(4)]
    traj = trajectory_directions(model, ckpts)
    res = loss_surface(
        model,
        nn.BCEWithLogitsLoss(),
        make_binary_domains(1, n=10, dim=10),
        traj,
        grid=None,
        progress=False,
    )
    coords = np.asarray(res.directions["trajectory"])
    assert res.alphas.min() < coords[:, 0].min() and res.alphas.max() > coords[:, 0].max()
    assert res.losses["d0"].shape == (21, 21)


# ----------------------------------------------------- batch norm, subsample, result


def test_batch_norm_recompute_matches_brute_force():
    torch.manual_seed(0)
    model = ConvBN().double().eval()
    domains = {
        f"d{e}": [
            (torch.randn(10, 1, 5, 5, dtype=torch.float64) * (1 + e), torch.randint(0, 3, (10,)))
            for _ in range(2)
        ]
        for e in range(2)
    }
    dirs = random_directions(model, seed=0)
    alphas, betas = np.array([-0.5, 0.0, 1.0]), np.array([0.0, 0.7])
    snap = snapshot(model)
    res = loss_surface(
        model,
        nn.CrossEntropyLoss(),
        domains,
        dirs,
        grid=(alphas, betas),
        batch_norm="recompute",
        progress=False,
    )
    assert_untouched(model, snap)
    ref, _ = brute_force(
        model, nn.CrossEntropyLoss(), domains, dirs, alphas, betas, bn_recompute=True
    )
    running = loss_surface(
        model, nn.CrossEntropyLoss(), domains, dirs, grid=(alphas, betas), progress=False
    )
    for name in domains:
        np.testing.assert_allclose(res.losses[name], ref[name], rtol=1e-10)
        assert not np.allclose(running.losses[name], res.losses[name])
    assert res.settings["batch_norm"] == "recompute"


def test_train_mode_is_a_clear_error_and_model_untouched():
    model = ConvBN().double()  # train mode: batch norm and dropout would change behaviour
    data = {"a": (torch.randn(4, 1, 5, 5, dtype=torch.float64), torch.randint(0, 3, (4,)))}
    with pytest.raises(
        ValueError, match=r"'bn' \(BatchNorm2d\) is in training mode.*call model.eval\(\)"
    ):
        loss_surface(model, nn.CrossEntropyLoss(), data, random_directions(model), progress=False)
    # a model with no mode-dependent module may stay in train mode; flags are kept
    mlp = make_mlp(dim=10).train()
    mlp.featurizer[1].bias.requires_grad_(False)
    snap = snapshot(mlp)
    loss_surface(
        mlp,
        nn.BCEWithLogitsLoss(),
        make_binary_domains(1, n=8, dim=10),
        random_directions(mlp, include_biases=True),
        grid=(-1, 1, 2),
        progress=False,
    )
    assert_untouched(mlp, snap)


def test_subsample_is_seeded_and_evaluates_the_drawn_samples():
    model = make_mlp(dim=10)
    domains = make_binary_domains(2, n=50, dim=10)
    dirs = random_directions(model, seed=0)
    kw = dict(grid=(-1, 1, 3), subsample=12, progress=False)
    r1 = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, seed=1, **kw)
    r2 = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, seed=1, **kw)
    r3 = loss_surface(model, nn.BCEWithLogitsLoss(), domains, dirs, seed=2, **kw)
    assert r1.num_samples == {"d0": 12, "d1": 12}
    np.testing.assert_array_equal(r1.losses["d0"], r2.losses["d0"])
    assert not np.allclose(r1.losses["d0"], r3.losses["d0"])
    # the same numbers as the brute force on the recorded draw
    s = r1.settings["subsample_seeds"]["d0"]
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(s))[:12].sort().values
    X, y = domains["d0"][0]
    ref, _ = brute_force(
        model, nn.BCEWithLogitsLoss(), {"d0": [(X[idx], y[idx])]}, dirs, r1.alphas, r1.betas
    )
    np.testing.assert_allclose(r1.losses["d0"], ref["d0"], rtol=1e-12)
    # subsample larger than the domain: all samples
    full = loss_surface(
        model, nn.BCEWithLogitsLoss(), domains, dirs, grid=(-1, 1, 3), subsample=500, progress=False
    )
    assert full.num_samples["d0"] == 50


def test_result_differences_and_save_load(tmp_path):
    model = make_mlp(dim=10)
    domains = make_binary_domains(3, n=20, dim=10)
    res = loss_surface(
        model,
        nn.BCEWithLogitsLoss(),
        domains,
        random_directions(model, seed=4),
        grid=((-1, 1, 3), (-2, 2, 5)),
        progress=False,
    )
    assert res.losses["d0"].shape == (3, 5) and res.betas.tolist() == [-2, -1, 0, 1, 2]
    assert len(res.pairs) == 6 and ["d2", "d0"] in res.pairs
    np.testing.assert_array_equal(res.differences["d0 - d2"], res.losses["d0"] - res.losses["d2"])
    np.testing.assert_allclose(sum(res.deviations.values()), 0.0, atol=1e-12)
    np.testing.assert_array_equal(res.difference("d1", "d2"), res.differences["d2 - d1"])
    with pytest.raises(ValueError, match="unknown domain 'x'; available: d0, d1, d2"):
        res.difference("x", "d0")
    res.save(tmp_path / "surf")
    back = SurfaceResult.load(tmp_path / "surf")
    for name in res.losses:
        np.testing.assert_array_equal(back.losses[name], res.losses[name])
        np.testing.assert_array_equal(back.accuracies[name], res.accuracies[name])
    np.testing.assert_array_equal(back.alphas, res.alphas)
    assert back.directions == res.directions and back.settings == res.settings
    assert back.pairs == res.pairs and back.directions["seed"] == 4


# ------------------------------------------------------------------------- resume


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


# --------------------------------------------------------------------- bad inputs


def test_bad_inputs_get_clear_errors():
    model = make_mlp(dim=10)
    domains = make_binary_domains(1, n=8, dim=10)
    dirs = random_directions(model)
    lf = nn.BCEWithLogitsLoss()
    with pytest.raises(ValueError, match="alpha grid has 0 points; give at least one"):
        loss_surface(model, lf, domains, dirs, grid=(-1, 1, 0), progress=False)
    with pytest.raises(ValueError, match="beta grid has 0 points"):
        loss_surface(model, lf, domains, dirs, grid=([0.0, 1.0], []), progress=False)
    with pytest.raises(ValueError, match="min 1 must be below max -1"):
        make_grid((1, -1, 3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        make_grid(([0.0, np.nan], [0.0]))
    with pytest.raises(ValueError, match="built for another model"):
        loss_surface(
            make_mlp(dim=11), lf, make_binary_domains(1, n=8, dim=11), dirs, progress=False
        )
    with pytest.raises(TypeError, match="directions must be a landscape Directions"):
        loss_surface(model, lf, domains, {"x": 1}, progress=False)
    with pytest.raises(ValueError, match="unknown batch_norm 'fresh'"):
        loss_surface(model, lf, domains, dirs, batch_norm="fresh", progress=False)
    with pytest.raises(ValueError, match="subsample must be a positive integer"):
        loss_surface(model, lf, domains, dirs, subsample=0, progress=False)
    with pytest.raises(ValueError, match="loss reduction 'none' is not supported"):
        loss_surface(model, nn.BCEWithLogitsLoss(reduction="none"), domains, dirs, progress=False)
    with pytest.raises(ValueError, match="domain 'd0' is empty"):
        loss_surface(
            model, lf, {"d0": [(torch.zeros(0, 10), torch.zeros(0, 1))]}, dirs, progress=False
        )
    X, y = domains["d0"][0]
    bad = {"d0": [(X.clone().fill_(float("nan")), y)]}
    with pytest.raises(ValueError, match=r"the loss of domain 'd0' is NaN at \(alpha, beta\)"):
        loss_surface(model, lf, bad, dirs, grid=(-1, 1, 2), progress=False)


# ---------------------------------------------------------------------------- CLI


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import build_domains, data_spec

    spec = data_spec("gaussian_classification", n=30, dim=4)
    X = build_domains(spec)["d0"][0][0]
    torch.manual_seed(0)
    model = MLP(X.shape[1], [5], 1).double()
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta), model, spec


def test_cli_surface_writes_the_result_and_resumes(tmp_path, checkpoint, capsys):
    from landscape.cli import main
    from landscape.data import build_domains
    from landscape.surface.directions import Directions

    path, model, spec = checkpoint
    out = tmp_path / "out"
    argv = [
        "surface",
        str(path),
        "--grid",
        "-1",
        "1",
        "3",
        "--seed",
        "4",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    res = SurfaceResult.load(out / "surface")
    dirs = Directions.load(out / "directions")
    assert dirs.seed == 4 and res.directions["fingerprint"] == dirs.fingerprint()
    expected = loss_surface(
        model.eval(),
        nn.BCEWithLogitsLoss(),
        build_domains(spec),
        dirs,
        grid=(-1, 1, 3),
        progress=False,
    )
    assert res.domains == ["d0", "d1"]
    for name in res.domains:
        np.testing.assert_array_equal(res.losses[name], expected.losses[name])
    assert len(list((out / "surface_rows").glob("row_*.npz"))) == 3
    # the saved directions share the plane; a changed grid in the same folder is an error
    assert main(argv[:2] + ["--directions", str(out / "directions")] + argv[2:]) == 0
    with pytest.raises(SystemExit):
        main(argv[:3] + ["-1", "1", "5"] + argv[6:])
    assert (
        "other settings (alphas differs); use another checkpoint_dir or delete it; "
        "or pass --restart" in capsys.readouterr().err
    )
    assert main(argv[:3] + ["-1", "1", "5"] + argv[6:] + ["--restart"]) == 0
    # the plane through the checkpoint and two others
    others = []
    for s in (1, 2):
        torch.manual_seed(s)
        from landscape.checkpoint import save_checkpoint

        others.append(
            str(
                save_checkpoint(
                    tmp_path / f"m{s}",
                    MLP(model.spec["input_dim"], [5], 1).double(),
                    {"data": spec},
                )
            )
        )
    assert (
        main(
            [
                "surface",
                str(path),
                "--directions",
                "plane",
                "--checkpoints",
                *others,
                "--out",
                str(tmp_path / "plane"),
                "--quiet",
            ]
        )
        == 0
    )
    plane = SurfaceResult.load(tmp_path / "plane" / "surface")
    assert set(plane.directions["points"]) == {"model", "m1", "m2"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--domains", "d9"], "unknown domain 'd9'; available: d0, d1"),
        (["--grid", "-1", "1", "0"], "alpha grid has 0 points"),
        (["--directions", "sideways"], "unknown directions 'sideways'; use random, eigen"),
        (["--directions", "plane"], "--directions plane needs --checkpoints"),
    ],
)
def test_cli_bad_inputs(tmp_path, checkpoint, capsys, extra, message):
    from landscape.cli import main

    path, _, _ = checkpoint
    with pytest.raises(SystemExit) as info:
        main(["surface", str(path), "--out", str(tmp_path / "o"), "--quiet", *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
