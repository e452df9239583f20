"""What a figure shows, in one line read from the saved results' metadata.

Every figure of :mod:`landscape.plot` carries such a line as its title (model and data,
ε, which parameters, sample size), so that a figure cut out of its context still says what
it is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from landscape.names import algorithm_name, domain_name, parameter_name


def _count(n) -> str:
    return f"{int(n):,}"


def run_caption(config: Mapping) -> str:
    """Data, model and restarts of a run folder's ``config.json``: e.g. ``"Colored MNIST,
    MLP 390-390, 3 restarts, all images"``."""
    data = config.get("data")
    name = "Colored MNIST" if not data else str(data.get("name", "data") if isinstance(
        data, Mapping) else data)  # fmt: skip
    hidden = config.get("hidden_dims")
    model = f"MLP {'-'.join(str(h) for h in hidden)}" if hidden else "model"
    restarts = int(config.get("restarts", 1))
    sub = config.get("subsample")
    size = f"{_count(sub)} images per domain" if sub else "all images"
    return f"{name}, {model}, {restarts} restart{'s' * (restarts != 1)}, {size}"


def samples_caption(num_samples: Mapping | None) -> str:
    """``"n = 25,000 per domain"`` (or ``"n = 1,000-2,000 per domain"``); empty if unknown."""
    values = [int(v) for v in (num_samples or {}).values()]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = _count(low) if low == high else f"{_count(low)}-{_count(high)}"
    return f"n = {span} per domain"


def score_caption(result, kind: str | None = None, epsilon_index: int = 0) -> str:
    """ε, parameters, remedy and sample size of an inconsistency result."""
    eps = float(np.asarray(result.epsilon).reshape(-1)[epsilon_index])
    size = sum(int(np.prod(s)) for s in result.param_shapes) if result.param_shapes else None
    params = parameter_name(kind) if kind else "parameters"
    parts = [f"ε = {eps:g}", params] + ([f"{_count(size)} weights"] if size else [])
    if result.remedy == "top-k" and result.k:
        parts.append(f"top-{result.k} eigenspace of $H_A$")
    parts.append(samples_caption(result.num_samples))
    return ", ".join(p for p in parts if p)


def surface_caption(result) -> str:
    """Plane, grid and sample size of a surface result."""
    info = result.directions or {}
    kind = f"{info.get('kind', 'plane')} directions"
    if info.get("labels"):
        kind = "plane through " + ", ".join(algorithm_name(x) for x in info["labels"])
    n = len(np.asarray(result.alphas))
    return ", ".join(p for p in [kind, f"{n}×{len(np.asarray(result.betas))} "
                                 "grid", samples_caption(result.num_samples)] if p)  # fmt: skip


def pair_caption(pair) -> str:
    """``"B = +90% vs A = +80%"``."""
    a, b = pair
    return f"B = {domain_name(b)} vs A = {domain_name(a)}"
