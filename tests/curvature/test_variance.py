"""Gradient variances (landscape/curvature/variance.py) against dense float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import curvature as C
from landscape.curvature import reference as ref
from tests.curvature._common import (
    UsedUpstream,
    assert_unchanged,
    build_small,
    close,
    small_case,
    snapshot,
)


def test_variances_and_diagonals_match_reference(case, tmp_path):
    model, loss_func, domains, params = build_small(case)
    snap = snapshot(model)
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
        close(gv.variance[name], var)
        close(gv_ps.variance[name], var)
        close(gv.empirical_fisher[name], second)
        close(gv_raw.variance[name], second)
        close(gv.mean_gradient[name], ref.gradient(model, loss_func, data, params).numpy())
        for (m, centered), other in others.items():
            assert other.settings["method"] == m
            close(other.variance[name], var if centered else second)
            close(other.empirical_fisher[name], second)
            close(other.mean_gradient[name], gv.mean_gradient[name])
        assert gv.num_samples[name] == 30
        H = ref.dense_hessian(model, loss_func, data, params)
        G = ref.dense_ggn(model, loss_func, data, params)
        close(diag["exact"].diagonal[name], torch.diagonal(H).numpy())
        close(diag["ggn"].diagonal[name], torch.diagonal(G).numpy())
        if params is None:  # H and G differ on the whole network (off the diagonal for ReLU)
            assert float((H - G).abs().max()) > 1e-5
    assert gv.settings == {
        "params": params,
        "centered": True,
        "method": "linear",  # "auto" resolved: every parameter is in an nn.Linear
        "chunk_size": 2048,
    }
    loaded = C.GradientVarianceResult.load(gv.save(tmp_path / "gv"))
    close(loaded.variance["d1"], gv.variance["d1"], 0, 0)
    assert loaded.settings == gv.settings and loaded.param_names == gv.param_names
    parts = loaded.unflatten(loaded.variance["d1"])
    assert list(parts) == gv.param_names
    assert [list(v.shape) for v in parts.values()] == gv.param_shapes
    assert_unchanged(model, snap)


def test_gradient_variance_linear_path_applies_only_where_exact():
    """'auto' takes the nn.Linear factorisation only where it is exact (else BackPACK or,
    when BackPACK fails too, a clear error); 'linear' says why it does not apply."""
    _, loss_func, domains = small_case("bce")
    torch.manual_seed(1)
    tied = UsedUpstream().double().eval()
    for p in tied.parameters():
        nn.init.normal_(p, std=0.5)
    expected = ref.gradient_variance(tied, loss_func, domains["d1"], "classifier").numpy()
    got = C.gradient_variance(tied, loss_func, domains, "classifier", method="per_sample")
    close(got.variance["d1"], expected)
    with pytest.raises(ValueError, match="does not apply: .*do not add up.*'per_sample'"):
        C.gradient_variance(tied, loss_func, domains, "classifier", method="linear")
    # the factorisation (and BackPACK, per module) would miss the bias's upstream use: the
    # sum check sends 'auto' to the exact per-sample path
    auto = C.gradient_variance(tied, loss_func, domains, "classifier")
    assert auto.settings["method"] == "per_sample"
    close(auto.variance["d1"], expected)
    body = C.gradient_variance(tied, loss_func, domains, "body", chunk_size=8)
    assert body.settings["method"] == "linear"
    close(body.variance["d1"], ref.gradient_variance(tied, loss_func, domains["d1"], "body"))
    conv = nn.Sequential(nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1))
    conv = conv.double().eval()
    for params, method in ((None, "backpack"), ("3", "linear")):
        gv = C.gradient_variance(conv, loss_func, domains, params, chunk_size=5)
        assert gv.settings["method"] == method
        close(gv.variance["d0"], ref.gradient_variance(conv, loss_func, domains["d0"], params))
    with pytest.raises(ValueError, match="does not apply: .*belongs to a Conv1d"):
        C.gradient_variance(conv, loss_func, domains, method="linear")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        C.gradient_variance(conv, loss_func, domains, chunk_size=0)


def group_norm_cnn(dtype: torch.dtype) -> nn.Module:
    """Conv2d + GroupNorm + Linear head: BackPACK has no rule for GroupNorm."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )
    for m in model.modules():  # non-trivial affine GroupNorm parameters
        if isinstance(m, nn.GroupNorm):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    return model.to(dtype).eval()


def image_domains(dtype: torch.dtype, n: int = 24) -> dict:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 3, (n,), generator=g)
    return {"a": [(X[:10], y[:10]), (X[10:], y[10:])]}


def test_default_variance_works_where_backpack_lacks_a_module(dtype):
    """Before: 'BackPACK computed no 'variance' ...; use method='per_sample''."""
    model, loss_func, domains = group_norm_cnn(dtype), nn.CrossEntropyLoss(), image_domains(dtype)
    gv = C.gradient_variance(model, loss_func, domains)
    assert gv.settings["method"] == "per_sample"
    model64 = group_norm_cnn(torch.float64)
    data64 = [(X.double(), y) for X, y in image_domains(torch.float64)["a"]]
    expected = ref.gradient_variance(model64, loss_func, data64).numpy()
    rtol = 1e-9 if dtype == torch.float64 else 1e-3
    close(gv.variance["a"], expected, rtol, rtol * np.abs(expected).max())
    with pytest.raises(
        ValueError,
        match=r"method='backpack' cannot handle this model: BackPACK's Variance has no rule for "
        r"GroupNorm \(1\); use method='per_sample'",
    ):
        C.gradient_variance(model, loss_func, domains, method="backpack")
    head = C.gradient_variance(model, loss_func, domains, "4", method="backpack")  # supported
    close(head.variance["a"], ref.gradient_variance(model64, loss_func, data64, "4"), rtol, 1e-7)


@pytest.mark.filterwarnings("error::UserWarning")
def test_no_backpack_warning_reaches_the_caller():
    """Before: torch's 'Full backward hook is firing ...' reached every BackPACK caller."""
    model, loss_func, domains = small_case("ce")
    C.gradient_variance(model, loss_func, domains, method="backpack")
    C.hessian_diagonal(model, loss_func, domains, method="exact")
    C.hessian_diagonal(model, loss_func, domains, method="ggn")
    C.hessian_diagonal(model, loss_func, domains, method="fisher_mc")
    cnn = group_norm_cnn(torch.float64)
    C.hessian_diagonal(cnn, loss_func, image_domains(torch.float64))  # BackPACK fails first
