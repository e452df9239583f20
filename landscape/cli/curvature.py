"""Per-domain curvature of a checkpoint: gradient variances, diagonals, eigenpairs, traces.

Loads the weights (a landscape checkpoint, a state dict with --model / --data, or a DomainBed
model.pkl: see landscape.inputs), gathers the domains (the checkpoint's data spec or
DomainBed's environments, default its training domains; or --data) and writes one result per
method to OUT (``<method>.json`` + ``<method>.npz``, loadable with the matching class of
landscape.curvature):

  variance   gradient variance and empirical Fisher diagonal (GradientVarianceResult)
  diagonal   Hessian diagonal, --diagonal-method auto|exact|ggn|fisher_mc|hutchinson
             (HessianDiagonalResult; the method and backend that ran are recorded)
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
  CKPT=runs/demo/run/fishr/restart_0/checkpoints/step_00501.safetensors  # after make demo
  landscape curvature $CKPT --params classifier \
      --methods variance diagonal compare
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
    add_subsample_argument,
)

HELP = "per-domain gradient variances, Hessian diagonals, eigenpairs, traces of a checkpoint"

METHODS = ["variance", "diagonal", "eigen", "trace", "density", "compare"]

# the values of landscape.curvature.DiagonalMethod (spelled out: no torch import to parse)
DIAGONAL_METHODS = ["auto", "exact", "ggn", "fisher_mc", "hutchinson"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    add_inputs_arguments(parser.add_argument_group("what to analyse"))
    add_params_argument(parser)
    add_domains_argument(parser)
    add_subsample_argument(parser)
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
    add_curvature_argument(
        parser, "matrix for eigen / trace / density: Hessian, GGN or empirical Fisher"
    )
    parser.add_argument(
        "--diagonal-method",
        choices=DIAGONAL_METHODS,
        default="auto",
        help="diagonal of diagonal / compare: auto (default) the exact Hessian diagonal "
        "where possible, else Hutchinson with its standard error; exact the Hessian "
        "diagonal (BackPACK DiagHessian, else one Hessian-vector product per parameter for "
        "small selections; stops otherwise); ggn the exact GGN diagonal, the Fisher for "
        "CE / BCE (BackPACK, else per-sample Jacobians by torch.func; any model); "
        "fisher_mc a Monte-Carlo Fisher with labels sampled from the model (BackPACK "
        "only); hutchinson E[v * Hv] over --probes Rademacher probes with a standard "
        "error (any model)",
    )
    parser.add_argument(
        "--probes", type=int, default=50, help="Hutchinson / SLQ probes (default 50)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    add_analysis_arguments(parser, "curvature")


class _Report:
    """What the command writes: the results' files, the per-domain table, the summary."""

    def __init__(self, args: argparse.Namespace, domains) -> None:
        from pathlib import Path

        self.out = Path(args.out)
        self.domains = list(domains)
        self.rows: dict[str, dict[str, str]] = {name: {} for name in domains}
        self.summary: dict = {
            "checkpoint": str(args.checkpoint),
            "domains": self.domains,
            "files": [],
        }

    def save(self, result, stem: str) -> None:
        self.summary["files"].append(str(result.save(self.out / stem)))

    def column(self, name: str, values) -> None:
        """One table column: ``values(domain) -> str``."""
        for n in self.domains:
            self.rows[n][name] = values(n)

    def finish(self) -> None:
        from landscape.io import write_json

        self.summary["table"] = self.rows
        columns = list(dict.fromkeys(c for r in self.rows.values() for c in r))
        _print_table(self.rows, columns)
        path = self.out / "curvature_summary.json"
        write_json(path, self.summary)
        print(f"\nwrote {len(self.summary['files'])} results and {path}")


def _variance(C, args, analysis, report: _Report) -> None:
    gv = C.gradient_variance(*analysis.call, **analysis.common)
    report.save(gv, "variance")
    report.column("sum Var(g)", lambda n: f"{gv.variance[n].sum():.4g}")


def _diagonal(C, args, analysis, report: _Report) -> None:
    hd = C.hessian_diagonal(
        *analysis.call, method=args.diagonal_method, num_probes=args.probes, seed=args.seed,
        **analysis.common,
    )  # fmt: skip
    report.save(hd, "diagonal")
    report.summary["diagonal"] = {k: hd.settings.get(k) for k in ("method", "backend", "exact")}
    report.column("sum diag", lambda n: f"{hd.diagonal[n].sum():.4g}")


def _eigen(C, args, analysis, report: _Report) -> None:
    eig = C.top_eigenpairs(
        *analysis.call, k=args.k, which="both" if args.smallest else "largest",
        curvature=args.curvature, seed=args.seed, **analysis.common,
    )  # fmt: skip
    report.save(eig, "eigen")
    report.column("lambda_max", lambda n: f"{eig.largest_eigenvalues[n][0]:.5g}")
    if args.smallest:
        report.column("lambda_min", lambda n: f"{eig.smallest_eigenvalues[n][0]:.5g}")


def _trace(C, args, analysis, report: _Report) -> None:
    tr = C.hessian_trace(
        *analysis.call, num_probes=args.probes, curvature=args.curvature, seed=args.seed,
        **analysis.common,
    )  # fmt: skip
    report.save(tr, "trace")
    report.column(
        "trace (Hutchinson)", lambda n: f"{tr.trace[n]:.4g} +- {tr.standard_error[n]:.2g}"
    )
    try:
        exact = C.hessian_trace(
            *analysis.call, method="exact", curvature=args.curvature, **analysis.common
        )
    except ValueError as err:  # BackPACK cannot handle the model: say so, keep going
        print(f"exact trace skipped: {err}")
        return
    report.save(exact, "trace_exact")
    report.column("trace (exact)", lambda n: f"{exact.trace[n]:.4g}")


def _density(C, args, analysis, report: _Report) -> None:
    sd = C.spectral_density(
        *analysis.call, num_probes=min(args.probes, 10), curvature=args.curvature,
        seed=args.seed, **analysis.common,
    )  # fmt: skip
    report.save(sd, "density")


def _compare(C, args, analysis, report: _Report) -> None:
    import numpy as np

    cmp = C.compare_domains(
        *analysis.call, k=args.k, diagonal_method=args.diagonal_method,
        num_probes=args.probes, curvature=args.curvature, seed=args.seed, **analysis.common,
    )  # fmt: skip
    report.save(cmp, "compare")
    report.summary["compare"] = {
        "variance_distance": cmp.variance_distance.tolist(),
        "variance_cosine": cmp.variance_cosine.tolist(),
        "diagonal_distance": cmp.diagonal_distance.tolist(),
        "diagonal_cosine": cmp.diagonal_cosine.tolist(),
        "within_cosine": cmp.within_cosine.tolist(),
        "largest_principal_angle": np.asarray(cmp.principal_angles).max(-1).tolist(),
    }
    index = {n: i for i, n in enumerate(report.domains)}
    report.column("cos(Var, diag H)", lambda n: f"{cmp.within_cosine[index[n]]:.3f}")


# --methods name -> what computes, saves and tabulates it (in the order of METHODS)
_RUNNERS = {
    "variance": _variance,
    "diagonal": _diagonal,
    "eigen": _eigen,
    "trace": _trace,
    "density": _density,
    "compare": _compare,
}


class _Analysis:
    """The loaded checkpoint as the curvature functions take it."""

    def __init__(self, model, loss_func, domains, params, progress: bool) -> None:
        self.call = (model, loss_func, domains)
        self.common = {"params": params, "progress": progress}


def run(args: argparse.Namespace) -> int:
    from landscape import curvature as C
    from landscape.cli._common import load_checkpoint, model_device, params_from_args

    if args.k < 1:
        raise ValueError(f"--k must be a positive integer, got {args.k}")
    if args.probes < 2:
        raise ValueError(f"--probes must be at least 2, got {args.probes}")
    model, meta, domains, loss_func = load_checkpoint(args, subsample=args.subsample)
    if "compare" in args.methods and len(domains) < 2:
        raise ValueError(
            f"--methods compare needs at least 2 domains, got {len(domains)}; pass --domains"
        )
    analysis = _Analysis(model, loss_func, domains, params_from_args(args.params), not args.quiet)
    report = _Report(args, domains)
    report.summary["device"] = model_device(model)
    for name in METHODS:
        if name in args.methods:
            _RUNNERS[name](C, args, analysis, report)
    report.finish()
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
