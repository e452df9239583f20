"""The network a DomainBed algorithm predicts with: ``classifier(featurizer(x))``.

Rebuilt from the facts of DomainBed's ``networks.py`` (Gulrajani & Lopez-Paz 2021) so that
the ``featurizer.*`` / ``classifier.*`` entries of a DomainBed ``model_dict`` load as they
are. The featurizer is chosen by the input shape, as DomainBed does:

- ``(D,)``: an MLP ``input -> [dropout, relu] -> hiddens.* -> output`` of width
  ``mlp_width`` and ``mlp_depth`` linear layers (features ``[N, mlp_width]``);
- ``(C, 28, 28)``: :class:`~landscape.models.mnist_cnn.MNIST_CNN` (features ``[N, 128]``);
- ``(C, 224, 224)``: a ResNet-18 (``resnet18``) or ResNet-50 (otherwise, and always when
  ``resnet50_augmix``) under ``network.*`` with torchvision's names, ``fc`` removed, a
  dropout (``resnet_dropout``) on the features ``[N, 512]`` / ``[N, 2048]``, ``conv1``
  rebuilt for ``C != 3`` input channels, batch norms frozen (kept in eval mode) when
  ``freeze_bn`` (DomainBed before 2024 always froze them).

The head is ``nn.Linear(F, K)``, or with ``nonlinear_classifier`` the MLP
``F -> F/2 -> ReLU -> F/4 -> ReLU -> K`` (keys ``classifier.0``, ``.2``, ``.4``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.models.mnist_cnn import MNIST_CNN
from landscape.models.resnet import resnet

#: The hparams that shape the network (the others only drive training).
NETWORK_HPARAMS = (
    "mlp_width",
    "mlp_depth",
    "mlp_dropout",
    "resnet18",
    "resnet50_augmix",
    "resnet_dropout",
    "freeze_bn",
    "nonlinear_classifier",
    "vit",
    "dinov2",
    "urm_generator_output",
)

#: DomainBed's URM featurizer output activations (``urm_generator_output``).
ACTIVATIONS = {"identity": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def plain(value: Any) -> Any:
    """``value`` with numpy scalars turned into Python ones (``np.float64(0.1) -> 0.1``),
    in nested dicts / lists too, so that it is JSON; other values unchanged."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar
        return value.item()
    return value


class DomainBedMLP(nn.Module):
    """DomainBed's MLP featurizer: ``[N, n_inputs] -> [N, n_outputs]``.

    ``mlp_depth`` linear layers: ``input`` (n_inputs -> w), ``mlp_depth - 2`` ``hiddens``
    (w -> w), ``output`` (w -> n_outputs), dropout then ReLU after each but the last.
    """

    def __init__(self, n_inputs: int, n_outputs: int, hparams: Mapping[str, Any]):
        super().__init__()
        width = int(hparams["mlp_width"])
        self.input = nn.Linear(n_inputs, width)
        self.dropout = nn.Dropout(float(hparams["mlp_dropout"]))
        self.hiddens = nn.ModuleList(
            [nn.Linear(width, width) for _ in range(int(hparams["mlp_depth"]) - 2)]
        )
        self.output = nn.Linear(width, n_outputs)
        self.n_outputs = n_outputs
        self.activation = _activation(hparams)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``[N, n_outputs]`` for inputs ``[N, n_inputs]``."""
        x = F.relu(self.dropout(self.input(x)))
        for hidden in self.hiddens:
            x = F.relu(self.dropout(hidden(x)))
        return self.activation(self.output(x))


class ResNetFeaturizer(nn.Module):
    """DomainBed's ``ResNet``: ``dropout(network(x))`` with ``network.fc`` the identity.

    Args:
        input_shape: ``(C, H, W)``; ``C != 3`` replaces ``network.conv1`` by a ``C``-channel
            one whose channel ``i`` copies channel ``i % 3`` of the 3-channel one.
        hparams: ``resnet18``, ``resnet50_augmix``, ``resnet_dropout``, ``freeze_bn``.
    """

    def __init__(self, input_shape: Sequence[int], hparams: Mapping[str, Any]):
        super().__init__()
        depth = 18 if hparams.get("resnet18") and not hparams.get("resnet50_augmix") else 50
        self.network = resnet(depth)
        self.n_outputs = self.network.fc.in_features
        nc = int(input_shape[0])
        if nc != 3:
            old = self.network.conv1.weight.data.clone()
            self.network.conv1 = nn.Conv2d(nc, 64, 7, stride=2, padding=3, bias=False)
            with torch.no_grad():
                for i in range(nc):
                    self.network.conv1.weight[:, i] = old[:, i % 3]
        self.network.fc = nn.Identity()
        self.freeze = bool(hparams.get("freeze_bn", True))
        self.dropout = nn.Dropout(float(hparams.get("resnet_dropout", 0.0)))
        self.activation = _activation(hparams)
        self.train(self.training)

    def forward(self, x: Tensor) -> Tensor:
        """Features ``[N, n_outputs]`` for images ``[N, C, H, W]``."""
        return self.activation(self.dropout(self.network(x)))

    def train(self, mode: bool = True) -> ResNetFeaturizer:
        """Set the mode; batch norms stay in eval mode when frozen (DomainBed's behaviour)."""
        super().train(mode)
        if self.freeze:
            for m in self.network.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self


def _activation(hparams: Mapping[str, Any]) -> nn.Module:
    name = str(hparams.get("urm_generator_output", "identity"))
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown urm_generator_output {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def featurizer(
    input_shape: Sequence[int], hparams: Mapping[str, Any], mlp_outputs: int | None = None
) -> nn.Module:
    """DomainBed's ``Featurizer``: the network chosen by the input shape.

    Args:
        input_shape: one input's shape.
        hparams: the network hparams (:data:`NETWORK_HPARAMS`).
        mlp_outputs: features of the MLP featurizer; default ``mlp_width`` (DomainBed since
            March 2021; its earlier releases used 128).

    Raises:
        ValueError: an input shape or option DomainBed builds with a network we do not
            rebuild (32×32: Wide ResNet; ``vit``: ViT / DINOv2), naming the supported ones.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        lacking = [k for k in ("mlp_width", "mlp_depth", "mlp_dropout") if k not in hparams]
        if lacking:
            raise ValueError(f"DomainBed's MLP featurizer needs the hparams {lacking}")
        width = int(hparams["mlp_width"]) if mlp_outputs is None else int(mlp_outputs)
        return DomainBedMLP(shape[0], width, hparams)
    if len(shape) == 3 and shape[1:] == (28, 28):
        return MNIST_CNN(shape, activation=_activation(hparams))
    if len(shape) == 3 and shape[1:] == (224, 224) and not hparams.get("vit"):
        return ResNetFeaturizer(shape, hparams)
    if hparams.get("vit") and shape[1:] == (224, 224):
        what = "a ViT / DINOv2 (hparams vit)"
    elif shape[1:] == (32, 32):
        what = "its Wide ResNet 16-2"
    else:
        what = "no featurizer"
    raise ValueError(
        f"DomainBed input shape {shape}: DomainBed builds {what}, which landscape does not "
        "rebuild; supported: (D,) (MLP), (C, 28, 28) (MNIST_CNN), (C, 224, 224) (ResNet-18/50)"
    )


def classifier(in_features: int, out_features: int, nonlinear: bool = False) -> nn.Module:
    """DomainBed's ``Classifier``: linear, or ``F -> F/2 -> ReLU -> F/4 -> ReLU -> K``."""
    if not nonlinear:
        return nn.Linear(in_features, out_features)
    return nn.Sequential(
        nn.Linear(in_features, in_features // 2),
        nn.ReLU(),
        nn.Linear(in_features // 2, in_features // 4),
        nn.ReLU(),
        nn.Linear(in_features // 4, out_features),
    )


class DomainBedNetwork(nn.Module):
    """``classifier(featurizer(x))``, DomainBed's prediction network, logits ``[N, K]``.

    Args:
        input_shape: one input's shape, DomainBed's ``model_input_shape``.
        num_classes: ``K``, DomainBed's ``model_num_classes``.
        hparams: DomainBed's hparams (only :data:`NETWORK_HPARAMS` matter; numpy scalars
            are accepted).
        mlp_outputs: features of an MLP featurizer (see :func:`featurizer`).

    ``model.spec`` rebuilds it with :func:`landscape.models.build_model`.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hparams: Mapping[str, Any],
        mlp_outputs: int | None = None,
    ):
        super().__init__()
        kept = {k: plain(hparams[k]) for k in NETWORK_HPARAMS if k in hparams}
        self.featurizer = featurizer(input_shape, kept, mlp_outputs)
        self.classifier = classifier(
            self.featurizer.n_outputs, int(num_classes), bool(kept.get("nonlinear_classifier"))
        )
        self.spec = {
            "arch": "domainbed",
            "input_shape": [int(s) for s in input_shape],
            "num_classes": int(num_classes),
            "hparams": kept,
        }
        if mlp_outputs is not None:
            self.spec["mlp_outputs"] = int(mlp_outputs)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, K]`` for inputs ``[N, *input_shape]``."""
        return self.classifier(self.featurizer(x))
