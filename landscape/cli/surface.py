"""Per-domain 2D loss-surface slices of a checkpoint on one shared, seeded plane.

Evaluates f_e(alpha, beta) = R_e(theta_0 + alpha * d1 + beta * d2) for every domain e on
the same grid and directions (Li et al. 2018), plus the differences between domains. The
weights are a landscape checkpoint, a state dict with --model / --data, or a DomainBed
model.pkl (landscape.inputs); default domains: the training then the test domains.

Directions (--directions):
  random         seeded Gaussian, --normalization filter (default; each output row / filter
                 rescaled to the weights' row), layer or none; biases and norm-layer
                 parameters get zero direction unless --include-biases
  eigen          the top two Hessian eigenvectors of one domain (--eigen-domain)
  inconsistency  the maximiser of I^eps (--epsilon, on --params) and a seeded random
                 direction orthogonal to it
  plane          the plane through the checkpoint and one or two --checkpoints
                 (e.g. initial weights, ERM, Fishr); the checkpoint is at (0, 0)
  trajectory     the first two principal components of --checkpoints (a training
                 trajectory, in order), projected trajectory stored in the result
  FILE           directions saved earlier (FILE.npz + FILE.json), to share a plane

Batch norm: the model is evaluated in eval mode with its running statistics (default), or
with statistics recomputed at each point on each domain (--batch-norm recompute).

Writes OUT/surface.{npz,json} (landscape.surface.SurfaceResult.load) and
OUT/directions.{npz,json} (landscape.surface.Directions.load). Finished grid rows go to
OUT/surface_rows/ as they finish: running the same command again resumes.

Example:
  CKPT=runs/demo/run/fishr/restart_0/checkpoints/step_00501.safetensors  # after make demo
  landscape surface $CKPT --grid -1 1 31 --subsample 2000
"""

from __future__ import annotations

import argparse

from landscape.cli._common import (
    CHECKPOINT_HELP,
    add_analysis_arguments,
    add_domains_argument,
    add_inputs_arguments,
    add_params_argument,
    add_remedy_arguments,
    epsilon_value,
)

HELP = "per-domain 2D loss surfaces of a checkpoint on shared, seeded directions"

KINDS = ("random", "eigen", "inconsistency", "plane", "trajectory")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help=CHECKPOINT_HELP)
    add_inputs_arguments(
        parser.add_argument_group("what to analyse"),
        "; also the samples per forward call of the grid",
    )
    _add_direction_arguments(parser.add_argument_group("directions"))
    _add_grid_arguments(parser.add_argument_group("grid and evaluation"))
    add_analysis_arguments(parser, "surface")


def _add_direction_arguments(group) -> None:
    group.add_argument(
        "--directions",
        default="random",
        metavar="KIND|FILE",
        help=f"{', '.join(KINDS)}, or a saved directions file; default random",
    )
    add_params_argument(group)
    group.add_argument("--seed", type=int, default=0, help="seed of directions and subsample")
    group.add_argument(
        "--normalization",
        choices=["filter", "layer", "none"],
        default="filter",
        help="random directions: rescaling to the weights; default filter",
    )
    group.add_argument(
        "--include-biases",
        action="store_true",
        help="random directions: move biases and norm-layer parameters too",
    )
    group.add_argument(
        "--checkpoints",
        nargs="+",
        default=None,
        help="plane: one or two more checkpoints; trajectory: the trajectory's checkpoints",
    )
    group.add_argument(
        "--eigen-domain", default=None, help="eigen: the domain whose Hessian is used"
    )
    group.add_argument(
        "--epsilon",
        type=epsilon_value,
        default=1e-3,
        help="inconsistency: eps of I^eps; default 1e-3",
    )
    add_remedy_arguments(group, "inconsistency: ")


def _add_grid_arguments(group) -> None:
    group.add_argument(
        "--grid",
        type=float,
        nargs=3,
        default=None,
        metavar=("MIN", "MAX", "NUM"),
        help="grid of both axes (default -1 1 21; for plane / trajectory: covering the "
        "checkpoints)",
    )
    group.add_argument(
        "--beta-grid",
        type=float,
        nargs=3,
        default=None,
        metavar=("MIN", "MAX", "NUM"),
        help="a different grid for the second axis",
    )
    add_domains_argument(group)
    group.add_argument(
        "--subsample",
        type=int,
        default=None,
        metavar="N",
        help="evaluate each domain on N samples drawn with --seed; default: all",
    )
    group.add_argument(
        "--batch-norm",
        choices=["running", "recompute"],
        default="running",
        help="running statistics of the checkpoint (default) or recomputed at every point",
    )
    group.add_argument(
        "--points-per-call",
        default="auto",
        help="grid points per forward call (vmap); auto: 1 on CPU, 16 on GPU",
    )
    group.add_argument("--restart", action="store_true", help="ignore rows saved by an earlier run")


def _grid(args):
    def spec(values, what):
        lo, hi, num = values
        if not float(num).is_integer():
            raise ValueError(f"{what}: NUM must be an integer, got {num:g}")
        return (lo, hi, int(num))

    from landscape.surface import DEFAULT_GRID

    if args.grid is None and args.beta_grid is None:
        return None
    alpha = spec(args.grid, "--grid") if args.grid is not None else DEFAULT_GRID
    beta = spec(args.beta_grid, "--beta-grid") if args.beta_grid is not None else alpha
    return (alpha, beta)


def build_directions(args, model, loss_func, domains, params):
    """The directions asked for on the command line."""
    from pathlib import Path

    from landscape import surface as D

    kind = args.directions
    if kind == "random":
        return D.random_directions(
            model, params, args.normalization, seed=args.seed, include_biases=args.include_biases
        )
    if kind == "eigen":
        name = args.eigen_domain or next(iter(domains))
        if name not in domains:
            raise ValueError(
                f"unknown domain {name!r} for --eigen-domain; available: {', '.join(domains)}"
            )
        return D.eigen_directions(
            model, loss_func, domains, params=params, domain=name, seed=args.seed
        )
    if kind == "inconsistency":
        from landscape.inconsistency import inconsistency_score

        if len(domains) < 2:
            raise ValueError("--directions inconsistency needs at least two domains")
        result = inconsistency_score(
            model,
            loss_func,
            domains,
            args.epsilon,
            params=params,
            check=False,
            remedy=args.remedy,
            damping=args.damping,
            k=args.k,
            seed=args.seed,
            progress=not args.quiet,
        )
        return D.inconsistency_directions(result, model=model, seed=args.seed)
    if kind in ("plane", "trajectory"):
        if not args.checkpoints:
            raise ValueError(f"--directions {kind} needs --checkpoints PATH [PATH ...]")
        if kind == "plane":
            if len(args.checkpoints) > 2:
                raise ValueError("--directions plane takes one or two --checkpoints")
            paths = [args.checkpoint, *args.checkpoints]
            return D.plane_directions(model, paths, params=params, seed=args.seed)
        return D.trajectory_directions(model, list(args.checkpoints), params=params)
    path = Path(kind)
    if path.with_suffix(".json").is_file() or path.is_file():
        dirs = D.Directions.load(path)
        dirs.check_model(model)
        return dirs
    raise ValueError(
        f"unknown directions {kind!r}; use {', '.join(KINDS)} or a saved directions file"
    )


def run(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from landscape.cli._common import load_checkpoint, model_device, params_from_args
    from landscape.surface import loss_surface, make_grid

    grid = _grid(args)
    if grid is not None:
        make_grid(grid)  # fail before loading anything
    ppc = args.points_per_call
    if ppc != "auto":
        try:
            ppc = int(ppc)
        except ValueError:
            raise ValueError(f"--points-per-call must be auto or an integer, got {ppc!r}") from None
    model, meta, domains, loss_func = load_checkpoint(args, default="all")
    params = params_from_args(args.params)

    from landscape.distributed import writes_here

    dirs = build_directions(args, model, loss_func, domains, params)
    out = Path(args.out)
    rows = out / "surface_rows"
    if args.restart and rows.exists() and writes_here():  # torchrun: rank 0 removes them
        shutil.rmtree(rows)  # before loss_surface's first collective lets any rank write
    try:
        result = loss_surface(
            model,
            loss_func,
            domains,
            dirs,
            grid=grid,
            subsample=args.subsample,
            seed=args.seed,
            batch_size=args.batch_size,
            batch_norm=args.batch_norm,
            points_per_call=ppc,
            checkpoint_dir=rows,
            progress=not args.quiet,
        )
    except ValueError as err:
        if "other settings" in str(err):
            raise ValueError(f"{err}; or pass --restart") from None
        raise
    result.settings["checkpoint"] = str(args.checkpoint)
    result.settings["device"] = model_device(model)
    dirs.save(out / "directions")
    path = result.save(out / "surface")
    center = [
        f"{n}: loss {result.losses[n].min():.4g}..{result.losses[n].max():.4g}" for n in domains
    ]
    print(
        f"surface {len(result.alphas)} x {len(result.betas)} on {dirs.kind} directions "
        f"(seed {dirs.seed}, {dirs.normalization}); " + "; ".join(center)
    )
    print(f"wrote {path}, {path.with_suffix('.npz')} and {out / 'directions.json'}")
    return 0
