"""DomainBed's minibatch update rules for ERM, IRM, V-REx and Fishr.

One step takes one minibatch ``(x_e, y_e)`` per training domain ``e = 1..E``, forwards their
concatenation once through ``network = classifier(featurizer(x))`` (one batch, as DomainBed:
batch norms see every domain), builds the objective below, and takes one Adam step
(``lr``, ``weight_decay`` from the hparams). Facts from facebookresearch/DomainBed
``domainbed/algorithms.py`` (commit b93c22a; the Fishr authors' copy alexrame/fishr agrees),
rewritten here. With ``R_e`` the mean cross-entropy of domain ``e``, ``t`` = ``update_count``
(the number of updates done before this one), ``lambda`` / ``T`` the algorithm's penalty
weight and anneal step:

* **ERM**: ``L = CE(all logits, all labels)`` (mean over the concatenated batch). Logs
  ``loss``.
* **IRM** (IRMv1 with DomainBed's unbiased estimate): per domain,
  ``P_e = d CE(s z_e[0::2], y_e[0::2])/ds * d CE(s z_e[1::2], y_e[1::2])/ds`` at ``s = 1``
  (the even and odd samples); ``nll = (1/E) sum_e R_e``, ``P = (1/E) sum_e P_e``,
  ``L = nll + w_t P`` with ``w_t = lambda if t >= T else 1.0`` (weight **1**, not 0, before
  the anneal step; no division of ``L``). Logs ``loss``, ``nll``, ``penalty``.
* **V-REx**: ``R = (R_1..R_E)``, ``L = mean(R) + w_t mean((R - mean(R))^2)`` with the same
  ``w_t`` (1.0 before ``T``). Logs ``loss``, ``penalty`` and, as DomainBed does, ``nll`` =
  the **last** domain's ``R_E`` (not the mean).
* **Fishr** (head only, DomainBed's ``mean`` distance): per-sample gradients ``g_i`` of the
  per-sample losses ``l_i`` with respect to every classifier parameter (weights and
  biases of each ``nn.Linear``; three layers with ``nonlinear_classifier``); per domain
  the biased variance ``v_e = (1/n_e) sum_{i in e} (g_i - gbar_e)^2`` ``[D]``; a moving
  average per domain (DomainBed's ``MovingAverage`` with ``oneminusema_correction``)

  .. math::

      m_{e,t} = \\text{ema}\\, \\mathrm{sg}(m_{e,t-1}) + (1 - \\text{ema})\\, v_{e,t},
      \\quad m_{e,-1} = 0, \\qquad \\hat v_{e,t} = m_{e,t} / (1 - \\text{ema}),

  (so ``hat v`` has the gradient of ``v_e`` but a value up to ``1/(1-ema)`` times larger),
  ``P = (1/E) sum_e (1/D) sum_k (hat v_{e,k} - mean_e' hat v_{e',k})^2``,
  ``L = CE(all) + w_t P`` with ``w_t = lambda if t >= T else 0``. Logs ``loss``, ``nll``
  (= ``CE(all)``), ``penalty``. The averages are updated every step, before ``T`` too.
  The per-sample moments come from one backward to the head's outputs
  (:mod:`landscape.persample`; DomainBed uses BackPACK), differentiable into the whole
  network; before ``T`` (weight 0) they are computed without a graph, which changes no
  update. **Unlike DomainBed**, whose averages live outside the state dict and restart from
  zero when a run is resumed, ``ema_variance`` ``[E, D]`` is a buffer: it is saved and
  restored with the state dict.

Adam is re-created (fresh moments) at the anneal step, as DomainBed does: IRM and V-REx
when ``t == T``, Fishr when ``t == T != 0``. Every algorithm has the buffer ``update_count``
(``int64 [1]``, as DomainBed's; DomainBed's ERM has none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.models.domainbed import DomainBedNetwork, plain
from landscape.persample import LinearCapture, linear_moments, select_linear_layers
from landscape.training.fishr import _deltas, fishr_penalty
from landscape.training.minibatch.hparams import ALGORITHMS, DOMAINBED_NAMES, algorithm_key
from landscape.training.penalties import vrex_penalty

__all__ = ["ALGORITHMS", "ERM", "IRM", "VREx", "Fishr", "MinibatchAlgorithm", "build_algorithm"]


class MinibatchAlgorithm(nn.Module):
    """ERM, and the skeleton of the penalised algorithms: one DomainBed update per call.

    Args:
        input_shape: one input's shape (``(D,)``, ``(C, 28, 28)`` or ``(C, 224, 224)``).
        num_classes: ``K``.
        num_domains: training domains ``E`` (minibatches per update).
        hparams: DomainBed's hparams (:mod:`landscape.training.minibatch.hparams`); needs
            ``lr``, ``weight_decay`` and the algorithm's own (:attr:`required`).

    Attributes:
        network: the :class:`~landscape.models.domainbed.DomainBedNetwork` predicting.
        optimizer: the Adam optimizer (replaced at the anneal step).
        update_count: buffer ``int64 [1]``, updates done.
    """

    key = "erm"
    #: Hparams the algorithm reads besides the network's.
    required: tuple[str, ...] = ("lr", "weight_decay")

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        num_domains: int,
        hparams: Mapping[str, Any],
    ):
        super().__init__()
        self.hparams = {str(k): plain(v) for k, v in hparams.items()}
        lacking = [k for k in self.required if k not in self.hparams]
        if lacking:
            raise ValueError(
                f"{DOMAINBED_NAMES[self.key]} needs the hparams {lacking}; start from "
                "landscape.training.minibatch.hparams.default_hparams"
            )
        if isinstance(num_domains, bool) or int(num_domains) != num_domains or num_domains < 1:
            raise ValueError(f"num_domains must be a positive integer, got {num_domains!r}")
        self.num_domains = int(num_domains)
        self.network = DomainBedNetwork(input_shape, num_classes, self.hparams)
        self.register_buffer("update_count", torch.zeros(1, dtype=torch.int64))
        self.optimizer = self.new_optimizer()

    @property
    def featurizer(self) -> nn.Module:
        """The network's featurizer."""
        return self.network.featurizer

    @property
    def classifier(self) -> nn.Module:
        """The network's head."""
        return self.network.classifier

    def new_optimizer(self) -> torch.optim.Adam:
        """A fresh Adam on every network parameter (featurizer, then head)."""
        return torch.optim.Adam(
            self.network.parameters(),
            lr=float(self.hparams["lr"]),
            weight_decay=float(self.hparams["weight_decay"]),
        )

    def predict(self, x: Tensor) -> Tensor:
        """Logits ``[N, K]``."""
        return self.network(x)

    def penalty_weight(self, count: int) -> float:
        """The penalty weight of the update after ``count`` updates (ERM: none)."""
        return 0.0

    def resets_optimizer(self, count: int) -> bool:
        """Whether the update after ``count`` updates starts with a fresh Adam."""
        return False

    def objective(
        self, x: Tensor, y: Tensor, sizes: list[int], count: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``(L, logged tensors)`` for the concatenated batch ``x`` ``[N, ...]``, ``y`` ``[N]``
        of domains of ``sizes`` samples."""
        loss = F.cross_entropy(self.network(x), y)
        return loss, {"loss": loss}

    def update(
        self, minibatches: Sequence[tuple[Tensor, Tensor]], step: int | None = None
    ) -> dict[str, float]:
        """One update on one minibatch ``(x_e, y_e)`` per training domain, in domain order.

        Args:
            minibatches: ``E`` pairs, ``x_e`` ``[n_e, *input_shape]``, ``y_e`` ``[n_e]`` int64.
            step: the caller's step number; when given it must equal ``update_count`` (a
                check that a resumed run restored the state it should have).

        Returns:
            DomainBed's logged values as floats (see the module docstring).

        Raises:
            ValueError: not ``E`` minibatches, an empty one, mismatched sizes, or ``step``
                differing from ``update_count``.
        """
        x, y, sizes = self._concatenate(minibatches)
        count = int(self.update_count.item())
        if step is not None and int(step) != count:
            raise ValueError(
                f"update(step={step}) but this {DOMAINBED_NAMES[self.key]} has done {count} "
                "updates; restore its state (load_training_state) before resuming at that step"
            )
        with torch.enable_grad():
            loss, logged = self.objective(x, y, sizes, count)
            if self.resets_optimizer(count):
                self.optimizer = self.new_optimizer()
            self.optimizer.zero_grad()
            loss.backward()
        self.optimizer.step()
        self.update_count += 1
        return {name: float(value.item()) for name, value in logged.items()}

    def _concatenate(self, minibatches) -> tuple[Tensor, Tensor, list[int]]:
        if isinstance(minibatches, Tensor) or not isinstance(minibatches, Sequence):
            raise TypeError("minibatches must be a list of (x, y) pairs, one per training domain")
        if len(minibatches) != self.num_domains:
            raise ValueError(
                f"got {len(minibatches)} minibatches but this algorithm was built for "
                f"{self.num_domains} training domains; pass one (x, y) per training domain"
            )
        sizes = []
        for i, pair in enumerate(minibatches):
            x, y = pair
            if x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ValueError(
                    f"minibatch {i}: {x.shape[0]} inputs and {y.shape[0]} labels; pass equal, "
                    "non-zero counts"
                )
            sizes.append(int(x.shape[0]))
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        return x, y, sizes

    def load_training_state(
        self, model_state: Mapping[str, Tensor], optimizer_state: Mapping[str, Any] | None
    ) -> None:
        """Restore a saved ``state_dict()`` and ``optimizer.state_dict()`` to resume.

        The optimizer is re-created, then given the saved state: whether the saved Adam
        was the first one or the one re-created at the anneal step (``update_count`` past
        ``T``), the restored Adam holds that Adam's moments, and an ``update_count`` equal to
        ``T`` still re-creates it on the next update, as an uninterrupted run would.
        """
        self.load_state_dict(model_state)
        self.optimizer = self.new_optimizer()
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)


ERM = MinibatchAlgorithm


class _Annealed(MinibatchAlgorithm):
    """A penalised algorithm: weight ``w_t`` and an Adam reset at ``t == T``."""

    lambda_key = ""
    anneal_key = ""
    #: ``w_t`` before the anneal step.
    weight_before = 1.0

    def penalty_weight(self, count: int) -> float:
        """``lambda`` once ``count >= T``, :attr:`weight_before` until then."""
        if count >= int(self.hparams[self.anneal_key]):
            return float(self.hparams[self.lambda_key])
        return self.weight_before

    def resets_optimizer(self, count: int) -> bool:
        """``count == T`` (DomainBed's IRM and V-REx)."""
        return count == int(self.hparams[self.anneal_key])


def irm_halves_penalty(logits: Tensor, y: Tensor) -> Tensor:
    """DomainBed's ``_irm_penalty``: the product of the scale gradients of the two halves.

    .. math::

        P = \\frac{\\partial}{\\partial s} \\mathrm{CE}(s z_{0::2}, y_{0::2}) \\cdot
        \\frac{\\partial}{\\partial s} \\mathrm{CE}(s z_{1::2}, y_{1::2}) \\Big|_{s=1}

    (an unbiased estimate of IRMv1's squared gradient), differentiable in ``logits``.
    """
    if logits.shape[0] < 2:
        raise ValueError("IRM splits each minibatch into halves; give every domain >= 2 samples")
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    grads = [
        torch.autograd.grad(
            F.cross_entropy(logits[h::2] * scale, y[h::2]), scale, create_graph=True
        )[0]
        for h in (0, 1)
    ]
    return grads[0] * grads[1]


class IRM(_Annealed):
    """DomainBed's IRM: ``nll + w_t * mean_e P_e`` (see the module docstring)."""

    key = "irm"
    required = ("lr", "weight_decay", "irm_lambda", "irm_penalty_anneal_iters")
    lambda_key, anneal_key = "irm_lambda", "irm_penalty_anneal_iters"

    def objective(self, x, y, sizes, count):
        """``nll = (1/E) sum_e R_e``, ``P = (1/E) sum_e P_e``, ``L = nll + w_t P``."""
        logits = self.network(x)
        nll, penalty = 0.0, 0.0
        for z_e, y_e in zip(logits.split(sizes), y.split(sizes), strict=True):
            nll = nll + F.cross_entropy(z_e, y_e)
            penalty = penalty + irm_halves_penalty(z_e, y_e)
        nll, penalty = nll / len(sizes), penalty / len(sizes)
        loss = nll + self.penalty_weight(count) * penalty
        return loss, {"loss": loss, "nll": nll, "penalty": penalty}


class VREx(_Annealed):
    """DomainBed's V-REx: ``mean(R) + w_t * mean((R - mean R)^2)``."""

    key = "vrex"
    required = ("lr", "weight_decay", "vrex_lambda", "vrex_penalty_anneal_iters")
    lambda_key, anneal_key = "vrex_lambda", "vrex_penalty_anneal_iters"

    def objective(self, x, y, sizes, count):
        """Risks ``R_e``; logs DomainBed's ``nll``, the last domain's risk."""
        logits = self.network(x)
        risks = [
            F.cross_entropy(z_e, y_e)
            for z_e, y_e in zip(logits.split(sizes), y.split(sizes), strict=True)
        ]
        mean = torch.stack(risks).mean()
        penalty = vrex_penalty(risks, "mean") if len(risks) > 1 else mean * 0.0
        loss = mean + self.penalty_weight(count) * penalty
        return loss, {"loss": loss, "nll": risks[-1], "penalty": penalty}


class Fishr(_Annealed):
    """DomainBed's Fishr on the head: ``CE + w_t * P`` with ``w_t = 0`` before ``T``.

    Buffers: ``update_count`` and ``ema_variance`` ``[E, D]`` (the moving averages
    ``m_e`` of the head's gradient variances, saved and restored with the state dict,
    which DomainBed does not do).
    """

    key = "fishr"
    required = ("lr", "weight_decay", "lambda", "penalty_anneal_iters", "ema")
    lambda_key, anneal_key = "lambda", "penalty_anneal_iters"
    weight_before = 0.0

    def __init__(self, input_shape, num_classes, num_domains, hparams):
        super().__init__(input_shape, num_classes, num_domains, hparams)
        ema = float(self.hparams["ema"])
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"Fishr's ema must be in [0, 1), got {ema}")
        self.head = select_linear_layers(self.network, "classifier")
        dim = sum(layer.numel for layer in self.head)
        self.register_buffer("ema_variance", torch.zeros(self.num_domains, dim))

    def resets_optimizer(self, count: int) -> bool:
        """``count == T != 0`` (DomainBed's Fishr)."""
        return count == int(self.hparams[self.anneal_key]) != 0

    def objective(self, x, y, sizes, count):
        """``CE(all)``, the head's per-domain variances from one backward, the averages."""
        weight = self.penalty_weight(count)
        with LinearCapture(self.head) as cap:
            logits = self.network(x)
        acts = cap.activations()
        nll = F.cross_entropy(logits, y)
        graph = weight != 0.0
        deltas = _deltas(nll, self.head, acts, x.shape[0], create_graph=graph, retain_graph=True)
        with torch.set_grad_enabled(graph):
            if not graph:
                acts = {k: (a.detach(), p) for k, (a, p) in acts.items()}
            penalty = fishr_penalty(self._averaged(acts, deltas, sizes), "mean")
        loss = nll + weight * penalty  # before T: weight 0 and a penalty without a graph
        return loss, {"loss": loss, "nll": nll, "penalty": penalty}

    def _averaged(self, acts, deltas, sizes) -> list[Tensor]:
        """``hat v_e = m_e / (1 - ema)`` per domain; stores ``m_e`` (detached)."""
        ema = float(self.hparams["ema"])
        out, start = [], 0
        for e, n in enumerate(sizes):
            rows = slice(start, start + n)
            start += n
            acts_e = {k: (a[rows], p) for k, (a, p) in acts.items()}
            deltas_e = {k: d[rows] for k, d in deltas.items()}
            v = linear_moments(self.head, acts_e, deltas_e, centered=True)
            m = ema * self.ema_variance[e].to(v.dtype) + (1.0 - ema) * v
            self.ema_variance[e] = m.detach()
            out.append(m / (1.0 - ema))
        return out


#: The algorithm class of each key.
CLASSES: dict[str, type[MinibatchAlgorithm]] = {
    "erm": ERM,
    "irm": IRM,
    "vrex": VREx,
    "fishr": Fishr,
}


def build_algorithm(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    num_domains: int,
    hparams: Mapping[str, Any],
) -> MinibatchAlgorithm:
    """The algorithm ``name`` (ours, ``"fishr"``, or DomainBed's, ``"Fishr"``).

    Example:
        >>> from landscape.training.minibatch.hparams import default_hparams
        >>> hparams = default_hparams("erm", "RotatedMNIST")
        >>> algo = build_algorithm("ERM", (1, 28, 28), 10, 5, hparams)
        >>> type(algo.network).__name__, int(algo.update_count)
        ('DomainBedNetwork', 0)
    """
    key = algorithm_key(name)
    if key not in CLASSES:
        raise ValueError(f"algorithm {name!r} is not available; choose from {', '.join(CLASSES)}")
    return CLASSES[key](input_shape, num_classes, num_domains, hparams)
