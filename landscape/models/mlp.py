"""The multi-layer perceptron of the IRM / Fishr Colored MNIST experiment.

Every model here has ``model.featurizer`` (inputs ``[N, *]`` to features ``[N, F]``) and
``model.classifier`` (the final ``nn.Linear(F, C)``, Fishr's head), so the head is
addressable as ``params="classifier"``. ``model.spec`` is a JSON-serialisable dict from which
:func:`build_model` rebuilds the same architecture (checkpoints store it).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

# The IRM / Fishr Colored MNIST network: 2·14·14 -> 390 -> ReLU -> 390 -> ReLU -> 1.
COLORED_MNIST_SPEC: dict[str, Any] = {
    "arch": "mlp",
    "input_dim": 2 * 14 * 14,
    "hidden_dims": [390, 390],
    "output_dim": 1,
}


class MLP(nn.Module):
    """Multi-layer perceptron ``Flatten -> [Linear -> ReLU]* -> Linear``.

    Weights are Xavier-uniform and biases zero, as in the IRM reference script
    (Arjovsky et al. 2019) that the Fishr Colored MNIST experiment reuses.

    Args:
        input_dim: number of input features after flattening.
        hidden_dims: widths of the hidden layers (may be empty: then the featurizer is the
            identity and the model is a linear classifier).
        output_dim: number of logits (1 for binary cross-entropy with logits).
    """

    def __init__(self, input_dim: int, hidden_dims: list[int] | tuple[int, ...], output_dim: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.featurizer = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, output_dim)
        self.spec = {
            "arch": "mlp",
            "input_dim": int(input_dim),
            "hidden_dims": [int(h) for h in hidden_dims],
            "output_dim": int(output_dim),
        }
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[N, output_dim]`` for inputs ``[N, *]``."""
        return self.classifier(self.featurizer(x))


def colored_mnist_mlp() -> MLP:
    """The IRM / Fishr Colored MNIST MLP (306,151 parameters; head: 391)."""
    return MLP(**{k: v for k, v in COLORED_MNIST_SPEC.items() if k != "arch"})
