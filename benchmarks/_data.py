"""The two training domains the benchmarks time, shared by the benchmark scripts."""

from __future__ import annotations

import torch


def load_domains(n: int, device, seed: int = 0):
    """``({"+80%": [(X, y)], "+90%": [(X, y)]}, source)`` with ``n`` samples each: real Colored
    MNIST when the offline MNIST cache is there, else seeded random inputs ``[n, 2, 14, 14]``
    with random 0/1 labels (``source`` says which, and why)."""
    try:
        from landscape.data import colored_mnist

        domains = colored_mnist(subsample=n, device=device)
        return {k: domains[k] for k in ("+80%", "+90%")}, "Colored MNIST"
    except Exception as err:  # noqa: BLE001 - no MNIST cache: random inputs of the same shape
        reason = str(err).splitlines()[0][:80]
        g = torch.Generator().manual_seed(seed)
        domains = {}
        for name in ("+80%", "+90%"):
            X = torch.rand(n, 2, 14, 14, generator=g)
            y = (torch.rand(n, 1, generator=g) < 0.5).float()
            domains[name] = [(X.to(device), y.to(device))]
        return domains, f"random inputs ({reason})"
