"""Matrix-free curvature operators of a domain's risk: Hessian, GGN and empirical Fisher.

An operator represents one symmetric ``[D, D]`` matrix of the risk
:math:`R_e(\\theta) = \\frac1N \\sum_i \\ell(f_\\theta(x_i), y_i)` of one domain, restricted to
the parameters chosen by ``params`` (see :mod:`landscape.params`), and multiplies ``k``
vectors at once with it without ever forming it. :class:`CurvatureOperator` owns the data
loop; each subclass only says how one batch multiplies a block ``V^T [k, D]``:

* :class:`HessianOperator`: :math:`H V = \\nabla_\\theta (\\nabla_\\theta R_e \\cdot V)` (double
  backward);
* :class:`GGNOperator`: :math:`G V = \\frac1N\\sum_i J_i^\\top \\Lambda_i J_i V`, with the
  Jacobian-vector product :math:`J V = \\partial_u \\langle J^\\top u, V\\rangle` (double-vjp
  trick), :math:`\\Lambda_i` the loss Hessian w.r.t. the outputs, then one vjp;
* :class:`EFOperator` (empirical Fisher): :math:`F V = \\frac1N \\sum_i g_i (g_i^\\top V)`
  with the per-sample gradients :math:`g_i = \\nabla_\\theta\\ell_i`, obtained as two
  vector-Jacobian products of the per-sample loss vector, never materialising ``[N, D]``.

A block of ``k > 1`` columns goes through each differentiation once, vectorised
(``torch.autograd.grad(..., is_grads_batched=True)``); ``k = 1`` is the plain product.
PyTorch cannot batch some double-backward formulas (the Hessian through ``GroupNorm``: the
batching rule of ``native_group_norm_backward`` raises a size mismatch): an operator whose
first vectorised block fails while its columns one at a time succeed goes one column at a
time from then on (:attr:`~CurvatureOperator.vectorised` ``False``); other errors propagate.

Speed. With a retained graph (default for a domain that is one batch) the forward and first
backward pass run **once** (at the first product, or :meth:`~CurvatureOperator.build`) and
every product differentiates again through the stored graph; it holds a few times one training
step's activations per batch and is freed by :meth:`~CurvatureOperator.release` or a ``with``
block (a closed-form :meth:`~CurvatureOperator.dense` never builds it). Otherwise (several
batches) each block of ``k`` columns loops over the batches, one forward per batch for the
``k`` columns, so memory stays that of one batch. Measured: ``benchmarks/bench_operators.py``.
Dense matrices of small selections are exact in every path: a closed form where one applies
(:mod:`landscape.curvature.closed_form`), blocks of products, or ``D`` products.

The user's model is never changed: products go through :func:`torch.func.functional_call`
with detached copies of the parameters (sharing storage), so parameters, ``requires_grad``
flags and train/eval mode stay as they are; a BackPACK-extended model is analysed through a
plain copy; parameters changed in place after construction make the next product raise a
``ValueError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property

import torch
from curvlinops._torch_base import CurvatureLinearOperator
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from landscape.curvature.checks import (  # noqa: F401  (_to: re-exported)
    Curvature,
    _to,
    as_curvature,
    check_deterministic,
    check_eval_mode,
    check_loss,
    is_backpack_extended,
    plain_copy,
    to_like,
)
from landscape.curvature.closed_form import (
    ClosedForm,
    NoClosedForm,
    functional_tensors,
    linear_empirical_fisher,
    output_layer_curvature,
)
from landscape.domains import Batch, as_batches
from landscape.losses import with_reduction
from landscape.params import ParamSpec, flatten, select_params

# fmt: off
__all__ = [
    "DENSE_METHODS", "MAX_DENSE_DIM", "BLOCK_COLUMNS", "BLOCK_SAMPLE_COLUMNS", "BLOCK_MAX_DIM",
    "Curvature", "as_curvature", "CurvatureOperator", "HessianOperator", "GGNOperator",
    "EFOperator", "curvature_operator", "check_loss", "check_eval_mode", "check_deterministic",
    "is_backpack_extended", "plain_copy", "to_like",
]
# fmt: on

MAX_DENSE_DIM = 8192
"""Largest ``D`` for which :meth:`CurvatureOperator.dense` builds the ``[D, D]`` matrix."""

DENSE_METHODS = ("auto", "closed-form", "batched", "products")
"""Ways :meth:`CurvatureOperator.dense` builds a matrix."""

BLOCK_COLUMNS = 8
"""Most columns :meth:`CurvatureOperator.matmat` multiplies in one vectorised pass."""
BLOCK_SAMPLE_COLUMNS = 2**14
"""Most ``columns x batch rows`` of one vectorised pass: the vectorised backward allocates
``[k, n, width]`` temporaries, memory bound on a CPU for large ``n``."""
BLOCK_MAX_DIM = MAX_DENSE_DIM
"""Largest ``D`` that :meth:`CurvatureOperator.matmat` vectorises over columns. Measured
(Colored MNIST MLP, N = 2,000, one thread, ``benchmarks/bench_operators.py``): blocks of 8
columns cost 2-4x less per vector for the head (``D = 391``; 15x at N = 128), nothing for the
whole network (``D = 306,151``: 0.9-1.4x one column at a time, already large matmuls)."""


def _vjp(output: Tensor, inputs, cotangents: Tensor, retain: bool) -> list[Tensor | None]:
    """Vector-Jacobian products of ``output`` for the ``k`` cotangents ``[k, *output.shape]``
    at once: ``[k, *input.shape]`` per input (``None`` where unused). One plain backward for
    ``k = 1``, one vectorised backward (``is_grads_batched``) otherwise."""
    k = cotangents.shape[0]
    grads = torch.autograd.grad(
        output,
        inputs,
        grad_outputs=cotangents if k > 1 else cotangents[0],
        retain_graph=retain,
        allow_unused=True,
        is_grads_batched=k > 1,
    )
    return [g if g is None or k > 1 else g.unsqueeze(0) for g in grads]


def _batch_sizes(batches) -> tuple[int, int, int]:
    """``(N, number of batches, largest batch)`` of a domain; a DataLoader with a fixed
    ``batch_size`` (keeping its last batch) and a sized sampler answers from its lengths,
    without a pass over the data."""
    loader = isinstance(batches, DataLoader) and batches.batch_size is not None
    if loader and not batches.drop_last:
        try:
            N = len(batches.sampler)  # type: ignore[arg-type]
            return N, len(batches), min(int(batches.batch_size), N)
        except TypeError:  # an iterable dataset: count
            pass
    sizes = [int(X.shape[0]) for X, _ in batches]
    return sum(sizes), len(sizes), max(sizes)


class CurvatureOperator(CurvatureLinearOperator):
    """A symmetric ``[D, D]`` curvature matrix of one domain's risk, matrix-free.

    Build it with :func:`curvature_operator` (or ``CurvatureOperator(..., curvature=...)``,
    which returns the subclass for that curvature). Products: ``op @ v``, ``op.matvec(v)``
    for ``v [D]`` and ``op.matmat(V)`` / ``op @ V`` for ``V [D, k]`` (torch tensors, on any
    device and dtype; results in the operator's ``dtype`` and ``device``), and
    ``op.to_scipy()`` for SciPy. ``op.num_products`` counts matrix-vector products (a block
    of ``k`` columns counts ``k``).

    It is a curvlinops ``CurvatureLinearOperator`` (curvlinops 3): ``to_scipy``, ``adjoint``
    (the operator itself), sums, scalings and chains with other curvlinops operators
    (``op_b - 2.0 * op_a``) and curvlinops' estimators (``hutchinson_trace(op, m)``) work on
    it. It keeps its own products and data loop rather than curvlinops' ``_matmat_batch``,
    which redoes the forward and first backward pass of every batch at every call. Measured
    (Colored MNIST MLP, N = 2,000, one thread, ``benchmarks/bench_operators.py``), per vector
    in units of one gradient: our Hessian-vector product 1.0-1.45, curvlinops' 1.9-2.2; blocks
    of 8-20 columns: curvlinops 1.4-1.6, ours 1.3-1.8 (whole network), 0.005 (head).
    Determinism is checked by :func:`~landscape.curvature.checks.check_deterministic` (two
    forwards on at most 256 samples: 0.07 gradients; curvlinops' check costs 6 gradients).

    Attributes:
        curvature: which matrix (:class:`Curvature`).
        names: the selected parameter names, in the layout of vectors.
        dim: ``D``; ``shape`` is ``(D, D)``.
        num_samples: ``N``, the domain's number of samples.
        retain_graph: whether the forward / first backward graphs are kept between products.
        dense_method: how the last :meth:`dense` call built its matrix.
        vectorised: whether blocks of columns go through one vectorised pass (``None`` until
            the first block of ``k > 1`` columns, ``False`` where PyTorch cannot batch it).
    """

    SELF_ADJOINT = True
    curvature: Curvature = Curvature.HESSIAN

    def __new__(cls, *args, **kwargs):
        if cls is CurvatureOperator:
            curvature = kwargs.get("curvature", args[4] if len(args) > 4 else None)
            cls = _OPERATORS[as_curvature(curvature or Curvature.HESSIAN)]
        data = kwargs.get("data", args[2] if len(args) > 2 else None)
        if getattr(data, "shard", None) is not None:  # a rank's shard: products all-reduced
            from landscape.distributed.operator import sharded_class

            cls = sharded_class(cls)
        return object.__new__(cls)

    def __init__(
        self,
        model: nn.Module,
        loss_func: nn.Module,
        data: Iterable[Batch],
        params: ParamSpec = None,
        curvature: str | Curvature | None = None,
        progress: bool = False,
        retain_graph: bool | None = None,
        check: bool = True,
    ):
        if curvature is not None and as_curvature(curvature) is not self.curvature:
            raise ValueError(
                f"{type(self).__name__} is the {self.curvature.value}, not {curvature}"
            )
        check_loss(loss_func)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        select_params(model, params)  # validate names against the user's model
        if is_backpack_extended(model):
            model = plain_copy(model)
        if check:
            check_eval_mode(model)
        batches = as_batches(data)
        selected = select_params(model, params)
        self._model, self._loss = model, loss_func
        self.names = list(selected)
        self._tensors = functional_tensors(model, selected)
        self._leaves = [self._tensors[n] for n in self.names]
        self._versions = {n: p._version for n, p in model.named_parameters()}
        self.num_samples, self.num_batches, self._max_batch = _batch_sizes(batches)
        if check:
            check_deterministic(model, next(iter(batches)))
        super().__init__(
            self._forward, loss_func, self._leaves, batches, check_deterministic=False,
            num_data=self.num_samples,
        )  # fmt: skip
        self.dim = self.shape[0]
        self.retain_graph = bool(self.num_batches == 1 if retain_graph is None else retain_graph)
        self.num_products = 0
        self._bar = tqdm(
            desc=f"{self.curvature.value}-vector products",
            unit="product",
            disable=not progress,
            leave=False,
        )
        self._graphs: list[dict] | None = None  # built on the first product (build())
        self._released = False
        self._closed: ClosedForm | None = None  # risk / gradient of a closed-form dense pass
        self.dense_method: str | None = None
        self.vectorised: bool | None = None

    # ----------------------------------------------------------------- what subclasses say

    def _first_backward(self, out: Tensor, y: Tensor, loss: Tensor) -> dict:
        """The tensors of one batch's graph that :meth:`_product` differentiates."""
        raise NotImplementedError

    def _product(self, graph: dict, Vt: Tensor, keep: bool) -> Tensor:
        """The unnormalised product of one batch with the rows of ``Vt [k, D]``: ``[k, D]``
        (``keep``: retain the graph for later products)."""
        raise NotImplementedError

    def _closed_form(self, dtype: torch.dtype | None) -> ClosedForm:
        """The dense matrix in closed form, or :class:`NoClosedForm`."""
        raise NotImplementedError

    def _weight(self, n: int) -> float:
        """The factor of a batch of ``n`` samples: ``R_e = sum_b (n_b / N) L_b``."""
        return n / self.num_samples

    # ----------------------------------------------------------------- the data loop

    def _forward(self, X: Tensor) -> Tensor:
        return functional_call(self._model, self._tensors, (to_like(X, self._leaves[0]),))

    def _batches(self):
        """The domain's batches on the operator's device and dtype (inputs detached)."""
        like = self._leaves[0]
        for X, y in self._data:
            yield to_like(X, like).detach(), to_like(y, like)

    def _graph(self, X: Tensor, y: Tensor) -> dict:
        """Forward and first backward pass of one batch, keeping the graph for products."""
        y = to_like(y, self._leaves[0])
        out = self._forward(X)
        loss = self._loss(out, y)
        return {"n": int(X.shape[0]), "loss": loss.detach(), **self._first_backward(out, y, loss)}

    def _flat(self, grads: Sequence[Tensor | None], k: int) -> Tensor:
        """``[k, D]`` from per-leaf ``[k, *shape]`` gradients (zeros where unused)."""
        return torch.cat(
            [
                p.new_zeros(k, p.numel()) if g is None else g.reshape(k, -1)
                for g, p in zip(grads, self._leaves, strict=True)
            ],
            dim=1,
        )

    def _block(self, Vt: Tensor) -> Tensor:
        """``(A V)^T [k, D]`` for ``Vt = V^T [k, D]``: one pass over the batches."""
        self._check_fresh()
        Vt = Vt.to(device=self.device, dtype=self.dtype)
        result = torch.zeros_like(Vt)
        if self.retain_graph:
            for graph in self.build():
                result += self._weight(graph["n"]) * self._product(graph, Vt, keep=True)
        else:
            for X, y in self._data:
                graph = self._graph(X, y)
                result += self._weight(graph["n"]) * self._product(graph, Vt, keep=False)
        self.num_products += Vt.shape[0]
        self._bar.update(Vt.shape[0])
        return result

    def _columns(self, Vt: Tensor) -> Tensor:
        """:meth:`_block` for ``Vt [k, D]``, vectorised unless PyTorch cannot batch this
        operator's backward: decided at the first block of ``k > 1`` columns, whose failure
        is retried one column at a time (an error there propagates: only a failure of the
        batching itself is absorbed, and remembered in :attr:`vectorised`)."""
        if Vt.shape[0] == 1 or self.vectorised:
            return self._block(Vt)
        if self.vectorised is None:
            try:
                result, self.vectorised = self._block(Vt), True
                return result
            except RuntimeError:
                pass  # retried below, one column at a time
        result = torch.cat([self._block(v[None]) for v in Vt])
        self.vectorised = False
        return result

    def _check_fresh(self) -> None:
        if self._released:
            raise ValueError("this operator was released; build a new one with curvature_operator")
        for n, p in self._model.named_parameters():
            if self._versions.get(n) != p._version:
                raise ValueError(
                    f"parameter {n!r} changed in place after the operator was built; build a "
                    "new operator for the new weights"
                )

    # ----------------------------------------------------------------- public products

    @property
    def block_columns(self) -> int:
        """Columns per vectorised pass of :meth:`matmat`: :data:`BLOCK_COLUMNS`, fewer for
        large batches (:data:`BLOCK_SAMPLE_COLUMNS`), one above :data:`BLOCK_MAX_DIM`."""
        if self.dim > BLOCK_MAX_DIM:
            return 1
        return max(1, min(BLOCK_COLUMNS, BLOCK_SAMPLE_COLUMNS // self._max_batch))

    def matvec(self, v: Tensor) -> Tensor:
        """The product ``A v`` for ``v [D]``; returns ``[D]``."""
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor of shape [{self.dim}], got {type(v)}")
        if v.shape != (self.dim,):
            raise ValueError(f"v has shape {tuple(v.shape)}; expected [{self.dim}]")
        return self._block(v[None])[0]

    def matmat(self, V: Tensor) -> Tensor:
        """The product ``A V`` for ``V [D, k]``; returns ``[D, k]`` (``k`` products, in
        vectorised blocks of :attr:`block_columns` columns)."""
        if not isinstance(V, Tensor) or V.dim() != 2 or V.shape[0] != self.dim:
            shape = tuple(V.shape) if isinstance(V, Tensor) else type(V).__name__
            raise ValueError(f"V has shape {shape}; expected [{self.dim}, k]")
        if V.shape[1] == 0:
            return torch.zeros(self.dim, 0, device=self.device, dtype=self.dtype)
        b = self.block_columns
        blocks = [self._columns(V[:, j : j + b].T) for j in range(0, V.shape[1], b)]
        return torch.cat(blocks, dim=0).T.contiguous()

    def __matmul__(self, x):
        if isinstance(x, Tensor):
            return self.matmat(x) if x.dim() == 2 else self.matvec(x)
        return super().__matmul__(x)  # tensor lists, curvlinops operators

    def _matmat(self, M: list[Tensor]) -> list[Tensor]:
        """curvlinops' tensor-list product (``[*shape, k]`` per parameter)."""
        k = M[0].shape[-1]
        AV = self.matmat(torch.cat([m.reshape(-1, k) for m in M]))
        return [
            a.reshape(*s, k)
            for a, s in zip(AV.split(self._in_shape_flat), self._in_shape, strict=True)
        ]

    def dense(
        self,
        max_dim: int = MAX_DENSE_DIM,
        method: str = "auto",
        block_size: int = 16,
        accumulate: torch.dtype | None = None,
    ) -> Tensor:
        """The matrix ``[D, D]`` (small ``D`` only), exactly, in the operator's dtype.

        Args:
            max_dim: refuse ``D`` above this.
            method: ``"auto"`` (a closed form where one applies, else ``"products"``),
                ``"closed-form"`` (raise if none applies), ``"batched"`` (blocks of
                ``block_size`` products through the retained graph at once) or
                ``"products"`` (``D`` products with the unit vectors, counted in
                :attr:`num_products`). See :mod:`landscape.curvature.closed_form` for the
                closed forms and their conditions; :attr:`dense_method` says which path ran.
                A closed-form pass also stores the risk and the gradient, so :meth:`risk`
                and :meth:`gradient` then cost nothing.
            block_size: columns per block for ``"batched"``.
            accumulate: a wider dtype (e.g. ``torch.float64``) in which the output-layer
                closed form sums its matrix, from the features and logits that the model
                computes in its own dtype; the matrix, risk and gradient are returned in it.
                Other paths ignore it.

        Raises:
            ValueError: ``D > max_dim``, an unknown ``method``, a bad ``block_size``, or
                (:class:`NoClosedForm`) ``method="closed-form"`` where none applies.
        """
        if self.dim > max_dim:
            raise ValueError(
                f"dense() would build a {self.dim}x{self.dim} matrix (D above the limit "
                f"{max_dim}); select fewer parameters (e.g. params='classifier') or use products"
            )
        if method not in DENSE_METHODS:
            raise ValueError(
                f"unknown dense method {method!r}; use one of {', '.join(DENSE_METHODS)}"
            )
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive integer, got {block_size!r}")
        self._check_fresh()
        if method in ("auto", "closed-form"):
            try:
                self._closed = self._closed_form(accumulate)
                self.dense_method = self._closed.method
                return self._closed.matrix
            except NoClosedForm as err:
                if method == "closed-form":
                    raise NoClosedForm(
                        f"no closed form for the dense {self.curvature.value}: {err}; use "
                        "method='products' or 'batched'"
                    ) from None
        eye = torch.eye(self.dim, device=self.device, dtype=self.dtype)
        if method == "batched":
            self.dense_method = "batched"
            rows = [self._columns(eye[j : j + block_size]) for j in range(0, self.dim, block_size)]
            return torch.cat([r.T for r in rows], dim=1)
        self.dense_method = "products"
        return torch.stack([self.matvec(eye[:, j]) for j in range(self.dim)], dim=1)

    # ----------------------------------------------------------------- risk and gradient

    def risk(self) -> float:
        """The domain's risk :math:`R_e` (mean loss over all samples) at the weights."""
        self._check_fresh()
        if self._closed is not None:
            return float(self._closed.risk)
        if self._graphs is not None:
            total = sum(g["n"] * float(g["loss"]) for g in self._graphs)
        else:
            with torch.no_grad():
                total = sum(int(X.shape[0]) * float(self._loss(self._forward(X), y))
                            for X, y in self._batches())  # fmt: skip
        return total / self.num_samples

    def gradient(self) -> Tensor:
        """The full gradient :math:`\\nabla_\\theta R_e` ``[D]`` at the weights (detached)."""
        self._check_fresh()
        if self._closed is not None:
            return self._closed.gradient.clone()
        result = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        if self._graphs is not None and "grad" in self._graphs[0]:
            for g in self._graphs:
                result += (g["n"] / self.num_samples) * g["grad"]
            return result
        for X, y in self._batches():
            loss = self._loss(self._forward(X), y)
            grads = torch.autograd.grad(loss, self._leaves, materialize_grads=True)
            result += (X.shape[0] / self.num_samples) * flatten(list(grads)).detach()
        return result

    # ----------------------------------------------------------------- lifetime

    def build(self) -> list[dict]:
        """Build the retained graphs now (forward and first backward of every batch; done
        by the first product otherwise) and return them. No-op without ``retain_graph``."""
        self._check_fresh()
        if self.retain_graph and self._graphs is None:
            self._graphs = [self._graph(X, y) for X, y in self._data]
        return self._graphs or []

    def release(self) -> None:
        """Free the retained graphs (their memory); later products raise ``ValueError``."""
        self._graphs = None
        self._closed = None
        self._released = True
        self._bar.close()

    def __enter__(self) -> CurvatureOperator:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(D={self.dim}, N={self.num_samples}, "
            f"batches={self.num_batches}, retain_graph={self.retain_graph}, "
            f"dtype={self.dtype}, device={self.device})"
        )


class HessianOperator(CurvatureOperator):
    """The Hessian :math:`H = \\nabla^2_\\theta R_e`; one batch multiplies by
    :math:`\\nabla_\\theta (g_b^\\top V)` with :math:`g_b = \\nabla_\\theta L_b` kept with its
    graph (``create_graph``)."""

    curvature = Curvature.HESSIAN

    def _first_backward(self, out, y, loss):
        grads = torch.autograd.grad(loss, self._leaves, create_graph=True, materialize_grads=True)
        g = flatten(list(grads))
        return {"g": g, "grad": g.detach()}

    def _product(self, graph, Vt, keep):
        if not graph["g"].requires_grad:  # the gradient does not depend on the weights: H = 0
            return torch.zeros_like(Vt)
        return self._flat(_vjp(graph["g"], self._leaves, Vt, keep), Vt.shape[0])

    def _closed_form(self, dtype):
        return output_layer_curvature(
            self._model, self._loss, self._batches(), self._tensors, self.names, dtype
        )


class GGNOperator(CurvatureOperator):
    """The GGN :math:`G = \\frac1N \\sum_i J_i^\\top \\Lambda_i J_i`; one batch: :math:`J V` as
    the derivative in ``u`` of :math:`\\langle J^\\top u, V \\rangle`, then :math:`\\Lambda J V`
    (a vjp of the output gradient), then :math:`J^\\top (\\Lambda J V)`."""

    curvature = Curvature.GGN

    def _first_backward(self, out, y, loss):
        u = torch.zeros_like(out, requires_grad=True)
        JTu = torch.autograd.grad(
            out, self._leaves, grad_outputs=u, create_graph=True, materialize_grads=True
        )
        gout = torch.autograd.grad(loss, out, create_graph=True)[0]
        return {"out": out, "u": u, "JTu": flatten(list(JTu)), "gout": gout}

    def _product(self, graph, Vt, keep):
        (Jv,) = _vjp(graph["JTu"], graph["u"], Vt, True)
        if Jv is None or not graph["gout"].requires_grad:
            return torch.zeros_like(Vt)
        (LJv,) = _vjp(graph["gout"], graph["out"], Jv, True)
        return self._flat(_vjp(graph["out"], self._leaves, LJv, keep), Vt.shape[0])

    _closed_form = HessianOperator._closed_form  # on the output layer H = G exactly


class EFOperator(CurvatureOperator):
    """The empirical Fisher :math:`F = \\frac1N \\sum_i g_i g_i^\\top`; one batch: the
    per-sample projections :math:`s_i = g_i^\\top V` as the derivative in ``u`` of
    :math:`\\langle \\sum_i u_i g_i, V\\rangle`, then :math:`\\sum_i s_i g_i` (one vjp of the
    per-sample losses)."""

    curvature = Curvature.EF

    @cached_property
    def _sample_loss(self) -> nn.Module:
        return with_reduction(self._loss, "none")

    def _first_backward(self, out, y, loss):
        n = out.shape[0]
        per_sample = self._sample_loss(out, y).reshape(n, -1).mean(dim=1)
        u = torch.zeros_like(per_sample, requires_grad=True)
        gu = torch.autograd.grad(
            per_sample, self._leaves, grad_outputs=u, create_graph=True, materialize_grads=True
        )
        return {"ell": per_sample, "u": u, "gu": flatten(list(gu))}

    def _product(self, graph, Vt, keep):
        (s,) = _vjp(graph["gu"], graph["u"], Vt, True)
        if s is None:
            return torch.zeros_like(Vt)
        return self._flat(_vjp(graph["ell"], self._leaves, s, keep), Vt.shape[0])

    def _weight(self, n: int) -> float:
        return 1.0 / self.num_samples  # F = (1 / N) sum_i g_i g_i^T over per-sample losses

    def _closed_form(self, dtype):
        return linear_empirical_fisher(
            self._model, self._loss, self._batches(), self._tensors, self.names
        )


_OPERATORS = {
    Curvature.HESSIAN: HessianOperator,
    Curvature.GGN: GGNOperator,
    Curvature.EF: EFOperator,
}


def curvature_operator(
    model: nn.Module,
    loss_func: nn.Module,
    data: Iterable[Batch],
    params: ParamSpec = None,
    curvature: str | Curvature = "hessian",
    progress: bool = False,
    retain_graph: bool | None = None,
    check: bool = True,
) -> CurvatureOperator:
    """A matrix-free operator for a curvature matrix of one domain's risk.

    Args:
        model: the network (not changed); train mode is accepted unless a module behaves
            differently in it (:func:`~landscape.curvature.checks.check_eval_mode`).
        loss_func: ``BCEWithLogitsLoss``, ``CrossEntropyLoss`` or ``MSELoss``, mean-reduced.
        data: the domain: a list of ``(X, y)`` batches, an unshuffled DataLoader or one pair.
        params: which parameters (``None`` = all, a prefix such as ``"classifier"``, names).
        curvature: ``"hessian"``, ``"ggn"`` or ``"ef"`` (or a :class:`Curvature`).
        progress: show a progress bar counting products.
        retain_graph: keep each batch's forward / first-backward graph for all products
            (fast, memory grows with N); default: only when the domain is one batch.
        check: check train-mode modules and a deterministic forward pass first.

    Returns:
        A :class:`HessianOperator`, :class:`GGNOperator` or :class:`EFOperator`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> X = torch.randn(20, 3, dtype=torch.float64)
        >>> model = nn.Linear(3, 1, bias=False).double()
        >>> op = curvature_operator(model, nn.MSELoss(), [(X, torch.zeros(20, 1).double())])
        >>> torch.allclose(op.dense(), 2 / 20 * X.T @ X)
        True
        >>> V = torch.randn(3, 2, dtype=torch.float64)
        >>> torch.allclose(op @ V, 2 / 20 * X.T @ X @ V), op.num_products
        (True, 2)
    """
    cls = _OPERATORS[as_curvature(curvature)]
    return cls(model, loss_func, data, params, None, progress, retain_graph, check)
