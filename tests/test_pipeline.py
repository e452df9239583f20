"""Tests of landscape.pipeline (analyse_run, draw_figures, summary) on a tiny synthetic run,
of `landscape figures`, and (marked ``mnist``) of `landscape reproduce` end to end."""

from __future__ import annotations

import os
import shutil

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import landscape.alignment  # noqa: E402
import landscape.curvature  # noqa: E402
import landscape.inconsistency  # noqa: E402
import landscape.surface  # noqa: E402
from landscape.alignment import AlignmentTrajectory, alignment_trajectory  # noqa: E402
from landscape.cli import main  # noqa: E402
from landscape.inconsistency import InconsistencyResult  # noqa: E402
from landscape.pipeline import _final_exists, analyse_run, draw_figures, summary  # noqa: E402
from landscape.surface import SurfaceResult  # noqa: E402
from landscape.training import RunResults, train  # noqa: E402
from tests.test_alignment import tiny_run_config  # noqa: E402

ALGOS = ["erm", "fishr"]
ANALYSIS_FILES = [
    "score_head_erm",
    "score_head_fishr",
    "score_network_erm",
    "score_network_fishr",
    "alignment",
    "surface_plane",
    "surface_inconsistency_erm",
    "surface_inconsistency_fishr",
    "premise_head_erm",
    "gradients_head_erm",
    "premise_head_fishr",
    "gradients_head_fishr",
    "score_trajectory_head",
    "spectrum_head_erm",
    "spectrum_network_erm",
    "spectrum_head_fishr",
    "spectrum_network_fishr",
    "example_patchwork",
    "example_consistent",
]
FIGURES = [
    f"{stem}.{fmt}"
    for stem in [
        "training_curves",
        "hessian_alignment",
        "inconsistency_parts_head",
        "inconsistency_pairs_head",
        "inconsistency_parts_network",
        "inconsistency_pairs_network",
        "surface_plane",
        "surface_inconsistency",
        "variance_vs_hessian_head",
        "gradient_clouds_head",
        "inconsistency_example",
        "inconsistency_over_training_head",
        "spectral_density",
    ]
    for fmt in ("png", "pdf")
]
SETTINGS = dict(subsample=30, head_k=3, network_k=3, grid=5, progress=False)


def analyse(run, out, messages=None):
    log = (lambda m: messages.append(m)) if messages is not None else (lambda m: None)
    return analyse_run(run, out, log=log, **SETTINGS)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """``root/run`` (tiny ERM + Fishr run) and ``root/analysis`` (its analysis)."""
    root = tmp_path_factory.mktemp("reproduce")
    train(tiny_run_config(), root / "run", progress=False)
    messages: list[str] = []
    analyse(root / "run", root / "analysis", messages)
    return root, messages


@pytest.fixture
def forbid_analyses(monkeypatch):
    """Any analysis called from now on fails the test."""

    def fail(*args, **kwargs):
        raise AssertionError("recomputed an analysis that was already saved")

    for module, name in [
        (landscape.inconsistency, "inconsistency_score"),
        (landscape.surface, "loss_surface"),
        (landscape.alignment, "alignment_trajectory"),
        (landscape.curvature, "compare_domains"),
    ]:
        monkeypatch.setattr(module, name, fail)


def mtimes(folder) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------- analyse_run


def test_analysis_writes_every_result(job):
    root, messages = job
    names = sorted(p.name for p in (root / "analysis").iterdir())
    assert names == sorted(f"{s}{ext}" for s in ANALYSIS_FILES for ext in (".json", ".npz"))
    assert len(messages) == len(ANALYSIS_FILES)  # one line per computed result
    assert all(m.startswith("[analyse]") for m in messages)


def test_analysis_results_have_the_requested_settings(job):
    root, _ = job
    analysis = root / "analysis"
    for algo in ALGOS:
        head = InconsistencyResult.load(analysis / f"score_head_{algo}")
        assert head.method == "dense" and head.domains == ["d0", "d1"]
        assert all(n.startswith("classifier") for n in head.param_names)
        assert head.num_samples == {"d0": 48, "d1": 48}  # the head uses every sample
        assert head.k == 3 and head.remedy == "top-k"
        assert float(np.asarray(head.epsilon)[0]) == 0.01 and head.check is not None
        net = InconsistencyResult.load(analysis / f"score_network_{algo}")
        assert net.method == "matrix-free" and net.num_samples == {"d0": 30, "d1": 30}
        assert len(net.param_names) == 6  # every layer of the [5, 4] MLP
        surf = SurfaceResult.load(analysis / f"surface_inconsistency_{algo}")
        assert surf.domains == ["d0", "d1", "d2", "d3"]
        assert surf.losses["d0"].shape == (5, 5)
        assert surf.num_samples == {d: 30 for d in surf.domains}
    plane = SurfaceResult.load(analysis / "surface_plane")
    assert set(plane.directions["points"]) == {"init", "erm", "fishr"}
    assert plane.losses["d3"].shape == (5, 5)  # `grid` points per axis on this plane too
    for x, y in plane.directions["points"].values():  # the range covers the three points
        assert plane.alphas[0] < x < plane.alphas[-1] and plane.betas[0] < y < plane.betas[-1]
    traj = AlignmentTrajectory.load(analysis / "alignment")
    expected = alignment_trajectory(root / "run", pair=["d0", "d1"], progress=False)
    for algo in ALGOS:
        np.testing.assert_array_equal(
            traj.variance_distance[algo], expected.variance_distance[algo]
        )
    assert traj.steps.tolist() == [0, 2, 4, 6]


def test_second_call_recomputes_nothing(job, forbid_analyses):
    root, _ = job
    before = mtimes(root / "analysis")
    messages: list[str] = []
    assert analyse(root / "run", root / "analysis", messages) == root / "analysis"
    assert messages == []
    assert mtimes(root / "analysis") == before


def test_interrupted_analysis_resumes_only_what_is_missing(job, tmp_path):
    root, _ = job
    copy = tmp_path / "analysis"
    shutil.copytree(root / "analysis", copy)
    (copy / "surface_inconsistency_fishr.npz").unlink()  # a half-written result
    (copy / "score_network_erm.json").unlink()
    before = mtimes(copy)
    messages: list[str] = []
    analyse(root / "run", copy, messages)
    assert messages == [
        "[analyse] erm: I^eps of the whole network (matrix-free, top-3)",
        "[analyse] fishr: surfaces on the plane of the inconsistency direction",
    ]
    after = mtimes(copy)
    changed = sorted(k for k in after if before.get(k) != after[k])
    assert changed == sorted(
        ["score_network_erm.json", "score_network_erm.npz"]
        + ["surface_inconsistency_fishr.json", "surface_inconsistency_fishr.npz"]
    )
    # deterministic: the recomputed results equal the first ones
    a = InconsistencyResult.load(copy / "score_network_erm")
    b = InconsistencyResult.load(root / "analysis" / "score_network_erm")
    assert a.score == pytest.approx(b.score, rel=1e-6)
    s1 = SurfaceResult.load(copy / "surface_inconsistency_fishr")
    s2 = SurfaceResult.load(root / "analysis" / "surface_inconsistency_fishr")
    np.testing.assert_allclose(s1.losses["d2"], s2.losses["d2"], rtol=1e-10)


def test_analysis_errors(job, tmp_path):
    root, _ = job
    with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
        analyse_run(tmp_path, tmp_path / "out", progress=False, log=lambda m: None)
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    (run / "fishr" / "restart_0" / "checkpoints" / "step_00006.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"step_00006.safetensors is missing; finish"):
        analyse_run(
            run, tmp_path / "out", algorithms=["erm", "fishr"], progress=False, log=lambda m: None
        )
    # by default, an algorithm whose restart 0 has not finished is left out
    assert [a for a in ("erm", "fishr") if _final_exists(run, a)] == ["erm"]


# --------------------------------------------------------------------- figures and summary


def test_draw_figures_from_saved_results_only(job, tmp_path, forbid_analyses):
    root, _ = job
    paths = draw_figures(root / "run", root / "analysis", tmp_path / "figures")
    assert sorted(p.name for p in paths) == sorted(FIGURES)  # no table2.md: not Colored MNIST
    for p in paths:
        assert p.is_file() and p.stat().st_size > 1000
        magic = b"\x89PNG\r\n\x1a\n" if p.suffix == ".png" else b"%PDF"
        assert p.read_bytes().startswith(magic)


def test_draw_figures_skips_missing_results(job, tmp_path):
    root, _ = job
    partial = tmp_path / "analysis"
    partial.mkdir()
    for ext in (".json", ".npz"):
        shutil.copy(root / "analysis" / f"score_head_fishr{ext}", partial)
    paths = draw_figures(root / "run", partial, tmp_path / "figures")
    stems = ["training_curves", "inconsistency_parts_head", "inconsistency_pairs_head"]
    expected = [f"{stem}.{fmt}" for stem in stems for fmt in ("png", "pdf")]
    assert sorted(p.name for p in paths) == sorted(expected)


def test_draw_figures_writes_table2_for_paper_columns(job, tmp_path):
    """A run whose table has the paper's columns (Colored MNIST) gets table2.md."""
    root, _ = job
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    results = RunResults.load(run / "results")
    titles = {"Train acc.": "Train acc.", "d2 acc.": "Test acc.", "d3 acc.": "Grey test acc."}
    results.table = {
        a: {titles[c]: v for c, v in cols.items()} for a, cols in results.table.items()
    }
    results.save(run / "results")
    paths = draw_figures(run, tmp_path / "no-analysis", tmp_path / "figures")
    assert sorted(p.name for p in paths) == [
        "table2.md", "table2.pdf", "table2.png", "table2.tex", "training_curves.pdf",
        "training_curves.png",
    ]  # fmt: skip
    text = (tmp_path / "figures" / "table2.md").read_text()
    assert text.startswith("# Colored MNIST (Table 2): ours (paper)")
    erm = next(line for line in text.splitlines() if line.startswith("| ERM |"))
    mean, std = results.table["erm"]["Test acc."]
    assert f"{mean:.1f} ± {std:.1f} (14.0 ± 0.7)" in erm
    latex = (tmp_path / "figures" / "table2.tex").read_text()
    assert f"{mean:.1f} $\\pm$ {std:.1f} (14.0 $\\pm$ 0.7)" in latex
    assert erm.endswith("| 2 |")  # restarts
    assert any(line.startswith("| Fishr |") for line in text.splitlines())


def test_summary_one_row_per_model(job):
    root, _ = job
    text = summary(root / "analysis")
    lines = text.strip().splitlines()
    assert lines[0].startswith("| Model | Parameters | Method | I^ε |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("ERM", "head", "dense"),
        ("Fishr", "head", "dense"),
        ("ERM", "whole network", "matrix-free"),
        ("Fishr", "whole network", "matrix-free"),
    ]
    for row in rows:
        kind = "head" if row[1] == "head" else "network"
        algo = {"ERM": "erm", "Fishr": "fishr"}[row[0]]
        res = InconsistencyResult.load(root / "analysis" / f"score_{kind}_{algo}")
        assert float(row[3]) == pytest.approx(float(res.score), rel=1e-3)
        assert row[4] == f"{res.pair[0]} → {res.pair[1]}"
        i, j = res.domains.index(res.pair[0]), res.domains.index(res.pair[1])
        assert float(row[5]) == pytest.approx(res.risk_gap[i, j], rel=1e-3, abs=1e-8)
        emp = float(np.asarray(res.check["empirical_score"]).reshape(-1)[0])
        assert float(row[7]) == pytest.approx(emp, rel=1e-3)
    assert summary(root / "nowhere").count("\n") == 2  # header only


# ----------------------------------------------------------------------------------- CLI


def test_figures_command_end_to_end(job, tmp_path, capsys, forbid_analyses):
    root, _ = job
    out = tmp_path / "figs"
    assert main(["figures", str(root / "run"), "--out", str(out)]) == 0  # ../analysis
    printed = capsys.readouterr().out.split()
    assert sorted(os.path.basename(p) for p in printed) == sorted(FIGURES)
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES)
    only_run = tmp_path / "figs2"
    assert main(["figures", str(root / "run"), "--analysis", str(tmp_path), "--out",
                 str(only_run)]) == 0  # fmt: skip
    drawn = sorted(p.name for p in only_run.iterdir())
    assert drawn == ["training_curves.pdf", "training_curves.png"]


def test_figures_command_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["figures", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"landscape figures: error: {tmp_path} is not a run folder (no config.json), nor an "
        "output of landscape score / surface / curvature (no score.json"
    )
    assert not (tmp_path / "out").exists()


def mnist_available() -> bool:
    from landscape.data import mnist

    return mnist.cache_path().is_file()


@pytest.mark.mnist
def test_reproduce_command_tiny(tmp_path, capsys):
    if not mnist_available():
        pytest.skip("MNIST cache not available (run `landscape data` / `make data`)")
    out = tmp_path / "job"
    args = ["reproduce", "--steps", "12", "--subsample", "300", "--analysis-subsample", "100",
            "--grid", "5", "--no-progress", "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[1/3] training erm, fishr" in printed and "[3/3]" in printed
    assert "| ERM | head | dense |" in printed and "| Fishr | whole network |" in printed
    analysis = sorted(p.stem for p in (out / "analysis").glob("*.json"))
    assert analysis == sorted(ANALYSIS_FILES)
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == sorted([*FIGURES, "table2.md", "table2.png", "table2.pdf", "table2.tex"])
    table = (out / "figures" / "table2.md").read_text()
    assert "| ERM |" in table and "| Fishr |" in table and "(86.4 ± 0.2)" in table
    head = InconsistencyResult.load(out / "analysis" / "score_head_fishr")
    assert head.domains == ["+80%", "+90%"] and head.num_samples["+80%"] == 300
    surf = SurfaceResult.load(out / "analysis" / "surface_plane")
    assert surf.domains == ["+80%", "+90%", "-90%", "gray"] and surf.losses["gray"].shape == (5, 5)
    # a second run resumes everything: nothing trained or analysed again
    before = {p: p.stat().st_mtime_ns for p in (out / "analysis").iterdir()}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "analysis").iterdir()} == before


def test_default_jobs_fit_the_runs_the_threads_and_the_free_memory(monkeypatch):
    """One worker per run, at most one per thread (``--threads``) and per WORKER_MEMORY of
    available memory, at least one (training in this process)."""
    import torch

    import landscape.device as device
    from landscape.pipeline import WORKER_MEMORY, default_jobs, fitting_jobs, reproduce_config

    assert fitting_jobs(2, 2, None) == 2
    assert fitting_jobs(2, 1, None) == 1  # --threads 1: one core, one job
    assert fitting_jobs(6, 4, 2.5 * WORKER_MEMORY) == 2
    assert fitting_jobs(2, 2, 0.5 * WORKER_MEMORY) == 1
    monkeypatch.setattr(device, "available_memory", lambda: 8 * WORKER_MEMORY)
    config = reproduce_config(restarts=3, device="cpu")
    with device.set_threads(4):
        assert torch.get_num_threads() == 4 and default_jobs(config) == 4
    with device.set_threads(1):
        assert default_jobs(config) == 1
    monkeypatch.setattr(device, "available_memory", lambda: 2.2 * WORKER_MEMORY)
    with device.set_threads(4):
        assert default_jobs(config) == 2


def test_reproduce_config_is_the_protocol_with_the_job_checkpoints():
    from landscape.pipeline import CHECKPOINT_STEPS, reproduce_config
    from landscape.training import TrainConfig

    config = reproduce_config()
    assert config == TrainConfig(algorithms=["erm", "fishr"], restarts=1,
                                 checkpoint_steps=CHECKPOINT_STEPS)  # fmt: skip
    assert reproduce_config(steps=120, restarts=3).checkpoint_steps == [0, 50, 100]
