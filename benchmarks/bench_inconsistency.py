"""Time the inconsistency score I^eps on the Colored MNIST MLP: head dense, whole network
matrix-free, and the two matrix-free eigensolvers side by side.

Setup: ``landscape.models.colored_mnist_mlp()`` (306,151 parameters; head 391) at its seeded
initialisation or loaded from ``--checkpoint``, two domains of ``--n`` samples each (real
Colored MNIST ``+80%`` / ``+90%`` when the offline MNIST cache is there, else random inputs
``[N, 2, 14, 14]`` with random labels), BCE with logits, Hessian curvature. Printed:

* ``head, dense``: ``inconsistency_score(params="classifier", method="dense")``, whole call
  (two float64 391 x 391 matrices, eigendecompositions, all pairs); goal < 1 s at full size;
  then the same with the empirical check on the true losses, and the ratio of the check's
  time to the score's (goal <= 3; the check's risks run the head alone on its cached input);
  Printed side by side for ``remedy="top-k", k=20``: after (the output-layer closed form
  H = GGN = A~^T diag(w) A~ / N, summed in float64 from the model's float32 features) and
  before (a float64 copy of the model and data, 391 Hessian-vector products per matrix),
  with the largest difference of the generalized eigenvalues;
* ``head, matrix-free``: LOBPCG and ARPACK-with-CG on the same pairs: time, products and
  the eigenvalue, to choose the solver with evidence;
* ``whole network, matrix-free``: ``remedy="top-k"`` (a trained or random network's
  Hessian is indefinite: the score is reported, not computed, without a remedy), Lanczos
  products per domain plus ``k`` products per pair; goal < 5 min at full size. With
  ``--whole-damping`` also LOBPCG on the damped GGN pair (often slower: many iterations).

Usage::

    python benchmarks/bench_inconsistency.py             # full size: 2 x 25,000 samples
    python benchmarks/bench_inconsistency.py --quick     # 2 x 500 samples
    python benchmarks/bench_inconsistency.py --checkpoint runs/erm/final.safetensors
    python benchmarks/bench_inconsistency.py --head-only   # the dense head only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _data import load_domains  # noqa: E402  (benchmarks/_data.py)
from torch import nn  # noqa: E402

from landscape.curvature import CurvatureOperator, NoClosedForm  # noqa: E402
from landscape.device import resolve_device, set_threads  # noqa: E402
from landscape.inconsistency import NotPositiveDefiniteError, inconsistency_score  # noqa: E402
from landscape.models import colored_mnist_mlp  # noqa: E402


def products(result) -> str:
    ops = {k[9:]: v["products"] for k, v in result.solver.items() if k.startswith("operator ")}
    total = sum(ops.values())
    return f"{total} products ({', '.join(f'{d}: {c}' for d, c in ops.items())})"


def pair_line(result) -> str:
    i, j = (result.domains.index(d) for d in result.pair)
    return (
        f"score {result.score:.6g}  pair {result.pair[0]} -> {result.pair[1]}  "
        f"risk gap {result.risk_gap[i, j]:.4g}  curvature {result.curvature_term[0, i, j]:.4g}"
        f"  lambda {result.eigenvalues[i, j]:.4g}"
    )


def timed(label: str, **kwargs):
    start = time.perf_counter()
    try:
        result = inconsistency_score(**kwargs)
    except (NotPositiveDefiniteError, ValueError) as err:
        print(f"{label}: reported, not computed: {err}")
        return None
    seconds = time.perf_counter() - start
    print(f"{label}: {seconds:.2f} s  {pair_line(result)}")
    return result, seconds


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 x 500 samples")
    parser.add_argument("--n", type=int, default=None, help="samples per domain (25,000)")
    parser.add_argument("--k", type=int, default=20, help="top-k subspace, whole network")
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint")
    parser.add_argument("--whole-damping", action="store_true", help="also damped LOBPCG")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--head-only", action="store_true", help="only the dense head timings")
    parser.add_argument(
        "--skip-solvers",
        action="store_true",
        help="skip the head's matrix-free LOBPCG vs ARPACK comparison (slow at full size)",
    )
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def setup(args) -> dict:
    """The keyword arguments every timed call shares (model, loss, domains, ...)."""
    if args.threads:
        set_threads(args.threads)  # torch and BLAS pools alike
    device = resolve_device(args.device)
    n = args.n or (500 if args.quick else 25_000)
    if args.checkpoint:
        from landscape.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint, device=device)
        what = args.checkpoint
    else:
        torch.manual_seed(0)
        model = colored_mnist_mlp().to(device).eval()
        what = "colored_mnist_mlp() at its seeded initialisation"
    domains, source = load_domains(n, device)
    D = sum(p.numel() for p in model.parameters())
    print(
        f"model: {what}, D={D} (head 391); data: {source}, 2 x {n} samples; device {device}; "
        f"torch threads {torch.get_num_threads()}; eps={args.epsilon:g}"
    )
    return dict(
        model=model,
        loss_func=nn.BCEWithLogitsLoss(),
        domains=domains,
        epsilon=args.epsilon,
        check=False,
        progress=False,
        seed=0,
    )


def head_dense(common: dict) -> None:
    """The dense head: plain, with the empirical check, and closed form vs products."""
    timed("head, dense (first call)", params="classifier", method="dense", **common)
    plain = timed("head, dense", params="classifier", method="dense", **common)
    checked = timed(
        "head, dense, with the empirical check (default 30 ascent steps)",
        params="classifier",
        method="dense",
        **{**common, "check": True},
    )
    if plain and checked:
        ratio = (checked[1] - plain[1]) / plain[1]
        print(f"    check / score time: {ratio:.1f} (goal <= 3)")
        print(f"    risks evaluated by: {checked[0].check['evaluator']}")
    head = dict(params="classifier", method="dense", remedy="top-k", k=20, **common)
    after = timed("head, dense, top-20, after (closed form)", **head)
    original = CurvatureOperator.dense

    def loop(self, *args, method="auto", **kwargs):  # the code before the closed form
        if method == "closed-form":
            raise NoClosedForm("disabled for the 'before' timing")
        return original(self, *args, method="products", **kwargs)

    with mock.patch.object(CurvatureOperator, "dense", loop):
        before = timed("head, dense, top-20, before (391 products per matrix)", **head)
    if after and before:
        diff = float(abs(after[0].eigenvalues - before[0].eigenvalues).max())
        print(f"    speed-up {before[1] / after[1]:.1f}x; max |eigenvalue difference| {diff:.1e}")


def head_solvers(common: dict) -> None:
    """LOBPCG and ARPACK on the head's pairs (damped when the plain solve is refused)."""
    for solver in ("lobpcg", "eigsh"):
        head = dict(params="classifier", method="matrix-free", solver=solver, maxiter=300)
        out = timed(f"head, matrix-free {solver}", **head, **common)
        if out is None:
            out = timed(
                f"head, matrix-free {solver}, damping 1e-3",
                remedy="damping",
                damping=1e-3,
                **head,
                **common,
            )
        if out is not None:
            res = out[0]
            iters = {p: s["iterations"] for p, s in res.solver.items() if "iterations" in s}
            print(f"    {products(res)}; iterations {iters}")


def whole_network(common: dict, k: int, damping: bool) -> None:
    """The whole network, matrix-free: top-k, and (``damping``) LOBPCG on the damped GGN."""
    out = timed(f"whole network, matrix-free, top-{k}", method="matrix-free", remedy="top-k",
                k=k, **common)  # fmt: skip
    if out is not None:
        res, seconds = out
        print(
            f"    {products(res)}; H_A: "
            + "; ".join(
                f"{d}: {v['status']} (min Ritz {v['min_eigenvalue']:.3g}, "
                f"max {v['max_eigenvalue']:.3g})"
                for d, v in res.definiteness.items()
            )
        )
        print(f"    goal < 300 s: {'met' if seconds < 300 else 'NOT met'} ({seconds:.1f} s)")
    if damping:
        out = timed(
            "whole network, matrix-free LOBPCG, GGN, damping 1e-3",
            method="matrix-free",
            curvature="ggn",
            remedy="damping",
            damping=1e-3,
            maxiter=50,
            **common,
        )
        if out is not None:
            res = out[0]
            conv = {
                p: (s["iterations"], s["converged"], f"{s['residual']:.1e}")
                for p, s in res.solver.items()
                if "iterations" in s
            }
            print(f"    {products(res)}; (iterations, converged, residual) {conv}")


def main(argv=None) -> int:
    args = parse(argv)
    common = setup(args)
    head_dense(common)
    if args.head_only:
        return 0
    if not args.skip_solvers:
        head_solvers(common)
    whole_network(common, args.k, args.whole_damping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
