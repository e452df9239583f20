"""I^eps on any nn.Module (issue 10): the GroupNorm CNN and the BatchNorm residual block of
``tests/cases.py`` (``CONV_CASES``), every method against a dense float64 ``torch.func``
reference solved by ``scipy.linalg.eigh``; minibatched and DataLoader domains equal the full
batch; the default method always runs; an explicit method that cannot handle the model is
refused in one line."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.curvature import MAX_DENSE_DIM
from landscape.inconsistency import DisplacedRisk, inconsistency_score
from landscape.inconsistency import score as score_module
from landscape.params import select_params
from tests.cases import CONV_CASES
from tests.inconsistency.helpers import (
    assert_unchanged,
    reference_diagonal_eig,
    reference_eig,
    reference_values,
    snapshot,
    torch_func_curvatures,
)

CASES = {c.id: c for c in CONV_CASES}
N = 12  # samples per domain
EPS = 1e-2


@functools.cache
def reference(case_id: str, curvature: str, params: tuple | None = ()):
    """``{domain: (H, risk, gradient)}`` and the selected names of one case (full batch;
    ``params``: a selection other than the case's)."""
    model, loss, domains, case_params = CASES[case_id].build(n=N)
    names = list(select_params(model, case_params if params == () else list(params)))
    return {
        d: torch_func_curvatures(model, loss, batches, names, curvature)
        for d, batches in domains.items()
    }, names


def score(case_id, method, curvature, *, domains=None, params=(), **kw):
    model, loss, built, case_params = CASES[case_id].build(n=N)
    params = case_params if params == () else params
    kw = {"check": False, "progress": False, **kw}
    return inconsistency_score(model, loss, domains or built, EPS, params, method,
                               curvature=curvature, **kw)  # fmt: skip


#: inner parameters: a convolution and a normalisation layer (GroupNorm; BatchNorm in the
#: residual block)
GN_INNER = ["features.3.bias", "features.4.weight", "features.4.bias"]
BN_INNER = ["block.conv1.weight", "block.bn1.weight", "block.bn1.bias"]

# (case, method, curvature, remedy options): every backend on every convolutional case; the
# whole networks' Hessians are indefinite (top-k) and their GGNs singular (damping); the head's
# CE Hessian is singular along the softmax's shift, a null space both domains share (range)
SCORES = [
    ("groupnorm-ce-all", "dense", "ggn", {"remedy": "damping", "damping": 0.1}),
    ("groupnorm-ce-all", "matrix-free", "ggn", {"remedy": "damping", "damping": 0.1}),
    ("groupnorm-ce-all", "matrix-free", "hessian", {"remedy": "top-k", "k": 4}),
    ("groupnorm-ce-head", "dense", "hessian", {}),
    # matrix-free deflates one null direction only; the head's null space has 5: top-k
    ("groupnorm-ce-head", "matrix-free", "hessian", {"remedy": "top-k", "k": 6}),
    # damping a shared null space: H_A + δI whole, as the dense method (not deflated)
    ("groupnorm-ce-head", "matrix-free", "ggn", {"remedy": "damping", "damping": 0.1}),
    ("batchnorm-ce-all", "dense", "ggn", {"remedy": "damping", "damping": 0.1}),
    ("batchnorm-ce-all", "matrix-free", "hessian", {"remedy": "top-k", "k": 4}),
    # dense Hessians of inner layers (convolution, normalisation, residual): by products
    ("groupnorm-ce-all", "dense", "hessian", {"remedy": "top-k", "k": 4, "params": GN_INNER}),
    ("batchnorm-ce-all", "dense", "hessian", {"remedy": "top-k", "k": 4, "params": BN_INNER}),
]


@pytest.mark.parametrize(
    "case_id, method, curvature, remedy", SCORES, ids=[f"{c}-{m}-{h}" for c, m, h, _ in SCORES]
)
def test_score_pairwise_matrix_and_direction_equal_the_dense_reference(
    case_id, method, curvature, remedy
):
    remedy = dict(remedy)
    params = remedy.pop("params", ())
    res = score(case_id, method, curvature, params=params, **remedy)
    ref, names = reference(case_id, curvature, params if params == () else tuple(params))
    rel = 1e-8 if method == "dense" else 2e-5
    domains = list(ref)
    lam, vec = {}, {}
    for a in domains:
        for b in domains:
            if a != b:
                lam[a, b], vec[a, b] = reference_eig(ref[b][0], ref[a][0], **remedy)
    risks = {d: ref[d][1] for d in domains}
    values, expected = reference_values(risks, lam, domains, EPS)
    assert res.method == method and res.param_names == names
    assert res.score == pytest.approx(expected, rel=rel)
    np.testing.assert_allclose(res.values[0], values, rtol=rel, atol=1e-12)
    for (a, b), got in zip(res.pairs, res.unit_directions, strict=True):
        i, j = domains.index(a), domains.index(b)
        assert res.eigenvalues[i, j] == pytest.approx(lam[a, b], rel=rel)
        want = vec[a, b]
        sign = np.sign(got @ want)  # an eigenvector's sign is not defined
        np.testing.assert_allclose(sign * got, want, rtol=0, atol=50 * rel * np.abs(want).max())
    a, b = res.pair  # the winner's maximiser √(2ε)·v, up to sign (0 if λ ≤ 0)
    want = np.sqrt(2 * EPS) * vec[a, b] * (lam[a, b] > 0)
    sign = np.sign(res.direction @ want) or 1.0
    np.testing.assert_allclose(sign * res.direction, want, atol=50 * rel * np.abs(want).max())
    for d in domains:
        assert res.risks[d] == pytest.approx(risks[d], rel=1e-10)
        assert res.gradient_norms[d] == pytest.approx(np.linalg.norm(ref[d][2]), rel=1e-8)


@pytest.mark.parametrize(
    "case_id, curvature, remedy",
    [
        ("groupnorm-ce-all", "ggn", {"remedy": "damping", "damping": 0.1}),
        ("groupnorm-ce-head", "hessian", {}),
        ("batchnorm-ce-all", "hessian", {"remedy": "top-k", "k": 5}),
    ],
)
def test_diagonal_method_equals_the_reference_diagonals(case_id, curvature, remedy):
    res = score(case_id, "diagonal", curvature, **remedy)
    ref, _ = reference(case_id, curvature)
    domains = list(ref)
    for i, a in enumerate(domains):
        for j, b in enumerate(domains):
            if a != b:
                h_a, h_b = np.diag(ref[a][0]), np.diag(ref[b][0])
                want = reference_diagonal_eig(h_b, h_a, **remedy)
                assert res.eigenvalues[i, j] == pytest.approx(want, rel=1e-7)


def test_head_selection_uses_the_closed_form_and_checks_run_the_head_alone():
    model, loss, domains, params = CASES["groupnorm-ce-head"].build(n=N)
    snap = snapshot(model)
    res = inconsistency_score(model, loss, domains, EPS, params, check_steps=3, progress=False)
    assert_unchanged(model, snap)
    assert res.method == "dense"  # the default for a small selection
    assert all(e.startswith("head 'classifier'") for e in res.check["evaluator"].values())
    assert np.isfinite(res.check["empirical_score"]).all()
    assert res.check["empirical_score"][0] >= EPS


@pytest.mark.parametrize("case_id", ["groupnorm-ce-all", "batchnorm-ce-all"])
def test_displaced_risk_equals_setting_the_weights(case_id):
    """The checks' true losses: R(θ* + x) by the evaluator equals the loss of a copy of the
    model whose weights were set to θ* + x, on the concatenated domain and on a loader."""
    model, loss, domains, params = CASES[case_id].build(n=N, cuts={"d0": [5]})
    names = list(select_params(model, params))
    x = np.random.default_rng(0).standard_normal(sum(p.numel() for p in model.parameters()))
    x *= 0.05
    net = __import__("copy").deepcopy(model)
    with torch.no_grad():
        start = 0
        for name in names:
            p = net.get_parameter(name)
            p += torch.as_tensor(x[start : start + p.numel()]).reshape(p.shape)
            start += p.numel()
    X = torch.cat([b[0] for b in domains["d0"]])
    y = torch.cat([b[1] for b in domains["d0"]])
    with torch.no_grad():
        want = float(loss(net(X), y))
    loader = DataLoader(TensorDataset(X, y), batch_size=5)
    for data in (domains["d0"], loader):
        got = DisplacedRisk(model, loss, data, params).value(x)
        assert got == pytest.approx(want, rel=1e-12)


#: inner normalisation layers and the head's bias: no closed form, dense by products
INNER = ["features.1.weight", "features.1.bias", "features.4.weight", "classifier.bias"]

MINIBATCHED = [
    ("groupnorm-ce-all", "dense", "ggn", {"remedy": "damping", "damping": 0.1, "params": INNER}),
    ("groupnorm-ce-head", "dense", "hessian", {}),  # the head's closed form
    ("groupnorm-ce-all", "diagonal", "ggn", {"remedy": "damping", "damping": 0.1}),
    ("batchnorm-ce-all", "matrix-free", "hessian", {"remedy": "top-k", "k": 3}),
]


@pytest.mark.parametrize(
    "case_id, method, curvature, options", MINIBATCHED, ids=[f"{c}-{m}" for c, m, *_ in MINIBATCHED]
)
def test_uneven_batches_and_a_dataloader_equal_the_full_batch(case_id, method, curvature, options):
    full = score(case_id, method, curvature, **options)
    _, _, uneven, _ = CASES[case_id].build(n=N, cuts={"d0": [5], "d1": [3, 4]})
    cut = score(case_id, method, curvature, domains=uneven, **options)
    _, _, built, _ = CASES[case_id].build(n=N)
    loaders = {d: DataLoader(TensorDataset(*b[0]), batch_size=5) for d, b in built.items()}
    loaded = score(case_id, method, curvature, domains=loaders, **options)
    rel = 2e-5 if method == "matrix-free" else 1e-9
    for res in (cut, loaded):
        assert res.score == pytest.approx(full.score, rel=rel)
        np.testing.assert_allclose(res.values, full.values, rtol=rel, atol=1e-12)
        np.testing.assert_allclose(res.eigenvalues, full.eigenvalues, rtol=rel)


def test_dense_pass_streams_a_dataloader_in_float64_batch_by_batch():
    """A float32 model on a float32 DataLoader: the dense float64 copy reads the loader batch
    by batch (never a float64 copy of the domain) and equals the float64 reference."""
    model, loss, built, _ = CASES["groupnorm-ce-all"].build(torch.float32, n=N)
    loaders = {d: DataLoader(TensorDataset(*b[0]), batch_size=4) for d, b in built.items()}
    damped = {"remedy": "damping", "damping": 0.1}
    res = inconsistency_score(model, loss, loaders, EPS, INNER, "dense", curvature="ggn",
                              check=False, progress=False, **damped)  # fmt: skip
    names = list(select_params(model, INNER))
    ref = {d: torch_func_curvatures(model, loss, b, names, "ggn") for d, b in built.items()}
    lam = reference_eig(ref["d1"][0], ref["d0"][0], **damped)[0]
    assert res.eigenvalues[0, 1] == pytest.approx(lam, rel=1e-6)


def test_default_method_resolves_by_size(monkeypatch):
    damped = {"remedy": "damping", "damping": 0.1}
    small = score("groupnorm-ce-head", "auto", "ggn", **damped)
    assert small.method == "dense"
    monkeypatch.setattr(score_module, "AUTO_DENSE_DIM", 10)  # the head has 15 parameters
    large = score("groupnorm-ce-head", "auto", "ggn", **damped)
    assert large.method == "matrix-free"
    assert large.score == pytest.approx(small.score, rel=2e-5)


def test_explicit_method_that_cannot_handle_the_model_is_one_line():
    """A GroupNorm conv net with more parameters than a dense [D, D] matrix allows: method=
    'dense' is refused before any curvature work, and so is the exact Hessian diagonal (no
    BackPACK rule for GroupNorm, too many rows of products), each naming what works; the
    default runs (matrix-free)."""
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.GroupNorm(4, 32), nn.ReLU(), nn.Conv2d(32, 32, 3),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3),
    ).double().eval()  # fmt: skip
    assert sum(p.numel() for p in net.parameters()) > MAX_DENSE_DIM
    _, loss, domains, _ = CASES["groupnorm-ce-all"].build(n=4)
    with pytest.raises(ValueError) as err:
        inconsistency_score(net, loss, domains, EPS, method="dense", progress=False)
    message = str(err.value)
    assert "\n" not in message and "method='matrix-free'" in message
    with pytest.raises(ValueError) as err:
        inconsistency_score(net, loss, domains, EPS, method="diagonal", progress=False)
    message = str(err.value)
    assert "\n" not in message and "GroupNorm" in message
    assert "use curvature='ggn', diagonal_source='variance' or method='matrix-free'" in message
    res = inconsistency_score(net, loss, domains, EPS, curvature="ggn", remedy="damping",
                              damping=0.1, check=False, progress=False)  # fmt: skip
    assert res.method == "matrix-free" and np.isfinite(res.score)


def test_head_cache_above_its_bound_falls_back_to_full_forwards(monkeypatch):
    """A domain whose head inputs exceed HEAD_CACHE_BYTES (a DataLoader larger than memory)
    is evaluated by full forwards, batch by batch, with the same risks."""
    from landscape.inconsistency import head

    model, loss, domains, params = CASES["groupnorm-ce-head"].build(n=N)
    loader = DataLoader(TensorDataset(*domains["d0"][0]), batch_size=5)
    x = np.full(15, 0.1)
    cached = DisplacedRisk(model, loss, loader, params)
    assert cached.evaluator.startswith("head 'classifier'")
    monkeypatch.setattr(head, "HEAD_CACHE_BYTES", 5 * 4 * 8)  # one batch of 5 x 4 float64
    bounded = DisplacedRisk(model, loss, loader, params)
    assert bounded.evaluator.startswith("full forward (head 'classifier': its cached input")
    assert bounded.value(x) == pytest.approx(cached.value(x), rel=1e-13)
    np.testing.assert_allclose(bounded.value_and_grad(x)[1], cached.value_and_grad(x)[1],
                               rtol=1e-12)  # fmt: skip


def test_checks_on_the_true_losses_of_a_batchnorm_block():
    """The empirical check on inner BatchNorm-block parameters: full forwards (the selection is
    not a head), and every line's R_B is the true risk at its point of the maximiser's ray."""
    model, loss, domains, _ = CASES["batchnorm-ce-all"].build(n=N)
    res = inconsistency_score(model, loss, domains, EPS, BN_INNER, "dense", remedy="top-k", k=4,
                              check_steps=2, progress=False)  # fmt: skip
    check = res.check
    assert all(e.startswith("full forward") for e in check["evaluator"].values())
    for p, (a, b) in enumerate(res.pairs):
        i, j = res.domains.index(a), res.domains.index(b)
        x = check["line_step"][0, i, j] * np.sqrt(2 * EPS) * res.unit_directions[p]
        risk_b = DisplacedRisk(model, loss, domains[b], BN_INNER).value(x)
        assert check["line_risk_b"][0, i, j] == pytest.approx(risk_b, rel=1e-12)
        assert check["line_value"][0, i, j] == pytest.approx(abs(risk_b - res.risks[a]), rel=1e-9)
    assert check["empirical_score"][0] >= EPS and check["search_steps"][0] >= 0
