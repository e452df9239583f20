"""Moments of per-sample gradients of ``nn.Linear`` layers without materialising them.

For a linear layer ``z = a W^T + b`` with input ``a`` ``[N, in]`` and output ``z`` ``[N, out]``,
let ``delta_i = d l_i / d z_i`` (``[N, out]``, from one backward of the **sum** of the
per-sample losses). The per-sample gradients are

.. math::

    g_i(W) = \\delta_i a_i^\\top \\ ([out, in]), \\qquad g_i(b) = \\delta_i \\ ([out]),

so their first and (diagonal) second moments over the ``N`` samples are two small matrix
products that never build the ``[N, out, in]`` tensor:

.. math::

    \\bar g(W) = \\tfrac1N \\delta^\\top a, \\qquad
    \\overline{g^2}(W) = \\tfrac1N (\\delta \\odot \\delta)^\\top (a \\odot a),

and the biased (``1/N``) variance is ``\\overline{g^2} - \\bar g^2``. Memory is ``O(N * width)``,
the cost two ``[out, N] x [N, in]`` products per layer, and everything stays differentiable
(``create_graph``), so a penalty built on these moments back-propagates into the whole network.

Accuracy of ``m2 - mean^2``: the cancellation makes the relative error of a variance entry
about ``eps * (1 + mean^2 / var)`` instead of ``eps`` for the explicit (center, then square)
form. Per-sample gradients usually spread more than their mean (``mean^2 / var`` below 1 at
every entry of the test MLP), and float32 then matches the explicit form (relative error
~5e-7 against float64 for both); with shifted inputs and a single label (``mean^2 / var``
about 18) it is 1.6e-5 against 1.7e-6 (``tests/test_penalties.py`` checks the bound). Use
float64 where variances of almost-constant gradients matter. The covariance variant
materialises the ``[N, D]`` per-sample gradients and centers them explicitly.

The layer inputs / outputs are captured with forward hooks during the model's ordinary
forward (no second forward); the hooks are removed when the capture ends, so the model is
left as it was. Only ``nn.Linear`` layers whose input is ``[N, in]`` are supported; any other
module owning a selected parameter raises ``ValueError`` (per-sample gradients of other layers
do not factorise this way: use ``torch.func.vmap(grad)`` on a small selection instead).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from landscape.params import ParamSpec, select_params

# Largest parameter count for which a dense [D, D] covariance is built.
MAX_COVARIANCE_DIM = 10_000


@dataclass(frozen=True)
class LinearSelection:
    """One ``nn.Linear`` layer and which of its parameters are selected.

    Attributes:
        name: the module's qualified name in the model (``"classifier"``).
        module: the layer.
        weight: whether ``<name>.weight`` is selected.
        bias: whether ``<name>.bias`` is selected (``False`` when the layer has no bias).
    """

    name: str
    module: nn.Linear
    weight: bool
    bias: bool

    @property
    def numel(self) -> int:
        """Number of selected scalars of this layer."""
        out_f, in_f = self.module.weight.shape
        return out_f * in_f * int(self.weight) + out_f * int(self.bias)


def select_linear_layers(model: nn.Module, params: ParamSpec = None) -> list[LinearSelection]:
    """Group the parameters chosen by ``params`` by their ``nn.Linear`` layer, in model order.

    The flattened layout of every moment computed here is, layer after layer, the weight
    ``[out, in]`` row-major, then the bias: the order of ``select_params(model, params)``.

    Raises:
        ValueError: a selected parameter belongs to a module other than ``nn.Linear``, or the
            selection names no parameter (see :func:`landscape.params.select_params`).
    """
    selected = select_params(model, params)
    owner: dict[str, tuple[str, nn.Module, str]] = {}
    for mname, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            owner[f"{mname}.{pname}" if mname else pname] = (mname, module, pname)
    layers: dict[str, dict] = {}
    for full in selected:
        mname, module, pname = owner[full]
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"per-sample gradient moments are implemented for nn.Linear layers only; "
                f"parameter {full!r} belongs to a {type(module).__name__}; select Linear layers "
                f"with params=... (e.g. params='classifier')"
            )
        entry = layers.setdefault(mname, {"module": module, "weight": False, "bias": False})
        entry[pname] = True
    return [
        LinearSelection(name, e["module"], e["weight"], e["bias"]) for name, e in layers.items()
    ]


class LinearCapture:
    """Context manager that records the input ``a`` of some Linear layers and a probe on
    their output.

    The hook replaces each layer's output ``z`` by ``z + p`` with ``p`` a zero ``[N, out]``
    leaf that requires grad, so ``autograd.grad(loss, p)`` is ``d loss / d z`` even when the
    parameters are frozen or a later ``nn.ReLU(inplace=True)`` overwrites the output. Values
    are unchanged (``z + 0 == z``).

    Example::

        with LinearCapture(layers) as cap:
            logits = model(X)
        acts = cap.activations()   # {layer name: (a [N, in], probe [N, out])}

    Raises (from :meth:`activations`):
        ValueError: a layer was not called, was called more than once, got an input that is
            not ``[N, in]``, or had its input modified in place after using it.
    """

    def __init__(self, layers: Sequence[LinearSelection]):
        self.layers = list(layers)
        self._handles: list = []
        self._store: dict[str, tuple[Tensor, Tensor, int]] = {}
        self._calls: dict[str, int] = {}

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self._calls[name] = self._calls.get(name, 0) + 1
            a = inputs[0]
            probe = torch.zeros_like(output, requires_grad=True)
            self._store[name] = (a, probe, a._version)
            return output + probe  # same values; d(loss)/d(probe) = d(loss)/d(z)

        return hook

    def __enter__(self) -> LinearCapture:
        self._store.clear()
        self._calls.clear()
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_hook(self._hook(layer.name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def activations(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{layer name: (a [N, in], probe [N, out])}`` recorded during the forward."""
        out = {}
        for layer in self.layers:
            calls = self._calls.get(layer.name, 0)
            if calls != 1:
                raise ValueError(
                    f"Linear layer {layer.name!r} was called {calls} times in one forward; "
                    "per-sample moments need each selected layer to run exactly once"
                )
            a, probe, va = self._store[layer.name]
            if a.dim() != 2:
                raise ValueError(
                    f"Linear layer {layer.name!r} got an input of shape {tuple(a.shape)}; only "
                    "[N, in] inputs are supported (flatten extra dimensions before the layer)"
                )
            if a._version != va:
                raise ValueError(
                    f"the input of Linear layer {layer.name!r} was modified in place after the "
                    "layer used it (an in-place operation); make that operation out of place"
                )
            out[layer.name] = (a, probe)
        return out


def linear_moments(
    layers: Sequence[LinearSelection],
    activations: dict[str, tuple[Tensor, Tensor]],
    deltas: dict[str, Tensor],
    *,
    centered: bool = True,
    covariance: bool = False,
) -> Tensor:
    """Variance (or second moment, or covariance) of the selected per-sample gradients.

    Args:
        layers: the selection, in model order.
        activations: ``{name: (a [N, in], probe [N, out])}`` from :class:`LinearCapture`.
        deltas: ``{name: delta [N, out]}``, the gradients of the **sum** of per-sample
            losses with respect to each layer's output (its probe).
        centered: ``True``: ``mean_i (g_i - g_bar)^2`` (biased variance); ``False``:
            ``mean_i g_i^2`` (diagonal of the empirical Fisher).
        covariance: return the full ``[D, D]`` matrix ``mean_i (g_i - g_bar)(g_i - g_bar)^T``
            (or ``mean_i g_i g_i^T``) instead of its diagonal ``[D]``. Builds the ``[N, D]``
            per-sample gradients: meant for a head (``D`` up to ``MAX_COVARIANCE_DIM``).

    Returns:
        ``[D]`` (or ``[D, D]``) in the layout of :func:`select_linear_layers`; differentiable
        whenever ``a`` and ``delta`` are.
    """
    if covariance:
        return _linear_covariance(layers, activations, deltas, centered=centered)
    parts = []
    for layer in layers:
        a, _ = activations[layer.name]
        v_weight, v_bias = _DiagonalMoments.apply(a, deltas[layer.name], centered)
        if layer.weight:
            parts.append(v_weight.reshape(-1))
        if layer.bias:
            parts.append(v_bias)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


# Row blocks of at most this many bytes for the [N, in] temporaries on CPU. Large fresh
# tensors cost page faults (glibc serves blocks over 32 MB with mmap every time), which on a
# CPU costs more than the arithmetic; blocks under that stay in the heap. Not smaller: each
# block is a few parallel regions, and with 2 threads on a loaded machine every region waits
# for a descheduled thread (8 MiB: Fishr's penalty step 2.4 s instead of 3.9 s with 1 MiB,
# 2 threads, other jobs running; equal with 1 thread; issue 15).
CHUNK_BYTES = 2**23


def _squared_chunks(a: Tensor):
    """Yield ``(rows, a[rows] ** 2)`` over row blocks of ``a`` (one block off the CPU).

    The squares are written into one reused buffer: consume each block before the next.
    """
    n = a.shape[0]
    if a.device.type != "cpu":
        yield slice(0, n), a.square()
        return
    rows = max(1, min(n, CHUNK_BYTES // max(1, a.shape[1] * a.element_size())))
    buffer = a.new_empty(rows, a.shape[1])
    for start in range(0, n, rows):
        block = slice(start, min(start + rows, n))
        out = buffer[: block.stop - start]
        torch.square(a[block], out=out)
        yield block, out


def _weight_sums(a: Tensor, delta: Tensor, first: bool) -> tuple[Tensor, Tensor | None]:
    """``(sum_i delta_i^2 (a_i^2)^T, sum_i delta_i a_i^T)`` ``[out, in]`` by row blocks of ``a``.

    The second sum only when ``first``; ``a^2`` is never stored whole (:func:`_squared_chunks`).
    """
    d_sq = delta.square()
    second = a.new_zeros(delta.shape[1], a.shape[1])
    mean = a.new_zeros(delta.shape[1], a.shape[1]) if first else None
    for rows, a_sq in _squared_chunks(a):
        second.addmm_(d_sq[rows].T, a_sq)
        if first:
            mean.addmm_(delta[rows].T, a[rows])
    return second, mean


def linear_gradient_sums(
    layers: Sequence[LinearSelection],
    activations: dict[str, tuple[Tensor, Tensor]],
    deltas: dict[str, Tensor],
) -> tuple[Tensor, Tensor]:
    """Sums of the selected per-sample gradients and of their squares, ``([D], [D])``.

    .. math::

        s = \\sum_i g_i, \\qquad q = \\sum_i g_i \\odot g_i, \\qquad
        s(W) = \\delta^\\top a, \\quad q(W) = (\\delta^{2})^\\top a^{2}, \\quad
        s(b) = \\textstyle\\sum_i \\delta_i, \\quad q(b) = \\sum_i \\delta_i^2.

    Not differentiable (computed under ``no_grad``): the exact moments of any set of rows,
    which callers add up over chunks and batches (the mean is ``s / N``, the uncentered
    second moment ``q / N`` and the biased variance ``q / N - (s / N)^2``).

    Args:
        layers, activations, deltas: as for :func:`linear_moments`.

    Returns:
        ``(s, q)``, each ``[D]`` in the layout of :func:`select_linear_layers`.
    """
    sums, squares = [], []
    with torch.no_grad():
        for layer in layers:
            a, _ = activations[layer.name]
            delta = deltas[layer.name].detach()
            a = a.detach()
            if layer.weight:
                q_weight, s_weight = _weight_sums(a, delta, first=True)
                sums.append(s_weight.reshape(-1))
                squares.append(q_weight.reshape(-1))
            if layer.bias:
                sums.append(delta.sum(0))
                squares.append(delta.square().sum(0))
    return torch.cat(sums), torch.cat(squares)


def _product(x: Tensor, w: Tensor, out: Tensor) -> Tensor:
    """``x @ w`` into ``out``. With one inner dimension (``x [r, 1]``: the head of a binary
    classifier) the product is an outer product, computed as a broadcast multiplication,
    which BLAS's ``K = 1`` kernels do not beat (MKL on a 2-core AMD EPYC, 2 threads: the
    moments' forward and backward over ``a [25,000, 390]`` take 41.3 ms this way, 52.9 ms
    with ``torch.mm``; ``benchmarks/bench_penalties.py``)."""
    if x.shape[1] == 1:
        return torch.mul(x, w, out=out)
    return torch.mm(x, w, out=out)


def _subtract_product(block: Tensor, x: Tensor, w: Tensor) -> None:
    """``block -= x @ w`` in place (an outer product as a broadcast, see :func:`_product`)."""
    if x.shape[1] == 1:
        block.addcmul_(x, w, value=-1.0)
    else:
        block.addmm_(x, w, alpha=-1.0)


class _DiagonalMoments(torch.autograd.Function):
    r"""``(v_W [out, in], v_b [out])`` from ``a [N, in]`` and ``delta [N, out]``, with a
    hand-written backward.

    Forward (``m`` terms only when centered):

    .. math::

        v_W = \tfrac1N (\delta^{2})^\top a^{2} - m_W^2,\ m_W = \tfrac1N \delta^\top a, \qquad
        v_b = \overline{\delta^2} - m_b^2,\ m_b = \bar\delta.

    Backward, for upstream gradients ``G`` (of ``v_W``) and ``g`` (of ``v_b``):

    .. math::

        \partial a = \tfrac2N [a \odot (\delta^2 G) - \delta (G \odot m_W)], \qquad
        \partial \delta = \tfrac2N [\delta \odot (a^2 G^\top) - a (G \odot m_W)^\top
        + (\delta - m_b) \odot g].

    ``a^2`` is formed block by block (:data:`CHUNK_BYTES`) and never stored, so the only
    ``[N, in]`` allocation is the returned ``∂a``; autograd's generic version of the same
    formulas allocates several ``[N, in]`` temporaries (``pow`` and its backward, outer
    products, accumulations), which on a CPU made Fishr's step about 1.4x ERM's. The
    backward is itself not differentiable (``once_differentiable``): penalties need
    first-order gradients only. Tested against ``torch.func`` brute force in
    ``tests/test_penalties.py``.
    """

    @staticmethod
    def forward(ctx, a: Tensor, delta: Tensor, centered: bool):
        n = a.shape[0]
        v_weight, m_weight = _weight_sums(a, delta, first=centered)
        v_weight.div_(n)
        v_bias = delta.square().mean(0)
        if centered:
            m_weight.div_(n)
            m_bias = delta.mean(0)
            v_weight = v_weight - m_weight.square()
            v_bias = v_bias - m_bias.square()
        else:
            m_bias = None
        ctx.centered = centered
        ctx.save_for_backward(a, delta, m_weight, m_bias)
        return v_weight, v_bias

    @staticmethod
    @once_differentiable
    def backward(ctx, g_weight, g_bias):
        a, delta, m_weight, m_bias = ctx.saved_tensors
        scale = 2.0 / a.shape[0]
        want_a, want_delta = ctx.needs_input_grad[:2]
        grad_a = a.new_empty(a.shape) if want_a else None
        grad_delta = torch.zeros_like(delta) if want_delta else None
        if g_weight is not None and (want_a or want_delta):
            g_w = g_weight * scale
            gm = g_w * m_weight if ctx.centered else None  # [out, in]
            d_sq = delta.square()
            # One pass over row blocks of a, each used while it is in cache.
            for rows, a_sq in _squared_chunks(a):
                if want_a:
                    block = grad_a[rows]
                    _product(d_sq[rows], g_w, out=block)
                    block.mul_(a[rows])
                    if gm is not None:
                        _subtract_product(block, delta[rows], gm)
                if want_delta:
                    block = grad_delta[rows]
                    torch.mm(a_sq, g_w.T, out=block)
                    block.mul_(delta[rows])
                    if gm is not None:
                        block.addmm_(a[rows], gm.T, alpha=-1.0)
        if want_delta and g_bias is not None:
            centred = delta - m_bias if ctx.centered else delta
            grad_delta.addcmul_(centred, g_bias, value=scale)
        return grad_a, grad_delta, None


def linear_pass(
    model: nn.Module,
    layers: Sequence[LinearSelection],
    X: Tensor,
    y: Tensor,
    loss_func: nn.Module,
    params: dict[str, Tensor],
    grad_names: Sequence[str] = (),
) -> tuple[dict[str, tuple[Tensor, Tensor]], dict[str, Tensor], Tensor, list[Tensor]]:
    """One forward (capturing ``layers``) and one backward of the summed per-sample losses.

    The model runs through :func:`torch.func.functional_call` with ``params`` (a full
    ``{name: tensor}`` mapping of parameters and buffers), so the model itself is untouched;
    with detached tensors in ``params`` no graph reaches the parameters and only the
    selected layers' outputs onwards are differentiated. The per-sample loss is the
    mean-reduced loss of the one-sample batch, ``l_i = mean_c loss_none(out, y)[i, c]``.

    Args:
        model, layers: the network and its selected ``nn.Linear`` layers.
        X, y: one chunk of samples ``[n, ...]`` on the parameters' device and dtype.
        loss_func: the (mean-reduced) loss module.
        params: tensors for ``functional_call``.
        grad_names: names in ``params`` (tensors that require grad) whose gradients of
            ``sum_i l_i`` to return as well (for :func:`sums_match_gradient`).

    Returns:
        ``(activations, deltas, losses [n], grads)``: as for :func:`linear_moments`, the
        detached per-sample losses, and one gradient per name in ``grad_names``.

    Raises:
        ValueError: from :meth:`LinearCapture.activations` (a layer not run exactly once,
            or not on ``[n, in]`` inputs).
    """
    from torch.func import functional_call

    from landscape.losses import with_reduction

    n = int(X.shape[0])
    with torch.enable_grad():
        with LinearCapture(layers) as cap:
            out = functional_call(model, params, (X,))
        acts = cap.activations()
        losses = with_reduction(loss_func, "none")(out, y).reshape(n, -1).mean(dim=1)
        probes = [acts[layer.name][1] for layer in layers]
        wrt = probes + [params[name] for name in grad_names]
        grads = torch.autograd.grad(losses.sum(), wrt, allow_unused=True)
    deltas = {
        layer.name: torch.zeros_like(probe) if g is None else g.detach()
        for layer, probe, g in zip(layers, probes, grads[: len(layers)], strict=True)
    }
    extra = [
        torch.zeros_like(params[name]) if g is None else g.detach()
        for name, g in zip(grad_names, grads[len(layers) :], strict=True)
    ]
    return acts, deltas, losses.detach(), extra


def sums_match_gradient(sums: Tensor, squares: Tensor, gradient: Tensor, num: int) -> bool:
    """Whether summed per-sample gradients equal autograd's gradient up to rounding.

    ``sums`` ``[D]`` is :math:`\\sum_i g_i` from the factorisation, ``squares`` ``[D]``
    :math:`\\sum_i g_i^2` and ``gradient`` ``[D]`` autograd's gradient of
    :math:`\\sum_i \\ell_i` over the same ``num`` samples. The tolerance bounds the rounding
    of a sum of ``num`` terms, :math:`10^3 \\epsilon \\sum_i |g_{ij}| \\le 10^3 \\epsilon
    \\sqrt{N q_j}` (Cauchy-Schwarz). A mismatch means a selected parameter is used outside
    its layer (tied weights, functional use), where ``g_i = delta_i a_i^T`` misses terms.
    """
    finfo = torch.finfo(sums.dtype)
    tol = 1e3 * finfo.eps * (num * squares.clamp_min(0)).sqrt() + finfo.tiny
    return bool(((sums - gradient).abs() <= tol).all())


def per_sample_gradients(
    layers: Sequence[LinearSelection],
    activations: dict[str, tuple[Tensor, Tensor]],
    deltas: dict[str, Tensor],
) -> Tensor:
    """The ``[N, D]`` per-sample gradients of the selection (``D`` small: a head)."""
    parts = []
    for layer in layers:
        a, _ = activations[layer.name]
        delta = deltas[layer.name]
        if layer.weight:
            parts.append((delta[:, :, None] * a[:, None, :]).reshape(a.shape[0], -1))
        if layer.bias:
            parts.append(delta)
    return torch.cat(parts, dim=1)


def _linear_covariance(layers, activations, deltas, *, centered: bool) -> Tensor:
    dim = sum(layer.numel for layer in layers)
    if dim > MAX_COVARIANCE_DIM:
        raise ValueError(
            f"a full gradient covariance of {dim} parameters would be a {dim}x{dim} matrix; "
            f"select at most {MAX_COVARIANCE_DIM} parameters (e.g. params='classifier') or "
            "use the diagonal"
        )
    g = per_sample_gradients(layers, activations, deltas)
    if centered:
        g = g - g.mean(0, keepdim=True)
    return g.T.mm(g) / g.shape[0]
