r"""The output head's cached input: displaced risks without re-running the featurizer.

When every selected parameter lies inside one submodule ``h`` (the head, e.g.
``model.classifier``) whose output **is** the model's output, the model is
:math:`f(x; \theta) = h(\phi(x); \theta_h)` and the featurizer output :math:`\phi(x)` does not
depend on the selected parameters. So for a displacement ``x`` of the selected parameters

.. math::

    R_e(\theta^* + x) = \frac1N \sum_i \ell\big(h(\phi(x_i); \theta_h^* + x), y_i\big),

and :math:`\phi(x_i)` can be computed once per domain (a forward hook at :math:`\theta^*`,
batch by batch) and every later risk, or its gradient, costs one pass of ``h`` alone
(:func:`torch.func.functional_call`). Memory: the head's input, e.g. ``N × 390`` floats, at
most :data:`HEAD_CACHE_BYTES` per domain (beyond, full forwards: one batch in memory).

Nothing is trusted blindly; :func:`cache_head_inputs` uses the head only when, on every batch
of the domain's forward pass at :math:`\theta^*` with the selected parameters requiring grad,

* the head ran exactly once and its output tensor is the model's output (unchanged in place):
  nothing is applied after it;
* no tensor of its input requires grad: no selected parameter is used before it (tied
  weights included);
* running the head alone on the cached input reproduces the model's output (to
  ``16·eps·max|output|``).

Otherwise it returns the reason, and the caller evaluates full forwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

#: relative tolerance (in units of the dtype's eps times the output's largest magnitude)
#: within which the head alone must reproduce the model's output
REPRODUCE_ULPS = 16

#: largest cache of head inputs (bytes, per domain); a larger domain (e.g. a DataLoader
#: streaming more than memory holds) is evaluated by full forwards, one batch at a time
HEAD_CACHE_BYTES = 2**30


@dataclass
class HeadCache:
    """One domain's cached head inputs and what the head needs to run on them.

    Attributes:
        name: the head's module name in the model (e.g. ``"classifier"``).
        module: the head.
        batches: ``[(args, kwargs, y)]``: the head's inputs (detached) and the targets.
        num_samples: samples over all batches.
    """

    name: str
    module: nn.Module
    batches: list[tuple[tuple, dict, Tensor]]
    num_samples: int

    def local(self, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
        """The head's own entries of a model-wide ``{name: tensor}`` mapping, renamed."""
        prefix = self.name + "."
        return {n[len(prefix) :]: t for n, t in tensors.items() if n.startswith(prefix)}

    def run(self, tensors: dict[str, Tensor], batch: tuple[tuple, dict, Tensor]) -> Tensor:
        """The head's output on one cached ``batch`` with the model-wide ``tensors``."""
        args, kwargs, _ = batch
        return functional_call(self.module, self.local(tensors), args, kwargs)


def head_candidates(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Module names containing every selected parameter, deepest first (the root excluded)."""
    parts = [n.split(".")[:-1] for n in names]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if any(p != level[0] for p in level):
            break
        common.append(level[0])
    return [".".join(common[:k]) for k in range(len(common), 0, -1)]


def cache_head_inputs(
    model: nn.Module,
    tensors: dict[str, Tensor],
    names: Sequence[str],
    batches: Iterable[tuple[Tensor, Tensor]],
) -> tuple[HeadCache | None, str]:
    """Cache the head's input per batch, or say why the head cannot be evaluated alone.

    Args:
        model: the network (eval mode).
        tensors: the ``functional_call`` mapping at :math:`\\theta^*`, the selected entries
            requiring grad (and nothing else).
        names: the selected parameter names.
        batches: the domain's ``(X, y)`` on the parameters' device and dtype.

    Returns:
        ``(cache, "")`` or ``(None, reason)``; the conditions are in the module docstring.
    """
    candidates = head_candidates(model, names)
    if not candidates:
        return None, "the selection is not inside one submodule"
    alive = {c: model.get_submodule(c) for c in candidates}
    cached: dict[str, list] = {c: [] for c in candidates}
    held = dict.fromkeys(candidates, 0)
    reasons: dict[str, str] = {}
    total = 0
    for X, y in batches:
        seen = _forward_recording(model, tensors, X, alive)
        for c in list(alive):
            why = _usable(seen[c][0], seen[c][1])
            if not why:
                why = _reproduces(alive[c], c, tensors, seen[c][0], seen[c][1])
            if not why:
                args, kwargs = _detached(seen[c][0][0])
                held[c] += sum(t.numel() * t.element_size() for t in _tensors_in(args, kwargs))
                if held[c] > HEAD_CACHE_BYTES:
                    why = f"its cached input would exceed {HEAD_CACHE_BYTES / 2**30:g} GiB"
            if why:
                reasons[c] = why
                del alive[c], cached[c]
            else:
                cached[c].append((args, kwargs, y))
        total += int(y.shape[0])
        if not alive:
            break
    if not alive:
        deepest = candidates[0]
        return None, f"head {deepest!r}: {reasons[deepest]}"
    name = next(c for c in candidates if c in alive)
    return HeadCache(name, alive[name], cached[name], total), ""


def _forward_recording(model, tensors, X, modules: dict[str, nn.Module]) -> dict:
    """One forward at θ*; per module ``(calls [(args, kwargs, output, version)], out)``."""
    calls: dict[str, list] = {c: [] for c in modules}
    handles = []
    for c, module in modules.items():

        def hook(mod, args, kwargs, output, record=calls[c]):
            record.append((args, kwargs, output, getattr(output, "_version", None)))

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.enable_grad():  # only the selected leaves require grad
            out = functional_call(model, tensors, (X,))
    finally:
        for handle in handles:
            handle.remove()
    return {c: (calls[c], out) for c in modules}


def _tensors_in(args: tuple, kwargs: dict) -> list[Tensor]:
    return [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor)]


def _usable(calls: list, out) -> str:
    """Why the recorded head calls rule the head out (``""`` if they do not)."""
    if len(calls) != 1:
        return f"it ran {len(calls)} times in one forward"
    args, kwargs, output, version = calls[0]
    if not isinstance(output, Tensor) or out is not output or output._version != version:
        return "its output is not the model's output (something is applied after it)"
    if any(t.requires_grad for t in _tensors_in(args, kwargs)):
        return "its input depends on the selected parameters"
    return ""


def _reproduces(module, name, tensors, calls: list, out: Tensor) -> str:
    """Whether the head alone on the recorded input gives the model's output."""
    head = HeadCache(name, module, [], 0)
    with torch.no_grad():
        again = head.run(tensors, (*_detached(calls[0]), out))
    ref = out.detach()
    if not isinstance(again, Tensor) or again.shape != ref.shape or again.dtype != ref.dtype:
        return "running it alone does not give an output like the model's"
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    tol = REPRODUCE_ULPS * torch.finfo(ref.dtype).eps * max(scale, 1e-30)
    err = float((again - ref).abs().max()) if ref.numel() else 0.0
    if not err <= tol:
        return f"running it alone differs from the model's output by {err:.3g} (> {tol:.3g})"
    return ""


def _detached(call) -> tuple[tuple, dict]:
    args, kwargs = call[0], call[1]

    def det(t):
        return t.detach() if isinstance(t, Tensor) else t

    return tuple(det(a) for a in args), {k: det(v) for k, v in kwargs.items()}
