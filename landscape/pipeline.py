"""The default end-to-end job: train, analyse the checkpoints, draw the figures.

``landscape reproduce --out DIR`` runs, in order (each step is skipped when its output is
already there, so an interrupted job resumes):

1. :func:`landscape.training.train` on Colored MNIST (``DIR/run``): ERM and Fishr by default,
   checkpoints along the trajectory;
2. :func:`analyse_run` (``DIR/analysis``): for the final checkpoint of restart 0 of every
   algorithm, the inconsistency score I^ε of the head (dense, exact generalized
   eigenproblem) and of the whole network (matrix-free), both restricted to the top-k
   eigenspace of H_A (H_A of a trained ReLU network is singular: dead units), each with
   its empirical check on the true losses; the Hessian-alignment
   trajectory of the head over every checkpoint; per-domain loss surfaces on the plane
   through the initial weights and the final weights of two algorithms (e.g. ERM and
   Fishr), and on the plane of each model's inconsistency direction;
3. :func:`draw_figures` (``DIR/figures``): every figure of :mod:`landscape.plot` and the
   Table 2 comparison with the paper, from the saved results only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from landscape.io import read_json

SCORE_HEAD = "score_head_{algo}"
SCORE_NET = "score_network_{algo}"
SURFACE_PLANE = "surface_plane"
SURFACE_DIRECTION = "surface_inconsistency_{algo}"
ALIGNMENT = "alignment"


def _final_checkpoint(run_dir: Path, algo: str, restart: int = 0) -> Path:
    from landscape.training import checkpoint_path

    config = read_json(run_dir / "config.json")
    path = checkpoint_path(run_dir, algo, restart, int(config["steps"]))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; finish the run with `landscape train`")
    return path


def _final_exists(run_dir: Path, algo: str) -> bool:
    try:
        _final_checkpoint(run_dir, algo)
    except FileNotFoundError:
        return False
    return True


def _done(stem: Path) -> bool:
    return stem.with_suffix(".json").is_file() and stem.with_suffix(".npz").is_file()


def analyse_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    algorithms: list[str] | None = None,
    epsilon: float = 0.01,
    subsample: int | None = 5000,
    head_k: int = 20,
    network_k: int = 10,
    grid: int = 21,
    device: str = "cpu",
    data_dir: str | os.PathLike | None = None,
    progress: bool = True,
    log=print,
) -> Path:
    """Analyse a run folder into ``out_dir`` (see the module docstring); returns ``out_dir``.

    Args:
        run_dir: a folder written by :func:`landscape.training.train`.
        out_dir: where the results go (``.npz`` + ``.json`` each).
        algorithms: which algorithms (default: every one whose restart 0 has finished).
        epsilon: ε of the inconsistency score.
        subsample: samples per domain for the whole-network score and the surfaces (the
            head score and the alignment use every sample); ``None`` for all.
        head_k, network_k: dimension of the top eigenspace of H_A the ellipsoid is restricted
            to, for the head and the whole network (the trouble spot of docs/method.md section 3:
            a trained ReLU network's H_A is singular or indefinite, so the unrestricted
            maximum is unbounded; the restriction is recorded in each result).
        grid: points per axis of the surfaces.
        device: torch device.
        data_dir: MNIST cache folder.
        progress: progress bars.
        log: where one-line progress messages go.
    """
    from landscape.alignment import alignment_trajectory, run_layout
    from landscape.checkpoint import load_checkpoint
    from landscape.data import build_domains
    from landscape.surface.directions import inconsistency_directions, plane_directions
    from landscape.domains import pick_domains, truncate
    from landscape.inconsistency import inconsistency_score
    from landscape.losses import build_loss
    from landscape.surface import loss_surface, make_grid
    from landscape.training import checkpoint_path

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if algorithms is None:
        algorithms = [a for a in run_layout(run_dir) if _final_exists(run_dir, a)]
    finals = {}
    for algo in algorithms:
        model, meta = load_checkpoint(_final_checkpoint(run_dir, algo), device=device)
        finals[algo] = (model, meta)
    _, meta0 = finals[algorithms[0]]
    loss = build_loss(meta0.get("loss", "bce"))
    full = build_domains(meta0["data"], data_dir=data_dir, device=device)
    train_domains = list(meta0["train_domains"])
    shown_domains = train_domains + list(meta0.get("test_domains", []))
    small = truncate(full, subsample)  # any data set, not only Colored MNIST

    for algo, (model, _) in finals.items():
        stem = out_dir / SCORE_HEAD.format(algo=algo)
        if not _done(stem):
            log(f"[analyse] {algo}: I^eps of the head (dense, top-{head_k} of H_A)")
            res = inconsistency_score(
                model, loss, pick_domains(full, train_domains), epsilon, params="classifier",
                method="dense", remedy="top-k", k=head_k, progress=progress,
            )  # fmt: skip
            res.save(stem)
        stem = out_dir / SCORE_NET.format(algo=algo)
        if not _done(stem):
            log(f"[analyse] {algo}: I^eps of the whole network (matrix-free, top-{network_k})")
            res = inconsistency_score(
                model, loss, pick_domains(small, train_domains), epsilon, params=None,
                method="matrix-free", remedy="top-k", k=network_k, progress=progress,
            )  # fmt: skip
            res.save(stem)

    stem = out_dir / ALIGNMENT
    if not _done(stem):
        log("[analyse] Hessian alignment of the head over the checkpoints")
        traj = alignment_trajectory(
            run_dir, algorithms, pair=train_domains[:2], params="classifier", device=device,
            data_dir=data_dir, progress=progress,
        )  # fmt: skip
        traj.save(stem)

    surface_domains = pick_domains(small, shown_domains)
    if len(algorithms) >= 2:
        stem = out_dir / SURFACE_PLANE
        if not _done(stem):
            a, b = algorithms[:2]
            init = checkpoint_path(run_dir, a, 0, 0)
            if init.is_file():
                log(f"[analyse] surfaces on the plane through init, {a}, {b}")
                model = finals[a][0]
                dirs = plane_directions(
                    model,
                    [load_checkpoint(init)[0], finals[a][0], finals[b][0]],
                    labels=["init", a, b],
                )
                # the default range (covering the three points), with `grid` points per axis
                alphas, betas = make_grid(None, dirs)
                plane = ((alphas[0], alphas[-1], grid), (betas[0], betas[-1], grid))
                res = loss_surface(model, loss, surface_domains, dirs, grid=plane,
                                   progress=progress)  # fmt: skip
                res.save(stem)
    for algo, (model, _) in finals.items():
        stem = out_dir / SURFACE_DIRECTION.format(algo=algo)
        if not _done(stem):
            log(f"[analyse] {algo}: surfaces on the plane of the inconsistency direction")
            from landscape.inconsistency import InconsistencyResult

            score = InconsistencyResult.load(out_dir / SCORE_HEAD.format(algo=algo))
            dirs = inconsistency_directions(score, model, params="classifier", seed=0)
            res = loss_surface(model, loss, surface_domains, dirs, grid=(-2.0, 2.0, grid),
                               progress=progress)  # fmt: skip
            res.save(stem)
    return out_dir


def draw_figures(
    run_dir: str | os.PathLike, analysis_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> list[Path]:
    """Draw every figure that the saved results allow into ``out_dir``; returns the paths.

    Reads only saved results: the run folder's histories and ``results.json``, and what
    :func:`analyse_run` wrote. Missing results are skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from landscape.alignment import AlignmentTrajectory
    from landscape.inconsistency import InconsistencyResult
    from landscape.paper import compare_table2
    from landscape.plot import (
        plot_alignment,
        plot_pairwise,
        plot_score_parts,
        plot_surface,
        plot_training_curves,
    )
    from landscape.surface import SurfaceResult
    from landscape.training import RunResults

    run_dir, analysis_dir, out_dir = Path(run_dir), Path(analysis_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name):
        path = out_dir / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    if (run_dir / "config.json").is_file():
        save(plot_training_curves(run_dir)[0], "training_curves.png")
    if (run_dir / "results.json").is_file():
        results = RunResults.load(run_dir / "results")
        restarts = {a: len(s) for a, s in results.seeds.items()}
        try:
            table = compare_table2(results.table, restarts)
        except ValueError:  # not a Colored MNIST run: no paper numbers to compare with
            table = None
        if table is not None:
            path = out_dir / "table2.md"
            path.write_text("# Colored MNIST (Table 2): ours (paper)\n\n" + table)
            written.append(path)
    if _done(analysis_dir / ALIGNMENT):
        save(plot_alignment(AlignmentTrajectory.load(analysis_dir / ALIGNMENT))[0],
             "hessian_alignment.png")  # fmt: skip
    for kind, pattern in (("head", SCORE_HEAD), ("network", SCORE_NET)):
        scores = {}
        for stem in sorted(analysis_dir.glob(pattern.format(algo="*") + ".json")):
            algo = stem.stem[len(pattern.format(algo="")) :]
            scores[algo] = InconsistencyResult.load(stem)
        if not scores:
            continue
        save(plot_score_parts(scores)[0], f"inconsistency_parts_{kind}.png")
        fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.6), squeeze=False)
        for ax, (algo, res) in zip(axes[0], scores.items(), strict=True):
            plot_pairwise(res, ax=ax)
            ax.set_title(f"{algo}: {ax.get_title()}", fontsize=8)
        fig.tight_layout()
        save(fig, f"inconsistency_pairs_{kind}.png")
    for stem in sorted(analysis_dir.glob("surface_*.json")):
        res = SurfaceResult.load(stem)
        domains = [d for d in res.domains if not d.startswith("-")] or res.domains
        save(plot_surface(res, domains=domains)[0], f"{stem.stem}.png")
    return written


def summary(analysis_dir: str | os.PathLike) -> str:
    """A Markdown table of the inconsistency scores in ``analysis_dir``."""
    from landscape.inconsistency import InconsistencyResult

    analysis_dir = Path(analysis_dir)
    lines = [
        "| Model | Parameters | Method | I^ε | Pair (A → B) | Risk gap | Curvature term "
        "| Empirical check | ‖∇R‖ (A, B) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, pattern in (("head", SCORE_HEAD), ("whole network", SCORE_NET)):
        for path in sorted(analysis_dir.glob(pattern.format(algo="*") + ".json")):
            algo = path.stem[len(pattern.format(algo="")) :]
            res = InconsistencyResult.load(path)
            a, b = res.pair
            i, j = res.domains.index(a), res.domains.index(b)
            check = res.check or {}
            emp = check.get("empirical_score")
            emp = f"{float(np.asarray(emp).reshape(-1)[0]):.4g}" if emp is not None else "-"
            score = float(np.asarray(res.score).reshape(-1)[0])
            lines.append(
                f"| {algo} | {kind} | {res.method} | {score:.4g}"
                f" | {a} → {b} | {float(res.risk_gap[i, j]):.4g}"
                f" | {float(np.asarray(res.curvature_term)[0, i, j]):.4g} | {emp}"
                f" | {res.gradient_norms[a]:.3g}, {res.gradient_norms[b]:.3g} |"
            )
    return "\n".join(lines) + "\n"
