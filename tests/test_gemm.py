"""landscape.gemm: matmul / linear on NumPy's BLAS against torch (float64 tight, float32 to
1e-5 relative), every operand layout, gradients by gradcheck, double backward against
torch's, the backend's choice (fake cpuinfo / config strings, $LANDSCAPE_GEMM), the layer
context manager (hooks still fire, restored on exceptions) and the BLAS thread limit.

Every numeric test runs with both backends forced through ``$LANDSCAPE_GEMM``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape import gemm
from landscape.device import set_threads
from landscape.persample import LinearCapture, select_linear_layers


@pytest.fixture(params=gemm.BACKENDS)
def backend(request, monkeypatch):
    """Each backend, forced through ``$LANDSCAPE_GEMM`` (the functions' default)."""
    monkeypatch.setenv(gemm.ENV_VAR, request.param)
    return request.param


def layout(t: torch.Tensor, kind: str) -> torch.Tensor:
    """``t`` (same values) as a C-ordered tensor, a transposed view, a column block of a wider
    tensor (rows spaced more than their length) or every other column (no BLAS layout)."""
    if kind == "C":
        return t.contiguous()
    if kind == "T":
        return t.t().contiguous().t()
    wide = torch.zeros(t.shape[0], 2 * t.shape[1] + 3, dtype=t.dtype)
    if kind == "block":
        wide[:, 3 : 3 + t.shape[1]] = t
        return wide[:, 3 : 3 + t.shape[1]]
    wide[:, : 2 * t.shape[1] : 2] = t  # "strided"
    return wide[:, : 2 * t.shape[1] : 2]


LAYOUTS = ["C", "T", "block", "strided"]
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.double() - ref).norm() / ref.norm())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("kind_a", LAYOUTS)
@pytest.mark.parametrize("kind_b", LAYOUTS)
def test_matmul_equals_the_float64_product_in_every_layout(backend, dtype, kind_a, kind_b):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(37, 23, generator=g, dtype=torch.float64)
    B = torch.randn(23, 11, generator=g, dtype=torch.float64)
    a, b = layout(A.to(dtype), kind_a), layout(B.to(dtype), kind_b)
    out = gemm.matmul(a, b)
    assert out.dtype == dtype and out.shape == (37, 11) and out.is_contiguous()
    assert relative_error(out, A @ B) < TOL[dtype]


@pytest.mark.parametrize("kind", LAYOUTS)
def test_blas_layouts_are_read_in_place_and_only_others_are_copied(kind):
    t = layout(torch.randn(9, 5), kind)
    view = gemm._blas_layout(t)
    assert (view is t) == (kind != "strided")
    array = gemm._array(t)
    assert np.shares_memory(array, t.numpy()) == (kind != "strided")
    np.testing.assert_array_equal(array, t.numpy())


@pytest.mark.parametrize("shape", [(1, 7, 5), (6, 1, 5), (6, 7, 1), (1, 7, 1), (6, 1, 1)])
def test_matmul_with_unit_dimensions(backend, shape):
    m, k, n = shape
    a = torch.randn(m, k, dtype=torch.float64)
    b = torch.randn(k, n, dtype=torch.float64)
    torch.testing.assert_close(gemm.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gemm.matmul(b.t(), a.t()), (a @ b).t(), rtol=1e-12, atol=1e-12)


def test_an_outer_product_is_each_entry_rounded_once_and_differentiable(backend):
    """Inner dimension 1 (a one-logit head's backward): every entry is the float32 product
    of two numbers, i.e. the float64 product rounded once (exact in float64: 24 + 24 bits)."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(300, 1, generator=g, dtype=torch.float64)
    b = torch.randn(1, 40, generator=g, dtype=torch.float64)
    a32, b32 = a.float(), b.float()
    want = (a32.double() * b32.double()).float()
    assert torch.equal(gemm.matmul(a32, b32), want)
    assert torch.equal(gemm.matmul(b32.t(), a32.t()), want.t())  # transposed views
    a, b = a[:6].requires_grad_(), b[:, :5].requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: gemm.matmul(a, b).tanh(), (a, b))
    assert torch.autograd.gradgradcheck(lambda a, b: gemm.matmul(a, b).tanh(), (a, b))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=["rows", "3d", "4d"])
def test_linear_equals_functional_linear(backend, dtype, batch):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*batch, 8, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 6, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    ref = nn.functional.linear(x, w, b)
    for bias in (b, None):
        out = gemm.linear(x.to(dtype), w.to(dtype), None if bias is None else bias.to(dtype))
        want = ref if bias is not None else ref - b
        assert out.shape == want.shape and out.dtype == dtype
        assert relative_error(out, want) < TOL[dtype]


def test_the_numpy_path_is_taken_only_where_it_applies(monkeypatch):
    a = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, dtype=torch.float64)
    assert type(gemm.matmul(a, b, backend="numpy").grad_fn).__name__ == "_NumpyGemmBackward"
    assert type(gemm.matmul(a, b, backend="torch").grad_fn).__name__ == "MmBackward0"
    half = gemm.matmul(a.detach().half(), b.half(), backend="numpy")  # another dtype: torch
    assert half.dtype == torch.float16
    ints = torch.arange(6).reshape(2, 3)
    assert torch.equal(gemm.matmul(ints, ints.t(), backend="numpy"), ints @ ints.t())
    batched = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    out = gemm.matmul(batched, b, backend="numpy")  # not 2-D: torch
    assert type(out.grad_fn).__name__ != "_NumpyGemmBackward"
    empty = gemm.matmul(torch.randn(0, 3), torch.randn(3, 4), backend="numpy")
    assert empty.shape == (0, 4)
    monkeypatch.setenv(gemm.ENV_VAR, "numpy")
    assert type(gemm.linear(a, b.t()).grad_fn).__name__ == "_NumpyGemmBackward"


def test_gradients_pass_gradcheck_and_gradgradcheck(backend):
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)

    def product(a, b):
        return gemm.matmul(a, b).tanh()  # non-linear: second derivatives are not zero

    def layer(x, w, bias):
        return gemm.linear(x, w, bias).tanh()

    def transposed(a, b):
        return gemm.matmul(b.t(), a.t()).sin()

    for fn, args in ((product, (a, b)), (layer, (a, w, bias)), (transposed, (a, b))):
        assert torch.autograd.gradcheck(fn, args)
        assert torch.autograd.gradgradcheck(fn, args)


def test_double_backward_equals_torchs(backend):
    """A Hessian-vector product through two layers (what IRM's and Fishr's penalties do)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    params = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(5, 6), (5,), (1, 5)]]
    v = [torch.randn_like(p) for p in params]

    def hvp(use_gemm: bool):
        ps = [p.clone().requires_grad_() for p in params]
        lin = gemm.linear if use_gemm else nn.functional.linear
        out = lin(lin(x, ps[0], ps[1]).tanh(), ps[2]).square().mean()
        grads = torch.autograd.grad(out, ps, create_graph=True)
        dot = sum((gr * vi).sum() for gr, vi in zip(grads, v, strict=True))
        return grads, torch.autograd.grad(dot, ps)

    (g1, h1), (g0, h0) = hvp(True), hvp(False)
    for a, b in zip(list(g1) + list(h1), list(g0) + list(h0), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------- the choice


AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel Xeon\n"
TORCH_MKL = "  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl, USE_MKL=ON"
TORCH_OPEN = "  - Build settings: BLAS_INFO=open, BUILD_TYPE=Release, USE_MKL=OFF"
NUMPY_OPENBLAS = {"Build Dependencies": {"blas": {"name": "scipy-openblas", "found": True}}}
NUMPY_MKL = {"Build Dependencies": {"blas": {"name": "mkl-sdl", "found": True}}}


def test_the_parsers_read_what_torch_numpy_and_cpuinfo_report():
    assert gemm.torch_blas(TORCH_MKL) == "mkl" and gemm.torch_blas(TORCH_OPEN) == "open"
    assert gemm.torch_blas("no build settings") == ""
    assert gemm.cpu_vendor(AMD) == "AuthenticAMD" and gemm.cpu_vendor(INTEL) == "GenuineIntel"
    assert gemm.cpu_vendor("") == ""
    assert gemm.numpy_blas(NUMPY_OPENBLAS) == "scipy-openblas"
    assert gemm.numpy_blas(NUMPY_MKL) == "mkl-sdl" and gemm.numpy_blas({}) == ""
    # this machine's own reports parse (whatever they say)
    assert isinstance(gemm.torch_blas(), str) and isinstance(gemm.numpy_blas(), str)
    assert gemm.default_backend() in gemm.BACKENDS


@pytest.mark.parametrize(
    "torch_config, cpuinfo, numpy_config, want",
    [
        (TORCH_MKL, AMD, NUMPY_OPENBLAS, "numpy"),
        (TORCH_MKL, INTEL, NUMPY_OPENBLAS, "torch"),  # MKL is fast on Intel
        (TORCH_OPEN, AMD, NUMPY_OPENBLAS, "torch"),  # torch has OpenBLAS already
        (TORCH_MKL, AMD, NUMPY_MKL, "torch"),  # NumPy's MKL is no better
        (TORCH_MKL, "", NUMPY_OPENBLAS, "torch"),  # vendor unknown (not Linux)
    ],
)
def test_the_backend_is_numpy_only_for_mkl_torch_on_amd_with_openblas_numpy(
    torch_config, cpuinfo, numpy_config, want
):
    vendor, blas = gemm.cpu_vendor(cpuinfo), gemm.numpy_blas(numpy_config)
    assert gemm.choose_backend(gemm.torch_blas(torch_config), vendor, blas) == want


def test_the_environment_variable_overrides_the_machines_choice(monkeypatch):
    monkeypatch.delenv(gemm.ENV_VAR, raising=False)
    assert gemm.backend() == gemm.default_backend()
    for name in gemm.BACKENDS:
        monkeypatch.setenv(gemm.ENV_VAR, name)
        assert gemm.backend() == name
    monkeypatch.setenv(gemm.ENV_VAR, "mkl")
    with pytest.raises(ValueError, match=r"LANDSCAPE_GEMM='mkl' .* torch or numpy") as err:
        gemm.backend()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="unknown GEMM backend 'blas'; use torch or numpy"):
        gemm.matmul(torch.eye(2), torch.eye(2), backend="blas")


# ------------------------------------------------------------------ the layers' context


class Wide(nn.Linear):
    """A subclass (its forward may differ from nn.Linear's): left alone."""


def model_of(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), Wide(5, 4), nn.Linear(4, 1)).to(dtype)


@pytest.mark.parametrize("name", gemm.BACKENDS)
def test_linear_layers_on_keeps_the_hooks_and_restores_the_forwards(name):
    model = model_of()
    x = torch.randn(7, 6, dtype=torch.float64)
    want = model(x)
    layers = select_linear_layers(model, None)
    with gemm.linear_layers_on(model, name):
        patched = [type(m).__name__ for m in model.modules() if "forward" in m.__dict__]
        with LinearCapture(layers) as cap:
            out = model(x)
        acts = cap.activations()  # raises unless every hook fired once
    assert patched == (["Linear", "Linear"] if name == "numpy" else [])
    assert set(acts) == {layer.name for layer in layers}
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    assert not any("forward" in m.__dict__ for m in model.modules())
    if name == "numpy":
        # the head's output was computed by the NumPy Function (then the hook's + probe)
        assert out.grad_fn.next_functions[0][0].__class__.__name__ == "_NumpyGemmBackward"


def test_linear_layers_on_restores_the_forwards_after_an_exception():
    model = model_of()
    with pytest.raises(RuntimeError, match="boom"):
        with gemm.linear_layers_on(model, "numpy"):
            assert "forward" in model[0].__dict__
            raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in model.modules())
    with pytest.raises(ValueError, match="unknown GEMM backend"):
        with gemm.linear_layers_on(model, "cuda"):
            pass


def test_set_threads_limits_numpys_blas_pool():
    from threadpoolctl import threadpool_info

    def numpy_blas_threads():
        return [
            p["num_threads"]
            for p in threadpool_info()
            if p["user_api"] == "blas" and "numpy" in p["filepath"]
        ]

    assert numpy_blas_threads(), "NumPy's BLAS is not visible to threadpoolctl"
    with set_threads(2):
        assert numpy_blas_threads() == [2]
        with set_threads(1):
            assert numpy_blas_threads() == [1]
            a = torch.randn(30, 20)
            torch.testing.assert_close(gemm.matmul(a, a.t(), backend="numpy"), a @ a.t())
        assert numpy_blas_threads() == [2]
