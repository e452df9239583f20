"""Exact dense curvature matrices in closed form, for the selections where one applies.

Each function returns a :class:`ClosedForm` (matrix, risk and gradient of the same pass) or
raises :class:`NoClosedForm` (a ``ValueError``) saying which condition failed; callers fall
back to products (:meth:`landscape.curvature.operators.CurvatureOperator.dense` does).
Every condition is checked at run time on the model's own forward pass.

* :func:`output_layer_curvature`: Hessian **and** GGN of a selection inside the layer that
  produces the model's output (``params="classifier"``). The output :math:`z_i = W a_i + b`
  is affine in :math:`\\theta = (W, b)` because the layer's input :math:`a_i` does not depend
  on it, so :math:`\\nabla^2_\\theta z_i = 0` and the Hessian equals the GGN
  (docs/method.md section 3):

  .. math::

      H = G = \\frac1N \\sum_i J_i^\\top \\Lambda_i J_i
        = \\frac1N \\sum_i \\Lambda_i \\otimes \\tilde a_i \\tilde a_i^\\top,
      \\qquad J_i = I_C \\otimes \\tilde a_i^\\top, \\quad \\tilde a_i = [a_i, 1],

  with :math:`\\Lambda_i = \\nabla^2_z \\ell_i` ``[C, C]`` (``torch.func`` on the loss alone).
  Block :math:`(c, c')` is one weighted product :math:`\\tilde A^\\top
  \\operatorname{diag}(\\Lambda_{:, c, c'}) \\tilde A` of the features ``[N, F + 1]``; for
  ``C = 1`` (BCE: :math:`\\Lambda_i = \\sigma(z_i)(1 - \\sigma(z_i))`) the whole matrix is one
  such product. Conditions: every selected parameter belongs to one plain ``nn.Linear``
  (``forward`` not overridden, no forward hooks), which runs once, on an ``[N, F]`` input
  that does not require grad when only the selected parameters do (so nothing upstream uses
  them, tied weights included), and whose output tensor **is** the model's output
  (unchanged in place).
* :func:`linear_empirical_fisher`: empirical Fisher of a selection of ``nn.Linear`` layers
  (any position). The per-sample gradients factorise, :math:`g_i(W) = \\delta_i a_i^\\top`,
  :math:`g_i(b) = \\delta_i` (:mod:`landscape.persample`), so
  :math:`F = \\frac1N \\mathcal G^\\top \\mathcal G` from the ``[N, D]`` per-sample gradients
  :math:`\\mathcal G`, built in row chunks after one forward and one backward to the layers'
  outputs. Checked: each layer runs once on ``[N, in]`` inputs, and the summed per-sample
  gradients equal autograd's gradient of the risk (so no selected parameter is used
  elsewhere).

Both take the model, the loss, the domain's batches (already on the parameters' device and
dtype), the full ``{name: tensor}`` mapping that :func:`torch.func.functional_call` runs the
model with (the selected tensors require grad, nothing else does: :func:`functional_tensors`)
and the selected names in the layout of vectors. :func:`closed_form` does that set-up from a
model and a ``params`` selection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, hessian, vmap

from landscape.curvature.checks import Curvature, as_curvature, check_loss, to_like
from landscape.domains import Batch, as_batches
from landscape.params import ParamSpec, flatten, select_params
from landscape.persample import (
    LinearSelection,
    linear_pass,
    per_sample_gradients,
    select_linear_layers,
    sums_match_gradient,
)

__all__ = [
    "OUTPUT_LAYER",
    "LINEAR_EF",
    "ClosedForm",
    "NoClosedForm",
    "functional_tensors",
    "output_layer_curvature",
    "linear_empirical_fisher",
    "closed_form",
    "has_closed_form",
]

OUTPUT_LAYER = "closed-form (output layer: H = GGN)"
""":attr:`ClosedForm.method` of :func:`output_layer_curvature`."""
LINEAR_EF = "closed-form (nn.Linear per-sample gradients)"
""":attr:`ClosedForm.method` of :func:`linear_empirical_fisher`."""

# Elements of the [rows, D] per-sample gradient blocks of the empirical Fisher, and of the
# [rows, C, C] loss Hessians of the output-layer closed form, taken at a time.
_EF_BLOCK_ELEMENTS = 2**22
_LAMBDA_ELEMENTS = 2**22


class NoClosedForm(ValueError):
    """The selection / model does not meet a closed form's conditions (the message says why)."""


@dataclass(frozen=True)
class ClosedForm:
    """An exact dense curvature matrix and the risk and gradient of the same pass.

    Attributes:
        matrix: ``[D, D]`` in the selection's layout.
        risk: :math:`R_e`, the mean loss over the domain.
        gradient: :math:`\\nabla_\\theta R_e` ``[D]``, in ``matrix``'s dtype.
        method: which closed form (:data:`OUTPUT_LAYER` or :data:`LINEAR_EF`).
    """

    matrix: Tensor
    risk: float
    gradient: Tensor
    method: str


def functional_tensors(model: nn.Module, selected: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: tensor}`` of every parameter and buffer of ``model`` for ``functional_call``:
    detached tensors sharing storage, the ``selected`` ones as fresh leaves that require grad
    (so the model's own parameters, flags and gradients are never touched)."""
    tensors = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
    tensors.update(dict(model.named_buffers()))
    tensors.update({n: p.detach().requires_grad_(True) for n, p in selected.items()})
    return tensors


def _linear_layers(model: nn.Module, names: Sequence[str]) -> list[LinearSelection]:
    try:
        return select_linear_layers(model, list(names))
    except ValueError as err:
        raise NoClosedForm(str(err)) from None


def _output_layer(model: nn.Module, names: Sequence[str]) -> LinearSelection:
    """The one plain, hook-free ``nn.Linear`` that owns every selected parameter."""
    layers = _linear_layers(model, names)
    if len(layers) != 1:
        raise NoClosedForm(
            f"the selection spans {len(layers)} Linear layers, not the output layer alone"
        )
    layer = layers[0]
    if type(layer.module).forward is not nn.Linear.forward:
        raise NoClosedForm(f"{type(layer.module).__name__} {layer.name!r} overrides forward")
    if layer.module._forward_hooks or nn.modules.module._global_forward_hooks:
        raise NoClosedForm(f"Linear layer {layer.name!r} has forward hooks")
    return layer


def _features_and_logits(
    model: nn.Module, tensors: dict[str, Tensor], X: Tensor, layer: LinearSelection
) -> tuple[Tensor, Tensor]:
    """The output layer's input ``a [n, F]`` and output ``z [n, C]`` (detached) from one
    forward of the model, after checking that ``z`` is the model's output and that ``a``
    does not depend on the selected parameters."""
    record: list[tuple[Tensor, Tensor, int]] = []

    def hook(mod, inputs, output):
        record.append((inputs[0], output, output._version))

    handle = layer.module.register_forward_hook(hook)
    try:
        with torch.enable_grad():  # only the selected leaves require grad
            out = functional_call(model, tensors, (X,))
    finally:
        handle.remove()
    if len(record) != 1:
        raise NoClosedForm(f"Linear layer {layer.name!r} ran {len(record)} times")
    a, z, version = record[0]
    if out is not z or z._version != version:
        raise NoClosedForm(f"the model's output is not the output of Linear layer {layer.name!r}")
    if a.dim() != 2:
        raise NoClosedForm(f"Linear layer {layer.name!r} got a {a.dim()}-d input")
    if a.requires_grad:
        raise NoClosedForm(
            f"the input of Linear layer {layer.name!r} depends on the selected parameters"
        )
    return a.detach(), z.detach()


def _add_blocks(gram: Tensor, a: Tensor, lam: Tensor, width: int, weight: bool, bias: bool):
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


def _loss_hessians(loss_func: nn.Module, z: Tensor, y: Tensor):
    """Yield ``(rows, Lambda [rows, C, C])``: the per-sample loss Hessians in the logits, a
    bounded number of elements at a time."""

    def sample_loss(zi, yi):
        return loss_func(zi.unsqueeze(0), yi.unsqueeze(0))

    n, out_f = z.shape
    rows = max(1, _LAMBDA_ELEMENTS // (out_f * out_f))
    for start in range(0, n, rows):
        part = slice(start, min(start + rows, n))
        yield part, vmap(hessian(sample_loss))(z[part], y[part]).reshape(-1, out_f, out_f)


def _layout(names: Sequence[str], out_f: int, in_f: int, width: int) -> list[int]:
    """Indices from the class-major ``[c, (a, 1)]`` layout to the selection's layout
    (weight rows, then bias, in the order of ``names``)."""
    perm: list[int] = []
    for name in names:
        if name.rsplit(".", 1)[-1] == "weight":
            perm += [c * width + j for c in range(out_f) for j in range(in_f)]
        else:
            perm += [c * width + width - 1 for c in range(out_f)]
    return perm


def output_layer_curvature(
    model: nn.Module,
    loss_func: nn.Module,
    batches: Iterable[Batch],
    tensors: dict[str, Tensor],
    names: Sequence[str],
    dtype: torch.dtype | None = None,
) -> ClosedForm:
    """Hessian = GGN of a selection inside the output ``nn.Linear`` (module docstring).

    Args:
        model, loss_func: the network and its mean-reduced loss.
        batches: the domain's ``(X, y)`` on the parameters' device and dtype.
        tensors: the ``functional_call`` mapping (:func:`functional_tensors`).
        names: the selected parameter names (all in one ``nn.Linear``), in layout order.
        dtype: the dtype in which the matrix, risk and gradient are summed from the features
            and logits the model computes in its own dtype (default: the parameters').

    Raises:
        NoClosedForm: a condition of the module docstring fails (the message says which).
    """
    layer = _output_layer(model, names)
    out_f, in_f = layer.module.weight.shape
    width = in_f * int(layer.weight) + int(layer.bias)  # features per class: [a, 1]
    like = tensors[names[0]]
    dtype = dtype or like.dtype
    gram = torch.zeros(out_f * width, out_f * width, device=like.device, dtype=dtype)
    grad = torch.zeros(out_f, width, device=like.device, dtype=dtype)
    total, count = 0.0, 0
    for X, y in batches:
        a, z = _features_and_logits(model, tensors, X, layer)
        a, z = a.to(dtype), z.to(dtype)
        y = y.to(dtype) if y.is_floating_point() else y
        for part, lam in _loss_hessians(loss_func, z, y):
            _add_blocks(gram, a[part], lam, width, layer.weight, layer.bias)
        n = int(X.shape[0])
        zl = z.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_func(zl, y)
            (gz,) = torch.autograd.grad(loss, zl)  # [n, C], d(batch mean loss)/dz
        if layer.weight:
            grad[:, :in_f].addmm_(gz.T, a, alpha=n)
        if layer.bias:
            grad[:, -1] += n * gz.sum(0)
        total += n * float(loss.detach())
        count += n
    index = torch.tensor(_layout(names, out_f, in_f, width), device=like.device)
    return ClosedForm(
        matrix=(gram / count)[index][:, index],
        risk=total / count,
        gradient=(grad / count).reshape(-1)[index],
        method=OUTPUT_LAYER,
    )


def linear_empirical_fisher(
    model: nn.Module,
    loss_func: nn.Module,
    batches: Iterable[Batch],
    tensors: dict[str, Tensor],
    names: Sequence[str],
) -> ClosedForm:
    """Empirical Fisher of ``nn.Linear`` layers from per-sample gradients (module docstring),
    in the parameters' dtype.

    Args:
        model, loss_func, batches, tensors, names: as for :func:`output_layer_curvature`
            (the selection may span several ``nn.Linear`` layers).

    Raises:
        NoClosedForm: a selected parameter is not in an ``nn.Linear``, a layer does not run
            exactly once on ``[n, in]`` inputs, or a selected parameter is also used outside
            its layer (the per-sample gradients do not add up to the gradient).
    """
    layers = _linear_layers(model, names)
    like = tensors[names[0]]
    dim = sum(layer.numel for layer in layers)
    fisher = like.new_zeros(dim, dim)
    grad_sum, autograd_sum = like.new_zeros(dim), like.new_zeros(dim)
    total, count = 0.0, 0
    rows = max(1, _EF_BLOCK_ELEMENTS // dim)
    for X, y in batches:
        n = int(X.shape[0])
        try:
            acts, deltas, losses, grads = linear_pass(
                model, layers, X, y, loss_func, tensors, list(names)
            )
        except ValueError as err:
            raise NoClosedForm(str(err)) from None
        autograd_sum += flatten(grads)
        total += float(losses.sum())
        count += n
        with torch.no_grad():
            for start in range(0, n, rows):
                part = slice(start, min(start + rows, n))
                sub = {k: (a[part], p[part]) for k, (a, p) in acts.items()}
                G = per_sample_gradients(layers, sub, {k: d[part] for k, d in deltas.items()})
                fisher.addmm_(G.T, G)
                grad_sum += G.sum(0)
    if not sums_match_gradient(grad_sum, torch.diagonal(fisher), autograd_sum, count):
        raise NoClosedForm(
            "the per-sample gradients of the Linear layers do not add up to the gradient "
            "(a selected parameter is also used outside its layer)"
        )
    return ClosedForm(
        matrix=fisher / count, risk=total / count, gradient=grad_sum / count, method=LINEAR_EF
    )


def closed_form(
    model: nn.Module,
    loss_func: nn.Module,
    data,
    params: ParamSpec = None,
    curvature: str | Curvature = "hessian",
    accumulate: torch.dtype | None = None,
) -> ClosedForm:
    """The dense ``curvature`` matrix of one domain's risk in closed form.

    ``"hessian"`` and ``"ggn"`` use :func:`output_layer_curvature` (``accumulate`` is its
    ``dtype``), ``"ef"`` :func:`linear_empirical_fisher`. The model is not changed.

    Raises:
        NoClosedForm: no closed form applies (the message says why).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> X = torch.randn(20, 3, dtype=torch.float64)
        >>> model = nn.Linear(3, 1, bias=False).double()
        >>> cf = closed_form(model, nn.MSELoss(), [(X, torch.zeros(20, 1).double())])
        >>> torch.allclose(cf.matrix, 2 / 20 * X.T @ X), cf.method == OUTPUT_LAYER
        (True, True)
    """
    check_loss(loss_func)
    kind = as_curvature(curvature)
    selected = select_params(model, params)
    tensors = functional_tensors(model, selected)
    like = next(iter(selected.values()))
    batches = ((to_like(X, like).detach(), to_like(y, like)) for X, y in as_batches(data))
    if kind is Curvature.EF:
        return linear_empirical_fisher(model, loss_func, batches, tensors, list(selected))
    return output_layer_curvature(model, loss_func, batches, tensors, list(selected), accumulate)


def has_closed_form(
    model: nn.Module,
    loss_func: nn.Module,
    params: ParamSpec = None,
    curvature: str | Curvature = "hessian",
    data=None,
) -> bool:
    """Whether :func:`closed_form` applies to this model, selection and curvature, without
    building the matrix (ask instead of catching :class:`NoClosedForm`).

    Without ``data`` only the conditions readable from the model are checked (the selection
    lies in ``nn.Linear`` layers; for ``"hessian"`` / ``"ggn"`` in one plain, hook-free
    layer); with ``data`` also the run-time ones on its first batch (one forward: the layer
    runs once on ``[n, F]`` inputs and produces the model's output; for ``"ef"`` the
    per-sample gradients add up to the gradient), which every batch of a domain shares.
    A ``ValueError`` for a bad loss, curvature or selection propagates.
    """
    check_loss(loss_func)
    kind = as_curvature(curvature)
    selected = select_params(model, params)
    names = list(selected)
    try:
        if kind is Curvature.EF:
            _linear_layers(model, names)
        else:
            _output_layer(model, names)
        if data is None:
            return True
        X, y = next(iter(as_batches(data)))
        like = next(iter(selected.values()))
        X, y = to_like(X, like).detach(), to_like(y, like)
        tensors = functional_tensors(model, selected)
        if kind is Curvature.EF:
            linear_empirical_fisher(model, loss_func, [(X, y)], tensors, names)
        else:
            _features_and_logits(model, tensors, X, _output_layer(model, names))
        return True
    except NoClosedForm:
        return False
