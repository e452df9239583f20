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
from landscape.names import ALGORITHM_ORDER
from landscape.persample import LinearCapture, LinearSelection, linear_moments, select_linear_layers
from landscape.training.fishr import (
    DISTANCES,
    FISHR_VARIANTS,
    FishrVariant,
    _check_per_domain,
    _check_xy,
    _deltas,
    _risk,
    check_distance,
    domain_gradient_variance,
    fishr_penalty,
)

#: Every algorithm, in the project's one order (:data:`landscape.names.ALGORITHM_ORDER`).
ALGORITHMS = ALGORITHM_ORDER

#: Algorithms whose penalty compares domains (need at least two).
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
    """The training objective became NaN or infinite: a domain's risk, the penalty, the
    weights or the total (a ``ValueError``; ``domain`` names the domain whose risk is not
    finite, ``None`` when it is the penalty, the weights or the total)."""

    def __init__(self, message: str, domain: str | None = None):
        super().__init__(message)
        self.domain = domain


@dataclass
class _Plan:
    """What one :meth:`Penalties.forward` computes: the algorithm, its Fishr variant, the
    Linear layers it differentiates (``selected``) and those logged for ``"fishr"``
    (``head``)."""

    algorithm: str
    variant: FishrVariant | None
    log_all: bool
    log_pairs: bool
    selected: list[LinearSelection] = field(default_factory=list)
    head: list[LinearSelection] | None = None

    def capture(self) -> dict[str, LinearSelection]:
        """The layers whose inputs and output gradients a forward must capture."""
        capture = {layer.name: layer for layer in self.selected}
        for layer in self.head or []:
            capture.setdefault(layer.name, layer)
        return capture


@dataclass
class _DomainPass:
    """One domain's share of a step (IRM / variance entries are ``None`` when not needed)."""

    risk: Tensor
    accuracy: float
    variance: Tensor | None = None
    irm: Tensor | None = None
    logged_irm: Tensor | None = None
    logged_variance: Tensor | None = None


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
        forwards: ``{domain: f}`` with ``f(X)`` equal to ``model(X)`` for that domain's
            batch, computed faster (the colour-split hidden layers,
            :class:`landscape.training.colour_split.ColourSplitForward`); other domains use
            ``model(X)``.
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
        forwards: Mapping[str, Callable[[Tensor], Tensor]] | None = None,
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
        self.forwards = dict(forwards or {})
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
        names = self._check_batches(batches)
        algorithm, variant = self._resolve(algorithm, names)
        plan = _Plan(algorithm, variant, log_all, log_pairs=log_all and len(names) >= 2)
        plan.selected = self._layers(variant.layers) if variant is not None else []
        if plan.log_pairs and algorithm != "fishr":
            plan.head = self._head_layers_for_logging()
        passes, model = {}, self.model
        with torch.enable_grad():
            for name in names:
                X, y = as_batches(batches[name], name)[0]
                passes[name] = self._domain_pass(plan, X, y, self.forwards.get(name, model))

        variances = {n: p.variance for n, p in passes.items() if p.variance is not None}
        commits = []
        if self.ema is not None and variant is not None:
            averaged = {name: self._averaged(name, v) for name, v in variances.items()}
            variances = {name: v_hat for name, (v_hat, _) in averaged.items()}
            commits = [commit for _, commit in averaged.values()]
        ordered_risks = [passes[n].risk for n in names]
        penalty = self._penalty(plan, names, ordered_risks, passes, variances)
        self._check_finite(names, ordered_risks, penalty, algorithm, step)
        for commit in commits:  # the moving averages only take finite steps
            commit()
        return StepOutputs(
            risks={n: p.risk for n, p in passes.items()},
            accuracies={n: p.accuracy for n, p in passes.items()},
            penalty=penalty,
            logged=self._logged(plan, names, ordered_risks, passes, penalty),
        )

    def _resolve(self, algorithm: str | None, names: list[str]):
        """``(algorithm, Fishr variant or None)``, checked against the domains and the EMA."""
        if algorithm is None:
            if self.algorithm is None:
                raise ValueError(
                    f"pass algorithm= (one of {', '.join(ALGORITHMS)}) to forward or to the "
                    "constructor"
                )
            algorithm = self.algorithm
        algorithm = check_algorithm(algorithm)
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
        return algorithm, variant

    def _domain_pass(self, plan: _Plan, X: Tensor, y: Tensor, forward) -> _DomainPass:
        """One forward (``forward(X)``, i.e. ``model(X)``) of a domain: its risk, accuracy,
        variance and IRM terms."""
        loss_func = self.loss_func
        capture = plan.capture()
        n = X.shape[0]
        with LinearCapture(list(capture.values())) as cap:
            logits = forward(X)
        acts = cap.activations()
        risk = _risk(loss_func, logits, y)
        out = _DomainPass(risk=risk, accuracy=float(accuracy(logits.detach(), y)))
        deltas: dict[str, Tensor] = {}
        variant = plan.variant
        if variant is not None:
            deltas = _deltas(risk, plan.selected, acts, n, create_graph=True)
            v = linear_moments(plan.selected, acts, deltas, centered=variant.centered,
                               covariance=variant.covariance)  # fmt: skip
            out.variance = v / v.shape[0] if variant.covariance else v
        if plan.algorithm == "irm":
            out.irm = irm_penalty(logits, y, loss_func)
        elif plan.log_all:
            out.logged_irm = irm_penalty(logits.detach(), y, loss_func).detach()
        if plan.head:
            missing = [layer for layer in plan.head if layer.name not in deltas]
            if missing:
                deltas = dict(deltas)
                deltas.update(
                    _deltas(risk, missing, acts, n, create_graph=False, retain_graph=True)
                )
            with torch.no_grad():
                out.logged_variance = linear_moments(
                    plan.head,
                    {k: (acts[k][0].detach(), acts[k][1]) for k in capture},
                    {layer.name: deltas[layer.name].detach() for layer in plan.head},
                    centered=True,
                )
        return out

    def _penalty(self, plan, names, ordered_risks, passes, variances) -> Tensor:
        """The selected algorithm's penalty (0 for ERM)."""
        if plan.algorithm == "erm":
            return torch.zeros((), dtype=ordered_risks[0].dtype, device=ordered_risks[0].device)
        if plan.algorithm == "irm":
            return torch.stack([passes[n].irm for n in names]).mean()
        if plan.algorithm == "vrex":
            return vrex_penalty(ordered_risks, self.distance)
        return fishr_penalty([variances[n] for n in names], self.distance)

    def _logged(self, plan, names, ordered_risks, passes, penalty) -> dict[str, float]:
        """The penalty values logged this step (see :class:`StepOutputs`)."""
        algorithm = plan.algorithm
        logged: dict[str, float] = {}
        value = float(penalty.detach())
        if not plan.log_all:
            if algorithm != "erm":
                logged[algorithm] = value
            return logged
        logged["irm"] = (
            value
            if algorithm == "irm"
            else float(torch.stack([passes[n].logged_irm for n in names]).mean())
        )
        if plan.log_pairs:
            logged["vrex"] = (
                value
                if algorithm == "vrex"
                else float(vrex_penalty([r.detach() for r in ordered_risks], self.distance))
            )
            if algorithm == "fishr":
                logged["fishr"] = value
            elif plan.head:
                logged["fishr"] = float(
                    fishr_penalty([passes[n].logged_variance for n in names], self.distance)
                )
            if plan.variant is not None:
                logged[algorithm] = value
        return logged

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


__all__ = [
    "ALGORITHMS",
    "DISTANCES",
    "FISHR_VARIANTS",
    "PAIRWISE",
    "FishrVariant",
    "NonFiniteLossError",
    "Penalties",
    "StepOutputs",
    "check_algorithm",
    "check_distance",
    "domain_gradient_variance",
    "fishr_penalty",
    "irm_penalty",
    "vrex_penalty",
]
