"""BackPACK passes on a private copy of the model, with their limits stated up front.

BackPACK (Dangel et al. 2020) computes first-order statistics of the per-sample gradients
(``Variance``, ``SumGradSquared``) and second-order diagonals (``DiagHessian``,
``DiagGGNExact``, ``DiagGGNMC``) in one backward pass, but only for the module classes it has
a rule for. :func:`backpack_pass` says so with :class:`BackpackUnsupported` (a
``ValueError`` naming the module and what to use instead), so that the public functions can
fall back to an exact ``torch.func`` or product-based method. Second-order extensions also need
the model to be a chain of modules (no functional operation or residual sum between two
modules on the backward path): BackPACK then finds no quantity to back-propagate and fails
an assertion, which is caught the same way. A module owning a selected parameter must run
exactly once per forward (BackPACK keeps the last call's inputs only): checked on every
batch. BackPACK's own warnings
("Full backward hook is firing ...", missing extensions) never reach the caller.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from landscape.curvature._setup import Setup
from landscape.curvature.operators import _to
from landscape.domains import as_batches
from landscape.losses import with_reduction

# Messages of BackPACK (and of torch's full backward hooks it registers) that say nothing
# the caller can act on: we check the modules ourselves.
_QUIET = ("Full backward hook is firing", ".*Extension saving to")


class BackpackUnsupported(ValueError):
    """BackPACK cannot compute the requested quantity for this model or these targets."""


@contextlib.contextmanager
def quiet_backpack():
    """Drop BackPACK's warnings (and torch's about the hooks it registers) in this block."""
    with warnings.catch_warnings():
        for message in _QUIET:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def missing_extension(setup: Setup, extension) -> str | None:
    """The first module BackPACK's ``extension`` has no rule for, or ``None``.

    Every leaf module that owns a selected parameter needs a rule. Second-order extensions
    need one for every leaf module the backward pass reaches, too; those are known only while
    it runs, so :func:`backpack_pass` also turns BackPACK's ``NotImplementedError`` into
    :class:`BackpackUnsupported`.
    """
    rules = getattr(extension, "_BackpropExtension__module_extensions", None)
    if rules is None:  # another BackPACK version: let the pass decide
        return None
    selected = set(setup.names)
    for prefix, module in setup.model.named_modules():
        if next(module.children(), None) is not None or type(module) in rules:
            continue
        owned = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters()]
        if any(n in selected for n in owned):
            return f"{type(module).__name__} ({prefix or 'the model'})"
    return None


def _copy(setup: Setup):
    """A private BackPACK-extended copy of the model (only selected parameters need grad)."""
    from backpack import extend

    model = copy.deepcopy(setup.model)
    selected = set(setup.names)
    for n, p in model.named_parameters():
        p.requires_grad_(n in selected)
    for module in model.modules():  # leaves only: containers need no (and have no) extension
        if next(module.children(), None) is None:
            extend(module)
    return model, [p for n, p in model.named_parameters() if n in selected]


def _check_targets(setup: Setup, out: Tensor, y: Tensor, fallback: str) -> None:
    """BackPACK's second order with BCEWithLogitsLoss needs ``[N, 1]`` logits, 0/1 targets."""
    if setup.loss != "bce":
        return
    if out.dim() != 2 or out.shape[1] != 1:
        raise BackpackUnsupported(
            f"BackPACK's second-order extensions need BCEWithLogitsLoss logits of shape [N, 1], "
            f"got {tuple(out.shape)}; use {fallback}"
        )
    if not bool(((y == 0) | (y == 1)).all()):
        raise BackpackUnsupported(
            f"BackPACK's second-order extensions need 0/1 targets for BCEWithLogitsLoss; "
            f"use {fallback}"
        )


def backpack_pass(
    setup: Setup,
    data,
    extensions: Callable[[], list],
    fields: Sequence[str],
    reduction: str,
    second_order: bool,
    fallback: str,
    seed: int | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, dict[str, Tensor]]]:
    """Run BackPACK over one domain's batches, yielding ``(n_b, {field: [D]} incl. "grad")``
    batch by batch (a generator: callers reduce as they go, so memory stays one batch's).

    Raises:
        BackpackUnsupported: a module (or BCE targets) BackPACK cannot handle; the message
            ends with ``use {fallback}``.
    """
    from backpack import extend

    missing = missing_extension(setup, extensions()[0])
    if missing is not None:
        name = type(extensions()[0]).__name__
        raise BackpackUnsupported(f"BackPACK's {name} has no rule for {missing}; use {fallback}")
    model, leaves = _copy(setup)
    owners = _owners(model, setup.names)
    loss_func = extend(with_reduction(setup.loss_func, reduction))
    like = next(model.parameters())
    fork = [like.device] if like.device.type == "cuda" else []
    desc = f"BackPACK {', '.join(fields)}"
    for X, y in tqdm(as_batches(data), desc=desc, disable=not progress, leave=False):
        X, y = _to(X, like), _to(y, like)
        with quiet_backpack(), torch.random.fork_rng(devices=fork, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            with _CallCount(owners) as calls:
                out = _forward(model, X, fallback)
            calls.check(fallback)
            if second_order:
                _check_targets(setup, out, y, fallback)
            _backward(loss_func(out, y), extensions, fallback)
        yield int(X.shape[0]), _collect(leaves, fields, fallback)


def _owners(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """``{qualified name: module}`` of the modules that own a selected parameter."""
    selected = set(names)
    return {
        prefix: module
        for prefix, module in model.named_modules()
        if any(
            (f"{prefix}.{n}" if prefix else n) in selected
            for n, _ in module.named_parameters(recurse=False)
        )
    }


class _CallCount:
    """Counts the calls of some modules during one forward (hooks removed on exit)."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.modules, self.calls, self._handles = modules, dict.fromkeys(modules, 0), []

    def __enter__(self) -> _CallCount:
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def hook(module, inputs, output):
            self.calls[name] += 1

        return hook

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def check(self, fallback: str) -> None:
        """:class:`BackpackUnsupported` unless every module ran exactly once."""
        for name, count in self.calls.items():
            if count != 1:
                module = type(self.modules[name]).__name__
                raise BackpackUnsupported(
                    f"BackPACK needs each module owning a selected parameter to run once per "
                    f"forward; {module} ({name or 'the model'}) ran {count} times; use {fallback}"
                )


def _forward(model: nn.Module, X: Tensor, fallback: str) -> Tensor:
    """The extended copy's forward; BackPACK's hooks can break it (an in-place operation on
    the output of a hooked module, e.g. ``ReLU(inplace=True)`` after BatchNorm)."""
    try:
        return model(X)
    except (RuntimeError, NotImplementedError) as err:
        raise BackpackUnsupported(
            f"BackPACK's hooks break this model's forward ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}); use {fallback}"
        ) from None


def _backward(loss: Tensor, extensions: Callable[[], list], fallback: str) -> None:
    from backpack import backpack

    try:
        with backpack(*extensions()):
            loss.backward()
    except AssertionError as err:  # no back-propagated quantity: not a chain of modules
        module = str(err).split("Module: ")[-1].split("(")[0] if "Module: " in str(err) else "?"
        raise BackpackUnsupported(
            f"BackPACK's {type(extensions()[0]).__name__} needs the model to be a chain of "
            f"modules; the backward pass reached {module} through a functional operation or a "
            f"residual sum; use {fallback}"
        ) from None
    except (NotImplementedError, RuntimeError, AttributeError) as err:
        raise BackpackUnsupported(
            f"BackPACK cannot handle this model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); use {fallback}"
        ) from None


def _collect(leaves: list[nn.Parameter], fields: Sequence[str], fallback: str) -> dict:
    """``{"grad": [D], field: [D]}`` from the leaves, which are then cleared."""
    entry = {"grad": torch.cat([p.grad.reshape(-1) for p in leaves]).detach()}
    for f in fields:
        if any(not hasattr(p, f) for p in leaves):
            raise BackpackUnsupported(
                f"BackPACK computed no {f!r} for some selected parameters; use {fallback}"
            )
        entry[f] = torch.cat([getattr(p, f).reshape(-1) for p in leaves]).detach()
    for p in leaves:
        p.grad = None
        for f in fields:
            delattr(p, f)
    return entry
