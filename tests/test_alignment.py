"""Tests of landscape.alignment: every entry of the trajectory against compare_domains run
directly on that checkpoint and the data rebuilt from its own metadata; missing
checkpoints; errors; save / load."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from landscape.alignment import (
    KEYS,
    AlignmentTrajectory,
    alignment_trajectory,
    checkpoint_steps,
    domain_alignment,
    run_layout,
)
from landscape.checkpoint import load_checkpoint
from landscape.curvature import compare_domains
from landscape.data import build_domains, data_spec
from landscape.domains import pick_domains, truncate
from landscape.losses import build_loss
from landscape.params import select_params
from landscape.training import TrainConfig, checkpoint_path, train
from tests.cases import CONV_CASES
from tests.inconsistency.helpers import torch_func_curvatures

SPEC = data_spec("gaussian_classification", n_domains=4, n=48, dim=3, spurious=[0.9, 0.8, 0.1, 0.5])
PAIR = ["d0", "d1"]


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


# ----------------------------------------------------------------- any nn.Module (issue 10)

CONV = {c.id: c for c in CONV_CASES}


def reference_alignment(model, loss_func, domains, names):
    """Gradient variances ``1/N Σ (g_i − ḡ)²`` from per-sample gradients and the exact Hessian
    diagonals, dense in float64 by torch.func; the distances and cosines of ``(d0, d1)``."""
    from torch.func import functional_call, grad, vmap

    net = copy.deepcopy(model).double()
    state = {n: t.detach() for n, t in [*net.named_parameters(), *net.named_buffers()]}
    v, h = {}, {}
    for d, batches in domains.items():
        X = torch.cat([b[0] for b in batches]).double()
        y = torch.cat([b[1] for b in batches])
        sel = {n: state[n] for n in names}

        def sample_loss(p, x, t):
            out = functional_call(net, {**state, **p}, (x[None],))
            return loss_func(out, t[None])

        G = vmap(grad(sample_loss), in_dims=(None, 0, 0))(sel, X, y)
        G = torch.cat([G[n].reshape(X.shape[0], -1) for n in names], dim=1)
        v[d] = ((G - G.mean(0)) ** 2).mean(0).numpy()
        h[d] = np.diag(torch_func_curvatures(model, loss_func, batches, names)[0])

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    return {
        "variance_distance": float(np.sum((v["d0"] - v["d1"]) ** 2)),
        "diagonal_distance": float(np.sum((h["d0"] - h["d1"]) ** 2)),
        "variance_cosine": cos(v["d0"], v["d1"]),
        "diagonal_cosine": cos(h["d0"], h["d1"]),
        "within_cosine": np.array([cos(v[d], h[d]) for d in ("d0", "d1")]),
    }


@pytest.mark.parametrize("case_id", list(CONV))
def test_domain_alignment_of_any_module_equals_the_dense_reference(case_id):
    model, loss, domains, params = CONV[case_id].build(n=6)
    got = domain_alignment(model, loss, domains, ("d0", "d1"), params)
    want = reference_alignment(model, loss, domains, list(select_params(model, params)))
    assert got["diagonal_method"] == "exact"
    for key in KEYS:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-14), key
    np.testing.assert_allclose(got["within_cosine"], want["within_cosine"], rtol=1e-9)


@pytest.mark.parametrize(
    "case_id, params",
    [
        ("groupnorm-ce-head", "classifier"),
        ("batchnorm-ce-all", ["block.bn2.weight", "block.bn2.bias", "classifier.bias"]),
    ],
)
def test_domain_alignment_minibatched_equals_the_full_batch(case_id, params):
    model, loss, full, _ = CONV[case_id].build(n=10)
    want = domain_alignment(model, loss, full, params=params)
    _, _, uneven, _ = CONV[case_id].build(n=10, cuts={"d0": [3], "d1": [4, 9]})
    loaders = {d: DataLoader(TensorDataset(*b[0]), batch_size=4) for d, b in full.items()}
    for domains in (uneven, loaders):
        got = domain_alignment(model, loss, domains, params=params)
        for key in KEYS:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-14), key


def test_domain_alignment_needs_two_domains():
    model, loss, domains, _ = CONV["groupnorm-ce-head"].build(n=4)
    with pytest.raises(ValueError, match=r"compares two domains, got 1: \['d0'\]"):
        domain_alignment(model, loss, domains, ["d0"])
