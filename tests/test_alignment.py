"""Tests of landscape.alignment: every entry of the trajectory against compare_domains run
directly on that checkpoint and the data rebuilt from its own metadata; missing
checkpoints; errors; save / load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from landscape.alignment import (
    AlignmentTrajectory,
    alignment_trajectory,
    checkpoint_steps,
    run_layout,
)
from landscape.checkpoint import load_checkpoint
from landscape.curvature import compare_domains
from landscape.data import build_domains, data_spec
from landscape.domains import pick_domains, truncate
from landscape.losses import build_loss
from landscape.training import TrainConfig, checkpoint_path, train

SPEC = data_spec("gaussian_classification", n_domains=4, n=48, dim=3, spurious=[0.9, 0.8, 0.1, 0.5])
PAIR = ["d0", "d1"]
KEYS = ("variance_distance", "diagonal_distance", "variance_cosine", "diagonal_cosine")


def tiny_run_config(**kw) -> TrainConfig:
    """ERM and Fishr, 2 restarts, 6 steps, checkpoints at 0, 2, 4 (and 6, the final one)."""
    values = dict(
        algorithms=["erm", "fishr"],
        steps=6,
        anneal_step=3,
        restarts=2,
        hidden_dims=[5, 4],
        data=SPEC,
        train_domains=["d0", "d1"],
        test_domains=["d2", "d3"],
        dtype="float64",
        device="cpu",
        lr=1e-2,
        penalty_weight=100.0,
        state_every=2,
        checkpoint_steps=[0, 2, 4],
    )
    values.update(kw)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("alignment") / "run"
    train(tiny_run_config(), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def trajectory(run):
    return alignment_trajectory(run, pair=PAIR, progress=False)


def direct(path, pair=PAIR, params="classifier", subsample=None):
    """compare_domains on one checkpoint, domains rebuilt from its own metadata."""
    model, meta = load_checkpoint(path)
    domains = pick_domains(build_domains(meta["data"]), pair)
    if subsample is not None:
        domains = {k: [(X[:subsample], y[:subsample]) for X, y in v] for k, v in domains.items()}
    return compare_domains(model, build_loss(meta["loss"]), domains, params, k=0), meta


def test_layout_and_steps(run, trajectory):
    assert run_layout(run) == {"erm": [0, 1], "fishr": [0, 1]}
    assert checkpoint_steps(run, "fishr", 1) == [0, 2, 4, 6]
    assert trajectory.steps.tolist() == [0, 2, 4, 6]
    assert trajectory.algorithms == ["erm", "fishr"]
    assert trajectory.pair == PAIR and trajectory.params == "classifier"
    assert trajectory.anneal_step == 3
    for key in KEYS:
        assert getattr(trajectory, key)["fishr"].shape == (2, 4)
    assert trajectory.within_cosine["erm"].shape == (2, 4, 2)


def test_every_entry_equals_compare_domains_on_its_checkpoint(run, trajectory):
    seeds = set()
    for algo in ("erm", "fishr"):
        for restart in (0, 1):
            for j, step in enumerate([0, 2, 4, 6]):
                cmp, meta = direct(checkpoint_path(run, algo, restart, step))
                assert meta["step"] == step and meta["restart"] == restart
                seeds.add((restart, meta["data"]["seed"]))
                for key in KEYS:
                    got = getattr(trajectory, key)[algo][restart, j]
                    assert got == pytest.approx(getattr(cmp, key)[0, 1], rel=1e-12, abs=1e-15)
                np.testing.assert_allclose(
                    trajectory.within_cosine[algo][restart, j], cmp.within_cosine, rtol=1e-12
                )
    # each restart drew its own data (seed data_seed + k), and the trajectory used it
    assert seeds == {(0, 0), (1, 1)}


def test_restart_uses_its_own_data_not_restart_0s(run, trajectory):
    """Analysing restart 1's checkpoint on restart 0's data gives another number."""
    model, meta = load_checkpoint(checkpoint_path(run, "fishr", 1, 6))
    spec0 = dict(meta["data"], seed=0)
    wrong = compare_domains(
        model, build_loss("bce"), pick_domains(build_domains(spec0), PAIR), "classifier", k=0
    )
    got = trajectory.variance_distance["fishr"][1, 3]
    assert got != pytest.approx(wrong.variance_distance[0, 1], rel=1e-6)


def test_values_are_sane(trajectory):
    for key in KEYS:
        for values in getattr(trajectory, key).values():
            assert np.isfinite(values).all()
    for algo in trajectory.algorithms:
        assert (trajectory.variance_distance[algo] > 0).all()
        assert (np.abs(trajectory.variance_cosine[algo]) <= 1 + 1e-12).all()
    # step 0 is the initialisation: ERM and Fishr share it (same seed, same data)
    np.testing.assert_array_equal(
        trajectory.variance_distance["erm"][:, 0], trajectory.variance_distance["fishr"][:, 0]
    )


def test_subsample_and_params_and_algorithm_subset(run):
    traj = alignment_trajectory(
        run, algorithms=["fishr"], pair=["d1", "d0"], params=None, subsample=20, progress=False
    )
    assert traj.algorithms == ["fishr"] and traj.params is None
    assert traj.settings["subsample"] == 20
    cmp, _ = direct(checkpoint_path(run, "fishr", 0, 4), pair=["d1", "d0"], params=None,
                    subsample=20)  # fmt: skip
    assert traj.diagonal_distance["fishr"][0, 2] == pytest.approx(cmp.diagonal_distance[0, 1])
    assert traj.variance_cosine["fishr"][0, 2] == pytest.approx(cmp.variance_cosine[0, 1])
    full, _ = direct(checkpoint_path(run, "fishr", 0, 4), pair=["d1", "d0"], params=None)
    assert traj.diagonal_distance["fishr"][0, 2] != pytest.approx(full.diagonal_distance[0, 1])


def test_missing_checkpoint_gives_nan(run, trajectory, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    checkpoint_path(copy, "fishr", 1, 2).unlink()
    shutil.rmtree(copy / "erm" / "restart_1")  # a whole restart missing
    traj = alignment_trajectory(copy, pair=PAIR, progress=False)
    assert traj.steps.tolist() == [0, 2, 4, 6]
    for key in KEYS:
        values = getattr(traj, key)
        assert np.isnan(values["fishr"][1, 1])
        assert np.isnan(values["erm"][1]).all()
        finite = np.ones((2, 4), bool)
        finite[1, 1] = False
        assert np.isfinite(values["fishr"][finite]).all()
        np.testing.assert_array_equal(
            values["fishr"][finite], getattr(trajectory, key)["fishr"][finite]
        )
        np.testing.assert_array_equal(values["erm"][0], getattr(trajectory, key)["erm"][0])
    assert np.isnan(traj.within_cosine["fishr"][1, 1]).all()


def test_save_and_load(trajectory, tmp_path):
    trajectory.save(tmp_path / "traj")
    back = AlignmentTrajectory.load(tmp_path / "traj")
    np.testing.assert_array_equal(back.steps, trajectory.steps)
    assert back.pair == trajectory.pair and back.anneal_step == 3
    assert back.params == "classifier" and back.algorithms == trajectory.algorithms
    for key in (*KEYS, "within_cosine"):
        for algo in trajectory.algorithms:
            np.testing.assert_array_equal(getattr(back, key)[algo], getattr(trajectory, key)[algo])


def test_errors(run, tmp_path):
    with pytest.raises(ValueError, match=r"no checkpoints of 'irm' in .*; found erm, fishr"):
        alignment_trajectory(run, algorithms=["irm"], progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no checkpoints; train with"):
        alignment_trajectory(tmp_path / "empty", progress=False)
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        alignment_trajectory(tmp_path / "nowhere", progress=False)
    with pytest.raises(ValueError, match=r"unknown domain 'd9'; available: d0, d1, d2, d3"):
        alignment_trajectory(run, algorithms=["erm"], pair=["d0", "d9"], progress=False)
    with pytest.raises(ValueError, match=r"subsample must be None or a positive number"):
        truncate({"d0": [(np.zeros(2), np.zeros(2))]}, 0)


def test_float32_run_is_analysed_in_float32(tmp_path):
    """A float32 run on synthetic data (built in float64 by default) matches compare_domains
    on float32 data."""
    folder = tmp_path / "run32"
    train(tiny_run_config(algorithms=["erm"], restarts=1, dtype="float32"), folder,
          progress=False)  # fmt: skip
    traj = alignment_trajectory(folder, pair=PAIR, progress=False)
    model, meta = load_checkpoint(checkpoint_path(folder, "erm", 0, 4))
    assert next(model.parameters()).dtype == torch.float32
    domains = pick_domains(build_domains(meta["data"], dtype=torch.float32), PAIR)
    cmp = compare_domains(model, build_loss("bce"), domains, "classifier", k=0)
    assert traj.variance_distance["erm"][0, 2] == pytest.approx(cmp.variance_distance[0, 1])
    assert np.isfinite(traj.diagonal_distance["erm"]).all()
