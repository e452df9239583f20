"""Matrix-free curvature operators of a domain's risk: Hessian, GGN and empirical Fisher.

A :class:`CurvatureOperator` represents one symmetric ``[D, D]`` matrix of the risk
:math:`R_e(\\theta) = \\frac1N \\sum_i \\ell(f_\\theta(x_i), y_i)` of one domain, restricted to
the parameters chosen by ``params`` (see :mod:`landscape.params`), and multiplies vectors
with it without ever forming it:

* ``"hessian"``: :math:`H v = \\nabla_\\theta (\\nabla_\\theta R_e \\cdot v)` (double backward);
* ``"ggn"``: :math:`G v = \\frac1N\\sum_i J_i^\\top \\Lambda_i J_i v`, with the Jacobian-vector
  product :math:`J v` from the double-vjp trick (:math:`J v = \\partial_u \\langle J^\\top u,
  v\\rangle`), :math:`\\Lambda_i` the loss Hessian w.r.t. the outputs, then one vjp;
* ``"ef"`` (empirical Fisher): :math:`F v = \\frac1N \\sum_i g_i (g_i \\cdot v)` with the
  per-sample gradients :math:`g_i = \\nabla_\\theta\\ell_i`, obtained as two vector-Jacobian
  products of the per-sample loss vector, never materialising ``[N, D]``.

Speed. When the graph is retained (default for a domain that is one batch) the forward pass
and the first backward pass are done **once** (at the first product), and every product only
differentiates again through the stored graph (``retain_graph=True``). This is the
cheapest known Hessian-vector product (measured about 2x faster than curvlinops'
operators, which recompute the forward pass for every product: see
``benchmarks/bench_curvature.py``); that is why these operators are our own and curvlinops
is used only as a reference in the benchmark. With several batches and
``retain_graph=False`` (default then) each product loops over the batches: forward,
backward with ``create_graph`` and the second differentiation, one batch at a time, so
memory stays that of one batch (matrix-free for data that do not fit).

Memory and lifetime of the retained graph: it holds the activations of the forward pass
and of the first backward pass of every batch (a few times the memory of one training
step per batch). It is built on the first product (or by :meth:`CurvatureOperator.build`),
not at construction, so an operator used only for :meth:`CurvatureOperator.dense` by a
closed form never builds it. It lives as long as the operator; free it with :meth:`release`
or by using the operator as a context manager (``with curvature_operator(...) as op: ...``).

Dense matrices of small parameter subsets (:meth:`CurvatureOperator.dense`) are exact in
every path; by default (``method="auto"``) a closed form is used where one applies and
``D`` products with the unit vectors otherwise:

* Hessian and GGN of a selection **inside the layer that produces the model's output**
  (``params="classifier"``): the output :math:`z_i = W a_i + b` is affine in
  :math:`\\theta = (W, b)` because the layer's input :math:`a_i` does not depend on it, so
  :math:`\\nabla^2_\\theta z_i = 0` and the Hessian **equals** the GGN (docs/method.md section 3):

  .. math::

      H = G = \\frac1N \\sum_i J_i^\\top \\Lambda_i J_i
        = \\frac1N \\sum_i \\Lambda_i \\otimes \\tilde a_i \\tilde a_i^\\top,
      \\qquad J_i = I_C \\otimes \\tilde a_i^\\top, \\quad \\tilde a_i = [a_i, 1],

  with :math:`\\Lambda_i = \\nabla^2_z \\ell_i` ``[C, C]`` (``torch.func`` on the loss alone).
  Block :math:`(c, c')` is one weighted product :math:`\\tilde A^\\top
  \\operatorname{diag}(\\Lambda_{:, c, c'}) \\tilde A` of the features ``[N, F + 1]``,
  computed once without a graph through the featurizer; for ``C = 1`` (BCE:
  :math:`\\Lambda_i = \\sigma(z_i)(1 - \\sigma(z_i))`) the whole matrix is one such product.
  Structural conditions, all checked at run time (otherwise the products are used): every
  selected parameter belongs to one plain ``nn.Linear`` (``forward`` not overridden, no
  forward hooks), which runs once, on an ``[N, F]`` input that does not require grad when
  only the selected parameters do (so nothing upstream uses them, tied weights included),
  and whose output tensor **is** the model's output (unchanged in place).
* Empirical Fisher of a selection of ``nn.Linear`` layers (any position): the per-sample
  gradients factorise, :math:`g_i(W) = \\delta_i a_i^\\top`, :math:`g_i(b) = \\delta_i`
  (:mod:`landscape.persample`), so :math:`F = \\frac1N G^\\top G` from ``[N, D]`` per-sample
  gradients built in row chunks after one forward and one backward to the layers' outputs.
  Checked: each layer runs once on ``[N, in]`` inputs, and the summed per-sample gradients
  equal autograd's gradient of the risk (so no selected parameter is used elsewhere).
* ``method="batched"``: blocks of products at once through the retained graph
  (``torch.autograd.grad(..., is_grads_batched=True)``), for any selection. Measured on the
  Colored MNIST MLP (float64, one thread, blocks of 16, a loaded machine): for a hidden
  layer's bias (``D = 390``) 2-5x faster than the loop at ``N = 500``, but 2x slower at
  ``N = 5,000`` and 3x slower at ``N = 25,000`` (the vectorised backward through the hidden
  layers allocates ``[k, N, width]`` temporaries and is memory bound); no gain for the
  head's shallow graph at ``N = 5,000``. So ``"auto"`` keeps the loop; ask for it on small
  domains.

The user's model is never changed: the operator differentiates through
:func:`torch.func.functional_call` with detached copies of the parameters (sharing storage),
so parameters, ``requires_grad`` flags and train/eval mode stay as they are. A model
extended by BackPACK is analysed through a plain copy. If the model's parameters are changed
in place after construction, the next product raises a ``ValueError`` (the operator would no
longer describe the current weights).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from enum import Enum

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from landscape.domains import Batch, as_batches
from landscape.losses import loss_name, with_reduction
from landscape.params import ParamSpec, flatten, select_params

__all__ = [
    "DENSE_METHODS",
    "Curvature",
    "CurvatureOperator",
    "curvature_operator",
    "check_loss",
    "check_eval_mode",
    "check_deterministic",
    "is_backpack_extended",
    "plain_copy",
    "MAX_DENSE_DIM",
]

MAX_DENSE_DIM = 8192
"""Largest ``D`` for which :meth:`CurvatureOperator.dense` builds the ``[D, D]`` matrix."""

DENSE_METHODS = ("auto", "closed-form", "batched", "products")
"""Ways :meth:`CurvatureOperator.dense` builds a matrix (see the module docstring)."""

# Elements of the [rows, D] per-sample gradient blocks of the empirical Fisher closed form,
# and of the [rows, C, C] loss Hessians of the output-layer closed form.
_EF_BLOCK_ELEMENTS = 2**22
_LAMBDA_ELEMENTS = 2**22


class _NoClosedForm(ValueError):
    """The selection / model does not meet a closed form's conditions (message says why)."""


class Curvature(str, Enum):
    """Which curvature matrix of the risk an operator represents."""

    HESSIAN = "hessian"
    """The Hessian :math:`\\nabla^2_\\theta R_e` (indefinite away from a minimum)."""
    GGN = "ggn"
    """The generalised Gauss-Newton :math:`\\frac1N\\sum_i J_i^\\top\\Lambda_i J_i` (PSD for
    convex losses); for CE / BCE it equals the true Fisher of the model's predictive
    distribution."""
    EF = "ef"
    """The empirical Fisher :math:`\\frac1N\\sum_i g_i g_i^\\top` (uncentered gradient
    covariance; PSD)."""


def as_curvature(curvature: str | Curvature) -> Curvature:
    """Parse a curvature name (``"hessian"``, ``"ggn"``, ``"ef"``) or enum member."""
    try:
        return Curvature(getattr(curvature, "value", curvature))
    except ValueError:
        raise ValueError(
            f"unknown curvature {curvature!r}; use one of {', '.join(c.value for c in Curvature)}"
        ) from None


# --------------------------------------------------------------------------- guard rails


def check_loss(loss_func: nn.Module) -> str:
    """Check that ``loss_func`` is a supported, mean-reduced loss; return its name.

    Raises:
        TypeError: not a loss module.
        ValueError: unsupported loss type, class weights, or a reduction other than mean.
    """
    if not isinstance(loss_func, nn.Module):
        raise TypeError(
            f"loss_func must be a loss module such as nn.BCEWithLogitsLoss(), "
            f"got {type(loss_func).__name__}"
        )
    name = loss_name(loss_func)
    if getattr(loss_func, "reduction", "mean") != "mean":
        raise ValueError(
            f"loss_func has reduction={loss_func.reduction!r}; curvature is of the mean loss "
            "R_e, pass a loss with reduction='mean'"
        )
    for attr in ("weight", "pos_weight"):
        if getattr(loss_func, attr, None) is not None:
            raise ValueError(f"loss_func has {attr} set; weighted losses are not supported")
    if float(getattr(loss_func, "label_smoothing", 0.0)) != 0.0:
        raise ValueError("loss_func uses label_smoothing; it is not supported, set it to 0")
    return name


_STOCHASTIC = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def check_eval_mode(model: nn.Module) -> None:
    """Raise a ``ValueError`` if any module of ``model`` is in train mode.

    Curvature of R_e needs a deterministic function of the weights: dropout in train mode
    is random and batch norm in train mode normalises with batch statistics. The model is
    never switched to eval mode silently.
    """
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if not training:
        return
    culprits = [
        f"{type(m).__name__} ({name})"
        for name, m in model.named_modules()
        if m.training and isinstance(m, _STOCHASTIC)
    ]
    what = f" with {', '.join(culprits[:3])}" if culprits else ""
    raise ValueError(
        f"model is in train mode{what}; call model.eval() before curvature work "
        "(the risk must be a deterministic function of the weights)"
    )


DETERMINISM_ROWS = 256
"""Samples of the first batch that :func:`check_deterministic` runs twice."""


def check_deterministic(model: nn.Module, batch: Batch, rows: int = DETERMINISM_ROWS) -> None:
    """Raise a ``ValueError`` if two forward passes on ``batch`` give different outputs.

    Only the first ``rows`` samples are used: random layers show on any sample, and two full
    forwards of a 25,000-sample domain in float64 cost more than the dense head Hessian.
    """
    param = next(model.parameters())
    X = _to(batch[0][:rows], param)
    with torch.no_grad():
        first, second = model(X), model(X)
    scale = float(first.abs().max()) if first.numel() else 0.0
    if not torch.allclose(first, second, rtol=1e-5, atol=1e-6 * (1.0 + scale)):
        raise ValueError(
            "two forward passes on the same batch gave different outputs; the data pass is "
            "not deterministic (random layers or augmentation?) - fix it before curvature work"
        )


def is_backpack_extended(model: nn.Module) -> bool:
    """Whether ``backpack.extend`` has installed its hooks on any module of ``model``."""
    return any(getattr(m, "_backpack_extend", False) for m in model.modules())


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every BackPACK hook and stored tensor removed.

    BackPACK's ``extend`` mutates modules (hooks, stored ``input0`` / ``output``), and such
    modules cannot go through :mod:`torch.func`; the copy can. The original is untouched.
    """
    clone = copy.deepcopy(model)
    try:
        from backpack import hook_run_extensions, hook_store_io
    except ImportError:  # pragma: no cover - backpack is a dependency
        return clone
    backpack_hooks = (hook_store_io, hook_run_extensions)
    for module in clone.modules():
        for hooks in (module._forward_hooks, module._backward_hooks):
            for key in [k for k, h in hooks.items() if h in backpack_hooks]:
                del hooks[key]
        if not module._backward_hooks:
            module._is_full_backward_hook = None
        if hasattr(module, "_backpack_extend"):
            delattr(module, "_backpack_extend")
        for attr in [a for a in vars(module) if a == "output" or a.startswith("input")]:
            if attr == "output" or attr[5:].isdigit():
                delattr(module, attr)
    return clone


def _to(t: Tensor, like: Tensor) -> Tensor:
    """Move ``t`` to ``like``'s device, and to its dtype if ``t`` is floating point."""
    if t.is_floating_point():
        return t.to(device=like.device, dtype=like.dtype)
    return t.to(device=like.device)


# --------------------------------------------------------------------------- operator


class CurvatureOperator:
    """A symmetric ``[D, D]`` curvature matrix of one domain's risk, matrix-free.

    Build it with :func:`curvature_operator`. Products: ``op @ v``, ``op.matvec(v)`` for
    ``v [D]`` and ``op.matmat(V)`` for ``V [D, k]`` (torch tensors, on any device and dtype;
    results in the operator's ``dtype`` and ``device``), and ``op.to_scipy()`` for SciPy.
    ``op.num_products`` counts matrix-vector products (a ``matmat`` with ``k`` columns
    counts ``k``).

    Attributes:
        curvature: which matrix (:class:`Curvature`).
        names: the selected parameter names, in the layout of vectors.
        dim: ``D``; ``shape`` is ``(D, D)``.
        num_samples: ``N``, the domain's number of samples.
        retain_graph: whether the forward / first backward graphs are kept between products.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_func: nn.Module,
        data: Iterable[Batch],
        params: ParamSpec = None,
        curvature: str | Curvature = "hessian",
        progress: bool = False,
        retain_graph: bool | None = None,
        check: bool = True,
    ):
        self.curvature = as_curvature(curvature)
        check_loss(loss_func)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        select_params(model, params)  # validate names against the user's model
        if is_backpack_extended(model):
            model = plain_copy(model)
        if check:
            check_eval_mode(model)
        self._model = model
        self._loss = loss_func
        self._sample_loss = with_reduction(loss_func, "none")
        self._data = as_batches(data)
        selected = select_params(model, params)
        self.names = list(selected)
        self._selected = selected
        first = next(iter(selected.values()))
        self.dtype = first.dtype
        self.device = first.device
        self.dim = sum(p.numel() for p in selected.values())
        self.shape = (self.dim, self.dim)
        self._versions = {n: p._version for n, p in model.named_parameters()}
        self._leaves = {n: p.detach().requires_grad_(True) for n, p in selected.items()}
        self._fixed = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
        self._fixed.update(dict(model.named_buffers()))
        sizes = [int(X.shape[0]) for X, _ in self._data]
        self.num_samples = sum(sizes)
        self.num_batches = len(sizes)
        if check:
            check_deterministic(model, next(iter(self._data)))
        if retain_graph is None:
            retain_graph = self.num_batches == 1
        self.retain_graph = bool(retain_graph)
        self.num_products = 0
        self._bar = tqdm(
            desc=f"{self.curvature.value}-vector products",
            unit="product",
            disable=not progress,
            leave=False,
        )
        self._graphs: list[dict] | None = None  # built on the first product (build())
        self._released = False
        self._cache: dict[str, object] = {}  # risk / gradient from a closed-form dense pass
        self.dense_method: str | None = None
        """How the last :meth:`dense` call built its matrix (``"closed-form (...)"``,
        ``"batched"`` or ``"products"``)."""

    # ----------------------------------------------------------------- per-batch graphs

    def _build(self, X: Tensor, y: Tensor) -> dict:
        """Forward and first backward pass of one batch, keeping the graph for products."""
        X, y = _to(X, self._first()), _to(y, self._first())
        leaves = list(self._leaves.values())
        out = functional_call(self._model, {**self._fixed, **self._leaves}, (X,))
        loss = self._loss(out, y)
        n = int(X.shape[0])
        graph: dict = {"n": n, "loss": loss.detach()}
        if self.curvature is Curvature.HESSIAN:
            grads = torch.autograd.grad(loss, leaves, create_graph=True, materialize_grads=True)
            graph["g"] = flatten(list(grads))
            graph["grad"] = graph["g"].detach()
        elif self.curvature is Curvature.GGN:
            u = torch.zeros_like(out, requires_grad=True)
            JTu = torch.autograd.grad(
                out, leaves, grad_outputs=u, create_graph=True, materialize_grads=True
            )
            gout = torch.autograd.grad(loss, out, create_graph=True)[0]
            graph.update(out=out, u=u, JTu=flatten(list(JTu)), gout=gout)
        else:
            per_sample = self._sample_loss(out, y).reshape(n, -1).mean(dim=1)
            u = torch.zeros_like(per_sample, requires_grad=True)
            gu = torch.autograd.grad(
                per_sample, leaves, grad_outputs=u, create_graph=True, materialize_grads=True
            )
            graph.update(ell=per_sample, u=u, gu=flatten(list(gu)))
        return graph

    def _first(self) -> Tensor:
        return next(iter(self._leaves.values()))

    def _product(self, graph: dict, v: Tensor, keep: bool) -> Tensor:
        """The unnormalised product of one batch (see :meth:`matvec` for the weights)."""
        leaves = list(self._leaves.values())
        c = self.curvature
        if c is Curvature.HESSIAN:
            g = graph["g"]
            if not g.requires_grad:  # the gradient does not depend on the weights: H = 0
                return torch.zeros_like(v)
            Hv = torch.autograd.grad(
                g, leaves, grad_outputs=v, retain_graph=keep, materialize_grads=True
            )
            return flatten(list(Hv))
        if c is Curvature.GGN:
            Jv = torch.autograd.grad(
                graph["JTu"], graph["u"], grad_outputs=v, retain_graph=True, allow_unused=True
            )[0]
            if Jv is None or not graph["gout"].requires_grad:
                return torch.zeros_like(v)
            LJv = torch.autograd.grad(
                graph["gout"], graph["out"], grad_outputs=Jv, retain_graph=True
            )[0]
            Gv = torch.autograd.grad(
                graph["out"], leaves, grad_outputs=LJv, retain_graph=keep, materialize_grads=True
            )
            return flatten(list(Gv))
        s = torch.autograd.grad(
            graph["gu"], graph["u"], grad_outputs=v, retain_graph=True, allow_unused=True
        )[0]
        if s is None:
            return torch.zeros_like(v)
        Fv = torch.autograd.grad(
            graph["ell"], leaves, grad_outputs=s, retain_graph=keep, materialize_grads=True
        )
        return flatten(list(Fv))

    def _weight(self, n: int) -> float:
        # R_e = sum_b (n_b / N) L_b for H and G; F = (1 / N) sum_i g_i g_i^T.
        if self.curvature is Curvature.EF:
            return 1.0 / self.num_samples
        return n / self.num_samples

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

    def matvec(self, v: Tensor) -> Tensor:
        """The product ``A v`` for ``v [D]``; returns ``[D]``."""
        if not isinstance(v, Tensor):
            raise TypeError(f"v must be a torch.Tensor of shape [{self.dim}], got {type(v)}")
        if v.shape != (self.dim,):
            raise ValueError(f"v has shape {tuple(v.shape)}; expected [{self.dim}]")
        self._check_fresh()
        v = v.to(device=self.device, dtype=self.dtype)
        result = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        if self.retain_graph:
            for graph in self.build():
                result += self._weight(graph["n"]) * self._product(graph, v, keep=True)
        else:
            for X, y in self._data:
                graph = self._build(X, y)
                result += self._weight(graph["n"]) * self._product(graph, v, keep=False)
        self.num_products += 1
        self._bar.update(1)
        return result

    def matmat(self, V: Tensor) -> Tensor:
        """The product ``A V`` for ``V [D, k]``; returns ``[D, k]`` (``k`` products)."""
        if not isinstance(V, Tensor) or V.dim() != 2 or V.shape[0] != self.dim:
            shape = tuple(V.shape) if isinstance(V, Tensor) else type(V).__name__
            raise ValueError(f"V has shape {shape}; expected [{self.dim}, k]")
        if V.shape[1] == 0:
            return torch.zeros(self.dim, 0, device=self.device, dtype=self.dtype)
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def __matmul__(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 2:
            return self.matmat(x)
        return self.matvec(x)

    def to_scipy(self):
        """A :class:`scipy.sparse.linalg.LinearOperator` (float64 NumPy in and out).

        Products go through :meth:`matvec` (in the operator's dtype) and are counted.
        """
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            x = np.asarray(x, dtype=np.float64).reshape(-1)
            out = self.matvec(torch.from_numpy(x))
            return out.detach().to("cpu", torch.float64).numpy()

        def mm(X: np.ndarray) -> np.ndarray:
            return np.stack([mv(X[:, j]) for j in range(X.shape[1])], axis=1)

        return LinearOperator(self.shape, matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64)

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
                :attr:`num_products`). See the module docstring for the closed forms, their
                conditions and the measured speed of each path; :attr:`dense_method` says
                which path ran. A closed-form pass also stores the risk and the gradient, so
                :meth:`risk` and :meth:`gradient` then cost nothing.
            block_size: columns per block for ``"batched"``.
            accumulate: a wider dtype (e.g. ``torch.float64``) in which the output-layer
                closed form sums its matrix, from the features and logits that the model
                computes in its own dtype; the matrix, risk and gradient are returned in it.
                Other paths ignore it.

        Raises:
            ValueError: ``D > max_dim``, an unknown ``method``, a bad ``block_size``, or
                ``method="closed-form"`` when no closed form applies (the message says why).
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
                if self.curvature is Curvature.EF:
                    matrix = self._dense_linear_ef()
                    self.dense_method = "closed-form (nn.Linear per-sample gradients)"
                else:
                    matrix = self._dense_linear_output(accumulate or self.dtype)
                    self.dense_method = "closed-form (output layer: H = GGN)"
                return matrix
            except _NoClosedForm as err:
                if method == "closed-form":
                    raise ValueError(
                        f"no closed form for the dense {self.curvature.value}: {err}; use "
                        "method='products' or 'batched'"
                    ) from None
        eye = torch.eye(self.dim, device=self.device, dtype=self.dtype)
        if method == "batched":
            self.dense_method = "batched"
            cols = [
                self._matmat_batched(eye[:, j : j + block_size])
                for j in range(0, self.dim, block_size)
            ]
            return torch.cat(cols, dim=1)
        self.dense_method = "products"
        return torch.stack([self.matvec(eye[:, j]) for j in range(self.dim)], dim=1)

    # ----------------------------------------------------------------- batched products

    def _matmat_batched(self, V: Tensor) -> Tensor:
        """``A V`` for ``V [D, k]`` with one vectorised pass per batch (``k`` products)."""
        self._check_fresh()
        V = V.to(device=self.device, dtype=self.dtype)
        Vt = V.T.contiguous()  # [k, D]
        result = torch.zeros_like(Vt)
        if self.retain_graph:
            for graph in self.build():
                result += self._weight(graph["n"]) * self._product_batched(graph, Vt, keep=True)
        else:
            for X, y in self._data:
                graph = self._build(X, y)
                result += self._weight(graph["n"]) * self._product_batched(graph, Vt, keep=False)
        self.num_products += V.shape[1]
        self._bar.update(V.shape[1])
        return result.T

    def _product_batched(self, graph: dict, Vt: Tensor, keep: bool) -> Tensor:
        """:meth:`_product` for the rows of ``Vt [k, D]`` at once (``is_grads_batched``)."""
        leaves = list(self._leaves.values())
        k = Vt.shape[0]

        def grad(outputs, inputs, grad_outputs, retain):
            out = torch.autograd.grad(
                outputs,
                inputs,
                grad_outputs=grad_outputs,
                retain_graph=retain,
                allow_unused=True,
                is_grads_batched=True,
            )
            return out

        def flat(grads) -> Tensor:
            return torch.cat(
                [
                    Vt.new_zeros(k, p.numel()) if g is None else g.reshape(k, -1)
                    for g, p in zip(grads, leaves, strict=True)
                ],
                dim=1,
            )

        c = self.curvature
        if c is Curvature.HESSIAN:
            if not graph["g"].requires_grad:
                return torch.zeros_like(Vt)
            return flat(grad(graph["g"], leaves, Vt, keep))
        if c is Curvature.GGN:
            Jv = grad(graph["JTu"], graph["u"], Vt, True)[0]
            if Jv is None or not graph["gout"].requires_grad:
                return torch.zeros_like(Vt)
            LJv = grad(graph["gout"], graph["out"], Jv, True)[0]
            return flat(grad(graph["out"], leaves, LJv, keep))
        s = grad(graph["gu"], graph["u"], Vt, True)[0]
        if s is None:
            return torch.zeros_like(Vt)
        return flat(grad(graph["ell"], leaves, s, keep))

    # ----------------------------------------------------------------- closed forms

    def _batches(self):
        """The domain's batches on the operator's device and dtype (inputs detached)."""
        like = self._first()
        for X, y in self._data:
            yield _to(X, like).detach(), _to(y, like)

    def _linear_layers(self):
        from landscape.persample import select_linear_layers

        try:
            return select_linear_layers(self._model, self.names)
        except ValueError as err:
            raise _NoClosedForm(str(err)) from None

    def _dense_linear_output(self, dtype: torch.dtype) -> Tensor:
        """Hessian = GGN of a selection inside the output ``nn.Linear`` (module docstring),
        summed in ``dtype`` from the features and logits of the model's own forward pass."""
        from torch.func import hessian, vmap

        layers = self._linear_layers()
        if len(layers) != 1:
            raise _NoClosedForm(
                f"the selection spans {len(layers)} Linear layers, not the output layer alone"
            )
        layer = layers[0]
        module = layer.module
        if type(module).forward is not nn.Linear.forward:
            raise _NoClosedForm(f"{type(module).__name__} {layer.name!r} overrides forward")
        global_hooks = nn.modules.module._global_forward_hooks
        if module._forward_hooks or global_hooks:
            raise _NoClosedForm(f"Linear layer {layer.name!r} has forward hooks")
        out_f, in_f = module.weight.shape
        kinds = [name.rsplit(".", 1)[-1] for name in self.names]  # "weight" / "bias"
        width = in_f * int(layer.weight) + int(layer.bias)  # features per class: [a, 1]
        gram = torch.zeros(out_f * width, out_f * width, device=self.device, dtype=dtype)
        grad = torch.zeros(out_f, width, device=self.device, dtype=dtype)
        total = 0.0
        for X, y in self._batches():
            record: list[tuple[Tensor, Tensor, int]] = []

            def hook(mod, inputs, output, record=record):
                record.append((inputs[0], output, output._version))

            handle = module.register_forward_hook(hook)
            try:
                with torch.enable_grad():  # only the selected leaves require grad
                    out = functional_call(self._model, {**self._fixed, **self._leaves}, (X,))
            finally:
                handle.remove()
            if len(record) != 1:
                raise _NoClosedForm(f"Linear layer {layer.name!r} ran {len(record)} times")
            a, z, version = record[0]
            if out is not z or z._version != version:
                raise _NoClosedForm(
                    f"the model's output is not the output of Linear layer {layer.name!r}"
                )
            if a.dim() != 2:
                raise _NoClosedForm(f"Linear layer {layer.name!r} got a {a.dim()}-d input")
            if a.requires_grad:
                raise _NoClosedForm(
                    f"the input of Linear layer {layer.name!r} depends on the selected parameters"
                )
            n = int(X.shape[0])
            a, z = a.detach().to(dtype), z.detach().to(dtype)
            y = y.to(dtype) if y.is_floating_point() else y

            def sample_loss(zi, yi):
                return self._loss(zi.unsqueeze(0), yi.unsqueeze(0))

            rows = max(1, _LAMBDA_ELEMENTS // (out_f * out_f))  # [rows, C, C] at a time
            for start in range(0, n, rows):
                part = slice(start, min(start + rows, n))
                lam = vmap(hessian(sample_loss))(z[part], y[part])
                lam = lam.reshape(-1, out_f, out_f)  # [rows, C, C], loss Hessians in z
                self._add_blocks(gram, a[part], lam, width, layer.weight, layer.bias)
            zl = z.requires_grad_(True)
            with torch.enable_grad():
                loss = self._loss(zl, y)
                (gz,) = torch.autograd.grad(loss, zl)  # [n, C], d(batch mean loss)/dz
            if layer.weight:
                grad[:, :in_f].addmm_(gz.T, a, alpha=n)
            if layer.bias:
                grad[:, -1] += n * gz.sum(0)
            total += n * float(loss.detach())
        N = self.num_samples
        gram /= N
        # class-major [c, (a, 1)] layout -> the selection's layout (weight rows, then bias)
        perm = []
        for kind in kinds:
            if kind == "weight":
                perm += [c * width + j for c in range(out_f) for j in range(in_f)]
            else:
                perm += [c * width + width - 1 for c in range(out_f)]
        index = torch.tensor(perm, device=self.device)
        self._cache["risk"] = total / N
        self._cache["gradient"] = (grad / N).reshape(-1)[index]
        return gram[index][:, index]

    @staticmethod
    def _add_blocks(gram, a, lam, width: int, weight: bool, bias: bool) -> None:
        """``gram[c, d] += sum_i lam_i[c, d] [a_i, 1][a_i, 1]^T`` (class-major blocks of size
        ``width``; ``[a_i]`` or ``[1]`` alone when only the weight or the bias is selected),
        without a ``[n, F + 1]`` copy of the features: ``a^T (w a)``, ``sum_i w_i a_i``,
        ``sum_i w_i``; block ``(d, c)`` is the transpose of block ``(c, d)``."""
        in_f = a.shape[1]
        for c in range(lam.shape[1]):
            for d in range(c, lam.shape[1]):
                w = lam[:, c, d]
                block = gram[c * width : (c + 1) * width, d * width : (d + 1) * width]
                if weight:
                    wa = a * w[:, None]
                    block[:in_f, :in_f].addmm_(a.T, wa)
                    if bias:
                        col = wa.sum(0)
                        block[:in_f, in_f] += col
                        block[in_f, :in_f] += col
                if bias:
                    block[-1, -1] += w.sum()
                if d != c:
                    gram[d * width : (d + 1) * width, c * width : (c + 1) * width] = block.T

    def _dense_linear_ef(self) -> Tensor:
        """Empirical Fisher of ``nn.Linear`` layers from per-sample gradients (docstring)."""
        from landscape.persample import linear_pass, per_sample_gradients, sums_match_gradient

        layers = self._linear_layers()
        fisher = torch.zeros(self.dim, self.dim, device=self.device, dtype=self.dtype)
        grad_sum = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        autograd_sum = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        params = {**self._fixed, **self._leaves}  # selected leaves require grad: for the check
        total = 0.0
        rows = max(1, _EF_BLOCK_ELEMENTS // self.dim)
        for X, y in self._batches():
            n = int(X.shape[0])
            try:
                acts, deltas, losses, grads = linear_pass(
                    self._model, layers, X, y, self._loss, params, self.names
                )
            except ValueError as err:
                raise _NoClosedForm(str(err)) from None
            autograd_sum += flatten(grads)
            total += float(losses.sum())
            with torch.no_grad():
                for start in range(0, n, rows):
                    part = slice(start, min(start + rows, n))
                    sub = {k: (a[part], p[part]) for k, (a, p) in acts.items()}
                    G = per_sample_gradients(layers, sub, {k: d[part] for k, d in deltas.items()})
                    fisher.addmm_(G.T, G)
                    grad_sum += G.sum(0)
        if not sums_match_gradient(
            grad_sum, torch.diagonal(fisher), autograd_sum, self.num_samples
        ):
            raise _NoClosedForm(
                "the per-sample gradients of the Linear layers do not add up to the gradient "
                "(a selected parameter is also used outside its layer)"
            )
        N = self.num_samples
        self._cache["risk"] = total / N
        self._cache["gradient"] = grad_sum / N
        return fisher / N

    # ----------------------------------------------------------------- risk and gradient

    def risk(self) -> float:
        """The domain's risk :math:`R_e` (mean loss over all samples) at the weights."""
        self._check_fresh()
        if "risk" in self._cache:
            return float(self._cache["risk"])
        if self._graphs is not None:
            total = sum(g["n"] * float(g["loss"]) for g in self._graphs)
        else:
            total = 0.0
            with torch.no_grad():
                for X, y in self._data:
                    X, y = _to(X, self._first()), _to(y, self._first())
                    out = functional_call(self._model, {**self._fixed, **self._leaves}, (X,))
                    total += int(X.shape[0]) * float(self._loss(out, y))
        return total / self.num_samples

    def gradient(self) -> Tensor:
        """The full gradient :math:`\\nabla_\\theta R_e` ``[D]`` at the weights (detached)."""
        self._check_fresh()
        if "gradient" in self._cache:
            return self._cache["gradient"].clone()
        result = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        leaves = list(self._leaves.values())
        if self._graphs is not None and self.curvature is Curvature.HESSIAN:
            for g in self._graphs:
                result += (g["n"] / self.num_samples) * g["grad"]
            return result
        for X, y in self._data:
            X, y = _to(X, self._first()), _to(y, self._first())
            out = functional_call(self._model, {**self._fixed, **self._leaves}, (X,))
            grads = torch.autograd.grad(self._loss(out, y), leaves, materialize_grads=True)
            result += (X.shape[0] / self.num_samples) * flatten(list(grads)).detach()
        return result

    # ----------------------------------------------------------------- lifetime

    def build(self) -> list[dict]:
        """Build the retained graphs now (forward and first backward of every batch; done
        by the first product otherwise) and return them. No-op without ``retain_graph``."""
        self._check_fresh()
        if self.retain_graph and self._graphs is None:
            self._graphs = [self._build(X, y) for X, y in self._data]
        return self._graphs or []

    def release(self) -> None:
        """Free the retained graphs (their memory); later products raise ``ValueError``."""
        self._graphs = None
        self._cache.clear()
        self._released = True
        self._bar.close()

    def __enter__(self) -> CurvatureOperator:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return (
            f"CurvatureOperator({self.curvature.value}, D={self.dim}, N={self.num_samples}, "
            f"batches={self.num_batches}, retain_graph={self.retain_graph}, "
            f"dtype={self.dtype}, device={self.device})"
        )


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
        model: the network, in eval mode (not changed).
        loss_func: ``BCEWithLogitsLoss``, ``CrossEntropyLoss`` or ``MSELoss``, mean-reduced.
        data: the domain: a list of ``(X, y)`` batches, an unshuffled DataLoader or one pair.
        params: which parameters (``None`` = all, a prefix such as ``"classifier"``, names).
        curvature: ``"hessian"``, ``"ggn"`` or ``"ef"`` (or a :class:`Curvature`).
        progress: show a progress bar counting products.
        retain_graph: keep each batch's forward / first-backward graph for all products
            (fast, memory grows with N); default: only when the domain is one batch.
        check: check eval mode and a deterministic forward pass first.

    Returns:
        A :class:`CurvatureOperator`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> X = torch.randn(20, 3, dtype=torch.float64)
        >>> model = nn.Linear(3, 1, bias=False).double().eval()
        >>> op = curvature_operator(model, nn.MSELoss(), [(X, torch.zeros(20, 1).double())])
        >>> torch.allclose(op.dense(), 2 / 20 * X.T @ X)
        True
    """
    return CurvatureOperator(
        model, loss_func, data, params, curvature, progress, retain_graph, check
    )
