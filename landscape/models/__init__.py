"""Networks with an explicit featurizer / classifier-head split, and their parts.

Every network :func:`build_model` builds (:class:`MLP`, :class:`DomainBedNetwork`) has
``model.featurizer`` (inputs ``[N, *]`` to features ``[N, F]``) and ``model.classifier`` (the
head, Fishr's ``params="classifier"``). ``model.spec`` is a JSON-serialisable dict from which
:func:`build_model` rebuilds the same architecture (checkpoints store it). :class:`MNIST_CNN`
and :func:`resnet` are featurizers / backbones with DomainBed's and torchvision's parameter
names; :mod:`landscape.models.domainbed_checkpoint` reads DomainBed's ``model.pkl``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from landscape.models.domainbed import DomainBedNetwork
from landscape.models.mlp import COLORED_MNIST_SPEC, MLP, colored_mnist_mlp
from landscape.models.mnist_cnn import MNIST_CNN
from landscape.models.resnet import ResNet, resnet

__all__ = [
    "COLORED_MNIST_SPEC",
    "MLP",
    "MNIST_CNN",
    "DomainBedNetwork",
    "ResNet",
    "build_model",
    "colored_mnist_mlp",
    "resnet",
]

_ARCHS = {"mlp": MLP, "domainbed": DomainBedNetwork}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Build a freshly initialised model from its ``spec`` (see ``model.spec``).

    Raises:
        ValueError: unknown architecture or missing / unexpected spec fields.
    """
    if not isinstance(spec, dict) or "arch" not in spec:
        raise ValueError(f"a model spec is a dict with an 'arch' key, got {spec!r}")
    arch = spec["arch"]
    if arch not in _ARCHS:
        raise ValueError(f"unknown model architecture {arch!r}; known: {', '.join(_ARCHS)}")
    kwargs = {k: v for k, v in spec.items() if k != "arch"}
    try:
        return _ARCHS[arch](**kwargs)
    except TypeError as err:
        raise ValueError(f"bad spec for architecture {arch!r}: {err}") from None
