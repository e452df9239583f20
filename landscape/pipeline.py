"""The default end-to-end job: train, analyse the checkpoints, draw the figures.

``landscape reproduce --out DIR`` runs, in order (each step is skipped when its output is
already there, so an interrupted job resumes; the folders are :class:`landscape.runs.JobFolder`'s):

1. :func:`landscape.training.train` on Colored MNIST (``DIR/run``) with
   :func:`reproduce_config`: ERM and Fishr by default, checkpoints at :data:`CHECKPOINT_STEPS`;
2. :func:`analyse_run` (``DIR/analysis``): for the final checkpoint of restart 0 of every
   algorithm, the inconsistency score I^ε of the head (dense, exact generalized
   eigenproblem) and of the whole network (matrix-free), both restricted to the top-k
   eigenspace of H_A (H_A of a trained ReLU network is singular: dead units), each with
   its empirical check on the true losses; the Hessian-alignment
   trajectory of the head over every checkpoint; per-domain loss surfaces on the plane
   through the initial weights and the final weights of two algorithms (e.g. ERM and
   Fishr), and on the plane of each model's inconsistency direction; the head's per-domain
   gradient variance and Hessian diagonal and its projected per-sample gradients; the head's
   I^ε at every checkpoint; SLQ spectra of the head and the whole network; the
   two-parameter patchwork / consistent example of :mod:`landscape.plot.patchwork`;
3. :func:`draw_figures` (``DIR/figures``): every figure of :mod:`landscape.plot` (PNG at
   300 dpi and PDF, :func:`landscape.plot.style.save_figure`) and the Table 2 comparison
   with the paper, from the saved results only.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from landscape.names import algorithm_name, domain_name, ordered_algorithms
from landscape.runs import AnalysisFolder, RunFolder

#: Steps whose checkpoints the default job saves (the final step is always saved).
CHECKPOINT_STEPS = [0, 50, 100, 150, 190, 250, 300, 400]


def reproduce_config(
    algorithms: Sequence[str] = ("erm", "fishr"),
    restarts: int = 1,
    steps: int = 501,
    subsample: int | None = None,
    device: str = "auto",
):
    """The :class:`~landscape.training.TrainConfig` of the default job: the Colored MNIST
    protocol with checkpoints at :data:`CHECKPOINT_STEPS` (those before ``steps``)."""
    from landscape.training import TrainConfig

    return TrainConfig(
        algorithms=list(algorithms),
        restarts=restarts,
        steps=steps,
        subsample=subsample,
        checkpoint_steps=[s for s in CHECKPOINT_STEPS if s < steps],
        device=device,
    )


#: Memory :func:`default_jobs` wants free per training worker: a worker's peak on the
#: protocol's data (1.34-1.46 GB resident in `make demo`) and the parent's growth while the
#: workers train (about 0.2 GB).
WORKER_MEMORY = 1.75e9


def default_jobs(config) -> int:
    """Runs the default job trains at once (:func:`fitting_jobs`): on the CPU, one per
    (algorithm, restart) within this process's threads (``--threads``, each worker gets its
    share) and its available memory (:func:`landscape.device.available_memory`); else 1.
    Measured on 2 cores, ERM and Fishr at once, one thread each, against one after the other
    with 2 threads: 15% less time on an AMD EPYC (60 steps), 2.4% less on an Intel Xeon (the
    protocol's 501 steps; its MKL uses 2 threads better)."""
    import torch

    from landscape.device import available_memory, resolve_device

    if resolve_device(config.device).type != "cpu":
        return 1
    pairs = len(config.algorithms) * config.restarts
    return fitting_jobs(pairs, torch.get_num_threads(), available_memory())


def fitting_jobs(pairs: int, threads: int, memory: float | None) -> int:
    """At most one job per pair, per thread and per :data:`WORKER_MEMORY` bytes of
    ``memory`` (``None``: unknown, no limit); at least 1 (one job trains in this process)."""
    jobs = min(pairs, threads)
    if memory is not None:
        jobs = min(jobs, int(memory // WORKER_MEMORY))
    return max(1, jobs)


def _final_checkpoint(run_dir: str | os.PathLike, algo: str, restart: int = 0) -> Path:
    return RunFolder(run_dir).final_checkpoint(algo, restart)


def _final_exists(run_dir: str | os.PathLike, algo: str) -> bool:
    return RunFolder(run_dir).has_final(algo)


@dataclass
class _Analysis:
    """One :func:`analyse_run` call, its options resolved once."""

    run: RunFolder
    out: AnalysisFolder
    epsilon: float
    subsample: int | None
    head_k: int
    network_k: int
    grid: int
    device: str
    data_dir: str | os.PathLike | None
    progress: bool
    log: Callable[[str], object]
    finals: dict = field(default_factory=dict)  # {algorithm: (model, metadata)}
    loss: object = None
    full: dict = field(default_factory=dict)  # every sample of every domain
    small: dict = field(default_factory=dict)  # the first `subsample` samples
    train_domains: list = field(default_factory=list)
    shown_domains: list = field(default_factory=list)

    def load(self, algorithms: Sequence[str]) -> None:
        """The final checkpoints, their loss and data (from the first one's metadata)."""
        from landscape.checkpoint import load_checkpoint
        from landscape.data import build_domains
        from landscape.domains import truncate
        from landscape.losses import build_loss

        for algo in algorithms:
            path = self.run.final_checkpoint(algo)
            self.finals[algo] = load_checkpoint(path, device=self.device)
        _, meta0 = self.finals[algorithms[0]]
        self.loss = build_loss(meta0.get("loss", "bce"))
        self.full = build_domains(meta0["data"], data_dir=self.data_dir, device=self.device)
        self.train_domains = list(meta0["train_domains"])
        self.shown_domains = self.train_domains + list(meta0.get("test_domains", []))
        self.small = truncate(self.full, self.subsample)  # any data set, not only Colored MNIST

    def scores(self) -> None:
        """I^ε of the head (dense, all samples) and of the whole network (matrix-free)."""
        from landscape.domains import pick_domains
        from landscape.inconsistency import inconsistency_score

        for algo, (model, _) in self.finals.items():
            stem = self.out.score("head", algo)
            if not self.out.done(stem):
                self.log(f"[analyse] {algo}: I^eps of the head (dense, top-{self.head_k} of H_A)")
                res = inconsistency_score(
                    model, self.loss, pick_domains(self.full, self.train_domains), self.epsilon,
                    params="classifier", method="dense", remedy="top-k", k=self.head_k,
                    progress=self.progress,
                )  # fmt: skip
                res.save(stem)
            stem = self.out.score("network", algo)
            if not self.out.done(stem):
                self.log(f"[analyse] {algo}: I^eps of the whole network (matrix-free, "
                         f"top-{self.network_k})")  # fmt: skip
                res = inconsistency_score(
                    model, self.loss, pick_domains(self.small, self.train_domains), self.epsilon,
                    params=None, method="matrix-free", remedy="top-k", k=self.network_k,
                    progress=self.progress,
                )  # fmt: skip
                res.save(stem)

    def alignment(self) -> None:
        """The Hessian alignment of the head over every checkpoint."""
        from landscape.alignment import alignment_trajectory

        stem = self.out.alignment
        if self.out.done(stem):
            return
        self.log("[analyse] Hessian alignment of the head over the checkpoints")
        traj = alignment_trajectory(
            self.run.root, list(self.finals), pair=self.train_domains[:2], params="classifier",
            device=self.device, data_dir=self.data_dir, progress=self.progress,
        )  # fmt: skip
        traj.save(stem)

    def plane_surface(self) -> None:
        """Surfaces on the plane through the init and the final weights of two algorithms."""
        from landscape.checkpoint import load_checkpoint
        from landscape.domains import pick_domains
        from landscape.surface import loss_surface, make_grid, plane_directions

        stem = self.out.surface_plane
        if len(self.finals) < 2 or self.out.done(stem):
            return
        a, b = list(self.finals)[:2]
        init = self.run.checkpoint_path(a, 0, 0)
        if not init.is_file():
            return
        self.log(f"[analyse] surfaces on the plane through init, {a}, {b}")
        model = self.finals[a][0]
        dirs = plane_directions(model, [load_checkpoint(init)[0], model, self.finals[b][0]],
                                labels=["init", a, b])  # fmt: skip
        alphas, betas = make_grid(None, dirs)
        # a square window (both directions have the same length): equal aspect on the figure
        half, mid = (alphas[-1] - alphas[0]) / 2, (betas[0] + betas[-1]) / 2
        plane = ((alphas[0], alphas[-1], self.grid), (mid - half, mid + half, self.grid))
        domains = pick_domains(self.small, self.shown_domains)
        res = loss_surface(model, self.loss, domains, dirs, grid=plane, progress=self.progress)
        res.save(stem)

    def head_figures_data(self) -> None:
        """Per final model, on the training pair: the per-domain gradient variances and
        Hessian diagonals of the head (all samples) and the projected per-sample head
        gradients (the first ``subsample`` samples), for the premise and Figure 1."""
        from landscape.curvature import compare_domains
        from landscape.domains import pick_domains
        from landscape.plot.clouds import gradient_cloud

        pair = self.train_domains[:2]
        for algo, (model, _) in self.finals.items():
            stem = self.out.root / f"premise_head_{algo}"
            if not self.out.done(stem):
                self.log(f"[analyse] {algo}: gradient variance vs Hessian diagonal of the head")
                compare_domains(model, self.loss, pick_domains(self.full, pair),
                                params="classifier", k=0).save(stem)  # fmt: skip
            stem = self.out.root / f"gradients_head_{algo}"
            if not self.out.done(stem):
                self.log(f"[analyse] {algo}: per-sample gradients of the head")
                gradient_cloud(model, self.loss, pick_domains(self.small, pair), pair).save(stem)

    def spectra(self) -> None:
        """Per-domain Hessian spectral densities (SLQ) of the head and of the whole network
        of every final model, on the first ``subsample`` samples of the training pair."""
        from landscape.curvature import spectral_density
        from landscape.domains import pick_domains

        domains = pick_domains(self.small, self.train_domains[:2])
        for algo, (model, _) in self.finals.items():
            for kind, params in (("head", "classifier"), ("network", None)):
                stem = self.out.root / f"spectrum_{kind}_{algo}"
                if not self.out.done(stem):
                    self.log(f"[analyse] {algo}: spectral density of the {kind} (SLQ)")
                    spectral_density(model, self.loss, domains, params=params, num_probes=3,
                                     lanczos_steps=32, seed=0).save(stem)  # fmt: skip

    def score_trajectory(self) -> None:
        """I^ε of the head at every checkpoint of restart 0 (the first ``subsample`` samples
        of the training pair, with the empirical check)."""
        from landscape.domains import pick_domains
        from landscape.plot.score_trajectory import score_trajectory

        stem = self.out.root / "score_trajectory_head"
        if self.out.done(stem):
            return
        self.log("[analyse] I^eps of the head over the checkpoints")
        score_trajectory(self.run.root, list(self.finals), self.loss,
                         pick_domains(self.small, self.train_domains[:2]), self.epsilon,
                         k=self.head_k, device=self.device).save(stem)  # fmt: skip

    def examples(self) -> None:
        """Parascandolo et al.'s Figure 1 for I^ε (a patchwork and a consistent minimum of a
        two-parameter model, ε = 0.1: :mod:`landscape.plot.patchwork`); independent of the run."""
        from landscape.plot.patchwork import patchwork_example

        for kind in ("patchwork", "consistent"):
            stem = self.out.root / f"example_{kind}"
            if not self.out.done(stem):
                self.log(f"[analyse] I^eps of the {kind} two-parameter example")
                patchwork_example(kind, epsilon=0.1).save(stem)

    def direction_surfaces(self) -> None:
        """Surfaces on the plane of each model's head inconsistency direction."""
        from landscape.domains import pick_domains
        from landscape.inconsistency import InconsistencyResult
        from landscape.surface import inconsistency_directions, loss_surface

        domains = pick_domains(self.small, self.shown_domains)
        for algo, (model, _) in self.finals.items():
            stem = self.out.surface_direction(algo)
            if self.out.done(stem):
                continue
            self.log(f"[analyse] {algo}: surfaces on the plane of the inconsistency direction")
            score = InconsistencyResult.load(self.out.score("head", algo))
            dirs = inconsistency_directions(score, model, params="classifier", seed=0)
            res = loss_surface(model, self.loss, domains, dirs, grid=(-2.0, 2.0, self.grid),
                               progress=self.progress)  # fmt: skip
            res.save(stem)


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
        out_dir: where the results go (``.npz`` + ``.json`` each, named as
            :class:`landscape.runs.AnalysisFolder` says).
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
    run, out = RunFolder(run_dir), AnalysisFolder(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    if algorithms is None:
        algorithms = run.finished_algorithms()
    job = _Analysis(run, out, epsilon, subsample, head_k, network_k, grid, device, data_dir,
                    progress, log)  # fmt: skip
    job.load(algorithms)
    job.scores()
    job.alignment()
    job.plane_surface()
    job.direction_surfaces()
    job.head_figures_data()
    job.score_trajectory()
    job.spectra()
    job.examples()
    return out.root


def _load_scores(analysis: AnalysisFolder, kind: str) -> dict:
    from landscape.inconsistency import InconsistencyResult

    return {algo: InconsistencyResult.load(stem) for algo, stem in analysis.scores(kind).items()}


def draw_figures(
    run_dir: str | os.PathLike, analysis_dir: str | os.PathLike, out_dir: str | os.PathLike
) -> list[Path]:
    """Draw every figure that the saved results allow into ``out_dir`` (each as PNG at 300
    dpi and PDF, sized for a two-column paper); returns the paths.

    Reads only saved results: the run folder's histories and ``results.json``, and what
    :func:`analyse_run` wrote. Missing results are skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    from landscape.plot.style import save_figure

    run, analysis, out_dir = RunFolder(run_dir), AnalysisFolder(analysis_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if run.has_results():
        written += _write_table2(run, out_dir)
    for name, width, fig in _run_figures(run, analysis):
        written += save_figure(fig, out_dir / name, width=width)
    return written


def _run_figures(run: RunFolder, analysis: AnalysisFolder):
    """``(file stem, width, figure)`` for each figure the saved results of a job allow."""
    from landscape.alignment import AlignmentTrajectory
    from landscape.plot import (
        plot_alignment,
        plot_pairs,
        plot_score_parts,
        plot_surface,
        plot_surface_grid,
        plot_training_curves,
    )
    from landscape.surface import SurfaceResult

    if run.has_config():
        yield "training_curves", "full", plot_training_curves(run.root)[0]
    if run.has_results():
        from landscape.plot import plot_table2
        from landscape.training import RunResults

        try:
            yield "table2", "full", plot_table2(RunResults.load(run.results_stem))[0]
        except ValueError:  # not a Colored MNIST run: no paper numbers to compare with
            pass
    if analysis.done(analysis.alignment):
        traj = AlignmentTrajectory.load(analysis.alignment)
        yield "hessian_alignment", "full", plot_alignment(traj)[0]
    epsilon = None
    for kind in AnalysisFolder.SCORE_PREFIXES:
        scores = _load_scores(analysis, kind)
        if scores:
            epsilon = epsilon or float(next(iter(scores.values())).epsilon[0])
            yield f"inconsistency_parts_{kind}", "full", plot_score_parts(scores, kind=kind)[0]
            yield f"inconsistency_pairs_{kind}", "full", plot_pairs(scores, kind=kind)[0]
    if analysis.done(analysis.surface_plane):
        res = SurfaceResult.load(analysis.surface_plane)
        train = [d for d in res.domains if not d.startswith("-")][:2] or res.domains[:2]
        yield "surface_plane", "full", plot_surface(res, domains=train)[0]
    if analysis.done(analysis.root / "score_trajectory_head"):
        from landscape.plot.score_trajectory import ScoreTrajectory, plot_score_trajectory

        traj = ScoreTrajectory.load(analysis.root / "score_trajectory_head")
        yield "inconsistency_over_training_head", "full", plot_score_trajectory(traj)[0]
    yield from _head_figures(analysis)
    spectra: dict = {}
    for path in sorted(analysis.root.glob("spectrum_*.json")):
        from landscape.curvature.results import SpectralDensityResult

        _, kind, algo = path.stem.split("_", 2)
        spectra.setdefault(algo, {})[kind] = SpectralDensityResult.load(path.with_suffix(""))
    if spectra:
        from landscape.plot.curvature import plot_spectral_densities

        yield "spectral_density", "full", plot_spectral_densities(spectra)[0]
    stems = {k: analysis.root / f"example_{k}" for k in ("patchwork", "consistent")}
    if all(analysis.done(stem) for stem in stems.values()):
        from landscape.plot.patchwork import PatchworkExample, plot_patchwork

        examples = {k: PatchworkExample.load(stem) for k, stem in stems.items()}
        yield "inconsistency_example", "full", plot_patchwork(examples)[0]
    surfaces = {}
    for stem in analysis.surfaces():
        if stem != analysis.surface_plane:
            surfaces[stem.name.removeprefix("surface_inconsistency_")] = SurfaceResult.load(stem)
    if surfaces:
        first = next(iter(surfaces.values()))
        pair = (first.directions or {}).get("pair") or first.domains[:2]
        yield "surface_inconsistency", "full", plot_surface_grid(surfaces, pair, epsilon)[0]


def _head_figures(analysis: AnalysisFolder):
    """The premise Var ≈ Hessian and Figure 1 (gradient clouds), when their data is saved."""
    from landscape.curvature.results import ComparisonResult
    from landscape.plot.clouds import GradientCloud, plot_gradient_clouds
    from landscape.plot.premise import plot_variance_hessian

    for prefix, kind, draw, name in (
        ("premise_head_", ComparisonResult, plot_variance_hessian, "variance_vs_hessian"),
        ("gradients_head_", GradientCloud, plot_gradient_clouds, "gradient_clouds"),
    ):
        found = {p.name.removesuffix(".json").removeprefix(prefix): p.with_suffix("")
                 for p in sorted(analysis.root.glob(f"{prefix}*.json"))}  # fmt: skip
        if found:
            yield f"{name}_head", "full", draw({a: kind.load(p) for a, p in found.items()})[0]


def _write_table2(run: RunFolder, out_dir: Path) -> list[Path]:
    """``table2.md`` and ``table2.tex`` (ours beside the paper's Table 2) for a Colored MNIST
    run, else nothing."""
    from landscape.io import atomic_write
    from landscape.paper import compare_table2, compare_table2_latex
    from landscape.training import RunResults

    results = RunResults.load(run.results_stem)
    try:
        table = compare_table2(results.table, results.restarts())
    except ValueError:  # not a Colored MNIST run: no paper numbers to compare with
        return []
    title = "Colored MNIST (Table 2): ours (paper)"
    caption = (f"{title}: accuracies (%) at the last step, mean ± std over restarts; ✓ within "
               "max(2 paper std, 1.5 points) of the paper's mean.")  # fmt: skip
    texts = {
        "table2.md": f"# {title}\n\n" + table,
        "table2.tex": compare_table2_latex(results.table, results.restarts(), caption),
    }
    paths = []
    for name, text in texts.items():
        atomic_write(out_dir / name, lambda f, text=text: f.write(text), binary=False)
        paths.append(out_dir / name)
    return paths


def summary(analysis_dir: str | os.PathLike) -> str:
    """A Markdown table of the inconsistency scores in ``analysis_dir`` (display names, the
    algorithms in :data:`landscape.names.ALGORITHM_ORDER`)."""
    analysis = AnalysisFolder(analysis_dir)
    lines = [
        "| Model | Parameters | Method | I^ε | Pair (A → B) | Risk gap | Curvature term "
        "| Empirical check | ‖∇R‖ (A, B) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, shown in (("head", "head"), ("network", "whole network")):
        scores = _load_scores(analysis, kind)
        for algo in ordered_algorithms(scores):
            res = scores[algo]
            a, b = res.winner(0)
            i, j = res.domains.index(a), res.domains.index(b)
            check = res.check or {}
            emp = check.get("empirical_score")
            emp = f"{float(np.asarray(emp).reshape(-1)[0]):.4g}" if emp is not None else "-"
            score = float(res.scores[0])
            lines.append(
                f"| {algorithm_name(algo)} | {shown} | {res.method} | {score:.4g}"
                f" | {domain_name(a)} → {domain_name(b)} | {float(res.risk_gap[i, j]):.4g}"
                f" | {float(np.asarray(res.curvature_term)[0, i, j]):.4g} | {emp}"
                f" | {res.gradient_norms[a]:.3g}, {res.gradient_norms[b]:.3g} |"
            )
    return "\n".join(lines) + "\n"


#: the files that mark the output folder of ``landscape score`` / ``surface`` / ``curvature``
OUTPUT_MARKERS = {
    "score": ("score.json", "score.npz"),
    "surface": ("surface.json", "surface.npz"),
    "curvature": ("curvature_summary.json",),
}


def output_kinds(folder: str | os.PathLike) -> list[str]:
    """Which command outputs ``folder`` holds (``"score"``, ``"surface"``, ``"curvature"``),
    detected by the files present; empty for any other folder (e.g. a run folder)."""
    folder = Path(folder)
    return [k for k, files in OUTPUT_MARKERS.items() if all((folder / f).is_file() for f in files)]


def draw_output_figures(folder: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Draw the figures of the ``landscape score`` / ``surface`` / ``curvature`` outputs in
    ``folder`` (:func:`output_kinds`) into ``out_dir``; returns the paths.

    Raises:
        FileNotFoundError: ``folder`` holds none of them.
    """
    import matplotlib

    matplotlib.use("Agg")

    folder, out_dir = Path(folder), Path(out_dir)
    kinds = output_kinds(folder)
    if not kinds:
        expected = ", ".join(" + ".join(f) for f in OUTPUT_MARKERS.values())
        raise FileNotFoundError(f"{folder} holds no results to draw (expected {expected})")
    out_dir.mkdir(parents=True, exist_ok=True)
    from landscape.plot.style import save_figure

    written: list[Path] = []
    for name, fig in _output_figures(folder, kinds):
        written += save_figure(fig, out_dir / name, width=_width(fig))
    return written


def _width(fig) -> str:
    """The paper width a figure was drawn for (``"column"`` or ``"full"``)."""
    from landscape.plot.style import WIDTHS

    return min(WIDTHS, key=lambda w: abs(WIDTHS[w] - fig.get_figwidth()))


def _output_figures(folder: Path, kinds: list[str]):
    """``(file name, figure)`` for each output of ``kinds`` in ``folder``."""
    from landscape.io import read_json
    from landscape.plot import plot_curvature, plot_pairwise, plot_score_parts, plot_surface

    if "score" in kinds:
        from landscape.inconsistency import InconsistencyResult

        res = InconsistencyResult.load(folder / "score")
        yield "score_parts", plot_score_parts({folder.name or "score": res})[0]
        yield "score_pairs", plot_pairwise(res)[0]
    if "surface" in kinds:
        from landscape.surface import SurfaceResult

        res = SurfaceResult.load(folder / "surface")
        domains = [d for d in res.domains if not d.startswith("-")] or res.domains
        yield "surface", plot_surface(res, domains=domains[:2])[0]
    if "curvature" in kinds:
        from landscape.curvature import results
        from landscape.plot.curvature import can_plot_curvature

        for file in read_json(folder / "curvature_summary.json").get("files", []):
            stem = folder / Path(file).with_suffix("").name
            kind = read_json(stem.with_suffix(".json")).get("type")
            res = getattr(results, str(kind)).load(stem) if hasattr(results, str(kind)) else None
            if res is not None and can_plot_curvature(res):
                yield f"curvature_{stem.name}", plot_curvature(res)[0]
