"""ERM, IRM, V-REx and Fishr (with its variants): penalties over training domains.

For training domains ``e`` with risks ``R_e`` (mean loss over the domain's samples), the
objective is ``mean_e R_e + lambda * penalty`` with one of (``ALGORITHMS``):

* ``"erm"``: no penalty (0).
* ``"irm"``: IRMv1 (Arjovsky et al. 2019), ``mean_e (d R_e(s * f) / d s |_{s=1})^2``.
* ``"vrex"``: V-REx (Krueger et al. 2021), a spread of the risks (:func:`vrex_penalty`).
* ``"fishr"``: Fishr (Rame et al. 2022), the distance between the domains' per-sample
  gradient variances ``v_e`` of the classifier head, diagonal, centered
  (:func:`fishr_penalty`, :func:`domain_gradient_variance`).
* ``"fishr_notcentered"``: ``v_e = mean_i g_i^2``, the diagonal of the head's empirical Fisher.
* ``"fishr_offdiagonal"``: the full centered ``[D, D]`` covariance of the head's per-sample
  gradients, divided by ``D`` (the Colored MNIST script's ``einsum('na,nb->ab') / (N * D)``).
  Unlike that script, which builds one block per parameter tensor (weights, bias) with its
  own ``1/D_tensor``, the head is one vector here (weights and bias concatenated, cross
  terms included) divided by the head's ``D``.
* ``"fishr_all"``: the centered diagonal variance of every parameter of the network (every
  layer must be an ``nn.Linear``); computed without materialising per-sample gradients.

Scalings (docs/method.md section 2: public implementations disagree, and ``lambda`` only makes
sense with its own form). ``distance="sum"`` (the default) follows the Colored MNIST script
of the Fishr authors, whose protocol hyperparameters (penalty weight 91257.19) we reuse:

.. math::

    \\text{Fishr} = \\sum_e \\sum_k (v_{e,k} - \\bar v_k)^2 \\quad
    (= \\tfrac12 \\lVert v_0 - v_1 \\rVert^2 \\text{ for two domains}), \\qquad
    \\text{V-REx} = \\sum_{A<B} (R_A - R_B)^2 \\quad (= (R_0 - R_1)^2).

``distance="mean"`` follows DomainBed: ``(1/|E|) sum_e mean_k (v_{e,k} - vbar_k)^2`` and the
variance of the risks ``mean_e (R_e - Rbar)^2``.

Per-sample gradients are gradients of the per-sample loss ``l_i``, i.e. ``N`` times the
sample's contribution to the mean-reduced loss (as BackPACK's ``grad_batch * N`` in the
reference code); variances are biased (``1/N``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from landscape.domains import as_batches
from landscape.losses import accuracy
from landscape.params import ParamSpec
from landscape.persample import (
    LinearCapture,
    LinearSelection,
    linear_moments,
    select_linear_layers,
)

ALGORITHMS = (
    "erm",
    "irm",
    "vrex",
    "fishr",
    "fishr_notcentered",
    "fishr_offdiagonal",
    "fishr_all",
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

# Algorithms whose penalty compares domains (need at least two).
PAIRWISE = ("vrex", *FISHR_VARIANTS)


def check_algorithm(name: str) -> str:
    """Return ``name`` if it is one of :data:`ALGORITHMS`.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: unknown name (the message lists the choices).
    """
    if not isinstance(name, str):
        raise TypeError(f"algorithm must be a string, got {type(name).__name__}")
    if name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {name!r}; choose from {', '.join(ALGORITHMS)}")
    return name


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


def irm_penalty(logits: Tensor, y: Tensor, loss_func: nn.Module) -> Tensor:
    """IRMv1 penalty of one domain (Arjovsky et al. 2019), differentiable.

    .. math::

        \\text{IRM}_e = \\Big( \\frac{\\partial}{\\partial s} R_e(s \\cdot f) \\Big|_{s=1} \\Big)^2,
        \\qquad R_e(s f) = \\text{loss\\_func}(s \\cdot \\text{logits}, y).

    For ``BCEWithLogitsLoss`` (mean) the derivative is ``mean_i (sigmoid(z_i) - y_i) z_i``.

    Args:
        logits: ``[N, C]`` model outputs (keep them attached to the graph to train on it).
        y: targets as ``loss_func`` expects them.
        loss_func: a loss with ``reduction="mean"`` (the domain's risk).

    Returns:
        A scalar tensor; its graph reaches ``logits`` (``create_graph``).
    """
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    with torch.enable_grad():
        risk = _risk(loss_func, logits * scale, y)
        (grad,) = torch.autograd.grad(risk, scale, create_graph=True)
    return grad.square()


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


def vrex_penalty(risks: Sequence[Tensor], distance: str = "sum") -> Tensor:
    """V-REx penalty (Krueger et al. 2021): how much the domains' risks differ.

    .. math::

        \\text{sum: } \\sum_{A < B} (R_A - R_B)^2 \\qquad
        \\text{mean: } \\frac{1}{|E|} \\sum_e (R_e - \\bar R)^2

    ``"sum"`` (default) is the Fishr Colored MNIST script's ``(R_0 - R_1)^2`` for two domains
    (the form the protocol's penalty weight was used with); ``"mean"`` is DomainBed's variance
    of the risks. For ``|E|`` domains, ``sum = |E|^2 * mean``.

    Args:
        risks: one scalar risk per training domain (at least 2).
        distance: ``"sum"`` or ``"mean"``.
    """
    check_distance(distance)
    r = torch.stack([v.reshape(()) for v in _check_per_domain(risks, "risks")])
    if distance == "sum":
        diff = r[:, None] - r[None, :]
        return diff.square().sum() / 2
    return (r - r.mean()).square().mean()


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


@dataclass
class StepOutputs:
    """What :class:`Penalties` computes for one training step.

    Attributes:
        risks: ``{domain: R_e}``, differentiable scalars.
        accuracies: ``{domain: accuracy}`` as floats.
        penalty: the selected algorithm's penalty (differentiable; 0 for ``"erm"``).
        logged: penalty values as floats: with ``log_all``, ``"irm"``, ``"vrex"`` and
            ``"fishr"`` (the pairwise ones only with at least two domains) and the selected
            Fishr variant; without it, only the selected algorithm's (nothing for ``"erm"``).
            The selected algorithm's entry is the penalty being optimised (with the moving
            average when ``ema`` is set); the others are this step's raw values.
    """

    risks: dict[str, Tensor]
    accuracies: dict[str, float]
    penalty: Tensor
    logged: dict[str, float] = field(default_factory=dict)


class NonFiniteLossError(ValueError):
    """A domain's risk or the penalty is NaN or infinite (``domain`` is ``None`` for the
    penalty)."""

    def __init__(self, message: str, domain: str | None):
        super().__init__(message)
        self.domain = domain


class Penalties(nn.Module):
    """Risks, accuracies and penalties of the training domains at one training step.

    One forward of the model per domain; forward hooks on the ``nn.Linear`` layers the
    selected penalty needs give their inputs and output gradients (see
    :mod:`landscape.persample`). The hooks are removed after each forward, and the model is
    held without being registered as a sub-module, so ``state_dict`` holds only this module's
    own state.

    Moving average (``ema``): DomainBed's Fishr averages each domain's ``v_e`` over steps.
    Here the average is bias-corrected as in Adam,

    .. math::

        m_t = \\beta m_{t-1} + (1 - \\beta) v_t, \\quad m_0 = 0, \\qquad
        \\hat v_t = m_t / (1 - \\beta^t),

    and the penalty uses ``\\hat v_t``; gradients flow only through the current ``v_t`` (the
    stored ``m_{t-1}`` is a constant), as in DomainBed. ``\\hat v_t`` is an average of
    variances, so it is on the scale of ``v`` whatever ``beta`` (and equals ``v_1`` at the
    first step). DomainBed returns ``m_t / (1 - beta)`` instead, which inflates the value (and
    the penalty, by about ``1/(1 - beta)^2``) so that the gradient through ``v_t`` has unit
    scale; with ours that gradient is scaled by ``(1 - beta) / (1 - beta^t)``, so DomainBed's
    weight ``lambda`` corresponds to ``lambda / (1 - beta)^2`` here. The state lives in
    buffers ``ema_variance_<i>`` (one per domain, ``i`` the index in ``domain_names``) and
    ``ema_steps`` (steps per domain), so it is saved with ``state_dict()`` and survives a
    resume. The buffers' shape depends on the Fishr variant, so it is fixed at construction
    by ``algorithm`` (default ``"fishr"``); every forward call with that variant is one
    averaging step.

    Args:
        model: the network (``model.<head>`` must be an ``nn.Linear`` for the head variants
            and for logging ``"fishr"``).
        loss_func: mean-reduced loss.
        domain_names: the training domains' names; ``batches`` passed to :meth:`forward` use
            these keys (all of them or a subset).
        distance: ``"sum"`` (Colored MNIST script, default) or ``"mean"`` (DomainBed) for
            V-REx and Fishr; see :func:`fishr_penalty`.
        ema: ``None`` (no averaging) or ``beta`` in ``(0, 1)`` (DomainBed uses 0.95).
        algorithm: default algorithm of :meth:`forward`; with ``ema``, the Fishr variant whose
            moving averages are kept (``None``: ``"fishr"``).
        head: the head's parameter prefix (``"classifier"``).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_func: nn.Module,
        domain_names: Sequence[str],
        *,
        distance: str = "sum",
        ema: float | None = None,
        algorithm: str | None = None,
        head: str = "classifier",
    ):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(loss_func, nn.Module):
            raise TypeError(f"loss_func must be an nn.Module, got {type(loss_func).__name__}")
        if isinstance(domain_names, str) or not isinstance(domain_names, Sequence):
            raise TypeError(
                "domain_names must be a sequence of domain names, e.g. ['+80%', '+90%']"
            )
        names = tuple(str(n) for n in domain_names)
        if not names:
            raise ValueError("domain_names is empty; give the training domains' names")
        if len(set(names)) != len(names):
            raise ValueError(f"domain_names has duplicates: {list(names)}")
        if ema is not None and not (isinstance(ema, int | float) and 0.0 < ema < 1.0):
            raise ValueError(f"ema must be None or a number in (0, 1) (e.g. 0.95), got {ema!r}")
        # Held, not registered: the model's weights stay out of this module's state_dict.
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "loss_func", loss_func)
        self.domain_names = names
        self.distance = check_distance(distance)
        self.ema = None if ema is None else float(ema)
        self.algorithm = None if algorithm is None else check_algorithm(algorithm)
        self.head = head
        self._layer_cache: dict[str, list[LinearSelection]] = {}
        self._head_warned = False
        self.ema_algorithm = (self.algorithm or "fishr") if self.ema is not None else None
        if self.ema_algorithm in FISHR_VARIANTS:
            variant = FISHR_VARIANTS[self.ema_algorithm]
            dim = sum(layer.numel for layer in self._layers(variant.layers))
            shape = (dim, dim) if variant.covariance else (dim,)
            ref = next(model.parameters())
            for i in range(len(names)):
                self.register_buffer(
                    f"ema_variance_{i}", torch.zeros(shape, dtype=ref.dtype, device=ref.device)
                )
            self.register_buffer(
                "ema_steps", torch.zeros(len(names), dtype=torch.long, device=ref.device)
            )

    def extra_repr(self) -> str:
        return (
            f"domains={list(self.domain_names)}, distance={self.distance!r}, ema={self.ema}, "
            f"algorithm={self.algorithm!r}, head={self.head!r}"
        )

    def _layers(self, which: str) -> list[LinearSelection]:
        if which not in self._layer_cache:
            self._layer_cache[which] = select_linear_layers(
                self.model, self.head if which == "head" else None
            )
        return self._layer_cache[which]

    def _head_layers_for_logging(self) -> list[LinearSelection] | None:
        try:
            return self._layers("head")
        except ValueError as err:
            if not self._head_warned:
                warnings.warn(f"not logging 'fishr': {err}", stacklevel=3)
                self._head_warned = True
            return None

    def _check_batches(self, batches) -> list[str]:
        if not isinstance(batches, Mapping):
            raise TypeError(
                f"batches must be a mapping {{domain: (X, y)}}, got {type(batches).__name__}"
            )
        unknown = [str(n) for n in batches if n not in self.domain_names]
        if unknown:
            raise ValueError(
                f"unknown domain {unknown[0]!r}; this Penalties was built for "
                f"{', '.join(self.domain_names)}"
            )
        if not batches:
            raise ValueError("batches is empty; pass {domain: (X, y)} for the training domains")
        for name in batches:
            data = as_batches(batches[name], name)
            if not (isinstance(data, list) and len(data) == 1):
                raise ValueError(f"domain {name!r}: pass one (X, y) batch per domain and step")
            _check_xy(*data[0], name=f"domain {name!r}")
        return [n for n in self.domain_names if n in batches]

    def _averaged(self, name: str, v: Tensor) -> tuple[Tensor, Callable[[], None]]:
        """Bias-corrected average for this step and a function that commits the new state."""
        i = self.domain_names.index(name)
        buf = getattr(self, f"ema_variance_{i}")
        if buf.shape != v.shape:
            raise ValueError(
                f"the moving average of domain {name!r} has shape {tuple(buf.shape)} but the "
                f"variance has {tuple(v.shape)}; was the state loaded from another model?"
            )
        buf = buf.to(device=v.device, dtype=v.dtype)
        m = self.ema * buf + (1.0 - self.ema) * v
        steps = self.ema_steps[i].to(v.device) + 1
        beta = torch.full((), self.ema, dtype=v.dtype, device=v.device)
        v_hat = m / (1.0 - beta.pow(steps))

        def commit() -> None:
            setattr(self, f"ema_variance_{i}", m.detach().clone())
            self.ema_steps[i] += 1

        return v_hat, commit

    def forward(
        self,
        batches: Mapping[str, tuple[Tensor, Tensor]],
        algorithm: str | None = None,
        log_all: bool = True,
        *,
        step: int | None = None,
    ) -> StepOutputs:
        """Compute every domain's risk and accuracy and the penalty of ``algorithm``.

        Args:
            batches: ``{domain: (X, y)}`` for the training domains of this step (keys from
                ``domain_names``).
            algorithm: one of :data:`ALGORITHMS` (default: the constructor's).
            log_all: also log the values of ``"irm"``, ``"vrex"`` and ``"fishr"`` (computed
                on detached tensors when they are not the selected penalty), as IRM's
                reference script does.
            step: training step, only used in error messages.

        Raises:
            ValueError: unknown algorithm or domain, fewer than 2 domains for a pairwise
                penalty, a Fishr variant other than the one the moving average was built
                for, or a model the variant cannot handle.
            NonFiniteLossError: (a ``ValueError``) a risk or the penalty is NaN or infinite.
        """
        if algorithm is None:
            if self.algorithm is None:
                raise ValueError(
                    f"pass algorithm= (one of {', '.join(ALGORITHMS)}) to forward or to the "
                    "constructor"
                )
            algorithm = self.algorithm
        algorithm = check_algorithm(algorithm)
        names = self._check_batches(batches)
        if algorithm in PAIRWISE and len(names) < 2:
            raise ValueError(
                f"{algorithm} compares domains and needs at least 2 training domains, got 1 "
                f"({names[0]!r}); pass every training domain or use erm / irm"
            )
        variant = FISHR_VARIANTS.get(algorithm)
        if variant is not None and self.ema is not None and algorithm != self.ema_algorithm:
            raise ValueError(
                f"this Penalties keeps moving averages for {self.ema_algorithm!r}, not "
                f"{algorithm!r}; build it with algorithm={algorithm!r}"
            )
        model, loss_func = self.model, self.loss_func
        selected = self._layers(variant.layers) if variant is not None else []
        log_pairs = log_all and len(names) >= 2
        head = self._head_layers_for_logging() if log_pairs and algorithm != "fishr" else None
        capture = {layer.name: layer for layer in selected}
        for layer in head or []:
            capture.setdefault(layer.name, layer)

        risks: dict[str, Tensor] = {}
        accuracies: dict[str, float] = {}
        variances: dict[str, Tensor] = {}
        irms: dict[str, Tensor] = {}
        logged_variances: dict[str, Tensor] = {}
        logged_irms: dict[str, Tensor] = {}
        with torch.enable_grad():
            for name in names:
                X, y = as_batches(batches[name], name)[0]
                n = X.shape[0]
                with LinearCapture(list(capture.values())) as cap:
                    logits = model(X)
                acts = cap.activations()
                risk = _risk(loss_func, logits, y)
                risks[name] = risk
                accuracies[name] = float(accuracy(logits.detach(), y))
                deltas: dict[str, Tensor] = {}
                if variant is not None:
                    deltas = _deltas(risk, selected, acts, n, create_graph=True)
                    v = linear_moments(
                        selected,
                        acts,
                        deltas,
                        centered=variant.centered,
                        covariance=variant.covariance,
                    )
                    if variant.covariance:
                        v = v / v.shape[0]
                    variances[name] = v
                if algorithm == "irm":
                    irms[name] = irm_penalty(logits, y, loss_func)
                elif log_all:
                    logged_irms[name] = irm_penalty(logits.detach(), y, loss_func).detach()
                if head:
                    missing = [layer for layer in head if layer.name not in deltas]
                    if missing:
                        deltas = dict(deltas)
                        deltas.update(
                            _deltas(risk, missing, acts, n, create_graph=False, retain_graph=True)
                        )
                    with torch.no_grad():
                        logged_variances[name] = linear_moments(
                            head,
                            {k: (acts[k][0].detach(), acts[k][1]) for k in capture},
                            {layer.name: deltas[layer.name].detach() for layer in head},
                            centered=True,
                        )

        if self.ema is not None and variant is not None:
            averaged = {name: self._averaged(name, v) for name, v in variances.items()}
            variances = {name: v_hat for name, (v_hat, _) in averaged.items()}
            commits = [commit for _, commit in averaged.values()]
        else:
            commits = []

        ordered_risks = [risks[n] for n in names]
        if algorithm == "erm":
            penalty = torch.zeros((), dtype=ordered_risks[0].dtype, device=ordered_risks[0].device)
        elif algorithm == "irm":
            penalty = torch.stack([irms[n] for n in names]).mean()
        elif algorithm == "vrex":
            penalty = vrex_penalty(ordered_risks, self.distance)
        else:
            penalty = fishr_penalty([variances[n] for n in names], self.distance)

        self._check_finite(names, ordered_risks, penalty, algorithm, step)
        for commit in commits:  # the moving averages only take finite steps
            commit()

        logged: dict[str, float] = {}
        value = float(penalty.detach())
        if log_all:
            logged["irm"] = (
                value
                if algorithm == "irm"
                else float(torch.stack([logged_irms[n] for n in names]).mean())
            )
            if log_pairs:
                logged["vrex"] = (
                    value
                    if algorithm == "vrex"
                    else float(vrex_penalty([r.detach() for r in ordered_risks], self.distance))
                )
                if algorithm == "fishr":
                    logged["fishr"] = value
                elif head:
                    logged["fishr"] = float(
                        fishr_penalty([logged_variances[n] for n in names], self.distance)
                    )
                if variant is not None:
                    logged[algorithm] = value
        elif algorithm != "erm":
            logged[algorithm] = value
        return StepOutputs(risks=risks, accuracies=accuracies, penalty=penalty, logged=logged)

    @staticmethod
    def _check_finite(names, risks, penalty, algorithm, step) -> None:
        values = torch.stack([r.detach() for r in risks] + [penalty.detach()])
        if bool(torch.isfinite(values).all()):
            return
        at = f" at step {step}" if step is not None else ""
        for name, risk in zip(names, values[:-1].tolist(), strict=True):
            if not math.isfinite(risk):
                raise NonFiniteLossError(
                    f"non-finite loss in domain {name!r}{at} (risk = {risk}); lower the learning "
                    "rate or the penalty weight, or check the inputs for NaN / inf",
                    domain=name,
                )
        raise NonFiniteLossError(
            f"non-finite {algorithm} penalty{at} ({values[-1].item()}); lower the learning rate "
            "or the penalty weight",
            domain=None,
        )
