"""Every curvature analysis on convolutional models (issue 10 parts 1 and 2).

The models of ``tests/cases.py`` ``CONV_CASES``: a GroupNorm CNN (no BackPACK rule for
GroupNorm) and a BatchNorm residual block in eval mode (BackPACK's first-order extensions
apply, its second-order ones do not: the residual sum is no chain of modules), whole network
and head. Each analysis is checked against a dense float64 ``torch.func`` reference
(:mod:`landscape.curvature.reference`), with its default and with every explicit method;
minibatched domains (uneven batches, an unshuffled DataLoader) give the full-batch results;
a method that cannot handle the model answers one line naming the layer and what works.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape import curvature as C
from landscape.curvature import reference as ref
from landscape.curvature._setup import rademacher
from tests.cases import CONV_CASES, ids
from tests.curvature._common import assert_unchanged, close, snapshot

N = 16

UNSUPPORTED = {
    ("groupnorm-ce-all", "linear"): r"belongs to a Conv2d.*use method='per_sample' or 'auto'$",
    ("groupnorm-ce-all", "backpack"): r"no rule for GroupNorm \(features\.1\).*'per_sample'",
    ("batchnorm-ce-all", "linear"): r"belongs to a Conv2d.*'backpack', 'per_sample'",
}
"""The explicit variance methods that cannot handle a case, and their one-line answer."""


def minibatched(domains):
    """The same samples: d0 in uneven batches (5 + 11), d1 as an unshuffled DataLoader of 6."""
    (X0, y0), (X1, y1) = domains["d0"][0], domains["d1"][0]
    loader = DataLoader(TensorDataset(X1, y1), batch_size=6, shuffle=False)
    return {"d0": [(X0[:5], y0[:5]), (X0[5:], y0[5:])], "d1": loader}


class Reference:
    """Dense float64 quantities of one case, computed once per test module."""

    def __init__(self, case):
        self.model, self.loss, self.domains, self.params = case.build(n=N, n_domains=2)
        args = (self.model, self.loss)
        self.H, self.G, self.F, self.var, self.second = {}, {}, {}, {}, {}
        for name, data in self.domains.items():
            self.H[name] = ref.dense_hessian(*args, data, self.params)
            self.G[name] = ref.dense_ggn(*args, data, self.params)
            self.F[name] = ref.dense_empirical_fisher(*args, data, self.params)
            self.var[name] = ref.gradient_variance(*args, data, self.params).numpy()
            self.second[name] = ref.gradient_variance(*args, data, self.params, False).numpy()

    def matrix(self, curvature: str) -> dict:
        return {"hessian": self.H, "ggn": self.G, "ef": self.F}[curvature]

    def args(self, batched: bool = False):
        domains = minibatched(self.domains) if batched else self.domains
        return self.model, self.loss, domains, self.params


_REFERENCES: dict[str, Reference] = {}


@pytest.fixture(params=CONV_CASES, ids=ids(CONV_CASES))
def reference(request) -> Reference:
    case = request.param
    if case.id not in _REFERENCES:
        _REFERENCES[case.id] = Reference(case)
    return _REFERENCES[case.id]


def scale(a) -> float:
    return float(np.abs(np.asarray(a)).max())


@pytest.mark.parametrize("method", C.VARIANCE_METHODS)
def test_gradient_variance(reference, method):
    """Default and every explicit method equal the dense variance and second moment, full
    batch and minibatched; a method that cannot handle the model says so in one line."""
    r = reference
    unsupported = UNSUPPORTED.get((f"{_case_id(r)}", method))
    if unsupported is not None:
        with pytest.raises(ValueError, match=unsupported) as err:
            C.gradient_variance(*r.args(), method=method)
        assert "\n" not in str(err.value)
        return
    snap = snapshot(r.model)
    for batched in (False, True):
        gv = C.gradient_variance(*r.args(batched), method=method, chunk_size=4)
        assert method == "auto" or gv.settings["method"] == method
        for name in r.domains:
            close(gv.variance[name], r.var[name], atol=1e-12 * scale(r.var[name]))
            close(gv.empirical_fisher[name], r.second[name], atol=1e-12 * scale(r.second[name]))
            assert gv.num_samples[name] == N
    assert_unchanged(r.model, snap)


def _case_id(r: Reference) -> str:
    return next(k for k, v in _REFERENCES.items() if v is r)


@pytest.mark.parametrize("method", ["exact", "ggn"])
def test_exact_diagonals(reference, method):
    """The exact methods are exact (and say so) on any model: the Hessian diagonal (rows of
    products where BackPACK cannot), the GGN diagonal (C per-sample vector-Jacobian products
    by torch.func where BackPACK cannot); minibatched too. The default ("auto", the exact
    Hessian diagonal here) runs full batch in test_compare_domains (so the slow rows of
    products run minibatched only here)."""
    r = reference
    want = r.G if method == "ggn" else r.H
    for batched in (False, True) if method == "ggn" else (True,):
        result = C.hessian_diagonal(*r.args(batched), method=method)
        assert result.settings["exact"] is True
        assert result.settings["method"] == ("ggn" if method == "ggn" else "exact")
        for name in r.domains:
            expected = torch.diagonal(want[name]).numpy()
            close(result.diagonal[name], expected, atol=1e-12 * scale(expected))


def test_hutchinson_diagonal_reports_its_standard_error(reference):
    """Not exact: says so, and the truth lies within a few standard errors; minibatched
    gives the same estimate (the same probes)."""
    r = reference
    full = C.hessian_diagonal(*r.args(), method="hutchinson", num_probes=64, seed=3)
    batched = C.hessian_diagonal(*r.args(True), method="hutchinson", num_probes=64, seed=3)
    assert full.settings["exact"] is False and full.settings["backend"] == "operator"
    for name in r.domains:
        truth = torch.diagonal(r.H[name]).numpy()
        err, se = full.diagonal[name] - truth, full.standard_error[name]
        assert np.mean(np.abs(err) <= 4 * se + 1e-12 * scale(truth)) > 0.95
        close(batched.diagonal[name], full.diagonal[name], atol=1e-12 * scale(truth))


def test_monte_carlo_fisher_converges_to_the_ggn(reference):
    """fisher_mc works on any model (BackPACK, else torch.func) and is unbiased for the GGN
    diagonal: its error shrinks like 1 / sqrt(samples)."""
    r = reference
    errors = []
    for samples in (4, 256):
        mc = C.hessian_diagonal(*r.args(), method="fisher_mc", mc_samples=samples, seed=1)
        assert mc.settings["exact"] is False
        err = [mc.diagonal[n] - torch.diagonal(r.G[n]).numpy() for n in r.domains]
        errors.append(np.sqrt(np.mean(np.concatenate(err) ** 2)))
    assert errors[1] < errors[0] / 3  # 64x the samples: ~8x smaller


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_top_eigenpairs(reference, curvature):
    """Top-2 eigenvalues equal the dense ones, eigenvectors up to sign; minibatched too."""
    r = reference
    for batched in (False, True):
        eig = C.top_eigenpairs(*r.args(batched), k=2, curvature=curvature, tol=1e-10)
        for name in r.domains:
            values, vectors = ref.eigenpairs(r.matrix(curvature)[name], k=2)
            close(eig.largest_eigenvalues[name], values.numpy(), atol=1e-8 * float(values[0]))
            overlap = np.abs(np.sum(eig.largest_eigenvectors[name] * vectors.numpy(), axis=0))
            close(overlap, np.ones(2), rtol=0, atol=1e-5)


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "ef"])
def test_trace(reference, curvature):
    """The exact trace equals the dense one (the Hessian's is the sum of the diagonal of
    test_exact_diagonals: not run again); Hutchinson's lies within a few standard errors of
    it and is the same minibatched (the same probes)."""
    r = reference
    exact = None
    if curvature != "hessian":
        exact = C.hessian_trace(*r.args(True), method="exact", curvature=curvature)
    hut = C.hessian_trace(*r.args(), num_probes=32, curvature=curvature)
    hut_batched = C.hessian_trace(*r.args(True), num_probes=32, curvature=curvature)
    for name in r.domains:
        truth = ref.trace(r.matrix(curvature)[name])
        if exact is not None:
            close(exact.trace[name], truth, atol=1e-12 * abs(truth))
        assert abs(hut.trace[name] - truth) <= 5 * hut.standard_error[name]
        close(hut_batched.trace[name], hut.trace[name], atol=1e-12 * abs(truth))


def test_spectral_density_quadrature(reference):
    """Each probe's Gauss quadrature reproduces v^T A^p v / v^T v (p < 2m) of the dense
    Hessian with the same Rademacher probes; minibatched too."""
    r = reference
    for batched in (False, True):
        sd = C.spectral_density(*r.args(batched), num_probes=3, lanczos_steps=4, seed=5)
        for name in r.domains:
            H = r.H[name]
            probes = rademacher(H.shape[0], 3, 5, H.dtype, H.device)
            for p in (1, 2, 3):
                quad = np.sum(sd.weights[name] * sd.nodes[name] ** p, axis=1)
                Hp = torch.linalg.matrix_power(H, p)
                exact = ((probes @ Hp) * probes).sum(1) / probes.shape[1]
                close(quad, exact.numpy(), rtol=1e-7, atol=1e-10 * scale(exact))


def test_compare_domains(reference):
    """compare_domains' (default methods) distances, cosines and principal angles follow
    from the dense references (full batch; test_exact_diagonals runs them minibatched)."""
    r = reference
    d0, d1 = r.domains
    results = [C.compare_domains(*r.args(), k=2)]
    h = {n: torch.diagonal(r.H[n]).numpy() for n in r.domains}
    U = {n: ref.eigenpairs(r.H[n], k=2)[1].numpy() for n in r.domains}
    for res in results:
        assert res.settings["diagonal_method"] == "exact"  # "auto": exact on any small model
        close(res.variance_distance[0, 1], np.sum((r.var[d0] - r.var[d1]) ** 2), rtol=1e-8)
        close(res.variance_cosine[0, 1], C.cosine(r.var[d0], r.var[d1]), rtol=1e-9)
        close(res.diagonal_distance[0, 1], np.sum((h[d0] - h[d1]) ** 2), rtol=1e-8)
        close(res.within_cosine, [C.cosine(r.var[n], h[n]) for n in r.domains], rtol=1e-9)
        angles = C.principal_angles(U[d0], U[d1])
        close(res.principal_angles[0, 1], angles, rtol=0, atol=1e-5)


def test_an_impossible_explicit_backend_answers_one_line(monkeypatch):
    """Where no exact backend applies (BackPACK lacks GroupNorm, D above the rows limit),
    method='exact' says so in one line naming what works; the default still answers, with
    Hutchinson's estimate, marked not exact, and its standard error."""
    from landscape.curvature import diagonals

    model, loss_func, domains, params = CONV_CASES[0].build(n=8, n_domains=1)
    monkeypatch.setattr(diagonals, "ROWS_MAX_DIM", 10)
    with pytest.raises(ValueError, match=r"no rule for GroupNorm.*D = 219 .*'hutchinson'") as e:
        C.hessian_diagonal(model, loss_func, domains, params, method="exact")
    assert "\n" not in str(e.value)
    auto = C.hessian_diagonal(model, loss_func, domains, params, num_probes=4)
    assert auto.settings["method"] == "hutchinson" and auto.settings["exact"] is False
    assert auto.standard_error["d0"].shape == auto.diagonal["d0"].shape


class SharedLayer(nn.Module):
    """One Linear run twice per forward (weight sharing): BackPACK keeps one call's inputs,
    so its per-sample and second-order quantities would miss the other; refused, and the
    defaults fall back to exact methods."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.classifier = nn.Linear(4, 3)

    def forward(self, x):
        return self.classifier(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


def test_module_run_twice_is_refused_by_backpack_and_handled_by_default():
    torch.manual_seed(0)
    model = SharedLayer().double().eval()
    loss_func = nn.CrossEntropyLoss()
    X, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    domains = {"a": [(X[:5], y[:5]), (X[5:], y[5:])]}
    with pytest.raises(ValueError, match=r"Linear \(shared\) ran 2 times; use method='per_s") as e:
        C.gradient_variance(model, loss_func, domains, method="backpack")
    assert "\n" not in str(e.value)
    gv = C.gradient_variance(model, loss_func, domains)
    assert gv.settings["method"] == "per_sample"
    close(gv.variance["a"], ref.gradient_variance(model, loss_func, domains["a"]).numpy())
    for method, dense in (("exact", ref.dense_hessian), ("ggn", ref.dense_ggn)):
        diag = C.hessian_diagonal(model, loss_func, domains, method=method)
        assert diag.settings["backend"] != "backpack" and diag.settings["exact"]
        close(diag.diagonal["a"], torch.diagonal(dense(model, loss_func, domains["a"])).numpy())


class PerPosition(nn.Module):
    """Cross-entropy over positions: logits ``[N, C, L]``, targets ``[N, L]`` (the loss
    Hessian's factor then comes from its eigendecomposition, not a closed form)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def test_ggn_diagonal_of_a_per_position_loss():
    torch.manual_seed(0)
    model = PerPosition().double().eval()
    X, y = torch.randn(10, 2, 5, dtype=torch.float64), torch.randint(0, 3, (10, 5))
    domains = {"a": [(X[:4], y[:4]), (X[4:], y[4:])]}
    loss_func = nn.CrossEntropyLoss()
    diag = C.hessian_diagonal(model, loss_func, domains, method="ggn")
    assert diag.settings["exact"]
    close(diag.diagonal["a"], torch.diagonal(ref.dense_ggn(model, loss_func, domains["a"])))


def test_defaults_in_float32_on_every_device(device):
    """The defaults on a float32 copy of the GroupNorm CNN (on CUDA too, where present) agree
    with the float64 reference to float32 accuracy."""
    case = CONV_CASES[0]
    if case.id not in _REFERENCES:
        _REFERENCES[case.id] = Reference(case)
    r = _REFERENCES[case.id]
    model, loss_func, params = copy.deepcopy(r.model).float().to(device), r.loss, r.params
    cast = {n: [(X.float().to(device), y.to(device)) for X, y in d] for n, d in r.domains.items()}
    domains = {"d0": cast["d0"], "d1": minibatched(cast)["d1"]}  # a DataLoader too
    gv = C.gradient_variance(model, loss_func, domains, params)
    ggn = C.hessian_diagonal(model, loss_func, domains, params, method="ggn")
    eig = C.top_eigenpairs(model, loss_func, domains, params, curvature="ggn")
    for name in r.domains:
        close(gv.variance[name], r.var[name], rtol=1e-4, atol=1e-5 * scale(r.var[name]))
        G = torch.diagonal(r.G[name]).numpy()
        close(ggn.diagonal[name], G, rtol=1e-4, atol=1e-5 * scale(G))
        top = ref.eigenpairs(r.G[name], k=1)[0].numpy()
        close(eig.largest_eigenvalues[name], top, rtol=1e-4)
