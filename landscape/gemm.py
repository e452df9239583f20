"""Which BLAS computes the training step's matrix products: torch's or NumPy's.

torch's CPU wheels do their float32 / float64 GEMMs with Intel MKL, and MKL takes a slow
code path on AMD processors (it checks the vendor, not the instruction set; the old
``MKL_DEBUG_CPU_TYPE=5`` switch is ignored by recent MKL). NumPy's wheels carry OpenBLAS,
whose kernels are chosen by instruction set. On the project's AMD EPYC (AVX2, one thread) a
``[25,000, 390] @ [390, 390]`` float32 product runs at about 31 GFLOPS with torch and 55
GFLOPS with NumPy, interleaved in one process (``benchmarks/bench_gemm.py``).

* :func:`matmul` / :func:`linear`: ``a @ b`` and ``x W^T + b`` on the chosen backend. With
  ``"numpy"``, 2-D CPU float32 / float64 operands go through a
  :class:`torch.autograd.Function` whose forward writes ``np.matmul`` straight into a new
  torch tensor (no copy of any operand whose layout BLAS takes: C-ordered or transposed,
  rows of any stride; other layouts are made contiguous first) and whose backward is made of
  the same products,

  .. math::

      C = A B: \\quad \\bar A = \\bar C B^\\top, \\quad \\bar B = A^\\top \\bar C,
      \\quad \\bar{\\text{bias}} = \\textstyle\\sum_i \\bar C_{i,:},

  so double backward (``create_graph=True``: IRM's and Fishr's penalties) works too. An
  outer product (inner dimension 1, as the backward of a one-logit head makes) is the
  broadcast multiplication ``a * b``: one product per entry and no sum, so the same numbers
  as a GEMM, while OpenBLAS's ``K = 1`` path writes ``[25,000, 390]`` about 5x slower.
  Anything else (another device or dtype, other ranks) and backend ``"torch"`` is plain
  :func:`torch.matmul` / :func:`torch.nn.functional.linear`. Forward-mode AD and
  ``torch.func`` transforms do not go through the NumPy Function: use it in training steps,
  not in the analyses.
* :func:`backend`: ``$LANDSCAPE_GEMM`` (``torch`` or ``numpy``) when set, else
  :func:`default_backend`, which is fixed per machine (never a timing at run time, so a
  resumed run takes the same path): ``"numpy"`` when torch's BLAS is MKL, the CPU vendor is
  AMD and NumPy's BLAS is OpenBLAS (:func:`choose_backend`), ``"torch"`` otherwise. The two
  backends agree up to float rounding (another summation order), not bit for bit.

Threads: NumPy's OpenBLAS has its own pool, which :func:`landscape.device.set_threads` (and
so ``--threads``) limits along with torch's. Idle threads of either pool spin for a while
and take the cores from the other pool: ``import landscape`` makes both wait passively where
this backend is expected (:mod:`landscape.thread_pools`); ``benchmarks/bench_gemm.py``
measures the hand-over.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from landscape.thread_pools import cpu_vendor

#: The backends: ``"torch"`` (torch's own BLAS) and ``"numpy"`` (NumPy's).
BACKENDS = ("torch", "numpy")
#: The environment variable that overrides :func:`default_backend`.
ENV_VAR = "LANDSCAPE_GEMM"

_DTYPES = (torch.float32, torch.float64)


def check_backend(name: str) -> str:
    """``name`` if it is one of :data:`BACKENDS`; else a one-line ``ValueError``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown GEMM backend {name!r}; use {' or '.join(BACKENDS)}")
    return name


def torch_blas(config: str | None = None) -> str:
    """The BLAS torch was built with (``"mkl"``, ``"open"``, ...), lower case, from
    ``torch.__config__.show()`` (or ``config``); ``""`` when it does not say."""
    if config is None:
        config = torch.__config__.show()
        if "BLAS_INFO=" not in config:  # a build that does not say: MKL if it has it
            return "mkl" if torch.backends.mkl.is_available() else ""
    match = re.search(r"BLAS_INFO=([\w.-]+)", config)
    return match.group(1).lower() if match else ""


def numpy_blas(config: dict | None = None) -> str:
    """The name of NumPy's BLAS (``"scipy-openblas"``, ``"mkl"``, ...), lower case, from
    ``numpy.show_config(mode="dicts")`` (or ``config``, the same dict); ``""`` if unknown."""
    if config is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = np.show_config(mode="dicts")
        except Exception:  # noqa: BLE001 - an old or unusual NumPy: unknown BLAS
            return ""
    try:
        return str(config["Build Dependencies"]["blas"]["name"]).lower()
    except (KeyError, TypeError):
        return ""


def choose_backend(torch_blas: str, vendor: str, numpy_blas: str) -> str:
    """``"numpy"`` when torch's BLAS is MKL, the CPU is AMD's and NumPy's BLAS is OpenBLAS
    (MKL's slow path on AMD, a fast BLAS at hand); ``"torch"`` otherwise."""
    amd = vendor == "AuthenticAMD"
    if torch_blas.lower() == "mkl" and amd and "openblas" in numpy_blas.lower():
        return "numpy"
    return "torch"


@functools.cache
def default_backend() -> str:
    """This machine's backend (:func:`choose_backend` of what torch, ``/proc/cpuinfo`` and
    NumPy report), the same in every process on it."""
    return choose_backend(torch_blas(), cpu_vendor(), numpy_blas())


def backend() -> str:
    """``$LANDSCAPE_GEMM`` when set (``torch`` or ``numpy``), else :func:`default_backend`.

    Raises:
        ValueError: ``$LANDSCAPE_GEMM`` holds another value (one line naming the choices).
    """
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return default_backend()
    if value not in BACKENDS:
        raise ValueError(
            f"{ENV_VAR}={value!r} is not a GEMM backend; set it to {' or '.join(BACKENDS)} "
            "or unset it"
        )
    return value


def uses_numpy(*tensors: Tensor, backend: str) -> bool:
    """Whether the NumPy path applies: backend ``"numpy"`` and 2-D CPU tensors of one dtype,
    float32 or float64, none of them empty."""
    if backend != "numpy":
        return False
    dtype = tensors[0].dtype
    return dtype in _DTYPES and all(
        t.dim() == 2 and t.device.type == "cpu" and t.dtype == dtype and t.numel() > 0
        for t in tensors
    )


def _blas_layout(t: Tensor) -> Tensor:
    """``t`` itself when BLAS can read it in place (NumPy's rule: one stride 1, the other at
    least the other dimension; i.e. C-ordered or transposed, rows or columns of any spacing),
    else a contiguous copy (NumPy would copy or take a slow loop)."""
    (d1, d2), (s1, s2) = t.shape, t.stride()
    if (s2 == 1 and s1 >= max(d2, 1)) or (s1 == 1 and s2 >= max(d1, 1)):
        return t
    return t.contiguous()


def _array(t: Tensor) -> np.ndarray:
    return _blas_layout(t.detach()).numpy()


def mm_into(a: Tensor, b: Tensor, out: Tensor, backend: str) -> Tensor:
    """``out = a @ b`` (not differentiable) on ``backend``; ``out`` ``[m, p]`` has unit column
    stride and a row stride of at least ``p`` (a block of rows, or the leading columns of a
    wider C-ordered tensor: both BLAS libraries write it in place). The NumPy path applies as
    :func:`uses_numpy` says."""
    if not uses_numpy(a, b, out, backend=backend):
        return torch.mm(a, b, out=out)
    with np.errstate(all="ignore"):  # torch does not warn on inf / NaN either
        np.matmul(_array(a), _array(b), out=out.detach().numpy())
    return out


def mm(a: Tensor, b: Tensor, backend: str) -> Tensor:
    """``a @ b`` (not differentiable) as a new tensor, on ``backend`` (see :func:`mm_into`)."""
    return mm_into(a, b, a.new_empty((a.shape[0], b.shape[1])), backend)


class _NumpyGemm(torch.autograd.Function):
    """``a @ b (+ bias)`` with NumPy's BLAS; the backward is made of the same products."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, bias: Tensor | None) -> Tensor:
        out = mm(a, b, "numpy")
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(a, b)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        a, b = ctx.saved_tensors
        want_a, want_b, want_bias = ctx.needs_input_grad
        grad_a = matmul(grad, b.t(), backend="numpy") if want_a else None
        grad_b = matmul(a.t(), grad, backend="numpy") if want_b else None
        grad_bias = grad.sum(0) if want_bias else None
        return grad_a, grad_b, grad_bias


def matmul(a: Tensor, b: Tensor, *, backend: str | None = None) -> Tensor:
    """``a @ b`` on ``backend`` (default :func:`backend`), differentiable (twice too).

    Example::

        >>> a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
        >>> torch.allclose(matmul(a, b, backend="numpy"), a @ b)
        True
    """
    name = _resolve(backend)
    if uses_numpy(a, b, backend=name):
        if a.shape[1] == 1:  # an outer product: OpenBLAS's K = 1 path is 5x slower here
            return a * b
        return _NumpyGemm.apply(a, b, None)
    return torch.matmul(a, b)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
           backend: str | None = None) -> Tensor:  # fmt: skip
    """``x W^T + b`` (:func:`torch.nn.functional.linear`) on ``backend`` (default
    :func:`backend`); ``x`` ``[..., in]`` is flattened to rows for the product.

    Example::

        >>> x, w = torch.randn(6, 3, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
        >>> b = torch.randn(2, dtype=torch.float64)
        >>> torch.allclose(linear(x, w, b, backend="numpy"), torch.nn.functional.linear(x, w, b))
        True
    """
    name = _resolve(backend)
    rows = x.reshape(-1, x.shape[-1]) if x.dim() >= 2 else x
    plain = not uses_numpy(rows, weight, backend=name) or (
        bias is not None and (bias.dim() != 1 or not uses_numpy(rows, bias[None], backend=name))
    )
    if plain:
        return torch.nn.functional.linear(x, weight, bias)
    out = _NumpyGemm.apply(rows, weight.t(), bias)
    return out if x.dim() == 2 else out.reshape(*x.shape[:-1], weight.shape[0])


def _resolve(name: str | None) -> str:
    return backend() if name is None else check_backend(name)


@contextmanager
def linear_layers_on(model: torch.nn.Module, name: str):
    """Within the block, every ``nn.Linear`` of ``model`` computes its output with
    :func:`linear` on backend ``name`` (nothing changes for ``"torch"``).

    The layers' ``forward`` is replaced on the **instances** (not the class), so
    ``module(x)`` still runs the forward hooks (:class:`landscape.persample.LinearCapture`);
    the original is put back when the block ends, on an exception too.
    """
    check_backend(name)
    if name == "torch":
        yield model
        return
    patched = []
    try:
        for module in model.modules():
            if type(module) is torch.nn.Linear and "forward" not in module.__dict__:
                module.forward = functools.partial(_linear_forward, module, name)
                patched.append(module)
        yield model
    finally:
        for module in patched:
            del module.forward


def _linear_forward(module: torch.nn.Linear, name: str, x: Tensor) -> Tensor:
    return linear(x, module.weight, module.bias, backend=name)
