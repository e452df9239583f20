"""The small case every distributed test computes, in one process and on two ranks.

A float64 MLP (4 -> 6 -> 3, 51 parameters; head 21) with cross-entropy on three synthetic
domains whose sizes do not divide by two: a list of uneven batches (101 samples), one batch
(150) and an unshuffled DataLoader (77). :func:`compute` returns every compared quantity as
named arrays; the two-rank run writes rank 0's to ``out/rank0.npz`` (and every rank's
checksum-free copy ``out/rank<r>.npz``, so that the test can see that the replicas agree).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from landscape.models.mlp import MLP

SIZES = {"a": 101, "b": 150, "c": 77}


def model_and_domains():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MLP(4, [6], 3).double().eval()
    domains = {}
    for k, (name, n) in enumerate(SIZES.items()):
        X = torch.randn(n, 4, generator=g, dtype=torch.float64) + 0.3 * k
        y = torch.randint(0, 3, (n,), generator=g)
        if name == "a":
            domains[name] = [(X[:40], y[:40]), (X[40:45], y[40:45]), (X[45:], y[45:])]
        elif name == "b":
            domains[name] = [(X, y)]
        else:
            domains[name] = DataLoader(TensorDataset(X, y), batch_size=20, shuffle=False)
    return model, nn.CrossEntropyLoss(), domains


def compute(out_dir=None) -> dict[str, np.ndarray]:
    """Products, eigenvalues, I^eps (dense head, matrix-free whole network) and a surface."""
    from landscape import distributed as dist
    from landscape.curvature import curvature_operator, top_eigenpairs
    from landscape.inconsistency import inconsistency_score
    from landscape.surface import loss_surface
    from landscape.surface.directions import random_directions

    model, loss, domains = model_and_domains()
    dim = sum(p.numel() for p in model.parameters())
    V = torch.randn(dim, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res: dict[str, np.ndarray] = {}
    sharded = dist.shard_domains(domains)
    for name, data in sharded.items():
        for curv in ("hessian", "ggn", "ef"):
            with curvature_operator(model, loss, data, curvature=curv) as op:
                res[f"{curv}/{name}"] = (op @ V).numpy()
        with curvature_operator(model, loss, data) as op:
            res[f"risk/{name}"] = np.array(op.risk())
            res[f"grad/{name}"] = op.gradient().numpy()
    eig = top_eigenpairs(model, loss, domains, k=3, tol=1e-9)
    for name in domains:
        res[f"eig/{name}"] = eig.largest_eigenvalues[name]
    kw = {"remedy": "damping", "check": False, "progress": False, "curvature": "ggn"}
    dense = inconsistency_score(model, loss, domains, 0.1, "classifier", "dense", **kw)
    two = {d: domains[d] for d in ("a", "c")}  # uneven batches and a DataLoader
    mf = inconsistency_score(model, loss, two, 0.1, None, "matrix-free", damping=0.05, **kw)
    res["ieps/dense"], res["ieps/mf"] = dense.values, mf.values
    res["ieps/risks"] = np.array([dense.risks[d] for d in domains])
    dirs = random_directions(model, seed=3)
    surf = loss_surface(model, loss, domains, dirs, grid=(-1, 1, 5), progress=False,
                        checkpoint_dir=None if out_dir is None else f"{out_dir}/rows")  # fmt: skip
    for name in domains:
        res[f"surface/{name}"] = surf.losses[name]
    if out_dir is not None:
        with dist.every_rank_writes():
            from landscape.io import save_arrays

            save_arrays(f"{out_dir}/rank{dist.rank()}.npz", res)
        dense.save(f"{out_dir}/dense")
    return res


def fail_on_rank_one():
    """Rank 1 raises between two collectives; rank 0 waits in the second."""
    from landscape import distributed as dist

    model, loss, domains = model_and_domains()
    data = dist.shard_data(domains["b"], "b")
    from landscape.curvature import curvature_operator

    op = curvature_operator(model, loss, data)
    op.risk()
    if dist.rank() == 1:
        raise ValueError("domain 'b' is broken on rank 1; fix it")
    op.risk()


def other_directions():
    """Each rank draws its surface plane from another seed: must raise on both ranks."""
    from landscape import distributed as dist
    from landscape.surface import loss_surface
    from landscape.surface.directions import random_directions

    model, loss, domains = model_and_domains()
    dirs = random_directions(model, seed=dist.rank())
    loss_surface(model, loss, domains, dirs, grid=(-1, 1, 3), progress=False)
