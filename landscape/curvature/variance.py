"""Per-domain variance of the per-sample gradients (Fishr's matched quantity).

.. math::

    v_e = \\frac1{N_e}\\sum_{i} (g_i - \\bar g_e)^2, \\qquad
    \\operatorname{diag} F_e = \\frac1{N_e}\\sum_{i} g_i^2, \\qquad
    g_i = \\nabla_\\theta \\ell(f_\\theta(x_i), y_i)

Three exact backends, each returning the moments ``(N, mean, variance, second moment)`` of one
domain, batches combined exactly (Chan et al.'s parallel formula):

* ``linear``: the ``nn.Linear`` factorisation of :mod:`landscape.persample`;
* ``backpack``: BackPACK's ``Variance`` and ``SumGradSquared`` (sum-reduced loss);
* ``per_sample``: chunks of per-sample gradients by ``torch.func.vmap(grad)`` (any model).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from landscape.curvature._backpack import BackpackUnsupported, backpack_pass, missing_extension
from landscape.curvature._setup import Setup, check_positive_int, numpy, prepare
from landscape.curvature.operators import _to
from landscape.curvature.results import GradientVarianceResult
from landscape.domains import Domains, as_batches
from landscape.params import ParamSpec

VARIANCE_METHODS = ("auto", "linear", "backpack", "per_sample")
"""Ways :func:`gradient_variance` computes per-sample gradient moments."""

# Default samples per chunk: per_sample builds [chunk, D] per-sample gradients; linear keeps
# [chunk, width] activations of one forward (measured on the Colored MNIST MLP: see
# benchmarks/bench_curvature.py).
_CHUNKS = {"per_sample": 256, "linear": 2048}

# Rows of the first batch on which method="auto" checks the nn.Linear factorisation.
_LINEAR_CHECK_ROWS = 64

_PER_SAMPLE = "method='per_sample' (torch.func, any model)"


def gradient_variance(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    centered: bool = True,
    method: str = "auto",
    chunk_size: int | None = None,
    progress: bool = False,
) -> GradientVarianceResult:
    """Per-domain diagonal variance of the per-sample gradients (what Fishr matches).

    .. math::

        v_e = \\frac1{N_e}\\sum_{i} (g_i - \\bar g_e)^2, \\qquad
        \\operatorname{diag} F_e = \\frac1{N_e}\\sum_{i} g_i^2, \\qquad
        g_i = \\nabla_\\theta \\ell(f_\\theta(x_i), y_i)

    (biased 1/N variance, as in Fishr, Rame et al. 2022, eq. 4). Per-sample gradients of a
    whole network are never stored. Methods:

    * ``"linear"``: every selected parameter in an ``nn.Linear``: the per-sample gradients
      factorise, :math:`g_i(W) = \\delta_i a_i^\\top`, so
      :math:`\\sum_i g_i = \\delta^\\top a` and :math:`\\sum_i g_i^2 = (\\delta^2)^\\top a^2`
      (:mod:`landscape.persample`, the moments of Fishr's penalty): one forward and one
      backward to the layers' outputs per chunk of ``chunk_size`` samples, sums under
      ``no_grad``, chunks and batches added up exactly (variance :math:`q/N - \\bar g^2`);
    * ``"backpack"``: BackPACK's ``Variance`` and ``SumGradSquared`` with a sum-reduced loss
      batch by batch (batches combined exactly with Chan's parallel formula); refused (one
      line) when BackPACK has no rule for a module owning a selected parameter;
    * ``"per_sample"``: chunks of ``chunk_size`` per-sample gradients with ``torch.func``
      (any model torch.func supports);
    * ``"auto"`` (default): ``"linear"`` when it applies (checked: each selected layer runs
      once on ``[N, in]`` inputs, and on the first rows of the first domain the summed
      per-sample gradients equal autograd's gradient), else ``"backpack"`` when BackPACK
      handles every module owning a selected parameter (e.g. not ``GroupNorm``), else
      ``"per_sample"`` (also when the sum check fails: a selected parameter used outside its
      layer, which BackPACK's per-module per-sample gradients miss as well).

    ``"linear"`` and ``"backpack"`` both form the variance as :math:`q/N - \\bar g^2`, whose
    relative rounding is about :math:`\\epsilon (1 + \\bar g^2 / v)` (see
    :mod:`landscape.persample`): use float64 for nearly constant gradients.

    Args:
        model, loss_func, domains, params: see :mod:`landscape.curvature`.
        centered: subtract the mean gradient (Fishr's variance) or not (second moment).
        method: ``"auto"``, ``"linear"``, ``"backpack"`` or ``"per_sample"``.
        chunk_size: samples per chunk for ``"linear"`` (memory ``chunk_size x`` the widest
            layer; default 2048) and ``"per_sample"`` (memory ``chunk_size x D``; default 256).
        progress: progress bars over batches.

    Returns:
        A :class:`GradientVarianceResult`; ``settings["method"]`` is the method that ran.

    Raises:
        ValueError: unknown method, bad ``chunk_size``, or an explicit ``"linear"`` /
            ``"backpack"`` that cannot handle the model (the message says why and what to use).
    """
    if method not in VARIANCE_METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {', '.join(VARIANCE_METHODS)}")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    setup = prepare(model, loss_func, domains, params, "gradient_variance")
    return variance_result(setup, centered, method, chunk_size, progress)


def variance_result(
    setup: Setup, centered: bool, method: str, chunk_size: int | None, progress: bool
) -> GradientVarianceResult:
    """:func:`gradient_variance` on resolved inputs (arguments checked)."""
    method, fallback = _resolve(setup, method)
    try:
        moments = _all_moments(setup, method, chunk_size, progress)
    except BackpackUnsupported:
        if fallback is None:
            raise
        method = fallback  # BackPACK failed while running under "auto": the exact fallback
        moments = _all_moments(setup, method, chunk_size, progress)
    chunk = _chunk(method, chunk_size)
    result = GradientVarianceResult(
        **setup.base(centered=bool(centered), method=method, chunk_size=chunk)
    )
    for name, (N, mean, var, second) in moments.items():
        result.variance[name] = numpy(var if centered else second)
        result.empirical_fisher[name] = numpy(second)
        result.mean_gradient[name] = numpy(mean)
        result.num_samples[name] = int(N)
    return result


def _resolve(setup: Setup, method: str) -> tuple[str, str | None]:
    """The backend that runs (``method`` itself, or what ``"auto"`` picks, see
    :func:`gradient_variance`), and the one to run instead if BackPACK fails while running
    (``"per_sample"`` under ``"auto"``, else ``None``: the error reaches the caller)."""
    from backpack.extensions import Variance

    requested = method
    if method in ("auto", "linear"):
        reason, fallback = _linear_reason(setup)
        if reason is None:
            return "linear", None
        if fallback == "backpack" and missing_extension(setup, Variance()) is not None:
            fallback = "per_sample"  # BackPACK lacks a rule too
        if method == "linear":
            others = "'backpack', 'per_sample'" if fallback == "backpack" else "'per_sample'"
            raise ValueError(
                f"method='linear' does not apply: {reason}; use method={others} or 'auto'"
            )
        method = fallback
    if method != "backpack":
        return method, None
    missing = missing_extension(setup, Variance())
    if missing is None:
        return "backpack", "per_sample" if requested == "auto" else None
    raise ValueError(
        f"method='backpack' cannot handle this model: BackPACK's Variance has no rule for "
        f"{missing}; use method='per_sample' (torch.func, any model) or 'auto'"
    )


def _chunk(method: str, chunk_size: int | None) -> int:
    return int(chunk_size or _CHUNKS.get(method, _CHUNKS["per_sample"]))


def _all_moments(setup: Setup, method: str, chunk_size: int | None, progress: bool) -> dict:
    """``{domain: (N, mean [D], variance [D], second moment [D])}`` by ``method``."""
    chunk = _chunk(method, chunk_size)
    return {
        name: _moments(setup, data, method, chunk, progress) for name, data in setup.domains.items()
    }


def _moments(setup: Setup, data, method: str, chunk: int, progress: bool):
    if method == "linear":
        return _variance_linear(setup, data, chunk, progress)
    if method == "backpack":
        return _variance_backpack(setup, data, progress)
    return _variance_per_sample(setup, data, chunk, progress)


def _combine_moments(parts):
    """Chan et al.'s parallel combination of per-batch ``(n_b, sum g, biased var, sum g^2)``
    into ``(N, mean, biased variance, second moment)``, streaming: ``parts`` may be a
    generator, one part is held at a time. Adding a part of ``n`` samples to ``N``:
    :math:`\\delta = \\bar g_b - \\bar g`, :math:`M_2 \\mathrel{+}= n v_b + \\delta^2 N n/(N+n)`,
    :math:`\\bar g \\mathrel{+}= \\delta\\, n/(N+n)` (exact; no cancellation of large sums)."""
    N, mean, m2, second = 0, None, None, None
    for n, s, var, q in parts:
        batch_mean = s / n
        if N == 0:
            mean, m2, second = batch_mean, n * var, q.clone()
        else:
            delta = batch_mean - mean
            m2 = m2 + n * var + delta.square() * (N * n / (N + n))
            mean = mean + delta * (n / (N + n))
            second = second + q
        N += n
    return N, mean, m2 / N, second / N


def _variance_backpack(setup: Setup, data, progress: bool):
    from backpack.extensions import SumGradSquared, Variance

    runs = backpack_pass(
        setup,
        data,
        lambda: [Variance(), SumGradSquared()],
        ("variance", "sum_grad_squared"),
        reduction="sum",
        second_order=False,
        fallback=_PER_SAMPLE,
        progress=progress,
    )
    N, mean, var, second = _combine_moments(
        (n, e["grad"], e["variance"], e["sum_grad_squared"]) for n, e in runs
    )
    c = _outputs_per_sample(setup, data)
    return N, mean / c, var / c**2, second / c**2


def _outputs_per_sample(setup: Setup, data) -> int:
    """How many times BackPACK's per-sample gradients exceed ours. BackPACK runs the loss
    sum-reduced, :math:`\\sum_i \\sum_c`; for MSE the per-sample loss here is the mean over
    the sample's ``C`` outputs (``nn.MSELoss()`` of one sample), so BackPACK's gradients are
    ``C`` times ours. Cross-entropy losses sum nothing within a sample: 1."""
    if setup.loss != "mse":
        return 1
    _, y = next(iter(as_batches(data)))
    return max(1, y[0].numel())


def _variance_per_sample(setup: Setup, data, chunk_size: int, progress: bool):
    """Chunks of per-sample gradients by ``torch.func.vmap(grad)``; moments combined."""
    from torch.func import functional_call, grad, vmap

    model, loss_func, like = setup.model, setup.loss_func, setup.like
    leaves, fixed = setup.split_params()

    def sample_loss(theta, x, t):
        out = functional_call(model, {**fixed, **theta}, (x.unsqueeze(0),))
        return loss_func(out, t.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    def parts():  # one chunk at a time, batches streamed (one batch in memory)
        batches = tqdm(as_batches(data), desc="per-sample gradients", disable=not progress,
                       leave=False)  # fmt: skip
        for X, y in batches:
            X, y = _to(X, like), _to(y, like)
            for i in range(0, X.shape[0], chunk_size):
                G = per_sample(leaves, X[i : i + chunk_size], y[i : i + chunk_size])
                G = torch.cat([G[n].reshape(G[n].shape[0], -1) for n in setup.names], dim=1)
                s = G.sum(0)
                mean = s / G.shape[0]
                yield G.shape[0], s, ((G - mean) ** 2).mean(0), (G**2).sum(0)

    return _combine_moments(parts())


def _linear_setup(setup: Setup):
    """The selected ``nn.Linear`` layers, and detached tensors for ``functional_call``."""
    from landscape.persample import select_linear_layers

    layers = select_linear_layers(setup.model, setup.params)  # ValueError: not all Linear
    params = {n: p.detach() for n, p in setup.model.named_parameters()}
    params.update(dict(setup.model.named_buffers()))
    return layers, params


def _linear_reason(setup: Setup) -> tuple[str | None, str]:
    """Why the ``nn.Linear`` factorisation does not apply (``None``: it does), and the exact
    method to use instead (``"backpack"``, or ``"per_sample"`` when a selected parameter is
    used outside its layer: BackPACK's per-module per-sample gradients miss that use too).

    Structural: every selected parameter belongs to an ``nn.Linear`` that runs once per
    forward on ``[N, in]`` inputs. Numerical, on the first rows of the first domain: the
    summed per-sample gradients equal autograd's gradient (else a selected parameter is also
    used outside its layer; :func:`landscape.persample.sums_match_gradient`).
    """
    from landscape.persample import linear_gradient_sums, linear_pass, sums_match_gradient

    try:
        layers, params = _linear_setup(setup)
        X, y = next(iter(next(iter(setup.domains.values()))))
        like = setup.like
        X, y = _to(X[:_LINEAR_CHECK_ROWS], like), _to(y[:_LINEAR_CHECK_ROWS], like)
        for name in setup.names:
            params[name] = params[name].clone().requires_grad_(True)
        acts, deltas, _, grads = linear_pass(
            setup.model, layers, X, y, setup.loss_func, params, setup.names
        )
    except ValueError as err:
        return str(err), "backpack"
    sums, squares = linear_gradient_sums(layers, acts, deltas)
    gradient = torch.cat([g.reshape(-1) for g in grads])
    if not sums_match_gradient(sums, squares, gradient, int(X.shape[0])):
        return (
            "the per-sample gradients of the Linear layers do not add up to the gradient "
            "(a selected parameter is also used outside its layer)"
        ), "per_sample"
    return None, "linear"


def _variance_linear(setup: Setup, data, chunk_size: int, progress: bool):
    """Exact moments from the ``nn.Linear`` factorisation, chunk by chunk (one forward and one
    backward to the layers' outputs per chunk; sums under ``no_grad``)."""
    from landscape.persample import linear_gradient_sums, linear_pass

    layers, params = _linear_setup(setup)
    like = setup.like

    def parts():  # one batch at a time, streamed
        batches = tqdm(as_batches(data), desc="per-sample moments", disable=not progress,
                       leave=False)  # fmt: skip
        for X, y in batches:
            X, y = _to(X, like), _to(y, like)
            n = int(X.shape[0])
            s = q = None
            for i in range(0, n, chunk_size):
                acts, deltas, _, _ = linear_pass(
                    setup.model, layers, X[i : i + chunk_size], y[i : i + chunk_size],
                    setup.loss_func, params,
                )  # fmt: skip
                ds, dq = linear_gradient_sums(layers, acts, deltas)
                s, q = (ds, dq) if s is None else (s + ds, q + dq)
            mean = s / n
            yield n, s, q / n - mean.square(), q

    return _combine_moments(parts())
