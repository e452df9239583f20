r"""One domain's true risk :math:`R_e(\theta^* + x)` at displaced weights (and its gradient).

The empirical check (:mod:`landscape.inconsistency.checks`) and the risks at :math:`\theta^*`
of :func:`~landscape.inconsistency.score.inconsistency_score` use this one evaluator, so the
rise :math:`|R_A(\theta^*+x) - R_A(\theta^*)|` is measured with one arithmetic.

When the selected parameters all lie in the head (the submodule applied last, e.g.
``params="classifier"``), the head's input is cached once per domain and every risk runs the
head alone (:mod:`landscape.inconsistency.head`: checked to reproduce the model's output at
:math:`\theta^*`, else full forwards); :attr:`DisplacedRisk.evaluator` says which ran.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.func import functional_call

from landscape.distributed.shard import mean_over_ranks
from landscape.domains import as_batches, num_samples
from landscape.inconsistency.head import HeadCache, cache_head_inputs
from landscape.params import flatten, select_params, unflatten


class DisplacedRisk:
    r"""One domain's risk :math:`R_e(\theta^* + x)` and its gradient for displacements ``x``.

    ``x [D]`` moves only the parameters chosen by ``params`` (in their flattened order). The
    model is evaluated with :func:`torch.func.functional_call` on a displaced parameter
    dictionary, so its parameters, ``requires_grad`` flags and mode are never touched. The
    risk is the mean loss over all samples (batches weighted by their size), in the model's
    dtype, on the device of its parameters.

    ``head=True`` (default) evaluates the head alone on its cached input when that is exact
    (module docstring); ``False`` always runs full forwards. The choice is made at the first
    evaluation and described by :attr:`evaluator`.
    """

    def __init__(
        self, model, loss_func, data, params=None, *, head: bool = True, name: str = "domain"
    ):
        self.name = name
        self.model = model
        self.loss_func = loss_func
        self.batches = as_batches(data, name)
        selected = select_params(model, params)
        self.like = {n: p.detach() for n, p in selected.items()}
        self.fixed = {n: p.detach() for n, p in model.named_parameters() if n not in selected}
        self.fixed.update(dict(model.named_buffers()))
        self.theta0 = flatten(self.like)
        self.dtype = self.theta0.dtype
        self.device = self.theta0.device
        self.num_samples = num_samples(self.batches)
        self.evaluations = 0
        self._head: HeadCache | None = None
        self._evaluator: str | None = None if head else "full forward (head=False)"

    @property
    def evaluator(self) -> str:
        """Which evaluation runs: the head on its cached input, or full forwards (and why)."""
        if self._evaluator is None:
            _, params = self._params(None, requires_grad=True)
            batches = (self._batch(X, y) for X, y in self.batches)
            self._head, why = cache_head_inputs(self.model, params, list(self.like), batches)
            if self._head is not None:
                self._evaluator = f"head {self._head.name!r} on its cached input"
            else:
                self._evaluator = f"full forward ({why})"
        return self._evaluator

    def _outputs(self, x, requires_grad: bool):
        """Yield ``(theta, output, y, n)`` per batch at :math:`\theta^*+x` (``theta [D]``
        fresh per batch, so that each batch's graph is freed on its own)."""
        head = self._head if self.evaluator.startswith("head") else None
        if head is not None:
            for batch in head.batches:
                theta, params = self._params(x, requires_grad)
                yield theta, head.run(params, batch), batch[-1], int(batch[-1].shape[0])
            return
        for X, y in self.batches:
            X, y = self._batch(X, y)
            theta, params = self._params(x, requires_grad)
            yield theta, functional_call(self.model, params, (X,)), y, int(X.shape[0])

    def _params(self, x, requires_grad: bool = False):
        if x is None:
            theta = self.theta0.clone()
        else:
            dx = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
            theta = self.theta0 + dx
        if requires_grad:
            theta.requires_grad_(True)
        return theta, {**self.fixed, **unflatten(theta, self.like)}

    def _batch(self, X, y):
        X = X.to(self.device, self.dtype) if X.is_floating_point() else X.to(self.device)
        y = y.to(self.device, self.dtype) if y.is_floating_point() else y.to(self.device)
        return X, y

    def _check(self, value: float, x) -> None:
        """One ``ValueError`` naming the domain and where, if ``value`` is NaN or infinite."""
        if math.isfinite(value):
            return
        if x is None or not np.any(np.asarray(x)):
            raise ValueError(
                f"domain {self.name!r}: the risk at theta* (the unmoved weights) is {value}: "
                "the model's output is not finite there; check the weights and the data"
            )
        raise ValueError(
            f"domain {self.name!r}: the risk is {value} at weights displaced by "
            f"|x| = {float(np.linalg.norm(np.asarray(x, dtype=np.float64))):.3g} from theta*; "
            "use a smaller epsilon"
        )

    def value(self, x=None) -> float:
        """:math:`R_e(\\theta^* + x)` (``x=None``: at :math:`\\theta^*`)."""
        total = 0.0
        with torch.no_grad():
            for _, out, y, n in self._outputs(x, False):
                total += float(self.loss_func(out, y)) * n
        self.evaluations += 1
        (value,) = mean_over_ranks(self.batches, total / self.num_samples)  # torchrun: shards
        self._check(value, x)
        return value

    def value_and_grad(self, x=None) -> tuple[float, np.ndarray]:
        """:math:`R_e` and :math:`\\nabla R_e` ``[D]`` (float64 NumPy) at :math:`\\theta^*+x`."""
        total = 0.0
        grad = torch.zeros_like(self.theta0)
        for theta, out, y, n in self._outputs(x, True):
            loss = self.loss_func(out, y)
            w = n / self.num_samples
            (g,) = torch.autograd.grad(loss, theta, retain_graph=False, allow_unused=True)
            if g is not None:
                grad += w * g
            total += float(loss.detach()) * w
        self.evaluations += 1
        total, grad = mean_over_ranks(self.batches, total, grad)  # torchrun: over the shards
        self._check(total, x)
        return total, grad.detach().to("cpu", torch.float64).numpy()
