"""Risk and accuracy of each domain at the points of one grid row.

At a point :math:`\\theta = \\theta_0 + \\alpha\\delta + \\beta\\eta` (parameters from
:class:`landscape.surface.plane.Plane`), the risk of a domain with batches
:math:`B_1, \\dots, B_K` of :math:`N` samples in all is

.. math::

    R_e(\\theta) = \\sum_{k} w_k\\, \\ell_k(\\theta), \\qquad
    w_k = \\begin{cases} |B_k| / N & \\text{mean-reduced loss} \\\\
    1 / N & \\text{sum-reduced loss} \\end{cases}

(the mean loss over all samples either way), and the accuracy the fraction of correct
predictions (sign of a single logit, argmax otherwise). A point costs one forward pass per
batch through :func:`torch.func.functional_call` (the model is never modified). The
:class:`Evaluator` combines, as configured and passed explicitly at each call:

* the plain path;
* the first-layer shortcut (:class:`landscape.surface.first_layer.FirstLayer`, given the
  domain's precomputed products and the point's coordinates; one point per call forms
  :math:`Z_0 + \\alpha Z_1` once per row);
* batch-norm statistics recomputed at the point
  (:func:`landscape.surface.batchnorm.recompute_batch_norm`);
* several points per call (:func:`torch.func.vmap` over stacked parameters), which pays on
  a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from landscape.curvature import train_mode_named_modules
from landscape.surface.batchnorm import recompute_batch_norm
from landscape.surface.data import Domain
from landscape.surface.first_layer import FirstLayer
from landscape.surface.plane import Plane

__all__ = ["Evaluator", "loss_reduction", "wants_accuracy", "check_mode"]


def check_mode(model: nn.Module) -> None:
    """Raise a ``ValueError`` if a module that behaves differently in train mode is in it.

    The rule is the package's one (:func:`landscape.curvature.train_mode_named_modules`):
    dropout with ``p > 0`` (also inside recurrent layers and attention) and normalisation
    layers that track running statistics; a model in train mode without such modules is
    accepted (instance norm, or batch norm without running statistics, use the batch's
    statistics in both modes)."""
    culprits = train_mode_named_modules(model)
    if culprits:
        name, module = culprits[0]
        more = f" (and {len(culprits) - 1} more)" if len(culprits) > 1 else ""
        raise ValueError(
            f"module {name or type(module).__name__!r} ({type(module).__name__}) is in "
            f"training mode{more}; loss surfaces are evaluated in eval mode: call model.eval() "
            "first (batch norm then uses the model's running statistics; see "
            "batch_norm='recompute')"
        )


def loss_reduction(loss_func: nn.Module) -> str:
    """``"mean"`` or ``"sum"``; a one-line ``ValueError`` for any other reduction."""
    red = getattr(loss_func, "reduction", "mean")
    if red not in ("mean", "sum"):
        raise ValueError(f"loss reduction {red!r} is not supported; use reduction='mean' or 'sum'")
    return red


def wants_accuracy(loss_func: nn.Module, accuracy: bool | None) -> bool:
    """``accuracy`` if given, else whether ``loss_func`` is a classification loss."""
    if accuracy is not None:
        return bool(accuracy)
    return isinstance(loss_func, nn.BCEWithLogitsLoss | nn.CrossEntropyLoss | nn.NLLLoss)


def _num_correct(logits: Tensor, y: Tensor) -> Tensor:
    """Number of correct predictions (sign of a single logit, argmax otherwise), float64."""
    if logits.shape[-1] == 1:
        hits = (logits > 0).to(y.dtype) == y
    else:
        hits = logits.argmax(dim=-1) == y
    return hits.sum(dtype=torch.float64)


@dataclass(frozen=True)
class Evaluator:
    """Risk and accuracy of a domain at grid points (see the module docstring).

    Attributes:
        model: the network (only read; modes of recomputed batch-norm layers are restored).
        loss_func: the loss.
        reduction: its reduction, ``"mean"`` or ``"sum"``.
        accuracy: whether accuracies are computed.
        first_layer: the first-layer shortcut, or ``None`` (then domains need no pieces).
        batch_norm: the batch-norm layers whose statistics are recomputed at each point
            (empty: the model's running statistics).
    """

    model: nn.Module
    loss_func: nn.Module
    reduction: str
    accuracy: bool
    first_layer: FirstLayer | None = None
    batch_norm: Sequence[nn.Module] = ()

    def _forward(self, params: dict[str, Tensor], X: Tensor, pieces, a, b) -> Tensor:
        if self.first_layer is None:
            return functional_call(self.model, params, (X,))
        with self.first_layer.inject(pieces, a, b):
            return functional_call(self.model, params, (X,))

    def risk(self, params: dict[str, Tensor], domain: Domain, a, b) -> tuple[Tensor, Tensor]:
        """``(risk, accuracy)`` (0-d tensors; accuracy 0 when not computed) at the point
        ``(a, b)`` whose parameters are ``params``."""
        if self.batch_norm:
            buffers = recompute_batch_norm(self.model, self.batch_norm, params, domain.batches)
            params = {**params, **buffers}
        if self.first_layer is not None:
            params = self.first_layer.params(params)
        total = domain.num_samples
        loss = acc = 0.0
        for i, (X, y) in enumerate(domain.batches):
            pieces = domain.pieces[i] if domain.pieces is not None else None
            out = self._forward(params, X, pieces, a, b)
            weight = X.shape[0] / total if self.reduction == "mean" else 1.0 / total
            loss = loss + self.loss_func(out, y) * weight
            if self.accuracy:
                acc = acc + _num_correct(out, y)
        acc = acc / total if self.accuracy else acc
        return loss, torch.as_tensor(acc, device=loss.device)

    def point(self, plane: Plane, domain: Domain, alpha: float, beta: float):
        """``(risk [1], accuracy [1])`` at one point, parameters built with fused adds."""
        a, b = float(alpha), float(beta)
        loss, acc = self.risk(plane.at(a, b), domain, a, b)
        return loss.reshape(1), acc.reshape(1)

    def points(
        self, plane: Plane, domain: Domain, alpha: float, betas: np.ndarray
    ) -> tuple[Tensor, Tensor]:
        """``(risks [P], accuracies [P])`` at the points :math:`(\\alpha, \\beta_j)` in one
        :func:`torch.func.vmap` call over the stacked moving parameters (the parameters a
        fixed origin pins are shared, not mapped over)."""
        a = torch.full((len(betas),), float(alpha), dtype=plane.dtype, device=plane.device)
        b = torch.as_tensor(betas, dtype=plane.dtype, device=plane.device)

        def one(p, aa, bb):
            return self.risk({**plane.fixed, **p}, domain, aa, bb)

        return vmap(one, in_dims=(0, 0, 0))(plane.stacked(a, b), a, b)

    def row(
        self,
        plane: Plane,
        domains: Mapping[str, Domain],
        alpha: float,
        betas: np.ndarray,
        points_per_call: int,
        bar,
    ) -> dict[str, np.ndarray]:
        """One row of the grid: ``{"loss/<domain>": [B], "acc/<domain>": [B]}``.

        Raises:
            ValueError: a NaN loss (names the domain and the point).
        """
        out = {}
        for name, domain in domains.items():
            if self.first_layer is not None and points_per_call == 1:
                domain = self.first_layer.at_row(domain, float(alpha))  # Z_0 + alpha Z_1
            parts = []  # (loss, accuracy) tensors, copied to the host once per row
            for start in range(0, len(betas), points_per_call):
                stop = min(start + points_per_call, len(betas))
                if points_per_call == 1:
                    parts.append(self.point(plane, domain, alpha, betas[start]))
                else:
                    parts.append(self.points(plane, domain, alpha, betas[start:stop]))
                bar.update(stop - start)
            both = torch.stack([torch.cat([p[i].double() for p in parts]) for i in (0, 1)])
            losses, accs = both.cpu().numpy()
            accs = accs if self.accuracy else np.full(len(betas), np.nan)
            bad = np.flatnonzero(np.isnan(losses))
            if bad.size:
                raise ValueError(
                    f"the loss of domain {name!r} is NaN at (alpha, beta) = "
                    f"({alpha:g}, {betas[bad[0]]:g}); check the model and data or shrink "
                    "the grid"
                )
            out[f"loss/{name}"] = losses
            if self.accuracy:
                out[f"acc/{name}"] = accs
        return out
