"""Per-domain trace of the Hessian, GGN or empirical Fisher of the risk."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.curvature._setup import prepare, rademacher
from landscape.curvature.diagonals import DiagonalMethod, DiagonalOptions, diagonal_result
from landscape.curvature.operators import Curvature, as_curvature
from landscape.curvature.results import TraceResult
from landscape.curvature.variance import variance_result
from landscape.domains import Domains
from landscape.params import ParamSpec


def hessian_trace(
    model: nn.Module,
    loss_func: nn.Module,
    domains: Domains,
    params: ParamSpec = None,
    method: str = "hutchinson",
    num_probes: int = 50,
    curvature: str | Curvature = "hessian",
    seed: int = 0,
    progress: bool = False,
) -> TraceResult:
    """Per-domain trace of the Hessian (or GGN / empirical Fisher) of the risk.

    * ``"hutchinson"``: :math:`\\operatorname{tr} A \\approx \\frac1m\\sum_j v_j^\\top A v_j`
      with ``num_probes`` Rademacher probes (seeded, shared by all domains); standard error
      :math:`s / \\sqrt m` with :math:`s` the sample standard deviation of
      :math:`v_j^\\top A v_j`.
    * ``"exact"``: the sum of the exact diagonal
      (:func:`~landscape.curvature.diagonals.hessian_diagonal` with ``"exact"`` or ``"ggn"``;
      for ``"ef"`` the sum of the squared per-sample gradients).
    """
    if method not in ("hutchinson", "exact"):
        raise ValueError(f"unknown method {method!r}; use 'hutchinson' or 'exact'")
    if method == "hutchinson" and (not isinstance(num_probes, int) or num_probes < 2):
        raise ValueError(
            f"num_probes must be an integer >= 2 (for a standard error), got {num_probes!r}"
        )
    curvature = as_curvature(curvature)
    setup = prepare(model, loss_func, domains, params, "hessian_trace")
    settings: dict[str, Any] = {"method": method, "curvature": curvature.value}
    if method == "hutchinson":
        settings.update(num_probes=num_probes, seed=int(seed))
    result = TraceResult(**setup.base(**settings))
    if method == "exact":
        if curvature is Curvature.EF:
            diags = variance_result(setup, False, "auto", None, progress).empirical_fisher
        else:
            how = DiagonalMethod.EXACT if curvature is Curvature.HESSIAN else DiagonalMethod.GGN
            diags = diagonal_result(setup, how, DiagonalOptions(progress=progress)).diagonal
        for name in setup.domains:
            result.trace[name] = float(np.sum(diags[name], dtype=np.float64))
            result.standard_error[name] = 0.0
            result.num_products[name] = 0
        return result
    from landscape.distributed import shard_domains

    for name, data in shard_domains(setup.domains).items():  # torchrun: products all-reduced
        with setup.operator(data, curvature, progress) as op:
            probes = rademacher(op.dim, num_probes, int(seed), op.dtype, op.device)
            quad = (probes * op.matmat(probes.T).T).sum(dim=1, dtype=torch.float64)
            samples = quad.cpu().numpy()  # v_j^T A v_j, products in vectorised blocks
            result.num_products[name] = op.num_products
        result.samples[name] = samples
        result.trace[name] = float(samples.mean())
        result.standard_error[name] = float(samples.std(ddof=1) / math.sqrt(num_probes))
    return result
