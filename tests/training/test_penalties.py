"""Penalties (landscape.training.penalties) and per-sample moments (landscape.persample)
against brute force: per-sample gradients from ``torch.func.vmap(grad)`` over
``functional_call``, in float64, and closed forms for IRM / V-REx."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import landscape.persample as persample
from landscape.models import MLP
from landscape.params import select_params
from landscape.training.penalties import (
    ALGORITHMS,
    FISHR_VARIANTS,
    NonFiniteLossError,
    Penalties,
    check_algorithm,
    domain_gradient_variance,
    fishr_penalty,
    irm_penalty,
    vrex_penalty,
)
from tests.cases import CASES_BY_LOSS, make_mlp

# ----------------------------------------------------------------------------- references


def brute_per_sample_grads(model, X, y, loss_func, params=None, detach=True):
    """``[N, D]`` per-sample gradients of the selected parameters, by vmap(grad)."""
    names = list(select_params(model, params))
    all_params = {k: (p.detach() if detach else p) for k, p in model.named_parameters()}

    def loss_i(p, x, t):
        return loss_func(functional_call(model, p, (x[None],)), t[None])

    grads = vmap(grad(loss_i), in_dims=(None, 0, 0))(all_params, X, y)
    return torch.cat([grads[k].reshape(X.shape[0], -1) for k in names], dim=1)


def brute_variance(model, X, y, loss_func, params=None, centered=True, covariance=False, **kw):
    g = brute_per_sample_grads(model, X, y, loss_func, params, **kw)
    if centered:
        g = g - g.mean(0, keepdim=True)  # explicit centering
    if covariance:
        return g.T @ g / g.shape[0]
    return (g**2).mean(0)


def brute_fishr(model, batches, loss_func, algorithm, distance="sum", detach=True):
    variant = FISHR_VARIANTS[algorithm]
    params = "classifier" if variant.layers == "head" else None
    vs = []
    for X, y in batches.values():
        v = brute_variance(
            model, X, y, loss_func, params, variant.centered, variant.covariance, detach=detach
        )
        vs.append(v / v.shape[0] if variant.covariance else v)
    v = torch.stack(vs)
    dev = (v - v.mean(0)) ** 2
    return dev.sum() if distance == "sum" else dev.mean()


LOSSES = list(CASES_BY_LOSS)
"""The loss keys of the registry (its whole-network MLP cases)."""
CLASSIFICATION = [loss for loss in LOSSES if loss in ("bce", "ce")]
"""The losses Penalties trains with (it logs accuracies; it does not take MSE targets)."""


def case(name, n_domains=2, n=64):
    """The registry's whole-network case of loss ``name``: ``(model, {domain: (X, y)}, loss)``."""
    model, loss_func, domains, _ = CASES_BY_LOSS[name].build(n_domains=n_domains, n=n)
    return model, {k: d[0] for k, d in domains.items()}, loss_func


def snapshot(model):
    return (
        {k: p.detach().clone() for k, p in model.state_dict().items()},
        {k: p.requires_grad for k, p in model.named_parameters()},
        [m.training for m in model.modules()],
    )


def assert_unchanged(model, snap):
    state, flags, modes = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert [m.training for m in model.modules()] == modes
    for m in model.modules():
        assert not m._forward_hooks, "a forward hook was left on the model"


# ---------------------------------------------------------------- domain_gradient_variance

VARIANTS = {
    "centered": dict(params="classifier", centered=True, covariance=False),
    "notcentered": dict(params="classifier", centered=False, covariance=False),
    "covariance": dict(params="classifier", centered=True, covariance=True),
    "covariance_notcentered": dict(params="classifier", centered=False, covariance=True),
    "all_layers": dict(params=None, centered=True, covariance=False),
    "all_notcentered": dict(params=None, centered=False, covariance=False),
    "weights_subset": dict(params=["featurizer.3.weight", "classifier.bias"], centered=True),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("loss", LOSSES)
def test_domain_variance_matches_brute_force(loss, variant):
    model, batches, loss_func = case(loss)
    X, y = batches["d0"]
    kw = VARIANTS[variant]
    snap = snapshot(model)
    v = domain_gradient_variance(model, X, y, loss_func, **kw)
    ref = brute_variance(model, X, y, loss_func, **kw)
    assert v.shape == ref.shape
    torch.testing.assert_close(v, ref, rtol=1e-10, atol=1e-13)
    assert v.requires_grad
    assert_unchanged(model, snap)


def test_domain_variance_layout_follows_model_order():
    model, batches, loss_func = case("ce")
    X, y = batches["d0"]
    a = domain_gradient_variance(model, X, y, loss_func, ["classifier", "featurizer.1"])
    b = domain_gradient_variance(model, X, y, loss_func, ["featurizer.1", "classifier"])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    ref = brute_variance(model, X, y, loss_func, ["classifier", "featurizer.1"])
    torch.testing.assert_close(a, ref, rtol=1e-10, atol=1e-13)


def test_domain_variance_detached_and_no_grad():
    model, batches, loss_func = case("bce")
    X, y = batches["d0"]
    v = domain_gradient_variance(model, X, y, loss_func, create_graph=False)
    assert not v.requires_grad
    with torch.no_grad():
        w = domain_gradient_variance(model, X, y, loss_func, create_graph=False)
    torch.testing.assert_close(v, w, rtol=0, atol=0)
    torch.testing.assert_close(v, brute_variance(model, X, y, loss_func, "classifier"))


@pytest.mark.parametrize("chunk_bytes", [8, 200, 1 << 30])
def test_chunked_moments_equal_reference(monkeypatch, chunk_bytes):
    """Row blocks of every size (one row, uneven blocks, one block) give the same values and
    gradients."""
    monkeypatch.setattr(persample, "CHUNK_BYTES", chunk_bytes)
    model, batches, loss_func = case("ce", n=37)
    X, y = batches["d0"]
    v = domain_gradient_variance(model, X, y, loss_func, params=None)
    torch.testing.assert_close(v, brute_variance(model, X, y, loss_func, None))
    params = list(model.parameters())
    g = torch.autograd.grad((v * torch.linspace(1, 2, v.numel(), dtype=v.dtype)).sum(), params)
    ref = brute_variance(model, X, y, loss_func, None, detach=False)
    g_ref = torch.autograd.grad(
        (ref * torch.linspace(1, 2, v.numel(), dtype=v.dtype)).sum(), params
    )
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b)


def test_frozen_parameters_and_inplace_relu():
    """The output probes give d loss / d z even with frozen weights and in-place ReLUs."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True))
            self.classifier = nn.Linear(5, 3)

        def forward(self, x):
            return self.classifier(self.featurizer(x))

    torch.manual_seed(0)
    model = Net().double()
    _, batches, loss_func = case("ce")
    X, y = batches["d0"]
    for p in model.parameters():
        p.requires_grad_(False)
    snap = snapshot(model)
    v = domain_gradient_variance(model, X, y, loss_func, params=None, create_graph=False)
    torch.testing.assert_close(v, brute_variance(model, X, y, loss_func, None))
    assert_unchanged(model, snap)


def test_float32_accuracy_of_m2_minus_mean_squared():
    """float32 ``m2 - mean^2`` stays close to the float64 brute force, within a small factor
    of the float32 explicit (centered-then-squared) computation; the error bound
    ``eps * (1 + mean^2 / var)`` of the module docstring holds even for a shifted input
    where ``mean^2 / var`` is large."""
    model64, batches, loss_func = case("bce", n=512)
    X, y = batches["d0"]
    for shift in (0.0, 30.0):
        # shifted inputs and one label: per-sample gradients share their sign, so the mean
        # dominates the spread (the hard case for m2 - mean^2)
        Xs = X + shift
        if shift:
            y = torch.ones_like(y)
        ref = brute_variance(model64, Xs, y, loss_func, None)
        g64 = brute_per_sample_grads(model64, Xs, y, loss_func, None)
        model32 = make_mlp(out=1, dtype=torch.float32)
        model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
        fast = domain_gradient_variance(model32, Xs.float(), y.float(), loss_func, None)
        explicit = brute_variance(model32, Xs.float(), y.float(), loss_func, None)
        live = ref > 1e-12 * ref.max()  # dead ReLU units have exactly zero variance
        ref, fast, explicit = ref[live], fast[live].double(), explicit[live].double()
        ratio = (g64.mean(0)[live] ** 2 / ref).max().item()
        err_fast = ((fast - ref).abs() / ref).max().item()
        err_explicit = ((explicit - ref).abs() / ref).max().item()
        print(
            f"shift {shift}: max mean^2/var {ratio:.3g}, float32 relative error: "
            f"m2 - mean^2 {err_fast:.3g}, explicit {err_explicit:.3g}"
        )
        eps = torch.finfo(torch.float32).eps
        assert err_fast <= 100 * eps * (1 + ratio), (shift, err_fast, ratio)
        if ratio < 1:  # the usual regime: as accurate as the explicit form
            assert err_fast <= 10 * err_explicit + 10 * eps, (shift, err_fast, err_explicit)
            assert err_fast < 1e-5


def test_domain_variance_errors():
    model, batches, loss_func = case("bce")
    X, y = batches["d0"]
    with pytest.raises(ValueError, match="no parameter named or prefixed 'head'"):
        domain_gradient_variance(model, X, y, loss_func, params="head")
    with pytest.raises(ValueError, match="64 inputs but 3 targets"):
        domain_gradient_variance(model, X, y[:3], loss_func)
    with pytest.raises(ValueError, match="is empty"):
        domain_gradient_variance(model, X[:0], y[:0], loss_func)
    with pytest.raises(ValueError, match="reduce to a scalar"):
        domain_gradient_variance(model, X, y, nn.BCEWithLogitsLoss(reduction="none"))

    class Conv(nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten())
            self.classifier = nn.Linear(16, 1)

        def forward(self, x):
            return self.classifier(self.featurizer(x[:, None, :]))

    conv = Conv().double()
    X4 = torch.randn(4, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="nn.Linear layers only; parameter 'featurizer.0.weight'"):
        domain_gradient_variance(conv, X4, y[:4], loss_func, None)
    v = domain_gradient_variance(conv, X4, y[:4], loss_func)
    assert v.shape == (17,)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = nn.Linear(6, 6)
            self.classifier = nn.Linear(6, 1)

        def forward(self, x):
            return self.classifier(self.featurizer(self.featurizer(x)))

    with pytest.raises(ValueError, match="'featurizer' was called 2 times"):
        domain_gradient_variance(Twice().double(), X, y, loss_func, None)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = nn.Linear(6, 1)

        def forward(self, x):
            return self.classifier(x[:, None, :]).mean(1)

    with pytest.raises(ValueError, match=r"input of shape \(64, 1, 6\)"):
        domain_gradient_variance(Seq().double(), X, y, loss_func)

    big = MLP(6, [200], 60).double()
    with pytest.raises(ValueError, match="select at most"):
        domain_gradient_variance(big, X, y[:, 0].long(), nn.CrossEntropyLoss(), covariance=True)


# ------------------------------------------------------------------ penalties as functions


def test_fishr_penalty_scalings():
    g = torch.Generator().manual_seed(3)
    vs = [torch.rand(7, generator=g, dtype=torch.float64) for _ in range(3)]
    vbar = sum(vs) / 3
    total = sum(((v - vbar) ** 2).sum() for v in vs)
    torch.testing.assert_close(fishr_penalty(vs), total)
    torch.testing.assert_close(fishr_penalty(vs, "mean"), total / (3 * 7))
    v0, v1 = vs[:2]
    torch.testing.assert_close(fishr_penalty([v0, v1], "sum"), ((v0 - v1) ** 2).sum() / 2)
    # [D, D] covariances: every entry counts
    cs = [torch.outer(v, v) for v in vs]
    cbar = sum(cs) / 3
    torch.testing.assert_close(fishr_penalty(cs), sum(((c - cbar) ** 2).sum() for c in cs))
    torch.testing.assert_close(fishr_penalty([vs[0], vs[0]]), torch.tensor(0.0).double())


def test_vrex_penalty_scalings():
    r = [torch.tensor(x, dtype=torch.float64) for x in (0.3, 0.7, 1.6)]
    pairs = sum((a - b) ** 2 for a, b in itertools.combinations(r, 2))
    torch.testing.assert_close(vrex_penalty(r), pairs)
    rbar = sum(r) / 3
    torch.testing.assert_close(vrex_penalty(r, "mean"), sum((x - rbar) ** 2 for x in r) / 3)
    torch.testing.assert_close(vrex_penalty(r[:2]), (r[0] - r[1]) ** 2)
    torch.testing.assert_close(vrex_penalty(r[:2], "mean"), (r[0] - r[1]) ** 2 / 4)


def test_penalty_function_errors():
    v = torch.ones(3)
    with pytest.raises(ValueError, match="needs at least 2, got 1"):
        fishr_penalty([v])
    with pytest.raises(ValueError, match="needs at least 2, got 1"):
        vrex_penalty([torch.tensor(1.0)])
    with pytest.raises(ValueError, match="same shape"):
        fishr_penalty([v, torch.ones(4)])
    with pytest.raises(ValueError, match="unknown distance 'l2'; choose 'sum'"):
        fishr_penalty([v, v], "l2")
    with pytest.raises(ValueError, match="unknown distance"):
        vrex_penalty([v[0], v[1]], "max")
    with pytest.raises(TypeError, match="sequence of tensors"):
        fishr_penalty(torch.ones(2, 3))


def test_irm_penalty_closed_forms():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(50, 1, generator=g, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(50, 1, generator=g, dtype=torch.float64) < 0.5).double()
    p = irm_penalty(z, y, nn.BCEWithLogitsLoss())
    expected = ((torch.sigmoid(z) - y) * z).mean() ** 2
    torch.testing.assert_close(p, expected)
    # differentiable with respect to the logits
    torch.testing.assert_close(
        torch.autograd.grad(p, z)[0], torch.autograd.grad(expected, z)[0], rtol=1e-10, atol=0
    )
    zc = torch.randn(40, 4, generator=g, dtype=torch.float64)
    yc = torch.randint(0, 4, (40,), generator=g)
    onehot = nn.functional.one_hot(yc, 4).double()
    expected = ((torch.softmax(zc, 1) - onehot) * zc).sum(1).mean() ** 2
    torch.testing.assert_close(irm_penalty(zc, yc, nn.CrossEntropyLoss()), expected)


def test_check_algorithm():
    for name in ALGORITHMS:
        assert check_algorithm(name) == name
    with pytest.raises(
        ValueError,
        match="unknown algorithm 'rex'; choose from erm, irm, vrex, fishr, fishr_notcentered, "
        "fishr_offdiagonal, fishr_all",
    ):
        check_algorithm("rex")
    with pytest.raises(ValueError, match="unknown algorithm 'all'"):
        check_algorithm("all")
    with pytest.raises(TypeError, match="must be a string"):
        check_algorithm(None)


# ------------------------------------------------------------------------ Penalties module


@pytest.mark.parametrize("distance", ["sum", "mean"])
@pytest.mark.parametrize("algorithm", list(FISHR_VARIANTS))
@pytest.mark.parametrize("loss", CLASSIFICATION)
def test_penalties_fishr_value_and_gradient(loss, algorithm, distance):
    model, batches, loss_func = case(loss, n_domains=3 if distance == "mean" else 2, n=24)
    snap = snapshot(model)
    pen = Penalties(model, loss_func, list(batches), distance=distance)
    out = pen(batches, algorithm)
    ref = brute_fishr(model, batches, loss_func, algorithm, distance, detach=False)
    torch.testing.assert_close(out.penalty, ref, rtol=1e-9, atol=1e-15)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(out.penalty, list(params.values()))
    grads_ref = torch.autograd.grad(ref, list(params.values()))
    for (name, _), a, b in zip(params.items(), grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-14, msg=name)
    # the penalty reaches the featurizer and the head
    assert grads[0].abs().sum() > 0 and grads[-1].abs().sum() > 0
    assert out.logged[algorithm] == pytest.approx(ref.item(), rel=1e-9)
    assert_unchanged(model, snap)


@pytest.mark.parametrize("loss", CLASSIFICATION)
def test_penalties_risks_irm_vrex_and_logs(loss):
    model, batches, loss_func = case(loss, n_domains=3)
    pen = Penalties(model, loss_func, list(batches))
    risks = {k: loss_func(model(X), y) for k, (X, y) in batches.items()}
    irm = torch.stack([irm_penalty(model(X), y, loss_func) for X, y in batches.values()]).mean()
    vrex = sum((a - b) ** 2 for a, b in itertools.combinations(risks.values(), 2))
    fishr = brute_fishr(model, batches, loss_func, "fishr")
    expected = {"erm": 0.0, "irm": irm.item(), "vrex": vrex.item()}
    for algorithm in ALGORITHMS:
        out = pen(batches, algorithm)
        for k in batches:
            torch.testing.assert_close(out.risks[k], risks[k])
            X, y = batches[k]
            logits = model(X)
            pred = (logits > 0).double() if logits.shape[1] == 1 else logits.argmax(1)
            assert out.accuracies[k] == pytest.approx((pred == y).double().mean().item())
        if algorithm in expected:
            assert out.penalty.item() == pytest.approx(expected[algorithm], rel=1e-10, abs=0)
        assert out.logged["irm"] == pytest.approx(irm.item(), rel=1e-10)
        assert out.logged["vrex"] == pytest.approx(vrex.item(), rel=1e-10)
        assert out.logged["fishr"] == pytest.approx(fishr.item(), rel=1e-9)
        extra = {algorithm} if algorithm in FISHR_VARIANTS else set()
        assert set(out.logged) == {"irm", "vrex", "fishr"} | extra
        quiet = pen(batches, algorithm, log_all=False)
        assert set(quiet.logged) == ({algorithm} if algorithm != "erm" else set())
        torch.testing.assert_close(quiet.penalty, out.penalty)
    # irm's penalty is differentiable and reaches the parameters
    out = pen(batches, "irm")
    params = list(model.parameters())
    torch.testing.assert_close(
        torch.autograd.grad(out.penalty, params), torch.autograd.grad(irm, params)
    )


def test_penalties_single_domain_and_bad_inputs():
    model, batches, loss_func = case("bce")
    pen = Penalties(model, loss_func, list(batches))
    one = {"d0": batches["d0"]}
    out = pen(one, "erm")
    assert set(out.logged) == {"irm"}
    assert pen(one, "irm").penalty.item() > 0
    for algorithm in ("vrex", "fishr", "fishr_all"):
        with pytest.raises(ValueError, match=f"{algorithm} compares domains and needs at least 2"):
            pen(one, algorithm)
    with pytest.raises(ValueError, match="unknown algorithm 'fish'"):
        pen(batches, "fish")
    with pytest.raises(
        ValueError, match="unknown domain 'd9'; this Penalties was built for d0, d1"
    ):
        pen({"d9": batches["d0"]}, "erm")
    with pytest.raises(ValueError, match="pass algorithm="):
        pen(batches)
    with pytest.raises(ValueError, match="domain_names is empty"):
        Penalties(model, loss_func, [])
    with pytest.raises(ValueError, match="duplicates"):
        Penalties(model, loss_func, ["a", "a"])
    with pytest.raises(ValueError, match="ema must be None or a number in"):
        Penalties(model, loss_func, ["a", "b"], ema=1.5)
    with pytest.raises(ValueError, match="unknown distance"):
        Penalties(model, loss_func, ["a", "b"], distance="l1")
    assert Penalties(model, loss_func, list(batches), algorithm="vrex")(batches).penalty > 0


def test_penalties_non_finite_loss():
    model, batches, loss_func = case("bce")
    pen = Penalties(model, loss_func, list(batches))
    X, y = batches["d1"]
    bad = dict(batches, d1=(X.clone().fill_(float("nan")), y))
    for algorithm in ("erm", "fishr"):
        with pytest.raises(NonFiniteLossError, match="non-finite loss in domain 'd1' at step 17"):
            pen(bad, algorithm, step=17)
    with pytest.raises(ValueError, match=r"non-finite loss in domain 'd1' \(risk = nan\)"):
        pen(bad, "vrex")
    # a failed step leaves the moving averages untouched
    ema = Penalties(model, loss_func, list(batches), ema=0.5)
    ema(batches, "fishr")
    state = {k: v.clone() for k, v in ema.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="domain 'd1'"):
        ema(bad, "fishr")
    for k, v in ema.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_penalties_fishr_all_needs_linear_layers():
    class Normed(nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5))
            self.classifier = nn.Linear(5, 1)

        def forward(self, x):
            return self.classifier(self.featurizer(x))

    model = Normed().double()
    _, batches, loss_func = case("bce")
    pen = Penalties(model, loss_func, list(batches))
    assert pen(batches, "fishr").penalty.item() >= 0
    with pytest.raises(ValueError, match="parameter 'featurizer.1.weight' belongs to a LayerNorm"):
        pen(batches, "fishr_all")


def test_penalties_without_linear_head_still_trains_erm():
    model = nn.Sequential(nn.Linear(6, 1)).double()
    _, batches, loss_func = case("bce")
    pen = Penalties(model, loss_func, list(batches))
    with pytest.warns(UserWarning, match="not logging 'fishr'"):
        out = pen(batches, "erm")
    assert set(out.logged) == {"irm", "vrex"}
    with pytest.raises(ValueError, match="no parameter named or prefixed 'classifier'"):
        pen(batches, "fishr")
    assert Penalties(model, loss_func, list(batches), head="0")(batches, "fishr").penalty > 0


def test_penalties_state_dict_excludes_model():
    model, batches, loss_func = case("bce")
    assert Penalties(model, loss_func, list(batches)).state_dict() == {}


# ------------------------------------------------------------------------------------- EMA


@pytest.mark.parametrize("algorithm", ["fishr", "fishr_offdiagonal", "fishr_all"])
def test_ema_bias_corrected_and_resumable(algorithm):
    beta = 0.8
    model, batches, loss_func = case("bce", n=20)
    pen = Penalties(model, loss_func, list(batches), ema=beta, algorithm=algorithm)
    keys = set(pen.state_dict())
    assert keys == {"ema_variance_0", "ema_variance_1", "ema_steps"}
    raw = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    variant = FISHR_VARIANTS[algorithm]
    params = "classifier" if variant.layers == "head" else None

    def raw_variances():
        vs = []
        for X, y in batches.values():
            v = brute_variance(
                model, X, y, loss_func, params, variant.centered, variant.covariance, detach=False
            )
            vs.append(v / v.shape[0] if variant.covariance else v)
        return vs

    def step(p):
        out = p(batches)
        optimizer.zero_grad()
        (torch.stack(list(out.risks.values())).mean() + out.penalty).backward()
        optimizer.step()
        return out

    # step 1: the bias-corrected average is the raw variance
    raw.append(raw_variances())
    out = step(pen)
    torch.testing.assert_close(out.penalty.detach(), fishr_penalty(raw[0]).detach())
    # step 2: (beta (1 - beta) v1 + (1 - beta) v2) / (1 - beta^2); gradient through v2 only
    raw.append(raw_variances())
    m = [
        (beta * (1 - beta) * v1.detach() + (1 - beta) * v2) / (1 - beta**2)
        for v1, v2 in zip(*raw, strict=True)
    ]
    expected = fishr_penalty(m)
    out = pen(batches)
    torch.testing.assert_close(out.penalty, expected)
    grads = torch.autograd.grad(out.penalty, list(model.parameters()))
    grads_ref = torch.autograd.grad(expected, list(model.parameters()))
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
    assert pen.ema_steps.tolist() == [2, 2]

    # save / resume: a fresh module loaded from the state continues identically
    fresh = Penalties(model, loss_func, list(batches), ema=beta, algorithm=algorithm)
    fresh.load_state_dict(pen.state_dict())
    a, b = pen(batches), fresh(batches)
    torch.testing.assert_close(a.penalty, b.penalty, rtol=0, atol=0)
    for k in pen.state_dict():
        torch.testing.assert_close(pen.state_dict()[k], fresh.state_dict()[k], rtol=0, atol=0)


def test_ema_errors_and_non_fishr_algorithms():
    model, batches, loss_func = case("bce")
    pen = Penalties(model, loss_func, list(batches), ema=0.9)
    assert pen.ema_variance_0.shape == (5,)  # head-diagonal by default: 4 weights + 1 bias
    with pytest.raises(ValueError, match="keeps moving averages for 'fishr', not 'fishr_all'"):
        pen(batches, "fishr_all")
    pen(batches, "vrex")
    assert pen.ema_steps.tolist() == [0, 0]  # only the Fishr variant averages
    assert Penalties(model, loss_func, list(batches), ema=0.9, algorithm="irm").state_dict() == {}
    # a state of another shape is refused by load_state_dict
    other = Penalties(model, loss_func, list(batches), ema=0.9, algorithm="fishr_all")
    with pytest.raises(RuntimeError, match="size mismatch"):
        pen.load_state_dict(other.state_dict())


def test_two_domain_sum_is_half_squared_distance_on_real_model():
    """The "sum" Fishr penalty of two domains is ||v0 - v1||^2 / 2 with v from the brute force."""
    model, batches, loss_func = case("bce")
    out = Penalties(model, loss_func, list(batches))(batches, "fishr")
    v0, v1 = (brute_variance(model, X, y, loss_func, "classifier") for X, y in batches.values())
    assert out.penalty.item() == pytest.approx(((v0 - v1) ** 2).sum().item() / 2, rel=1e-10)
    assert math.isfinite(out.logged["fishr"])
