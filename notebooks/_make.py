"""Write the notebooks of this folder, and with ``--execute`` run them and store their outputs.

``python notebooks/_make.py`` writes every notebook from the cells below with **no
outputs** (a fresh source: edit this file, re-run it, commit both). ``python
notebooks/_make.py --execute`` (``make notebooks``) then executes each one in a Jupyter
kernel and stores it **with** its outputs, the figures as inline PNG, so that they can be
read on the repository page. Writing never keeps old outputs: they would no longer match
the cells, so execution is the only way a notebook gets outputs. Each file is replaced
atomically (temporary file + ``os.replace``); a notebook whose execution fails keeps its
previous file.

Execution (``execute``): kernel ``python3`` in ``notebooks/``, ``LANDSCAPE_RUN`` from the
environment (default ``runs/reproduce/run``, relative to the repository root; ``make
notebooks`` passes the project's own ``runs/table2/run``), the repository on
``PYTHONPATH``, the inline matplotlib backend, ``LANDSCAPE_SMOKE=0`` and
``LANDSCAPE_PROGRESS=0`` (no progress bars in stored outputs). ``--execute`` refuses a run
folder without ``results.json``: stored outputs come from a finished run, never from a
training started by the notebooks.

Every notebook starts with ``SMOKE = os.environ.get("LANDSCAPE_SMOKE", "0") == "1"``: in
smoke mode it trains a tiny Colored MNIST run (300 images per domain, 12 steps) in a
temporary folder and uses grids of 5 points, so that ``LANDSCAPE_SMOKE=1 pytest --nbmake
notebooks/`` runs them all in a few minutes (tests/test_notebooks.py executes them in
memory, never writing the files). Otherwise they read the run folder named by
``LANDSCAPE_RUN``; notebooks 01-03 train it with the settings of ``landscape reproduce``
when it is absent, the tour trains a short run (about a minute, not representative).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: the run folder a notebook reads when ``LANDSCAPE_RUN`` is not set (relative to ROOT)
DEFAULT_RUN = "runs/reproduce/run"
#: text that no stored output may contain: folders of this machine, whoever runs it
MACHINE_PATHS = tuple(
    p for p in ("/work/", "/home/", "/root/", "/Users/", str(ROOT), str(Path.home())) if p != "/"
)

SETUP = """\
import os
import tempfile
import warnings
from pathlib import Path

from IPython.display import Markdown, display

# harmless: BackPACK's hooks on torch >= 2.8, and tqdm without ipywidgets
warnings.filterwarnings("ignore", message="Full backward hook is firing")
warnings.filterwarnings("ignore", message="IProgress not found")
# figures inline (set here, not on the first plot: a backend first loaded inside a style
# context would not stay interactive and later cells would show no figure), as PNG at 110
# dpi: readable on the repository page, small files
%matplotlib inline
%config InlineBackend.figure_formats = ["png"]
%config InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "dpi": 110}

# LANDSCAPE_SMOKE=1: tiny sizes, so that CI can run every notebook in a few minutes
SMOKE = os.environ.get("LANDSCAPE_SMOKE", "0") == "1"
# progress bars when run by hand; `make notebooks` stores the outputs without them
PROGRESS = not SMOKE and os.environ.get("LANDSCAPE_PROGRESS", "1") == "1"
ROOT = (Path.cwd().parent if Path.cwd().name == "notebooks" else Path.cwd()).resolve()


def relative(path):
    \"\"\"``path`` relative to the repository root when inside it (outputs show no
    folders of this machine).\"\"\"
    path = Path(path).resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


print(f"SMOKE = {SMOKE}")"""

RUN = """\
from landscape.pipeline import reproduce_config
from landscape.runs import RunFolder
from landscape.training import TrainConfig, train

if SMOKE:
    RUN = Path(tempfile.mkdtemp(prefix="landscape-smoke-")) / "run"
    config = TrainConfig(
        algorithms=["erm", "fishr"], restarts=1, steps=12, anneal_step=6, subsample=300,
        checkpoint_steps=[0, 4, 8], device="cpu",
    )
    train(config, RUN, progress=False)
else:
    RUN = Path(os.environ.get("LANDSCAPE_RUN", "runs/reproduce/run"))
    RUN = RUN if RUN.is_absolute() else ROOT / RUN
    if not RunFolder(RUN).has_results():
        # the run of `landscape reproduce`: ERM and Fishr, the protocol's data, 501 steps
        train(reproduce_config(), RUN, progress=PROGRESS)
print("run folder:", relative(RUN))"""

RUN_MD = """\
## The run folder

A run folder is what `landscape train` (or step 1 of `landscape reproduce`) writes
(`landscape.training.train`; its layout is `landscape.runs.RunFolder`): `config.json`,
`results.json`, and per algorithm and restart a `history.csv` (one row per step) and
checkpoints `checkpoints/step_XXXXX.safetensors` whose metadata carries the data spec they
were trained on. Set `LANDSCAPE_RUN` to analyse another run (the stored outputs come from
`runs/table2/run`, the 4-algorithm, 3-restart Table 2 run: `make notebooks`)."""


def notebook(cells, stem: str) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        new_markdown_cell(c[3:]) if c.startswith("md:") else new_code_cell(c) for c in cells
    ]
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same files
        cell["id"] = f"{stem}-{i:02d}"
    return nb


TOUR = [
    """md:# A tour of `landscape` on Colored MNIST

Fishr (Rame, Dancette & Cord, ICML 2022) matches the **variances of per-sample gradients**
across training domains. This notebook walks through the toolkit's API in the order of the
argument: build the domains, load ERM and Fishr trained with the paper's protocol, measure
how inconsistent the domains' loss landscapes are around the trained weights (the score
$I^\\varepsilon$), compare their curvature, and look at a 2D slice of the loss surfaces.

It starts from a saved run: the run folder named by `LANDSCAPE_RUN` (default
`runs/reproduce/run`, written by `make demo`; the stored outputs come from
`runs/table2/run`, see `make notebooks`). Without one it trains a short run first (about a
minute, not representative). Every step is a few lines; the maths is in the docstrings of
the module named in each section. Set `LANDSCAPE_SMOKE=1` for a tiny run (CI).""",
    SETUP,
    """\
import numpy as np
import torch

from landscape.names import algorithm_name, domain_name

N = 300 if SMOKE else None  # images per domain in section 1 (None: all)
SURFACE_N = 100 if SMOKE else 1000  # images per domain for the surfaces of section 5
GRID = 5 if SMOKE else 15  # surface points per axis
torch.manual_seed(0);""",
    """md:## 1. Domains (`landscape/data/colored_mnist.py`)

The IRM protocol: binary label $y = \\mathbb 1[\\text{digit} < 5]$ flipped with probability
0.25, colour $c = y \\oplus \\text{Bernoulli}(e)$, one channel zeroed. The colour agrees with
the label with probability $1 - e$: 80% and 90% in the training domains, 10% in the test
domain `-90%`; `gray` has no colour. Every analysis takes the domains as a mapping
`{name: [(X, y), ...]}`.""",
    """\
from landscape import colored_mnist

domains = colored_mnist(subsample=N, seed=0)
for name, [(X, y)] in domains.items():
    green = X[:, 1].sum((1, 2)) > X[:, 0].sum((1, 2))  # channel 1 = colour 1
    agree = (green.float() == y[:, 0]).float().mean()
    print(f"{name:>5}: X {tuple(X.shape)}, y {tuple(y.shape)}, colour = label for {agree:.0%}")""",
    """md:## 2. Training ERM and Fishr (`landscape/training/`)

Full batch Adam on
$\\mathcal L_t(\\theta) = \\frac1{|\\mathcal E|}\\sum_e R_e(\\theta) + \\ell_2\\|\\theta\\|^2
+ \\lambda_t \\, \\frac1{|\\mathcal E|}\\sum_e \\|v_e - \\bar v\\|^2$,
where $v_e$ is the variance over domain $e$'s samples of the per-sample gradients of the
classifier head, and $\\lambda_t$ jumps at the anneal step (Fishr only; ERM has
$\\lambda = 0$). `train(config, folder)` (`landscape train` on the command line) writes a
resumable run folder: `config.json`, `results.json` and, per algorithm and restart, a
`history.csv` and checkpoints whose metadata carries the data they were trained on. The
protocol (501 steps on all 25,000 images per training domain) takes about 9 minutes for
ERM and Fishr on 2 CPU cores, so the tour reads a finished run.

**Without a saved run** the next cell trains a short one into `runs/tour/run`: 101 steps on
5,000 images per domain, penalty from step 40. It shows the API but is **not
representative**: with so few images the MLP memorises the noisy labels and Fishr's gain
disappears. For the paper's setting run `make demo` (or `landscape reproduce`) and re-run
the tour.""",
    """\
from landscape.runs import RunFolder
from landscape.training import RunResults, TrainConfig, train

RUN = Path(os.environ.get("LANDSCAPE_RUN", "runs/reproduce/run"))
RUN = RUN if RUN.is_absolute() else ROOT / RUN
SHORT = not SMOKE and not RunFolder(RUN).has_results()  # no saved run: a short one
if SMOKE or SHORT:
    RUN = Path(tempfile.mkdtemp(prefix="landscape-smoke-")) if SMOKE else ROOT / "runs" / "tour"
    RUN = RUN / "run"
    config = TrainConfig(
        algorithms=["erm", "fishr"], restarts=1, steps=12 if SMOKE else 101,
        anneal_step=6 if SMOKE else 40, subsample=300 if SMOKE else 5000,
        checkpoint_steps=[0], device="cpu",
    )
    train(config, RUN, progress=PROGRESS)
print("run folder:", relative(RUN))
if SHORT:
    display(Markdown("**A short run** (no saved run was found): not representative."))
display(Markdown(RunResults.load(RunFolder(RUN).results_stem).markdown()))""",
    """md:The final checkpoint of each algorithm's first restart, with the loss and the data
(rebuilt from the checkpoint's metadata) it was trained on:""",
    """\
from landscape import build_domains, build_loss, load_checkpoint

folder = RunFolder(RUN)
ALGORITHMS = [algo for algo in ("erm", "fishr") if folder.has_final(algo)]
models = {}
for algo in ALGORITHMS:
    models[algo], meta = load_checkpoint(folder.final_checkpoint(algo))
    print(f"{algorithm_name(algo):>5}: {relative(folder.final_checkpoint(algo))}"
          f" (checkpoints at steps {folder.checkpoint_steps(algo, 0)})")
loss = build_loss(meta["loss"])  # BCEWithLogitsLoss
data = build_domains(meta["data"])
train_domains = {name: data[name] for name in meta["train_domains"]}
print({name: len(X) for name, [(X, y)] in data.items()})
print(models[ALGORITHMS[-1]])""",
    """md:## 3. The inconsistency score of the head (`landscape/inconsistency/`)

For weights $\\theta^*$ and $\\varepsilon > 0$ (Parascandolo et al. 2021), to second order:

$$I^\\varepsilon(\\theta^*) \\approx \\max_{(A,B)} \\Big[ R_B(\\theta^*) - R_A(\\theta^*) +
\\max_{\\frac12\\theta^\\top H_A\\theta\\le\\varepsilon} \\tfrac12 \\theta^\\top H_B\\theta\\Big]
= \\max_{(A,B)} \\big[ R_B - R_A + \\varepsilon\\,\\lambda_{\\max}(H_B, H_A) \\big],$$

with $\\lambda_{\\max}(H_B, H_A)$ the largest generalized eigenvalue of $H_B v = \\lambda
H_A v$. On the head (391 parameters) the Hessians are exact and dense. A trained ReLU
network's $H_A$ is singular (dead units), so the ellipsoid is restricted to the top-$k$
eigenspace of $H_A$ (`remedy="top-k"`, recorded in the result); the result also carries an
empirical check along the true losses.""",
    """\
from landscape import inconsistency_score

scores = {
    algo: inconsistency_score(
        model, loss, train_domains, 0.01, params="classifier", method="dense",
        remedy="top-k", k=20, progress=False,
    )
    for algo, model in models.items()
}
for algo, res in scores.items():
    a, b = res.pair
    i, j = res.domains.index(a), res.domains.index(b)
    print(f"{algorithm_name(algo):>5}: I^eps = {res.score:.4g} on {domain_name(a)} -> "
          f"{domain_name(b)}: risk gap {res.risk_gap[i, j]:.3g}"
          f" + curvature term {res.curvature_term[0, i, j]:.3g}"
          f" (empirical check {np.ravel(res.check['empirical_score'])[0]:.3g})")""",
    """md:## 4. Domain curvature side by side (`landscape/curvature/`)

`compare_domains` puts the quantities of the paper's Hessian-alignment analysis side by
side: $\\|v_A - v_B\\|^2$ and $\\cos(v_A, v_B)$ between gradient variances, the same between
exact Hessian diagonals, $\\cos(v_e, \\operatorname{diag} H_e)$ within each domain (the
premise Var $\\approx$ Fisher $\\approx$ Hessian), and the principal angles between the
domains' top-$k$ eigenspaces.""",
    """\
from landscape import compare_domains

for algo, model in models.items():
    cmp = compare_domains(model, loss, train_domains, params="classifier", k=3)
    print(f"{algorithm_name(algo):>5}: |v_B - v_A|^2 = {cmp.variance_distance[0, 1]:.3g}, "
          f"|diag H_B - diag H_A|^2 = {cmp.diagonal_distance[0, 1]:.3g}, "
          f"cos(v_e, diag H_e) = {np.round(cmp.within_cosine, 3)}, "
          f"principal angles (deg) = {np.round(np.degrees(cmp.principal_angles[0, 1]), 1)}")""",
    """md:## 5. Loss surfaces on one plane (`landscape/surface/`, `landscape/plot/`)

$f_e(\\alpha, \\beta) = R_e(\\theta^* + \\alpha\\delta + \\beta\\eta)$ for every domain on the
**same** seeded, filter-normalised directions $\\delta, \\eta$ (Li et al. 2018), and the
difference between two domains: where it is not flat, the domains disagree. Here for
Fishr, on the first 1,000 images of each domain (every point is a pass over them).""",
    """\
from landscape import loss_surface, random_directions
from landscape.domains import truncate
from landscape.plot import plot_surface

model = models[ALGORITHMS[-1]]
dirs = random_directions(model, seed=0)
surface = loss_surface(model, loss, truncate(data, SURFACE_N), dirs, grid=(-1.0, 1.0, GRID),
                       progress=False)
fig, axes = plot_surface(surface, domains=["+80%", "+90%", "gray"], difference="+90% - +80%")""",
]

TABLE2 = [
    """md:# Table 2: Colored MNIST, ours beside the paper's

The Fishr paper's Table 2 (IRM protocol, accuracies at the last step, mean ± std over 10
restarts). `landscape.paper.compare_table2` sets our numbers beside the published ones and
marks a cell ✓ when $|\\text{ours} - \\text{paper}| \\le \\max(2\\,\\sigma_\\text{paper}, 1.5)$
points. Algorithms absent from the run are left out.""",
    SETUP,
    "md:" + RUN_MD,
    RUN,
    """\
from landscape.paper import compare_table2
from landscape.training import RunResults

results = RunResults.load(RUN / "results")
restarts = {algo: len(seeds) for algo, seeds in results.seeds.items()}
display(Markdown("**Ours** (`results.md` of the run)\\n\\n" + results.markdown()))
display(Markdown("**Ours (paper)**\\n\\n" + compare_table2(results.table, restarts)))""",
    """md:## Training curves (`landscape.plot.plot_training_curves`)

Per-domain accuracy over the steps (mean over restarts, band ± one std), the dotted line at
the anneal step: ERM follows the colour (high on `+80%` / `+90%`, low on `-90%`); after
the anneal step Fishr gives it up for the shape.""",
    """\
from landscape.plot import plot_training_curves

fig, axes = plot_training_curves(RUN, metric="acc")""",
    """\
fig, axes = plot_training_curves(RUN, metric="loss")""",
]

ALIGNMENT = [
    """md:# Hessian alignment over training

The premise behind Fishr: near a minimum the variance of per-sample gradients approximates
the Hessian (Var $\\approx$ empirical Fisher $\\approx$ Fisher $\\approx$ Hessian; for the
final linear layer Hessian and Fisher coincide). Matching the variances $v_e$ should then
match the domains' curvatures. `landscape.alignment.alignment_trajectory` measures, at every
checkpoint of a run and for the head's parameters,

* $\\|v_{+90\\%} - v_{+80\\%}\\|^2$ and $\\cos(v_{+80\\%}, v_{+90\\%})$,
* $\\|\\operatorname{diag} H_{+90\\%} - \\operatorname{diag} H_{+80\\%}\\|^2$ (exact diagonals) and
  their cosine,
* per domain $\\cos(v_e, \\operatorname{diag} H_e)$,

each through `landscape.curvature.compare_domains`, on the checkpoint's own data (every
restart draws its own).""",
    SETUP,
    "md:" + RUN_MD,
    RUN,
    """\
import numpy as np

from landscape.alignment import AlignmentTrajectory, alignment_trajectory
from landscape.names import algorithm_name, ordered_algorithms
from landscape.runs import JobFolder

saved = JobFolder(RUN.parent).analysis.alignment  # written by `landscape reproduce`
if not SMOKE and saved.with_suffix(".json").is_file():
    traj = AlignmentTrajectory.load(saved)
else:
    traj = alignment_trajectory(RUN, pair=["+80%", "+90%"], params="classifier",
                                subsample=200 if SMOKE else None, progress=PROGRESS)
print("steps:", traj.steps.tolist(), "| algorithms:", [algorithm_name(a) for a in traj.algorithms],
      "| anneal step:", traj.anneal_step)""",
    """md:## The figure (`landscape.plot.plot_alignment`)

Left: the two distances (the Hessian one ×100 to share the axis, as in the paper), mean
over restarts; right: the cosines. The dotted line marks the anneal step.""",
    """\
from landscape.plot import plot_alignment

fig, axes = plot_alignment(traj)""",
    """md:## The numbers

Final-step values, mean over restarts, and the within-domain cosine between variance and
Hessian diagonal (the premise).""",
    """\
rows = ["| algorithm | ‖Δv‖² | ‖Δ diag H‖² | cos(v) | cos(diag H) | cos(v_e, diag H_e) |",
        "|---|---|---|---|---|---|"]
for algo in ordered_algorithms(traj.algorithms):
    def last(values, algo=algo):
        return np.nanmean(values[algo][:, -1])

    within = np.nanmean(traj.within_cosine[algo][:, -1], axis=0)
    rows.append(f"| {algorithm_name(algo)} | {last(traj.variance_distance):.3g} "
                f"| {last(traj.diagonal_distance):.3g} | {last(traj.variance_cosine):.3f} "
                f"| {last(traj.diagonal_cosine):.3f} | {np.round(within, 3).tolist()} |")
display(Markdown("\\n".join(rows)))""",
    """md:## One entry, recomputed by hand

Every entry is `compare_domains` on one checkpoint with the domains rebuilt from that
checkpoint's metadata: here the last checkpoint of Fishr's restart 0.""",
    """\
from landscape import build_domains, build_loss, compare_domains, load_checkpoint
from landscape.training import checkpoint_path

step = int(traj.steps[-1])
model, meta = load_checkpoint(checkpoint_path(RUN, "fishr", 0, step))
data = build_domains(meta["data"])
n = traj.settings["subsample"]
pair = {d: [(X[:n], y[:n]) for X, y in data[d]] for d in traj.pair}
cmp = compare_domains(model, build_loss(meta["loss"]), pair, params="classifier", k=0)
print(cmp.variance_distance[0, 1], traj.variance_distance["fishr"][0, -1])
assert np.isclose(cmp.variance_distance[0, 1], traj.variance_distance["fishr"][0, -1])""",
]

INCONSISTENCY = [
    """md:# The inconsistency score and per-domain loss surfaces

$$I^\\varepsilon(\\theta^*) \\approx \\max_{(A,B)} \\big[ R_B(\\theta^*) - R_A(\\theta^*) +
\\varepsilon\\,\\lambda_{\\max}(H_B, H_A) \\big]$$

(`landscape/inconsistency/`): the risk gap between two training domains plus how much
more $B$'s loss curves than $A$'s inside the region where $A$'s loss moves by at most
$\\varepsilon$. The paper argues that Fishr lowers both terms. `landscape.pipeline.analyse_run`
computes, for the final checkpoint of every algorithm, the score of the head (dense,
exact) and of the whole network (matrix-free), both on the top-$k$ eigenspace of $H_A$ (a
trained ReLU network's $H_A$ is singular), each with an empirical check along the true
losses; and per-domain loss surfaces on two kinds of planes. It resumes: results already
in the analysis folder are read, not recomputed.""",
    SETUP,
    "md:" + RUN_MD,
    RUN,
    """\
from landscape.pipeline import analyse_run, summary
from landscape.runs import JobFolder

ANALYSIS = JobFolder(RUN.parent).analysis.root  # the layout of `landscape reproduce`
settings = (dict(subsample=100, head_k=5, network_k=3, grid=5) if SMOKE
            else dict(subsample=2000, grid=21))  # the defaults of `landscape reproduce`
analyse_run(RUN, ANALYSIS, epsilon=0.01, progress=PROGRESS, **settings)
display(Markdown(summary(ANALYSIS)))""",
    """md:## The pairwise values (`landscape.plot.plot_pairs`)

Rows $A$, columns $B$: $R_B - R_A + \\varepsilon\\,\\lambda_{\\max}(H_B, H_A)$; the diagonal
is exactly $\\varepsilon$ (greyed out) and the winning pair is outlined. One colour scale
for every algorithm, so that the panels compare.""",
    """\
from landscape.inconsistency import InconsistencyResult
from landscape.plot import plot_pairs, plot_score_parts
from landscape.runs import AnalysisFolder

saved = AnalysisFolder(ANALYSIS)
scores = {kind: {algo: InconsistencyResult.load(stem) for algo, stem in saved.scores(kind).items()}
          for kind in ("head", "network")}
fig, axes = plot_pairs(scores["head"], kind="head")""",
    """md:## The two parts of the score (`landscape.plot.plot_score_parts`)

Left: the winning pair's risk gap and curvature term, stacked (the quadratic
$I^\\varepsilon$); right: the same score on the true losses (the largest of
$\\varepsilon$, the loss reached along each pair's maximiser, and a projected ascent),
beside the quadratic one on a log scale: the quadratic model stops at second order, so the
two differ where the loss is not quadratic at the scale of $\\varepsilon$.""",
    """\
fig, axes = plot_score_parts(scores["head"], kind="head")""",
    """\
fig, axes = plot_score_parts(scores["network"], kind="network")""",
    """\
from landscape.names import algorithm_name, domain_name, ordered_algorithms

for algo in ordered_algorithms(scores["head"]):
    res = scores["head"][algo]
    print(f"{algorithm_name(algo)}: ellipsoid restricted to the top-{res.k} eigenspace of H_A"
          f" ({res.remedy})")
    for domain, report in res.definiteness.items():
        print(f"    H_{domain_name(domain)}: {report['status']}, eigenvalues in "
              f"[{report['min_eigenvalue']:.3g}, {report['max_eigenvalue']:.3g}]")""",
    """md:## Surfaces (`landscape.plot.plot_surface`, `plot_surface_grid`)

$f_e(\\alpha, \\beta) = R_e(\\theta_0 + \\alpha\\delta + \\beta\\eta)$ for every domain on one
plane and one colour scale, and a difference between two domains:

* `surface_plane`: the plane through the initial weights (origin) and the final weights
  of ERM and Fishr (`landscape.surface.directions.plane_directions`);
* `surface_inconsistency_<algo>`: the plane of the head's maximising direction of
  $I^\\varepsilon$ (× at $(1, 0)$) and a second direction
  (`landscape.surface.directions.inconsistency_directions`), one row per algorithm, the
  $\\varepsilon$-sublevel set of each training domain in white.""",
    """\
from landscape.plot import plot_surface, plot_surface_grid
from landscape.surface import SurfaceResult

plane = SurfaceResult.load(saved.surface_plane)
fig, axes = plot_surface(plane, domains=["+80%", "+90%"])""",
    """\
surfaces = {stem.name.removeprefix("surface_inconsistency_"): SurfaceResult.load(stem)
            for stem in saved.surfaces() if stem != saved.surface_plane}
pair = next(iter(surfaces.values())).directions["pair"]
fig, axes = plot_surface_grid(surfaces, pair, epsilon=0.01)""",
]

NOTEBOOKS = {
    "00_tour.ipynb": TOUR,
    "01_table2.ipynb": TABLE2,
    "02_hessian_alignment.ipynb": ALIGNMENT,
    "03_inconsistency_and_surfaces.ipynb": INCONSISTENCY,
}


def kernel_env(smoke: bool = False) -> dict[str, str]:
    """The environment of the kernel that executes a notebook: this process's, plus the
    smoke switch, no progress bars, the inline backend and the repository on the path."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {
        **os.environ,
        "LANDSCAPE_SMOKE": "1" if smoke else "0",
        "LANDSCAPE_PROGRESS": "0",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONPATH": path,
    }


def execute(
    nb: nbformat.NotebookNode, smoke: bool = False, timeout: int | None = None
) -> nbformat.NotebookNode:
    """Execute ``nb`` in place, in memory (nothing is written), with the working directory
    ``notebooks/`` and :func:`kernel_env`; raises ``nbclient.exceptions.CellExecutionError``
    on the first failing cell. ``timeout``: seconds per cell (``None``: no limit)."""
    from nbclient import NotebookClient

    client = NotebookClient(
        nb,
        timeout=timeout,
        startup_timeout=600,  # a busy machine imports slowly
        kernel_name="python3",
        record_timing=False,  # no timestamps: re-executing changes only what changed
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not its TCP transport warning
        resources={"metadata": {"path": str(HERE)}},
    )
    client.execute(env=kernel_env(smoke))
    return nb


def output_text(output) -> str:
    """The text of one output (streams, text and Markdown; not images)."""
    if output.output_type == "stream":
        return output.text
    if output.output_type == "error":
        return "\n".join([output.ename, output.evalue, *output.traceback])
    data = output.get("data", {})
    return "\n".join(str(v) for k, v in data.items() if k.startswith("text/"))


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """What is wrong with the stored outputs of ``nb`` (empty when nothing): errors,
    anything written to stderr (warnings, progress bars), folders of this machine."""
    found = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            text = output_text(output)
            where = f"cell {cell.get('id')}"
            if output.output_type == "error":
                found.append(f"{where}: error {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                found.append(f"{where}: stderr {text.strip()[:200]!r}")
            found += [f"{where}: names the folder {p!r}" for p in MACHINE_PATHS if p in text]
    return found


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically, as ``nbformat.write`` would (UTF-8, a final
    newline)."""
    from landscape.io import atomic_write

    text = nbformat.writes(nb)
    atomic_write(path, lambda f: f.write((text.rstrip("\n") + "\n").encode("utf-8")))


def _run_folder() -> Path:
    """The run folder the notebooks will read (``LANDSCAPE_RUN``); exits when it has no
    ``results.json``."""
    run = Path(os.environ.get("LANDSCAPE_RUN", DEFAULT_RUN))
    run = run if run.is_absolute() else ROOT / run
    if not (run / "results.json").is_file():
        sys.exit(
            f"error: {run} holds no finished run (no results.json); train it first "
            "(`landscape reproduce --out <folder>`) or set LANDSCAPE_RUN to a finished run folder"
        )
    return run


def generate(folder: str | os.PathLike, names: list[str] | None = None) -> list[Path]:
    """Write the notebooks ``names`` (default: all of :data:`NOTEBOOKS`) without outputs
    into ``folder``, their code formatted by ruff with the project's settings; returns the
    paths."""
    paths = []
    for name in names or NOTEBOOKS:
        nb = notebook(NOTEBOOKS[name], name.split("_")[0])
        nbformat.validate(nb)
        nbformat.write(nb, Path(folder) / name)
        paths.append(Path(folder) / name)
    # the project's code style in the code cells too (ruff formats notebooks)
    config = ["--config", str(ROOT / "pyproject.toml")]
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", *config, *map(str, paths)],
                   check=True)  # fmt: skip
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--execute", action="store_true", help="run each notebook, store it with its outputs"
    )
    parser.add_argument(
        "names", nargs="*", metavar="NOTEBOOK", help="only these (e.g. 00_tour); default: all"
    )
    args = parser.parse_args(argv)
    chosen = [n for n in NOTEBOOKS if not args.names or
              any(n.startswith(name.removesuffix(".ipynb")) for name in args.names)]  # fmt: skip
    if not chosen:
        parser.error(f"no notebook matches {args.names}; choose from {list(NOTEBOOKS)}")
    if args.execute:
        print("executing with the run folder", os.path.relpath(_run_folder(), ROOT))
    status = 0
    with tempfile.TemporaryDirectory(prefix="landscape-notebooks-") as tmp:
        for path in generate(tmp, chosen):
            nb = nbformat.read(path, as_version=4)
            code = _execute_one(nb, path.name) if args.execute else 0
            status = max(status, code)
            if code == 2:
                continue
            _write(nb, HERE / path.name)
            size = (HERE / path.name).stat().st_size
            print(f"wrote notebooks/{path.name} ({size / 1e6:.2f} MB)")
    return status


def _execute_one(nb: nbformat.NotebookNode, name: str) -> int:
    """Execute one notebook for storing: 0 if fine, 1 if its outputs have problems (it is
    still written, the problems printed), 2 if a cell failed (it is not written)."""
    from nbclient.exceptions import CellExecutionError

    print(f"executing {name} ...", flush=True)
    try:
        execute(nb)
    except CellExecutionError as err:
        print(f"error: {name} failed, its file is left as it was:\n{err}", file=sys.stderr)
        return 2
    found = problems(nb)
    for line in found:
        print(f"warning: {name}: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
