"""Domains to train on and analyse: Colored MNIST (IRM protocol, offline) and synthetic ones.

Every constructor returns ``{domain_name: [(X, y), ...]}``, the mapping all analyses take.
A *data spec* is the JSON-serialisable description of a build (stored in checkpoints);
:func:`build_domains` rebuilds the same domains from it::

    spec = colored_mnist_spec(subsample=2000)          # or data_spec("linear_regression", n=50)
    domains = build_domains(spec, data_dir=None, device="cpu")
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping

import torch

from landscape.data.colored_mnist import (
    DOMAINS,
    TEST_DOMAINS,
    TRAIN_DOMAINS,
    colored_mnist,
    colored_mnist_from_arrays,
    colored_mnist_spec,
    script_initial_weights,
)
from landscape.data.domainbed import domainbed_domains, domainbed_domains_from_metadata
from landscape.data.mnist import MNISTError, default_data_dir, load_mnist
from landscape.data.synthetic import (
    _positive_int,
    gaussian_classification_domains,
    linear_regression_domains,
    linear_regression_hessian,
)

__all__ = [
    "DOMAINS",
    "MNISTError",
    "TEST_DOMAINS",
    "TRAIN_DOMAINS",
    "build_domains",
    "colored_mnist",
    "colored_mnist_from_arrays",
    "colored_mnist_spec",
    "data_spec",
    "default_data_dir",
    "domainbed_domains",
    "domainbed_domains_from_metadata",
    "gaussian_classification_domains",
    "linear_regression_domains",
    "linear_regression_hessian",
    "load_mnist",
    "script_initial_weights",
]

#: Synthetic constructors by spec name (they need no data folder).
SYNTHETIC: dict[str, Callable] = {
    "linear_regression": linear_regression_domains,
    "gaussian_classification": gaussian_classification_domains,
}
_BUILD_ONLY = ("device", "dtype")  # arguments given to build_domains, not stored in specs
NAMES = ("colored_mnist", *SYNTHETIC)


def _unknown_name(name) -> ValueError:
    return ValueError(f"unknown data set {name!r}; known: {', '.join(NAMES)}")


def data_spec(name: str, **kwargs) -> dict:
    """The data spec of a build: ``{"name": name, **every argument}`` with defaults filled in.

    Arguments are checked against the constructor (an unknown one raises ``ValueError``), so
    the spec stays valid when defaults change later. ``device`` and ``dtype`` are not part
    of a spec (pass them to :func:`build_domains`).

    Example:
        >>> data_spec("linear_regression", n=50)["n"]
        50
    """
    if name == "colored_mnist":
        return colored_mnist_spec(**kwargs)
    if name not in SYNTHETIC:
        raise _unknown_name(name)
    func = SYNTHETIC[name]
    signature = inspect.signature(func)
    for key in kwargs:
        if key not in signature.parameters or key in _BUILD_ONLY:
            allowed = [p for p in signature.parameters if p not in _BUILD_ONLY]
            raise ValueError(
                f"{key!r} is not an argument of the {name!r} data set; use {', '.join(allowed)}"
            )
    bound = signature.bind(**kwargs)
    bound.apply_defaults()
    _positive_int(bound.arguments["n"], "n")
    func(**{**bound.arguments, "n": 1})  # validate every other argument cheaply
    spec = {"name": name}
    for key, value in bound.arguments.items():
        if key not in _BUILD_ONLY:
            spec[key] = list(value) if isinstance(value, tuple) else value
    return spec


def build_domains(
    spec: Mapping,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> dict[str, list]:
    """Rebuild the domains described by a data spec (from a checkpoint's metadata, say).

    Args:
        spec: ``{"name": ..., ...}`` as made by :func:`colored_mnist_spec` or
            :func:`data_spec`.
        data_dir: MNIST cache folder (Colored MNIST only).
        device: where the tensors go.
        dtype: floating dtype; ``None`` keeps the constructor's default (float32 for Colored
            MNIST, float64 for the synthetic sets).

    A Colored MNIST spec without ``stream`` (written before the script's stream became the
    default) is rebuilt with the ``"per-restart"`` stream it was drawn from.

    Raises:
        ValueError: no or an unknown ``name``, or a key the constructor does not take.
    """
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(
            f"a data spec must be a dict with a 'name' ({', '.join(NAMES)}), got {spec!r}"
        )
    name = spec["name"]
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    extra = {"device": device} if dtype is None else {"device": device, "dtype": dtype}
    if name == "colored_mnist":
        allowed = set(inspect.signature(colored_mnist_spec).parameters)
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not an argument of the 'colored_mnist' data set; use "
                f"{', '.join(sorted(allowed))}"
            )
        kwargs.setdefault("stream", "per-restart")  # a spec written before streams existed
        return colored_mnist(data_dir, **kwargs, **extra)
    if name not in SYNTHETIC:
        raise _unknown_name(name)
    data_spec(name, **kwargs)  # checks the keys with a clear message
    return SYNTHETIC[name](**kwargs, **extra)
