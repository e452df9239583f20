"""Compute the inconsistency score I^eps of a checkpoint (docs/method.md section 3).

For every ordered pair (A, B) of domains: the risk gap R_B - R_A, the curvature term
eps * lambda_max(H_B, H_A) and their sum; the score is the largest sum (at least eps). The
table shows the pairwise matrix, the winning pair with its parts and, unless --no-check, the
empirical check on the true losses beside the quadratic value: |R_B - R_A(theta*)| where R_A
has changed by eps along the maximiser, and a projected ascent on R_B inside
|R_A - R_A(theta*)| <= eps (a lower bound of Parascandolo's definition).

The weights are a landscape checkpoint, a state dict with --model / --data, or a DomainBed
model.pkl (landscape.inputs); the domains are rebuilt from the checkpoint's data spec or
DomainBed's environments (--split; default: its training domains), or come from --data.
Writes OUT/score.json and OUT/score.npz (the result, loadable with
landscape.inconsistency.InconsistencyResult.load) and OUT/score_summary.json.

Methods: dense (exact [D, D] curvature, e.g. --params classifier for Fishr's head),
matrix-free (LOBPCG on curvature-vector products, whole networks), diagonal (ratios of
diagonals, what Fishr matches); the default, auto, is dense up to 2048 parameters and
matrix-free beyond. The Hessian H_A of a trained ReLU network is singular or
indefinite, so by default the score is restricted to the top-k eigenspace of H_A
(--remedy top-k, k = min(20, D - 1)); --remedy damping uses H_A + damping * lambda_max(H_A) I
instead, and --remedy none is the strict score, which stops and says so when H_A is not
positive definite. The remedy used is printed and recorded.

Example:
  CKPT=runs/demo/run/fishr/restart_0/checkpoints/step_00501.safetensors  # after make demo
  landscape score $CKPT --params classifier --epsilon 1e-3 1e-2
"""

from __future__ import annotations

import argparse

from landscape.cli._common import (
    CHECKPOINT_HELP,
    add_analysis_arguments,
    add_curvature_argument,
    add_domains_argument,
    add_inputs_arguments,
    add_params_argument,
    add_remedy_arguments,
    add_subsample_argument,
    epsilon_value,
)

# landscape.inconsistency.CheckOptions().steps, stated in the help (spelled out: no torch
# import to parse; tests/cli/test_score.py keeps them equal). --check-steps passes only an
# explicit value, so the library's default applies.
CHECK_STEPS = 30
# landscape.inconsistency.AUTO_DENSE_DIM: --method auto's largest dense problem (spelled out
# likewise; tests/cli/test_score.py keeps them equal)
AUTO_DENSE_DIM = 2048

HELP = "inconsistency score I^eps of a checkpoint: pairwise matrix, winning pair, parts, check"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    add_inputs_arguments(parser.add_argument_group("what to analyse"))
    parser.add_argument(
        "--epsilon",
        type=epsilon_value,
        nargs="+",
        default=[1e-3],
        help="eps > 0, one or several values (the eigenproblem is solved once); default 1e-3",
    )
    add_params_argument(parser)
    parser.add_argument(
        "--method",
        choices=["auto", "dense", "matrix-free", "diagonal"],
        default="auto",
        help="dense (exact, D up to a few thousand), matrix-free (whole networks) or "
        "diagonal (ratios of diagonals); default auto: dense for at most "
        f"{AUTO_DENSE_DIM} parameters (e.g. --params classifier), else matrix-free",
    )
    add_curvature_argument(
        parser, "Hessian, generalised Gauss-Newton or empirical Fisher; default hessian"
    )
    parser.add_argument(
        "--diagonal-source",
        choices=["hessian", "variance"],
        default="hessian",
        help="diagonal method: the curvature's diagonal or Fishr's gradient variances",
    )
    add_domains_argument(parser)
    add_subsample_argument(parser)
    add_remedy_arguments(parser, default="top-k")
    parser.add_argument(
        "--check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the empirical check on the true losses (default: on)",
    )
    parser.add_argument(
        "--check-steps",
        type=int,
        default=None,
        metavar="N",
        help="steps of the check's search: projected gradient ascent on R_B of the winning "
        "pair, kept inside |R_A - R_A(theta*)| <= eps, from the point where the line along "
        "the maximiser leaves that region (a lower bound of Parascandolo's definition). "
        "Each step costs two gradients and a few risk evaluations of both domains (the line "
        "check on every pair costs a handful of risk evaluations); 0 keeps the line's point. "
        f"Default {CHECK_STEPS}, the library's",
    )
    parser.add_argument(
        "--solver",
        choices=["lobpcg", "eigsh"],
        default="lobpcg",
        help="matrix-free eigensolver; default lobpcg",
    )
    parser.add_argument(
        "--maxiter", type=int, default=100, help="matrix-free eigensolver iterations"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random start")
    add_analysis_arguments(parser, "score")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from landscape.cli._common import default_k, load_checkpoint, model_device, params_from_args
    from landscape.inconsistency import inconsistency_score
    from landscape.io import write_json
    from landscape.params import select_params

    model, meta, domains, loss_func = load_checkpoint(args, subsample=args.subsample)
    params = params_from_args(args.params)
    remedy = None if args.remedy == "none" else args.remedy
    k = args.k
    if k is None:
        dim = sum(p.numel() for p in select_params(model, params).values())
        k = default_k(dim)
    result = inconsistency_score(
        model,
        loss_func,
        domains,
        args.epsilon if len(args.epsilon) > 1 else args.epsilon[0],
        params=params,
        method=args.method,
        curvature=args.curvature,
        diagonal_source=args.diagonal_source,
        remedy=remedy,
        damping=args.damping,
        k=k,
        check=args.check,
        solver=args.solver,
        maxiter=args.maxiter,
        seed=args.seed,
        progress=not args.quiet,
        **({} if args.check_steps is None else {"check_steps": args.check_steps}),
    )
    print(result.table())
    print(remedy_line(result, args))
    out = Path(args.out)
    path = result.save(out / "score")
    summary = result.summary()
    summary.update(checkpoint=str(args.checkpoint), params=args.params, subsample=args.subsample)
    summary["device"] = model_device(model)
    write_json(out / "score_summary.json", summary)
    print(f"\nwrote {path}, {path.with_suffix('.npz')} and {out / 'score_summary.json'}")
    return 0


def remedy_line(result, args: argparse.Namespace) -> str:
    """One line saying which remedy the score used and how to choose another."""
    used = result.remedy or "none"
    line = f"remedy: {used}"
    if used == "top-k":
        line += f" (k={result.k})"
    elif used == "damping":
        line += f" (damping {result.damping:g})"
    if used == "range":
        line += " (H_A singular, every H_B zero on its null space: exact on its range)"
    if args.remedy != "none":
        line += " (--remedy none for the strict score)"
    return line
