"""The random stream of the official Colored MNIST script, as explicit generators.

The script (alexrame/fishr, ``coloredmnist/train_coloredmnist.py``, itself the IRM script of
Arjovsky et al. 2019) seeds the global generators once::

    random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)

and never again: each restart continues both streams where the previous restart left them.
:class:`ScriptStream` holds the same two streams without touching the global ones:

* ``numpy``: ``np.random.RandomState(seed)``, the MT19937 generator behind ``np.random.seed``
  (the same draws);
* ``torch``: ``torch.Generator().manual_seed(seed)``, the CPU generator that
  ``torch.manual_seed`` seeds (``torch.rand(n, generator=g)`` equals ``torch.rand(n)`` after
  ``torch.manual_seed(seed)``).

What a restart draws from them, in which order, is the business of
:mod:`landscape.data.colored_mnist`; this module provides the three kinds of draws:
a shuffle (:meth:`ScriptStream.permutation`), uniforms (:meth:`ScriptStream.rand`) and the
initialisation of the script's ``nn.Linear`` layers (:meth:`ScriptStream.initial_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

#: ``(in, out)`` of the ``nn.Linear`` layers the script builds after each restart's data, in
#: construction order: 2·14·14 → 390 → 390 → 1.
SCRIPT_INIT_LAYERS: tuple[tuple[int, int], ...] = ((2 * 14 * 14, 390), (390, 390), (390, 1))


class ScriptStream:
    """The script's two random streams, seeded once with ``seed`` (see the module doc).

    Args:
        seed: the script's ``--seed``.

    Example:
        >>> stream = ScriptStream(0)
        >>> perm = stream.permutation(10)  # np.random.seed(0); np.random.shuffle(a) gives a[perm]
        >>> sorted(perm.tolist()) == list(range(10))
        True
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.numpy = np.random.RandomState(self.seed)
        self.torch = torch.Generator().manual_seed(self.seed)

    def permutation(self, n: int) -> Tensor:
        """The permutation ``perm [n]`` (int64) of one ``RandomState.shuffle`` of ``n`` rows.

        Shuffling an array ``a`` in place (any number of dimensions, the script's
        ``np.random.shuffle(images)`` and ``np.random.shuffle(digits)``) leaves ``a[perm]``:
        the Fisher–Yates swaps depend only on ``n``. Advances the NumPy stream by one shuffle.
        """
        index = np.arange(n, dtype=np.int64)
        self.numpy.shuffle(index)
        return torch.from_numpy(index)

    def rand(self, n: int) -> Tensor:
        """``torch.rand(n)`` (float32 ``[n]``) from the torch stream."""
        return torch.rand(n, generator=self.torch)

    def initial_weights(
        self, layers: Sequence[Sequence[int]] = SCRIPT_INIT_LAYERS
    ) -> list[tuple[Tensor, Tensor]]:
        """The script's model initialisation, drawn from the torch stream.

        The ``nn.Linear(in, out)`` layers of ``layers`` are constructed in order (float32, on
        the CPU; their default initialisation draws the weight, then the bias), then each
        weight gets ``xavier_uniform_`` in the same order and each bias zeros. The draws run
        on the global generator set to this stream's state (inside
        ``torch.random.fork_rng``, so the caller's global state is untouched), and the stream
        takes the global state back, so the next draw continues after them.

        Returns:
            ``[(weight [out, in], bias [out]), ...]`` per layer, float32.
        """
        with torch.random.fork_rng(devices=[]):
            torch.random.set_rng_state(self.torch.get_state())
            linears = [nn.Linear(int(i), int(o), dtype=torch.float32) for i, o in layers]
            for linear in linears:
                nn.init.xavier_uniform_(linear.weight)
                nn.init.zeros_(linear.bias)
            self.torch.set_state(torch.random.get_rng_state())
        return [(lin.weight.detach(), lin.bias.detach()) for lin in linears]


def check_init_layers(layers) -> list[list[int]]:
    """``layers`` as ``[[in, out], ...]`` of positive ints (JSON-ready); one-line errors."""
    message = (
        "init_layers must be a list of [in, out] widths of the Linear layers the script "
        f"builds, such as {[list(p) for p in SCRIPT_INIT_LAYERS]}, got {layers!r}"
    )
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(message)
    out = []
    for pair in layers:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(message)
        if not all(
            isinstance(w, int | np.integer) and not isinstance(w, bool) and w > 0 for w in pair
        ):
            raise ValueError(message)
        out.append([int(pair[0]), int(pair[1])])
    return out
