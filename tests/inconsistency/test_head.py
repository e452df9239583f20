"""Displaced risks on the head's cached input (landscape.inconsistency.head): the same values
and gradients as full forwards, used only where exact, and the reason recorded otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.inconsistency import DisplacedRisk, inconsistency_score
from landscape.inconsistency.head import head_candidates
from tests.cases import make_binary_domains, make_mlp, make_multiclass_domains


def _two_batches(domains, name="d0"):
    X, y = domains[name][0]
    return [(X[:40], y[:40]), (X[40:], y[40:])]


def _reference(model, loss, data, names, x):
    """Float64 risk and gradient in the selected parameters, by full forwards on a copy."""
    import copy

    m64 = copy.deepcopy(model).double()
    tensors = {n: p.detach() for n, p in m64.named_parameters()}
    sel = [tensors[n] for n in names]
    theta = torch.cat([t.reshape(-1) for t in sel]) + torch.as_tensor(x, dtype=torch.float64)
    theta.requires_grad_(True)
    parts, start = {}, 0
    for n, t in zip(names, sel, strict=True):
        parts[n] = theta[start : start + t.numel()].view_as(t)
        start += t.numel()
    total = sum(
        loss(functional_call(m64, {**tensors, **parts}, (X.double(),)),
             y.double() if y.is_floating_point() else y) * len(X)
        for X, y in data
    ) / sum(len(X) for X, _ in data)  # fmt: skip
    (g,) = torch.autograd.grad(total, theta)
    return float(total.detach()), g.numpy()


@pytest.mark.parametrize("loss_kind", ["bce", "ce"])
def test_head_risk_equals_full_forward_and_float64_reference(dtype, loss_kind):
    if loss_kind == "bce":
        model, loss = make_mlp(dim=6, dtype=dtype), nn.BCEWithLogitsLoss()
        data = _two_batches(make_binary_domains(2, n=64, dim=6, dtype=dtype))
    else:
        model, loss = make_mlp(dim=6, out=3, dtype=dtype), nn.CrossEntropyLoss()
        data = _two_batches(make_multiclass_domains(2, n=64, dim=6, dtype=dtype))
    head = DisplacedRisk(model, loss, data, "classifier")
    full = DisplacedRisk(model, loss, data, "classifier", head=False)
    assert head.evaluator == "head 'classifier' on its cached input"
    assert full.evaluator.startswith("full forward")
    x = 0.3 * np.random.default_rng(0).standard_normal(head.theta0.numel())
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    for point in (None, x):
        v_head, g_head = head.value_and_grad(point)
        v_full, g_full = full.value_and_grad(point)
        assert v_head == pytest.approx(v_full, rel=rtol)
        np.testing.assert_allclose(g_head, g_full, rtol=rtol, atol=rtol * abs(g_full).max())
        assert head.value(point) == pytest.approx(v_full, rel=rtol)
        v_ref, g_ref = _reference(model, loss, data, list(head.like), 0 if point is None else x)
        assert v_head == pytest.approx(v_ref, rel=10 * rtol)
        np.testing.assert_allclose(g_head, g_ref, rtol=10 * rtol, atol=10 * rtol * abs(g_ref).max())


@pytest.mark.parametrize("params", ["featurizer", None, ["featurizer.1.weight", "classifier.bias"]])
def test_selection_outside_the_head_falls_back(dtype, params):
    model = make_mlp(dim=6, dtype=dtype)
    data = _two_batches(make_binary_domains(2, n=64, dim=6, dtype=dtype))
    risk = DisplacedRisk(model, nn.BCEWithLogitsLoss(), data, params)
    full = DisplacedRisk(model, nn.BCEWithLogitsLoss(), data, params, head=False)
    assert risk.evaluator.startswith("full forward (")
    x = 0.1 * np.random.default_rng(1).standard_normal(risk.theta0.numel())
    assert risk.value(x) == full.value(x)


class _Scaled(nn.Module):
    """The head's output is doubled after it: the head is not applied last."""

    def __init__(self, dtype):
        super().__init__()
        self.featurizer = nn.Sequential(nn.Linear(4, 5), nn.Tanh())
        self.classifier = nn.Linear(5, 1)
        self.to(dtype).eval()

    def forward(self, x):
        return 2 * self.classifier(self.featurizer(x))


class _BiasUpstream(_Scaled):
    """The head's bias is also used before the head."""

    def forward(self, x):
        return self.classifier(self.featurizer(x) + self.classifier.bias)


class _Twice(_Scaled):
    """The head runs twice."""

    def forward(self, x):
        h = self.featurizer(x)
        return self.classifier(h) + self.classifier(h).detach() * 0


@pytest.mark.parametrize(
    "cls, why",
    [
        (_Scaled, "is not the model's output"),
        (_BiasUpstream, "depends on the selected parameters"),
        (_Twice, "ran 2 times"),
    ],
)
def test_head_not_applied_alone_and_last_falls_back(dtype, cls, why):
    torch.manual_seed(0)
    model = cls(dtype)
    data = _two_batches(make_binary_domains(2, n=64, dim=4, dtype=dtype))
    risk = DisplacedRisk(model, nn.BCEWithLogitsLoss(), data, "classifier")
    assert risk.evaluator.startswith("full forward (") and why in risk.evaluator
    x = 0.5 * np.random.default_rng(2).standard_normal(risk.theta0.numel())
    v, g = risk.value_and_grad(x)
    v_ref, g_ref = _reference(model, nn.BCEWithLogitsLoss(), data, list(risk.like), x)
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert v == pytest.approx(v_ref, rel=rtol)
    np.testing.assert_allclose(g, g_ref, rtol=rtol, atol=rtol * abs(g_ref).max())


def test_head_that_does_not_reproduce_the_output_falls_back(monkeypatch):
    import landscape.inconsistency.head as head_module

    monkeypatch.setattr(head_module, "REPRODUCE_ULPS", -1)  # no tolerance is met
    model = make_mlp(dim=6)
    data = _two_batches(make_binary_domains(2, n=64, dim=6))
    risk = DisplacedRisk(model, nn.BCEWithLogitsLoss(), data, "classifier")
    assert "differs from the model's output" in risk.evaluator


def test_deepest_module_containing_the_selection():
    model = nn.Sequential()
    model.featurizer = nn.Linear(4, 5)
    model.classifier = nn.Sequential(nn.Linear(5, 3), nn.ReLU(), nn.Linear(3, 1))
    model.eval()
    names = ["classifier.0.weight"]
    assert head_candidates(model, names) == ["classifier.0", "classifier"]
    assert head_candidates(model, ["classifier.0.weight", "classifier.2.bias"]) == ["classifier"]
    assert head_candidates(model, ["featurizer.weight", "classifier.2.bias"]) == []
    # classifier.0's output is not the model's: the enclosing head is used, and it is exact
    X = torch.randn(30, 4)
    data = [(X, (torch.rand(30, 1) < 0.5).float())]
    risk = DisplacedRisk(model, nn.BCEWithLogitsLoss(), data, names)
    assert risk.evaluator == "head 'classifier' on its cached input"
    full = DisplacedRisk(model, nn.BCEWithLogitsLoss(), data, names, head=False)
    x = 0.2 * np.random.default_rng(3).standard_normal(risk.theta0.numel())
    assert risk.value(x) == pytest.approx(full.value(x), rel=1e-6)


def test_check_runs_the_featurizer_once_per_batch_and_matches_full_forwards(monkeypatch):
    """The check's many displaced risks cost one featurizer pass per batch and domain, and
    give the same check as full forwards (the evaluator is recorded in ``result.check``)."""
    import landscape.inconsistency.risk as risk_module

    model = make_mlp(dim=6, hidden=(8,), dtype=torch.float32)
    domains = {d: _two_batches(make_binary_domains(2, n=64, dim=6, dtype=torch.float32), d)
               for d in ("d0", "d1")}  # fmt: skip
    calls = []
    handle = model.featurizer.register_forward_hook(lambda *a: calls.append(1))
    loss, kwargs = nn.BCEWithLogitsLoss(), dict(method="dense", progress=False, check_steps=5)
    counts = []
    try:
        for check in (False, True):
            calls.clear()
            res = inconsistency_score(model, loss, domains, 0.05, "classifier", check=check,
                                      **kwargs)  # fmt: skip
            counts.append(len(calls))
        calls.clear()
        monkeypatch.setattr(risk_module, "cache_head_inputs", lambda *a: (None, "disabled"))
        ref = inconsistency_score(model, loss, domains, 0.05, "classifier", **kwargs)
    finally:
        handle.remove()
    assert res.check["evaluator"] == {d: "head 'classifier' on its cached input" for d in domains}
    assert ref.check["evaluator"] == {d: "full forward (disabled)" for d in domains}
    assert "check's risks: head 'classifier' on its cached input" in res.table()
    assert "check's risks: full forward (disabled)" in ref.table()
    # the cache costs one forward per batch (2 domains x 2 batches), nothing per evaluation
    assert counts[1] - counts[0] == 4
    assert len(calls) - counts[0] > 10 * 4
    for key in ("line_value", "line_step", "search_value", "empirical_score"):
        np.testing.assert_allclose(res.check[key], ref.check[key], rtol=1e-5, atol=1e-7)
