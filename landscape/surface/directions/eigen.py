"""The top Hessian eigenvectors of one domain's risk as the directions of a plane.

With unit eigenvectors :math:`\\delta = v_1, \\eta = v_2` of
:math:`\\nabla^2_\\theta R_e(\\theta^*)`, a quadratic model of :math:`R_e` on the plane reads

.. math::

    R_e(\\theta^* + \\alpha v_1 + \\beta v_2) \\approx R_e(\\theta^*)
    + \\alpha\\, g^\\top v_1 + \\beta\\, g^\\top v_2
    + \\tfrac12 (\\lambda_1 \\alpha^2 + \\lambda_2 \\beta^2).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from landscape.params import ParamSpec, select_params
from landscape.surface.directions.base import Directions, unflatten_as

__all__ = ["eigen_directions"]


def _domain_data(domain_data, domain: str | None):
    """``(name, {name: data})`` of the one domain whose Hessian is used."""
    if isinstance(domain_data, Mapping):
        if domain is None:
            if len(domain_data) != 1:
                raise ValueError(
                    f"eigen_directions uses one domain's Hessian; pass domain=... (one of "
                    f"{', '.join(map(str, domain_data))})"
                )
            domain = str(next(iter(domain_data)))
        if domain not in domain_data:
            raise ValueError(
                f"unknown domain {domain!r}; available: {', '.join(map(str, domain_data))}"
            )
        return domain, {domain: domain_data[domain]}
    name = domain or "data"
    return name, {name: domain_data}


def _eigen_of(result, name: str):
    """Largest eigenvalues ``[k]`` (descending) and eigenvectors ``[k, D]`` of one domain.

    Sign convention: the largest entry (in absolute value) of each vector is positive.
    """
    values = torch.as_tensor(np.asarray(result.largest_eigenvalues[name]), dtype=torch.float64)
    vectors = torch.as_tensor(np.asarray(result.largest_eigenvectors[name]), dtype=torch.float64)
    order = torch.argsort(values, descending=True)
    vectors = vectors[:, order].T
    signs = torch.sign(vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True)))
    return values[order], vectors * torch.where(signs == 0, 1.0, signs)


def eigen_directions(
    model: nn.Module,
    loss_func: nn.Module,
    domain_data,
    params: ParamSpec = None,
    k: int = 2,
    domain: str | None = None,
    seed: int = 0,
    **eigen_kwargs,
) -> Directions:
    """The top Hessian eigenvectors of one domain's risk as directions.

    Computes the ``k`` largest eigenpairs of :math:`\\nabla^2_\\theta R_e(\\theta^*)` with
    :func:`landscape.curvature.top_eigenpairs` and uses the first two eigenvectors (unit
    norm; sign fixed so that each vector's largest entry is positive) as
    :math:`\\delta, \\eta`. On the plane, a quadratic model of :math:`R_e` reads
    :math:`\\tfrac12(\\lambda_1\\alpha^2 + \\lambda_2\\beta^2)` plus the gradient term.

    Args:
        model: the network at :math:`\\theta^*`.
        loss_func: the loss.
        domain_data: ``{name: data}`` (one domain, or choose with ``domain``), or one
            domain's data.
        params: parameters the eigenvectors live on; the others stay fixed.
        k: how many eigenpairs to compute (at least 2).
        domain: the domain whose Hessian is used.
        seed: seed passed to the eigensolver (its random start), recorded.
        **eigen_kwargs: forwarded to ``top_eigenpairs``.
    """
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an integer >= 2 (two directions are needed), got {k!r}")
    from landscape.curvature import top_eigenpairs  # noqa: PLC0415 (curvature loads lazily)

    name, domains = _domain_data(domain_data, domain)
    selected = select_params(model, params)
    result = top_eigenpairs(
        model, loss_func, domains, params=params, k=k, which="largest", seed=seed, **eigen_kwargs
    )
    values, vectors = _eigen_of(result, name)
    like = {n: p.detach() for n, p in selected.items()}
    return Directions(
        d1=unflatten_as(vectors[0], like),
        d2=unflatten_as(vectors[1], like),
        origin=None,
        kind="eigen",
        seed=seed,
        normalization="none",
        info={
            "domain": name,
            "eigenvalues": [float(v) for v in values[:k]],
            "k": k,
            "curvature": str(eigen_kwargs.get("curvature", "hessian")),
            "converged": bool(result.converged.get(name, True)),
        },
    )
