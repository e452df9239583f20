"""The training objective of one step and its history row.

At step ``t`` the objective is

.. math::

    \\mathcal{L}_t(\\theta) = \\frac{1}{|\\mathcal{E}|}\\sum_{e\\in\\mathcal{E}} R_e(\\theta)
        + \\ell_2 \\sum_{w\\in\\theta} \\|w\\|_2^2 + \\lambda_t\\, P(\\theta)

with ``P`` the selected penalty (0 for ERM) and two schedules for ``λ_t``
(:meth:`landscape.training.config.ProtocolConfig.penalty_weight_at`):

* ``"script"`` (the Colored MNIST script): ``λ_t = 1`` before ``anneal_step`` and
  ``penalty_weight`` from then on; whenever ``λ_t > 1`` the **whole** objective is divided
  by ``λ_t`` (to keep gradient magnitudes reasonable); Adam is never reset.
* ``"domainbed"`` (DomainBed's Fishr): ``λ_t = 0`` before ``anneal_step`` and
  ``penalty_weight`` from then on, no division; Adam is re-created at the switch.

ERM never has a penalty (``λ_t = 0``), whatever the schedule.

The history row holds ``step``, ``penalty_weight``, ``loss`` (the objective as optimised,
divided when the script schedule says so), ``risk``, ``weight_norm``, ``penalty``,
``loss/<domain>`` and ``acc/<domain>`` for every training and test domain, and
``penalty/<name>`` for every logged penalty. The test domains' columns are NaN in a row that
does not evaluate them (``test=False``: nothing trains on them, so skipping them changes no
other number).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.losses import accuracy
from landscape.training.config import ProtocolConfig
from landscape.training.penalties import NonFiniteLossError, Penalties, StepOutputs

Batches = Mapping[str, tuple[Tensor, Tensor]]


@dataclass
class Objective:
    """The objective of one (algorithm, restart) run, evaluated at the model's weights.

    Attributes:
        protocol: the penalty weight schedule, ``l2`` and ``log_all``.
        algorithm: the algorithm trained.
        model, loss_func, penalties: the network, its loss and its :class:`Penalties`.
        train_batches, test_batches: ``{domain: (X, y)}`` full batches.
        where: ``"algorithm 'fishr', restart 2"``, for error messages.
    """

    protocol: ProtocolConfig
    algorithm: str
    model: nn.Module
    loss_func: nn.Module
    penalties: Penalties
    train_batches: Batches
    test_batches: Batches
    where: str

    def __call__(
        self, step: int, log_all: bool | None = None, test: bool = True
    ) -> tuple[Tensor, dict[str, float]]:
        """``(loss, row)`` at the current weights for update ``step``: the differentiable
        loss (already divided by ``λ_t`` when the script schedule says so) and the row
        (with the test domains evaluated when ``test``, else NaN there).

        Raises:
            NonFiniteLossError: a risk or the penalty is NaN or infinite (the total is
                checked by :meth:`check_finite`).
        """
        protocol = self.protocol
        log_all = protocol.log_all if log_all is None else log_all
        weight = protocol.penalty_weight_at(self.algorithm, step)
        try:
            out = self.penalties(self.train_batches, self.algorithm, log_all=log_all, step=step)
        except NonFiniteLossError as err:
            where = "in the penalty" if err.domain is None else f"in domain {err.domain!r}"
            self.raise_non_finite(step, err.domain, where)
        risk = torch.stack([out.risks[d] for d in self.train_batches]).mean()
        weight_norm = torch.stack([p.square().sum() for p in self.model.parameters()]).sum()
        loss = risk + protocol.l2 * weight_norm
        if weight != 0:
            loss = loss + weight * out.penalty
        if protocol.schedule == "script" and weight > 1:
            loss = loss / weight
        return loss, self._row(step, weight, loss, risk, weight_norm, out, test)

    def _row(
        self, step, weight, loss, risk, weight_norm, out: StepOutputs, test: bool = True
    ) -> dict[str, float]:
        row: dict[str, float] = {
            "step": float(step),
            "penalty_weight": weight,
            "loss": float(loss.detach()),
            "risk": float(risk.detach()),
            "weight_norm": float(weight_norm.detach()),
            "penalty": float(torch.as_tensor(out.penalty).detach()),
        }
        for d in self.train_batches:
            row[f"loss/{d}"] = float(out.risks[d].detach())
            row[f"acc/{d}"] = float(out.accuracies[d])
        with torch.no_grad():
            for d, (X, y) in self.test_batches.items():
                if not test:
                    row[f"loss/{d}"] = row[f"acc/{d}"] = math.nan
                    continue
                logits = self.model(X)
                row[f"loss/{d}"] = float(self.loss_func(logits, y))
                row[f"acc/{d}"] = float(accuracy(logits, y))
        for name, value in out.logged.items():
            row[f"penalty/{name}"] = float(value)
        return row

    def raise_non_finite(self, step: int, domain: str | None, where: str) -> None:
        """Raise the one-line :class:`NonFiniteLossError` of this run at ``step``."""
        raise NonFiniteLossError(
            f"non-finite loss {where} ({self.where}, step {step}); lower the learning rate "
            "(--lr) or the penalty weight (--penalty-weight), or check the data for NaN / inf",
            domain=domain,
        ) from None

    def check_finite(self, row: dict[str, float], step: int) -> None:
        """Raise :class:`NonFiniteLossError` if the row's total objective is not finite (the
        risks and the penalty itself were checked by :class:`Penalties`)."""
        if math.isfinite(row["loss"]):
            return
        if not math.isfinite(row["weight_norm"]):
            self.raise_non_finite(step, None, "in the weights (their squared norm is not finite)")
        self.raise_non_finite(step, None, "in the total objective (penalty weight × penalty)")


def split_batches(
    batches: Batches, train_domains: Sequence[str], test_domains: Sequence[str]
) -> tuple[dict, dict]:
    """``(train, test)`` sub-mappings of ``batches``; one-line error on a missing domain."""
    missing = [d for d in list(train_domains) + list(test_domains) if d not in batches]
    if missing:
        raise ValueError(
            f"no data for domain {missing[0]!r}; batches has {', '.join(map(str, batches))}"
        )
    return {d: batches[d] for d in train_domains}, {d: batches[d] for d in test_domains}
