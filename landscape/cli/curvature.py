"""Per-domain curvature of a checkpoint: gradient variances, diagonals, eigenpairs, traces.

Loads the checkpoint, rebuilds its domains from the data spec in its metadata (default: its
training domains) and writes one result per method to OUT (``<method>.json`` +
``<method>.npz``, loadable with the matching class of landscape.curvature):

  variance   gradient variance and empirical Fisher diagonal (GradientVarianceResult)
  diagonal   Hessian diagonal, --diagonal-method exact|ggn|fisher_mc|hutchinson
             (HessianDiagonalResult)
  eigen      top-k eigenpairs (and with --smallest the k most negative) of --curvature
             (EigenpairsResult)
  trace      Hutchinson trace with standard error and the exact trace from the diagonal
             (TraceResult, files trace and trace_exact)
  density    spectral density by stochastic Lanczos quadrature (SpectralDensityResult)
  compare    distances / cosines between domains, principal angles (ComparisonResult;
             needs two domains or more)

A summary table is printed and written to OUT/curvature_summary.json. Every random choice is
seeded by --seed and recorded in the results.

Example:
  landscape curvature runs/fishr/final.safetensors --params classifier \
      --methods variance diagonal compare
"""

from __future__ import annotations

import argparse

from landscape.cli._common import (
    add_analysis_arguments,
    add_domains_argument,
    add_params_argument,
)

HELP = "per-domain gradient variances, Hessian diagonals, eigenpairs, traces of a checkpoint"

METHODS = ["variance", "diagonal", "eigen", "trace", "density", "compare"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint written by landscape train")
    add_params_argument(parser)
    add_domains_argument(parser)
    parser.add_argument(
        "--subsample",
        type=int,
        default=None,
        metavar="N",
        help="use the first N samples of each domain (deterministic); default: all",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["variance", "diagonal", "eigen", "trace"],
        choices=METHODS,
        help="what to compute (default: variance diagonal eigen trace)",
    )
    parser.add_argument("--k", type=int, default=5, help="eigenpairs per domain (default 5)")
    parser.add_argument(
        "--smallest", action="store_true", help="also the k smallest (most negative) eigenpairs"
    )
    parser.add_argument(
        "--curvature",
        choices=["hessian", "ggn", "ef"],
        default="hessian",
        help="matrix for eigen / trace / density: Hessian, GGN or empirical Fisher",
    )
    parser.add_argument(
        "--diagonal-method",
        choices=["exact", "ggn", "fisher_mc", "hutchinson"],
        default="exact",
        help="diagonal method (default exact: BackPACK DiagHessian)",
    )
    parser.add_argument(
        "--probes", type=int, default=50, help="Hutchinson / SLQ probes (default 50)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    add_analysis_arguments(parser, "curvature")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from landscape import curvature as C
    from landscape.cli._common import load_for_analysis, params_from_args
    from landscape.io import write_json

    if args.k < 1:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    if args.probes < 2:
        raise ValueError(f"--probes must be at least 2, got {args.probes}")
    model, meta, domains, loss_func = load_for_analysis(
        args.checkpoint,
        device=args.device,
        data_dir=args.data_dir,
        domains=args.domains,
        subsample=args.subsample,
    )
    if "compare" in args.methods and len(domains) < 2:
        raise ValueError(
            f"--methods compare needs at least 2 domains, got {len(domains)}; pass --domains"
        )
    params = params_from_args(args.params)
    progress = not args.quiet
    out = Path(args.out)
    common = {"params": params, "progress": progress}
    summary: dict = {"checkpoint": str(args.checkpoint), "domains": list(domains), "files": []}
    rows: dict[str, dict[str, str]] = {name: {} for name in domains}

    def save(result, stem):
        path = result.save(out / stem)
        summary["files"].append(str(path))

    if "variance" in args.methods:
        gv = C.gradient_variance(model, loss_func, domains, **common)
        save(gv, "variance")
        for n in domains:
            rows[n]["sum Var(g)"] = f"{gv.variance[n].sum():.4g}"
    if "diagonal" in args.methods:
        hd = C.hessian_diagonal(
            model,
            loss_func,
            domains,
            method=args.diagonal_method,
            num_probes=args.probes,
            seed=args.seed,
            **common,
        )
        save(hd, "diagonal")
        for n in domains:
            rows[n]["sum diag"] = f"{hd.diagonal[n].sum():.4g}"
    if "eigen" in args.methods:
        eig = C.top_eigenpairs(
            model,
            loss_func,
            domains,
            k=args.k,
            which="both" if args.smallest else "largest",
            curvature=args.curvature,
            seed=args.seed,
            **common,
        )
        save(eig, "eigen")
        for n in domains:
            rows[n]["lambda_max"] = f"{eig.largest_eigenvalues[n][0]:.5g}"
            if args.smallest:
                rows[n]["lambda_min"] = f"{eig.smallest_eigenvalues[n][0]:.5g}"
    if "trace" in args.methods:
        tr = C.hessian_trace(
            model,
            loss_func,
            domains,
            num_probes=args.probes,
            curvature=args.curvature,
            seed=args.seed,
            **common,
        )
        save(tr, "trace")
        for n in domains:
            rows[n]["trace (Hutchinson)"] = f"{tr.trace[n]:.4g} +- {tr.standard_error[n]:.2g}"
        try:
            exact = C.hessian_trace(
                model, loss_func, domains, method="exact", curvature=args.curvature, **common
            )
        except ValueError as err:  # BackPACK cannot handle the model: say so, keep going
            print(f"exact trace skipped: {err}")
        else:
            save(exact, "trace_exact")
            for n in domains:
                rows[n]["trace (exact)"] = f"{exact.trace[n]:.4g}"
    if "density" in args.methods:
        sd = C.spectral_density(
            model,
            loss_func,
            domains,
            num_probes=min(args.probes, 10),
            curvature=args.curvature,
            seed=args.seed,
            **common,
        )
        save(sd, "density")
    if "compare" in args.methods:
        cmp = C.compare_domains(
            model,
            loss_func,
            domains,
            k=args.k,
            diagonal_method=args.diagonal_method,
            num_probes=args.probes,
            curvature=args.curvature,
            seed=args.seed,
            **common,
        )
        save(cmp, "compare")
        summary["compare"] = {
            "variance_distance": cmp.variance_distance.tolist(),
            "variance_cosine": cmp.variance_cosine.tolist(),
            "diagonal_distance": cmp.diagonal_distance.tolist(),
            "diagonal_cosine": cmp.diagonal_cosine.tolist(),
            "within_cosine": cmp.within_cosine.tolist(),
            "largest_principal_angle": np.asarray(cmp.principal_angles).max(-1).tolist()
            if args.k
            else None,
        }
        for i, n in enumerate(domains):
            rows[n]["cos(Var, diag H)"] = f"{cmp.within_cosine[i]:.3f}"
    summary["table"] = rows
    columns = list(dict.fromkeys(c for r in rows.values() for c in r))
    _print_table(rows, columns)
    write_json(out / "curvature_summary.json", summary)
    print(f"\nwrote {len(summary['files'])} results and {out / 'curvature_summary.json'}")
    return 0


def _print_table(rows: dict[str, dict[str, str]], columns: list[str]) -> None:
    if not columns:
        return
    header = ["domain", *columns]
    table = [header] + [[n] + [r.get(c, "") for c in columns] for n, r in rows.items()]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for j, row in enumerate(table):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if j == 0:
            print("  ".join("-" * w for w in widths))
