"""Fishr (Rame et al. 2022): per-sample gradient variances of the domains and their distance.

For a domain ``e`` with per-sample gradients ``g_i`` of the selected parameters,

.. math::

    v_e = \\frac1N \\sum_i (g_i - \\bar g)^{2}, \\qquad
    \\text{Fishr} = \\sum_e \\sum_k (v_{e,k} - \\bar v_k)^2

(``distance="sum"``, the Colored MNIST script; ``"mean"`` is DomainBed's). The variants of
:data:`FISHR_VARIANTS` choose the layers (head or all), centering and the full covariance;
see :mod:`landscape.training.penalties` for the scalings. The input checks shared with
V-REx and IRM (:func:`check_distance`, the per-domain and ``(X, y)`` checks, the scalar
risk) live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.params import ParamSpec
from landscape.persample import (
    LinearCapture,
    LinearSelection,
    linear_moments,
    select_linear_layers,
)

DISTANCES = ("sum", "mean")


@dataclass(frozen=True)
class FishrVariant:
    """What a Fishr variant measures.

    Attributes:
        layers: ``"head"`` (the classifier head) or ``"all"`` (every parameter).
        centered: subtract the mean gradient (variance) or not (empirical Fisher diagonal).
        covariance: full ``[D, D]`` covariance instead of its diagonal.
    """

    layers: str
    centered: bool
    covariance: bool


FISHR_VARIANTS: dict[str, FishrVariant] = {
    "fishr": FishrVariant("head", centered=True, covariance=False),
    "fishr_notcentered": FishrVariant("head", centered=False, covariance=False),
    "fishr_offdiagonal": FishrVariant("head", centered=True, covariance=True),
    "fishr_all": FishrVariant("all", centered=True, covariance=False),
}


def check_distance(distance: str) -> str:
    """Return ``distance`` if it is ``"sum"`` or ``"mean"``; raise ``ValueError`` otherwise."""
    if distance not in DISTANCES:
        raise ValueError(
            f"unknown distance {distance!r}; choose 'sum' (Fishr's Colored MNIST script, the "
            "default) or 'mean' (DomainBed)"
        )
    return distance


def _risk(loss_func: nn.Module, logits: Tensor, y: Tensor) -> Tensor:
    risk = loss_func(logits, y)
    if risk.dim() != 0:
        raise ValueError(
            f"loss_func returned a tensor of shape {tuple(risk.shape)}; it must reduce to a "
            "scalar (use reduction='mean')"
        )
    return risk


def _check_per_domain(values: Sequence[Tensor], what: str) -> Tensor:
    if isinstance(values, Tensor) or not isinstance(values, Sequence):
        raise TypeError(f"{what} must be a sequence of tensors, one per domain")
    if len(values) < 2:
        raise ValueError(
            f"{what}: the penalty compares domains and needs at least 2, got {len(values)}; "
            "pass every training domain"
        )
    if not all(isinstance(v, Tensor) for v in values):
        raise TypeError(f"{what} must hold tensors")
    return values


def fishr_penalty(variances: Sequence[Tensor], distance: str = "sum") -> Tensor:
    """Fishr penalty (Rame et al. 2022): distance of the domains' gradient variances to their
    mean.

    .. math::

        \\text{sum: } \\sum_e \\sum_k (v_{e,k} - \\bar v_k)^2 \\qquad
        \\text{mean: } \\frac{1}{|E|} \\sum_e \\frac{1}{D} \\sum_k (v_{e,k} - \\bar v_k)^2,
        \\qquad \\bar v = \\frac{1}{|E|} \\sum_e v_e

    where ``k`` runs over every entry (a ``[D]`` diagonal or a ``[D, D]`` covariance).
    ``"sum"`` is the default because the Colored MNIST protocol's penalty weight (91257.19,
    tuned by the IRM authors and reused unchanged by Fishr's script) goes with the script's
    summed form; for two domains it is ``||v_0 - v_1||^2 / 2``. ``"mean"`` is DomainBed's
    (``sum = |E| * D * mean``), whose penalty weights are on that scale.

    Args:
        variances: one tensor per training domain (at least 2), all of the same shape.
        distance: ``"sum"`` or ``"mean"``.

    Raises:
        ValueError: fewer than two domains, shapes differ, or unknown distance.
    """
    check_distance(distance)
    variances = _check_per_domain(variances, "variances")
    shapes = {tuple(v.shape) for v in variances}
    if len(shapes) != 1:
        raise ValueError(
            f"variances must all have the same shape, got {sorted(shapes)}; compute them for "
            "the same parameters in every domain"
        )
    v = torch.stack(list(variances))
    dev = (v - v.mean(0, keepdim=True)).square()
    return dev.sum() if distance == "sum" else dev.mean()


def _check_xy(X, y, name: str = "domain") -> tuple[Tensor, Tensor]:
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise TypeError(f"{name}: X and y must be tensors")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {X.shape[0]} inputs but {y.shape[0]} targets")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty; give it at least one sample")
    return X, y


def _deltas(
    risk: Tensor,
    layers: Sequence[LinearSelection],
    acts: dict[str, tuple[Tensor, Tensor]],
    n: int,
    *,
    create_graph: bool,
    retain_graph: bool | None = None,
) -> dict[str, Tensor]:
    """``{layer: d(sum_i l_i) / d z}``, i.e. ``N * d R / d z`` for a mean-reduced risk."""
    probes = [acts[layer.name][1] for layer in layers]
    grads = torch.autograd.grad(
        risk, probes, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    out = {}
    for layer, grad in zip(layers, grads, strict=True):
        if grad is None:
            raise ValueError(
                f"the loss does not depend on Linear layer {layer.name!r}; select layers that "
                "the model's output depends on"
            )
        out[layer.name] = grad * n
    return out


def domain_gradient_variance(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    loss_func: nn.Module,
    params: ParamSpec = "classifier",
    centered: bool = True,
    covariance: bool = False,
    create_graph: bool = True,
) -> Tensor:
    """Per-sample gradient variance ``v_e`` of one domain, for the selected Linear layers.

    .. math::

        v_e = \\frac1N \\sum_i (g_i - \\bar g)^{2}, \\qquad
        g_i = \\nabla_\\theta \\ell(f_\\theta(x_i), y_i), \\qquad
        \\bar g = \\frac1N \\sum_i g_i

    (elementwise; ``centered=False`` drops ``\\bar g``; ``covariance=True`` gives
    ``(1/N) sum_i (g_i - gbar)(g_i - gbar)^T``). ``l_i`` is the per-sample loss: ``N`` times
    the sample's share of the mean-reduced ``loss_func``. Computed from one forward and one
    backward to the selected layers' outputs with the ``nn.Linear`` factorisation of
    :mod:`landscape.persample`; ``[N, D]`` per-sample gradients are built only for
    ``covariance=True``.

    Args:
        model: the network; only ``nn.Linear`` layers with ``[N, in]`` inputs may own
            selected parameters.
        X: inputs ``[N, ...]``.
        y: targets.
        loss_func: mean-reduced loss (the domain's risk).
        params: parameters by name (see :func:`landscape.params.select_params`); default the
            head ``"classifier"``; ``None`` for every parameter.
        centered: variance (``True``) or uncentered second moment (``False``).
        covariance: return ``[D, D]`` instead of the diagonal ``[D]``.
        create_graph: keep the result differentiable with respect to the parameters (for a
            penalty); ``False`` returns a detached tensor.

    Returns:
        ``[D]`` (or ``[D, D]``), laid out as ``select_params(model, params)`` flattened.

    Raises:
        ValueError: a selected parameter is not owned by an ``nn.Linear``, a selected layer
            runs more than once or on non-``[N, in]`` inputs, or bad data.
    """
    X, y = _check_xy(X, y)
    layers = select_linear_layers(model, params)
    with torch.enable_grad():
        with LinearCapture(layers) as cap:
            logits = model(X)
        acts = cap.activations()
        risk = _risk(loss_func, logits, y)
        deltas = _deltas(risk, layers, acts, X.shape[0], create_graph=create_graph)
    with torch.set_grad_enabled(create_graph):
        v = linear_moments(layers, acts, deltas, centered=centered, covariance=covariance)
    return v if create_graph else v.detach()
