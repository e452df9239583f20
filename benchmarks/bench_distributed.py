"""One rank against two (torch.distributed, gloo, one thread per rank) on this CPU.

Two workloads on the Colored MNIST MLP (``landscape.models.colored_mnist_mlp``, 306,151
parameters, BCE; real Colored MNIST when the offline MNIST cache is there, else random inputs
of the same shape; two domains of ``--n`` samples each):

* the matrix-free inconsistency score of the whole network (``remedy="top-k"``, ``--k``
  leading eigenpairs of each ``H_A`` by Lanczos, then the restricted problem; no empirical
  check): each domain is split into exact shards, one all-reduce per (block) product;
* a ``--grid`` x ``--grid`` loss surface (filter-normalised random directions): rows dealt to
  the ranks, every rank holding both domains whole, gathered once at the end.

Both runs start the same way (``landscape.distributed.run_ranks``: spawned processes, one
thread each; with one rank no process group exists). Printed per workload and rank count:
wall time, products (I^eps) or grid points, collectives and bytes sent per rank, bytes per
product, and the 1-rank / 2-rank time ratio (the speed-up; 2.0 is perfect on two cores).
This machine has 2 cores shared with other work: the ratio is bounded by that.

Usage::

    python benchmarks/bench_distributed.py             # n = 2,000 per domain, 11 x 11 grid
    python benchmarks/bench_distributed.py --quick     # n = 500, 5 x 5 grid
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(out: str, n: int, grid: int, k: int) -> None:
    """One rank's part (every rank runs it); rank 0 writes the numbers to ``out``."""
    import torch

    from benchmarks._data import load_domains
    from landscape import distributed as dist
    from landscape.inconsistency import inconsistency_score
    from landscape.io import write_json
    from landscape.models import colored_mnist_mlp
    from landscape.surface import loss_surface
    from landscape.surface.directions import random_directions

    torch.manual_seed(0)
    model = colored_mnist_mlp().eval()
    loss = torch.nn.BCEWithLogitsLoss()
    domains, source = load_domains(n, "cpu")
    domains = {d: [(X, y.float().reshape(-1, 1))] for d, [(X, y)] in domains.items()}
    rows = {"source": source, "world_size": dist.world_size()}
    dist.STATS.update(collectives=0, bytes=0, seconds=0.0)
    dist.barrier()
    t0 = time.perf_counter()
    score = inconsistency_score(
        model, loss, domains, 1e-3, None, "matrix-free", remedy="top-k", k=k, tol=1e-3,
        check=False, progress=False,
    )  # fmt: skip
    rows["ieps"] = {
        **dist.STATS,
        "seconds_in": dist.STATS["seconds"],
        "seconds": time.perf_counter() - t0,
        "products": sum(v["products"] for key, v in score.solver.items() if "operator" in key),
        "score": float(score.score),
    }
    dist.STATS.update(collectives=0, bytes=0, seconds=0.0)
    dirs = random_directions(model, seed=0)
    dist.barrier()
    t0 = time.perf_counter()
    surf = loss_surface(model, loss, domains, dirs, grid=(-1, 1, grid), progress=False)
    rows["surface"] = {
        **dist.STATS,
        "seconds_in": dist.STATS["seconds"],
        "seconds": time.perf_counter() - t0,
        "points": grid * grid,
        "loss_sum": float(sum(v.sum() for v in surf.losses.values())),
    }
    write_json(out, rows)  # rank 0 only


def main() -> None:
    from landscape.distributed import run_ranks
    from landscape.io import read_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples per domain")
    parser.add_argument("--grid", type=int, default=11, help="grid points per axis")
    parser.add_argument("--k", type=int, default=5, help="top-k eigenpairs of each H_A")
    parser.add_argument("--quick", action="store_true", help="n = 500, 5 x 5 grid")
    args = parser.parse_args()
    if args.quick:
        args.n, args.grid = 500, 5
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ranks in (1, 2):
            out = f"{tmp}/ranks{ranks}.json"
            outcomes = run_ranks(measure, ranks, out, args.n, args.grid, args.k, timeout=3600)
            if any(outcomes):
                raise SystemExit(f"{ranks} rank(s) failed: {outcomes}")
            results[ranks] = read_json(out)
    one, two = results[1], results[2]
    print(f"Colored MNIST MLP (306,151 parameters), 2 x {args.n} samples ({one['source']}), "
          f"one thread per rank")  # fmt: skip
    print(f"{'workload':<26}{'ranks':>6}{'seconds':>10}{'work':>12}{'collectives':>13}"
          f"{'s in them':>11}{'MB sent':>10}{'kB/product':>12}")  # fmt: skip
    labels = {"ieps": "I^eps matrix-free top-k", "surface": f"surface {args.grid}x{args.grid}"}
    for name, unit in (("ieps", "products"), ("surface", "points")):
        for ranks, res in results.items():
            r = res[name]
            per = r["bytes"] / 1e3 / r[unit] if name == "ieps" else float("nan")
            print(f"{labels[name]:<26}{ranks:>6}{r['seconds']:>10.2f}{r[unit]:>8} {unit[:4]:<3}"
                  f"{r['collectives']:>13}{r['seconds_in']:>11.2f}{r['bytes'] / 1e6:>10.2f}"
                  f"{per:>12.1f}")  # fmt: skip
        ratio = one[name]["seconds"] / two[name]["seconds"]
        print(f"{'':<26}speed-up 1 -> 2 ranks: {ratio:.2f}x")
    agree = abs(one["ieps"]["score"] - two["ieps"]["score"]) / abs(one["ieps"]["score"])
    print(f"I^eps 1 rank {one['ieps']['score']:.6g}, 2 ranks {two['ieps']['score']:.6g} "
          f"(relative difference {agree:.1e}); surface loss sums "
          f"{one['surface']['loss_sum']:.6g} / {two['surface']['loss_sum']:.6g}")  # fmt: skip
    print(json.dumps({"args": vars(args)}))


if __name__ == "__main__":
    main()
