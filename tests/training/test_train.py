"""Tests of landscape.training: config, the loss of a step against the Colored MNIST script's
formula computed by hand, history, checkpoints, resume, results, CLI."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from landscape.checkpoint import load_checkpoint, load_tensors
from landscape.cli import main
from landscape.data import build_domains, data_spec
from landscape.domains import concat
from landscape.io import read_json, write_json
from landscape.losses import accuracy
from landscape.models import build_model
from landscape.training import (
    DTYPES,
    NonFiniteLossError,
    RunResults,
    TrainConfig,
    Trainer,
    checkpoint_path,
    read_history,
    run_dir,
    train,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = data_spec("gaussian_classification", n_domains=4, n=48, dim=3, spurious=[0.9, 0.8, 0.1, 0.5])
TRAIN, TEST = ["d0", "d1"], ["d2", "d3"]


def tiny_config(**kw) -> TrainConfig:
    values = dict(
        algorithms=["erm", "fishr"],
        steps=6,
        anneal_step=3,
        restarts=1,
        hidden_dims=[5, 4],
        data=SPEC,
        train_domains=TRAIN,
        test_domains=TEST,
        dtype="float64",
        device="cpu",
        lr=1e-2,
        penalty_weight=100.0,
        state_every=2,
    )
    values.update(kw)
    return TrainConfig(**values)


def batches_of(config: TrainConfig) -> dict:
    dtype = DTYPES[config.dtype]
    domains = build_domains(config.data, dtype=dtype)
    return {k: concat(v) for k, v in domains.items()}


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


def test_config_defaults_are_the_protocol():
    c = TrainConfig()
    assert (c.steps, c.anneal_step, c.schedule, c.hidden_dims) == (501, 190, "script", [390, 390])
    assert c.lr == 4.898536566546834e-4 and c.l2 == 0.00110794568
    assert c.penalty_weight == 91257.18613115903
    assert c.data_spec()["name"] == "colored_mnist"
    assert c.data_spec()["label_noise"] == 0.25


def test_config_json_round_trip(tmp_path):
    c = tiny_config(algorithms="all", checkpoint_steps=[4, 0, 4], ema=0.9)
    write_json(tmp_path / "c.json", c.to_dict())
    back = TrainConfig.from_dict(read_json(tmp_path / "c.json"))
    assert back == c
    assert back.algorithms == [
        "erm", "irm", "vrex", "fishr", "fishr_notcentered", "fishr_offdiagonal", "fishr_all"
    ]  # fmt: skip
    assert back.checkpoint_steps == [0, 4]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"algorithms": ["erm", "x"]}, ValueError, "unknown algorithm 'x'; choose from erm, irm"),
        ({"algorithms": []}, ValueError, "no algorithm given"),
        ({"steps": 0}, ValueError, "steps must be a positive integer, got 0"),
        ({"steps": True}, ValueError, "steps must be a positive integer"),
        ({"restarts": -1}, ValueError, "restarts must be a positive integer"),
        ({"lr": 0.0}, ValueError, "lr must be > 0"),
        ({"l2": -1.0}, ValueError, "l2 must be a finite number >= 0"),
        ({"penalty_weight": math.inf}, ValueError, "penalty_weight must be a finite number"),
        ({"anneal_step": -1}, ValueError, "anneal_step must be an integer >= 0"),
        ({"schedule": "x"}, ValueError, "unknown schedule 'x'; choose from script, domainbed"),
        ({"distance": "max"}, ValueError, "unknown distance 'max'"),
        ({"ema": 1.0}, ValueError, "ema must be None or a number in (0, 1)"),
        ({"hidden_dims": [4, 0]}, ValueError, "hidden_dims must be a list of positive widths"),
        ({"checkpoint_steps": [7]}, ValueError, "checkpoint step 7 is outside 0..6"),
        ({"dtype": "float16"}, ValueError, "unknown dtype 'float16'"),
        ({"loss": "hinge"}, ValueError, "unknown loss 'hinge'"),
        ({"data": {"n": 3}}, ValueError, "data spec dict with a 'name' key"),
        ({"test_domains": ["d1"]}, ValueError, "'d1' is both a training and a test domain"),
        ({"label_noise": 1.5}, ValueError, "label_noise must be in [0, 1]"),
    ],
)
def test_config_validation(kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):  # fmt: skip
        tiny_config(**kwargs)


def test_config_unknown_key_and_colored_mnist_fields():
    with pytest.raises(ValueError, match="unknown config key 'stepz'"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="unknown Colored MNIST domain 'x'"):
        TrainConfig(color_flip={"x": 0.1})
    c = TrainConfig(color_flip={"+80%": 0.3}, subsample=100, data_seed=4, stream="per-restart")
    spec = c.data_spec()
    assert spec["color_flip"]["+80%"] == 0.3 and spec["color_flip"]["+90%"] == 0.1
    assert (spec["subsample"], spec["seed"], spec["stream"]) == (100, 4, "per-restart")
    assert c.data_spec(2)["seed"] == 6 and not c.uses_script_stream()


def test_config_script_stream_is_the_default_and_seeded_by_seed():
    c = TrainConfig(seed=3, hidden_dims=[16], loss="ce")
    assert c.stream == "script" and c.uses_script_stream()
    spec = c.data_spec(2)
    assert (spec["stream"], spec["seed"], spec["restart"]) == ("script", 3, 2)
    assert spec["init_layers"] == c.linear_layers() == [[392, 16], [16, 2]]
    assert TrainConfig().linear_layers() == [[392, 390], [390, 390], [390, 1]]
    # an explicit Colored MNIST spec of the script stream moves on by restarts, not seeds
    explicit = TrainConfig(data=dict(spec, init_layers=None), hidden_dims=[16], loss="ce")
    assert explicit.uses_script_stream()
    assert explicit.data_spec(1)["restart"] == 3 and explicit.data_spec(1)["seed"] == 3
    assert explicit.data_spec(1)["init_layers"] == [[392, 16], [16, 2]]
    assert not tiny_config().uses_script_stream()  # synthetic data: seeded per restart


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stream": "numpy"}, "unknown data stream 'numpy'; choose from script, per-restart"),
        ({"data_seed": 1}, "data_seed belongs to stream 'per-restart'"),
        ({"resample_data": False}, "the script stream draws new data every restart"),
        ({"data": {"name": "colored_mnist", "stream": "script", "init_layers": [[392, 1]]}},
         "the data spec's init_layers [[392, 1]] are not the network's linear layers"),
    ],
)  # fmt: skip
def test_config_script_stream_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TrainConfig(**kwargs)


def test_anneal_after_the_end_is_allowed_and_never_switches():
    c = tiny_config(anneal_step=50, schedule="domainbed")
    assert [c.penalty_weight_at("fishr", t) for t in range(c.steps)] == [0.0] * c.steps
    assert not any(c.resets_optimizer_at("fishr", t) for t in range(c.steps))


def test_penalty_weight_schedules():
    s = tiny_config(schedule="script")
    d = tiny_config(schedule="domainbed")
    assert [s.penalty_weight_at("irm", t) for t in (0, 2, 3, 5)] == [1.0, 1.0, 100.0, 100.0]
    assert [d.penalty_weight_at("irm", t) for t in (0, 2, 3, 5)] == [0.0, 0.0, 100.0, 100.0]
    assert s.penalty_weight_at("erm", 5) == d.penalty_weight_at("erm", 5) == 0.0
    assert [t for t in range(6) if d.resets_optimizer_at("fishr", t)] == [3]
    assert not any(s.resets_optimizer_at("fishr", t) for t in range(6))
    assert not any(d.resets_optimizer_at("erm", t) for t in range(6))


# --------------------------------------------------------------------------------------
# the loss of a step, against the script's formula computed by hand
# --------------------------------------------------------------------------------------


def _bce(logits, y):
    return nn.functional.binary_cross_entropy_with_logits(logits, y)


def script_objective(model, batches, algorithm, weight, l2, divide):
    """The Colored MNIST script's loss, brute force: per-sample head gradients by a loop."""
    nlls, irms, variances = [], [], []
    head = [model.classifier.weight, model.classifier.bias]
    for d in TRAIN:
        X, y = batches[d]
        features = model.featurizer(X)
        logits = model.classifier(features)
        nlls.append(_bce(logits, y))
        scale = torch.tensor(1.0, dtype=X.dtype, requires_grad=True)
        (g,) = torch.autograd.grad(_bce(logits * scale, y), [scale], create_graph=True)
        irms.append(g.pow(2))
        rows = []
        for i in range(X.shape[0]):
            li = _bce(model.classifier(features[i : i + 1]), y[i : i + 1])
            gi = torch.autograd.grad(li, head, create_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in gi]))
        G = torch.stack(rows)
        variances.append((G - G.mean(0, keepdim=True)).pow(2).mean(0))
    v_mean = (variances[0] + variances[1]) / 2
    penalties = {
        "irm": (irms[0] + irms[1]) / 2,
        "vrex": (nlls[0] - nlls[1]) ** 2,
        "fishr": (variances[0] - v_mean).pow(2).sum() + (variances[1] - v_mean).pow(2).sum(),
    }
    weight_norm = sum(w.norm().pow(2) for w in model.parameters())
    loss = (nlls[0] + nlls[1]) / 2 + l2 * weight_norm
    if algorithm != "erm":
        loss = loss + weight * penalties[algorithm]
        if divide and weight > 1.0:
            loss = loss / weight
    return loss, penalties


@pytest.mark.parametrize("schedule", ["script", "domainbed"])
@pytest.mark.parametrize("algorithm", ["erm", "irm", "vrex", "fishr"])
def test_step_matches_the_script_by_hand(algorithm, schedule):
    # anneal at step 1: step 0 has weight 1 (script) / 0 (domainbed), steps 1-2 the full
    # weight (script: loss divided by it; domainbed: Adam re-created at step 1)
    config = tiny_config(
        algorithms=[algorithm], steps=3, anneal_step=1, schedule=schedule, penalty_weight=50.0
    )
    batches = batches_of(config)
    trainer = Trainer(config, algorithm, 0, batches, TRAIN, TEST)
    ref = copy.deepcopy(trainer.model)
    opt = torch.optim.Adam(ref.parameters(), lr=config.lr)
    for t in range(config.steps):
        if algorithm == "erm":
            weight = 0.0
        elif t >= 1:
            weight = 50.0
        else:
            weight = 1.0 if schedule == "script" else 0.0
        if schedule == "domainbed" and t == 1 and algorithm != "erm":
            opt = torch.optim.Adam(ref.parameters(), lr=config.lr)
        loss, pens = script_objective(
            ref, batches, algorithm, weight, config.l2, divide=schedule == "script"
        )
        row = trainer.train_step()
        assert row["step"] == t and row["penalty_weight"] == weight
        assert row["loss"] == pytest.approx(loss.item(), rel=1e-12)
        for name in ("irm", "vrex", "fishr"):
            assert row[f"penalty/{name}"] == pytest.approx(pens[name].item(), rel=1e-10)
        opt.zero_grad()
        loss.backward()
        opt.step()
        for (name, p), q in zip(trainer.model.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-12, msg=f"{name} at step {t}")
    if schedule == "script" and algorithm != "erm":
        # the division is really there: the row's loss is the undivided loss / weight
        assert row["loss"] == pytest.approx(
            (row["risk"] + config.l2 * row["weight_norm"] + 50.0 * row["penalty"]) / 50.0
        )


def test_trainer_leaves_global_rng_and_seeds_init():
    config = tiny_config(restarts=2)
    batches = batches_of(config)
    state = torch.get_rng_state()
    t0 = Trainer(config, "erm", 0, batches, TRAIN, TEST)
    t1 = Trainer(config, "fishr", 1, batches, TRAIN, TEST)
    assert torch.equal(torch.get_rng_state(), state)
    assert (t0.seed, t1.seed) == (0, 1)
    torch.manual_seed(1)
    fresh = build_model(t1.model_spec).double()
    for p, q in zip(fresh.parameters(), t1.model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert t1.model_spec == {"arch": "mlp", "input_dim": 4, "hidden_dims": [5, 4], "output_dim": 1}


def test_trainer_errors():
    config = tiny_config()
    batches = batches_of(config)
    with pytest.raises(ValueError, match="no data for domain 'd9'; batches has d0, d1, d2, d3"):
        Trainer(config, "erm", 0, batches, ["d0", "d9"], TEST)
    with pytest.raises(ValueError, match="unknown algorithm 'sgd'; choose from erm"):
        Trainer(config, "sgd", 0, batches, TRAIN, TEST)
    trainer = Trainer(dataclass_replace(config, steps=1), "erm", 0, batches, TRAIN, TEST)
    trainer.train_step()
    with pytest.raises(ValueError, match=r"the run is finished \(1 steps done\)"):
        trainer.train_step()


def test_train_unknown_domain(tmp_path):
    with pytest.raises(ValueError, match="unknown domain 'x'; the data has d0, d1, d2, d3"):
        train(tiny_config(test_domains=["x"]), tmp_path, progress=False)


def test_non_finite_loss_names_algorithm_restart_step_and_domain():
    config = tiny_config(algorithms=["fishr"])
    batches = batches_of(config)
    X, y = batches["d1"]
    X = X.clone()
    X[3, 0] = math.nan
    batches["d1"] = (X, y)
    trainer = Trainer(config, "fishr", 2, batches, TRAIN, TEST)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(NonFiniteLossError) as err:
        trainer.train_step()
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("'fishr'", "restart 2", "step 0", "domain 'd1'", "--lr", "--penalty-weight"):
        assert part in msg
    assert err.value.domain == "d1" and isinstance(err.value, ValueError)
    assert all(torch.equal(p, q) for p, q in zip(before, trainer.model.parameters(), strict=True))


def test_non_finite_total_loss_is_reported():
    config = tiny_config(algorithms=["erm"], l2=1e308)
    trainer = Trainer(config, "erm", 0, batches_of(config), TRAIN, TEST)
    with pytest.raises(NonFiniteLossError, match="'erm', restart 0, step 0"):
        trainer.train_step()


# --------------------------------------------------------------------------------------
# run folder: history, checkpoints, results
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = tiny_config(restarts=2, checkpoint_steps=[0, 2], ema=0.9)
    results = train(config, out, progress=False)
    return config, out, results


def test_history_columns_and_rows(finished_run):
    config, out, _ = finished_run
    expected = ["step", "penalty_weight", "loss", "risk", "weight_norm", "penalty"]
    for d in TRAIN + TEST:
        expected += [f"loss/{d}", f"acc/{d}"]
    expected += ["penalty/irm", "penalty/vrex", "penalty/fishr"]
    for algo in ("erm", "fishr"):
        rows = read_history(run_dir(out, algo, 0) / "history.csv")
        assert list(rows[0]) == expected
        assert [r["step"] for r in rows] == list(range(config.steps + 1))
        weights = [r["penalty_weight"] for r in rows]
        want = [0.0] * 7 if algo == "erm" else [1.0, 1.0, 1.0, 100.0, 100.0, 100.0, 100.0]
        assert weights == want
        # the test domains are evaluated every eval_every steps, at the checkpoints, the
        # last update and the final weights; NaN in the other rows; everything else finite
        evaluated = [int(r["step"]) for r in rows if math.isfinite(r[f"acc/{TEST[0]}"])]
        assert evaluated == sorted(
            {s for s in range(config.steps) if s % config.eval_every == 0}
            | set(config.checkpoint_steps) | {config.steps - 1, config.steps}
        )  # fmt: skip
        tested = [f"{m}/{d}" for d in TEST for m in ("loss", "acc")]
        assert all(math.isfinite(v) for r in rows for k, v in r.items() if k not in tested)
        assert all(math.isnan(r[k]) for r in rows if r["step"] not in evaluated for k in tested)
    # the history in the state file is the CSV's (minus the final evaluation row)
    tensors, meta = load_tensors(run_dir(out, "fishr", 1) / "state.safetensors")
    assert meta["finished"] and meta["step"] == config.steps
    np.testing.assert_array_equal(
        tensors["history"].numpy(),
        np.array(
            [list(r.values()) for r in read_history(run_dir(out, "fishr", 1) / "history.csv")]
        )[:-1],
    )


def test_checkpoints_rebuild_model_and_domains(finished_run):
    config, out, _ = finished_run
    for algo in ("erm", "fishr"):
        rows = read_history(run_dir(out, algo, 1) / "history.csv")
        for step in (0, 2, config.steps):
            path = checkpoint_path(out, algo, 1, step)
            model, meta = load_checkpoint(path)
            assert (meta["algorithm"], meta["restart"], meta["seed"], meta["step"]) == (
                algo, 1, 1, step
            )  # fmt: skip
            assert meta["loss"] == "bce" and meta["train_domains"] == TRAIN
            assert meta["test_domains"] == TEST and meta["data"] == config.data_spec(1)
            assert meta["data"]["seed"] == SPEC["seed"] + 1  # restart 1 draws its own data
            assert TrainConfig.from_dict(meta["hyperparameters"]) == config
            assert next(model.parameters()).dtype == torch.float64
            domains = build_domains(meta["data"], dtype=DTYPES[meta["dtype"]])
            with torch.no_grad():
                for d in TRAIN + TEST:
                    X, y = concat(domains[d])
                    logits = model(X)
                    acc = float(accuracy(logits, y))
                    assert meta["accuracies"][d] == acc == rows[step][f"acc/{d}"]
                    loss = float(_bce(logits, y))
                    assert meta["losses"][d] == pytest.approx(loss, rel=1e-12)
                    assert rows[step][f"loss/{d}"] == pytest.approx(loss, rel=1e-12)
    # step 0 is the seeded initialisation
    model, _ = load_checkpoint(checkpoint_path(out, "fishr", 1, 0))
    torch.manual_seed(1)
    fresh = build_model(model.spec)
    for p, q in zip(fresh.parameters(), model.parameters(), strict=True):
        assert torch.equal(p.double(), q)


@pytest.mark.parametrize("resample", [True, False])
def test_restarts_draw_new_data_unless_asked_not_to(resample):
    config = tiny_config(resample_data=resample, restarts=2)
    seeds = [config.data_spec(k)["seed"] for k in range(3)]
    assert seeds == ([SPEC["seed"] + k for k in range(3)] if resample else [SPEC["seed"]] * 3)
    first, second = (build_domains(config.data_spec(k)) for k in (0, 1))
    assert torch.equal(concat(first["d0"])[0], concat(second["d0"])[0]) is not resample


def test_results_table_mean_std(finished_run):
    config, out, results = finished_run
    assert (out / "results.md").read_text() == results.markdown()
    loaded = RunResults.load(out / "results")
    assert loaded.table == results.table and loaded.seeds == {"erm": [0, 1], "fishr": [0, 1]}
    for algo in ("erm", "fishr"):
        finals = [read_history(run_dir(out, algo, k) / "history.csv")[-1] for k in range(2)]
        train_acc = [(r["acc/d0"] + r["acc/d1"]) / 2 for r in finals]
        test_acc = [r["acc/d2"] for r in finals]
        assert results.table[algo]["Train acc."] == pytest.approx(
            [100 * np.mean(train_acc), 100 * np.std(train_acc)]
        )
        assert results.table[algo]["d2 acc."] == pytest.approx(
            [100 * np.mean(test_acc), 100 * np.std(test_acc)]
        )
        assert results.final[algo]["acc/d3"] == [r["acc/d3"] for r in finals]


def test_results_table_by_hand():
    rows = [
        {"acc/+80%": 0.8, "acc/+90%": 0.9, "acc/-90%": 0.1, "acc/gray": 0.7},
        {"acc/+80%": 0.7, "acc/+90%": 0.8, "acc/-90%": 0.3, "acc/gray": 0.6},
    ]
    r = RunResults.from_final(
        TrainConfig(), ["+80%", "+90%"], ["-90%", "gray"], {"fishr": rows}, {"fishr": [0, 1]}
    )
    assert r.table["fishr"]["Train acc."] == pytest.approx([80.0, 5.0])
    assert r.table["fishr"]["Test acc."] == pytest.approx([20.0, 10.0])
    assert r.table["fishr"]["Grey test acc."] == pytest.approx([65.0, 5.0])
    md = r.markdown()
    assert "| Method | Train acc. | Test acc. | Grey test acc. | Restarts |" in md
    assert "| Fishr | 80.0 ± 5.0 | 20.0 ± 10.0 | 65.0 ± 5.0 | 2 |" in md


# --------------------------------------------------------------------------------------
# resume
# --------------------------------------------------------------------------------------


class Interrupt(Exception):
    pass


def _stop_at(step):
    def callback(trainer, row):
        if trainer.step == step:
            raise Interrupt

    return callback


def _final_tensors(out, algo, steps):
    tensors, _ = load_tensors(checkpoint_path(out, algo, 0, steps))
    return tensors


@pytest.mark.parametrize(
    "algorithm, schedule, ema, dtype, stop",
    [
        ("erm", "script", None, "float32", 5),
        ("erm", "script", None, "float64", 5),
        ("fishr", "script", 0.9, "float32", 7),
        ("fishr", "script", 0.9, "float64", 7),
        ("fishr", "domainbed", 0.9, "float64", 3),  # resumed before Adam's reset at step 4
        ("fishr", "domainbed", None, "float32", 7),  # resumed after it
    ],
)
def test_resume_is_bit_identical(tmp_path, algorithm, schedule, ema, dtype, stop):
    config = tiny_config(
        algorithms=[algorithm], steps=9, anneal_step=4, schedule=schedule, ema=ema,
        dtype=dtype, state_every=2, checkpoint_steps=[5],
    )  # fmt: skip
    train(config, tmp_path / "a", progress=False)
    with pytest.raises(Interrupt):
        train(config, tmp_path / "b", progress=False, callback=_stop_at(stop))
    state = run_dir(tmp_path / "b", algorithm, 0) / "state.safetensors"
    _, meta = load_tensors(state)
    assert meta["step"] == stop - stop % 2 and not meta["finished"]
    resumed = []
    train(config, tmp_path / "b", progress=False, callback=lambda t, r: resumed.append(t.step))
    assert resumed[0] == meta["step"] + 1  # continued, not started over
    a, b = (_final_tensors(tmp_path / x, algorithm, 9) for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("history.csv",):
        assert (run_dir(tmp_path / "a", algorithm, 0) / name).read_text() == (
            run_dir(tmp_path / "b", algorithm, 0) / name
        ).read_text()
    sa, _ = load_tensors(run_dir(tmp_path / "a", algorithm, 0) / "state.safetensors")
    sb, _ = load_tensors(state)
    assert sa.keys() == sb.keys()
    for k in sa:  # bit for bit; NaN where a history row does not evaluate the test domains
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, equal_nan=True)
    if ema is not None:
        assert "penalties/ema_variance_0" in sa
    ca, _ = load_tensors(checkpoint_path(tmp_path / "a", algorithm, 0, 5))
    cb, _ = load_tensors(checkpoint_path(tmp_path / "b", algorithm, 0, 5))
    assert all(torch.equal(ca[k], cb[k]) for k in ca)


def test_finished_runs_are_skipped_and_restarts_can_be_added(tmp_path):
    config = tiny_config(algorithms=["erm"], steps=3)
    first = train(config, tmp_path, progress=False)

    def fail(trainer, row):
        raise AssertionError("a finished run was trained again")

    again = train(config, tmp_path, progress=False, callback=fail)
    assert again.table == first.table
    more = dataclass_replace(config, restarts=2)
    calls = []
    results = train(more, tmp_path, progress=False, callback=lambda t, r: calls.append(t.restart))
    assert set(calls) == {1} and results.seeds == {"erm": [0, 1]}
    assert read_json(tmp_path / "config.json")["restarts"] == 2


def dataclass_replace(config, **kw):
    return TrainConfig.from_dict({**config.to_dict(), **kw})


def test_resume_into_a_folder_of_another_config_is_refused(tmp_path):
    config = tiny_config(algorithms=["erm"], steps=2)
    train(config, tmp_path, progress=False)
    other = dataclass_replace(config, lr=0.5)
    with pytest.raises(ValueError, match=r"config\.json .* \(lr: saved 0\.01, now 0\.5\); pass"):
        train(other, tmp_path, progress=False)
    # resume=False starts over with the new settings
    train(other, tmp_path, progress=False, resume=False)
    assert read_json(tmp_path / "config.json")["lr"] == 0.5


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def _write_config(tmp_path, **kw):
    path = tmp_path / "config.json"
    write_json(path, tiny_config(**kw).to_dict())
    return path


def test_cli_train_end_to_end(tmp_path, capsys):
    cfg = _write_config(tmp_path)
    out = tmp_path / "out"
    code = main(
        ["train", "--config", str(cfg), "--algorithm", "erm", "vrex", "--steps", "4",
         "--anneal-step", "2", "--restarts", "2", "--checkpoint-steps", "1", "--out", str(out),
         "--no-progress", "--schedule", "domainbed", "--seed", "3"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| ERM |" in printed and "| V-REx |" in printed
    stored = read_json(out / "config.json")
    assert stored["algorithms"] == ["erm", "vrex"] and stored["steps"] == 4
    assert stored["schedule"] == "domainbed" and stored["seed"] == 3 and stored["data"] == SPEC
    assert checkpoint_path(out, "vrex", 1, 1).is_file()
    assert checkpoint_path(out, "vrex", 1, 4).is_file()
    assert (out / "results.md").read_text() in printed
    _, meta = load_checkpoint(checkpoint_path(out, "vrex", 1, 4))
    assert meta["seed"] == 4


def test_cli_defaults_match_train_config(capsys):
    from landscape.cli import build_parser
    from landscape.cli.train import config_from_args

    args = build_parser().parse_args(["train"])
    assert config_from_args(args) == TrainConfig()
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    c = TrainConfig()
    for value in (c.steps, c.lr, c.l2, c.penalty_weight, c.anneal_step, c.restarts,
                  c.state_every, c.label_noise, " ".join(c.algorithms)):  # fmt: skip
        assert f"default {value}" in help_text or f"default: {value}" in help_text, value
    for option in ("--algorithm", "--ema", "--distance", "--subsample", "--data-dir", "--dtype",
                   "--device", "--out", "--no-progress", "--checkpoint-steps"):  # fmt: skip
        assert option in help_text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algorithm", "foo"], "unknown algorithm 'foo'; choose from erm, irm, vrex, fishr"),
        (["--steps", "0"], "steps must be a positive integer, got 0"),
        (["--ema", "2"], "ema must be None or a number in (0, 1)"),
        (["--data-seed", "3"], "data_seed belongs to stream 'per-restart'; the script stream"),
        (["--same-data"], "the script stream draws new data every restart"),
        (["--jobs", "0"], "argument --jobs: expected a positive integer, got 0"),
    ],
)
def test_cli_bad_input_is_one_line(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("landscape train: error:") and message in err


def test_train_fishr_script_runs(tmp_path):
    cfg = _write_config(tmp_path, algorithms=["fishr"], steps=2)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train_fishr.py"), "--config", str(cfg), "--out", str(out),
         "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "| Fishr |" in proc.stdout
    assert checkpoint_path(out, "fishr", 0, 2).is_file()


def _mnist_available() -> bool:
    from landscape.data.mnist import cache_path

    return cache_path().is_file()


@pytest.mark.mnist
@pytest.mark.skipif(not _mnist_available(), reason="offline MNIST cache missing (make data)")
def test_cli_colored_mnist_tiny(tmp_path, capsys):
    out = tmp_path / "cmnist"
    code = main(
        ["train", "--algorithm", "erm", "fishr", "--subsample", "300", "--steps", "3",
         "--anneal-step", "1", "--restarts", "1", "--hidden-dims", "16", "--device", "cpu",
         "--out", str(out), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| Method | Train acc. | Test acc. | Grey test acc. | Restarts |" in printed
    model, meta = load_checkpoint(checkpoint_path(out, "fishr", 0, 3))
    assert meta["data"]["name"] == "colored_mnist" and meta["data"]["subsample"] == 300
    assert meta["train_domains"] == ["+80%", "+90%"] and meta["test_domains"] == ["-90%", "gray"]
    domains = build_domains(meta["data"])
    X, y = concat(domains["-90%"])
    assert X.shape == (300, 2, 14, 14)
    with torch.no_grad():
        assert float(accuracy(model(X), y)) == meta["accuracies"]["-90%"]


# --------------------------------------------------------------------------------------
# one writer per run folder (issue 8, item 11), no spread for one restart (item 12)
# --------------------------------------------------------------------------------------


def test_second_writer_with_another_config_is_refused(tmp_path):
    """While a run trains into a folder, `landscape train` with another configuration into
    the same folder exits with one line naming the folder and the owner's pid; the folder
    keeps the first run's config and results."""
    out = tmp_path / "out"
    other = _write_config(tmp_path, algorithms=["erm"], steps=3)
    seen = []

    def second_writer(trainer, row):
        if seen:
            return
        proc = subprocess.run(
            [sys.executable, "-m", "landscape", "train", "--config", str(other), "--out",
             str(out), "--no-progress"],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
        seen.append(proc)

    config = tiny_config(algorithms=["erm"], steps=4)
    train(config, out, progress=False, callback=second_writer)
    (proc,) = seen
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("landscape train: error:")
    assert str(out) in line and f"in use by process {os.getpid()}" in line
    assert read_json(out / "config.json") == config.to_dict()
    assert not (out / "run.lock").exists()  # released
    train(config, out, progress=False)  # and free for the next writer


def test_stale_lock_of_a_dead_writer_is_taken_over(tmp_path):
    import json
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    results = train(tiny_config(algorithms=["erm"], steps=2), out, progress=False)
    assert results.table["erm"] and not (out / "run.lock").exists()


def test_lock_is_released_when_training_fails(tmp_path):
    with pytest.raises(ValueError, match="unknown domain 'x'"):
        train(tiny_config(test_domains=["x"]), tmp_path, progress=False)
    assert not (tmp_path / "run.lock").exists()


def test_single_restart_prints_no_spread():
    config = tiny_config()
    row = {f"acc/{d}": 0.5 for d in TRAIN} | {"acc/d2": 0.25, "acc/d3": 0.75}
    one = RunResults.from_final(config, TRAIN, ["d2", "d3"], {"erm": [row]}, {"erm": [0]})
    assert one.table["erm"]["Train acc."] == [50.0, 0.0]  # the table keeps its [mean, std]
    md = one.markdown()
    assert "±" not in md  # one restart: std 0 is not a measurement
    assert "| ERM | 50.0 | 25.0 | 75.0 | 1 |" in md
    two = RunResults.from_final(config, TRAIN, ["d2", "d3"], {"erm": [row, row]},
                                {"erm": [0, 1]})  # fmt: skip
    assert "| ERM | 50.0 ± 0.0 | 25.0 ± 0.0 | 75.0 ± 0.0 | 2 |" in two.markdown()
