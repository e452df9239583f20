"""Inputs resolved once per call (landscape/curvature/_setup.py): guard rails, bad inputs,
BackPACK-extended models, and the `landscape curvature` command."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape import curvature as C
from landscape.curvature import reference as ref
from tests.curvature._common import (
    assert_unchanged,
    close,
    small_case,
    snapshot,
)


def test_guard_rails_and_bad_inputs():
    model, loss_func, domains = small_case("bce")
    with pytest.raises(ValueError, match=r"unknown method 'diag'; use one of auto, exact, ggn"):
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
    # BackPACK's DiagGGNMC refuses soft targets; the same estimator by torch.func runs
    mc = C.hessian_diagonal(model, loss_func, bad, method="fisher_mc")
    assert mc.settings["backend"] == "torch.func"
    C.hessian_diagonal(model, loss_func, bad, method="hutchinson", num_probes=2)  # works
    # the default falls back to exact rows of Hessian-vector products
    soft = C.hessian_diagonal(model, loss_func, bad)
    assert soft.settings["backend"] == "products" and soft.settings["exact"]
    close(soft.diagonal["d"], torch.diagonal(ref.dense_hessian(model, loss_func, bad["d"])))
    model.featurizer.train()  # no module behaves differently in train mode: accepted
    C.gradient_variance(model, loss_func, domains)
    drop = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.3), nn.Linear(3, 1)).double().train()
    with pytest.raises(
        ValueError, match=r"model is in train mode with Dropout \(1\); call model.eval\(\)"
    ):
        C.hessian_diagonal(drop, loss_func, domains)
    assert drop.training


def test_backpack_extended_model_is_left_extended_and_unchanged():
    from backpack import extend

    model, loss_func, domains = small_case("ce")
    expected = C.hessian_diagonal(model, loss_func, domains, method="exact")
    extend(model)
    snap = snapshot(model)
    got = C.hessian_diagonal(model, loss_func, domains, method="exact")
    eig = C.top_eigenpairs(model, loss_func, domains, "classifier", k=1)
    close(got.diagonal["d0"], expected.diagonal["d0"], 0, 0)
    assert eig.converged["d0"]
    assert_unchanged(model, snap)


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
    close(got.diagonal["d1"], expected.diagonal["d1"], 1e-12, 1e-14)
    eig = C.EigenpairsResult.load(out / "eigen")
    H = ref.dense_hessian(model, nn.BCEWithLogitsLoss(), sub["d0"], "classifier")
    close(eig.largest_eigenvalues["d0"], ref.eigenpairs(H, 2)[0].numpy(), 1e-6)
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


def test_non_finite_output_at_theta_star_names_the_domain():
    model, loss_func, domains = small_case("bce")
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    for call in (C.gradient_variance, C.hessian_diagonal):
        with pytest.raises(
            ValueError, match=r"domain 'd0': the model's output is not finite at theta\*"
        ):
            call(model, loss_func, domains)
