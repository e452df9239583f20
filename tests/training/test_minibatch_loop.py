"""DomainBed's training protocol (landscape.training.minibatch.loop): the minibatches come from
DomainBed's in splits, the records carry DomainBed's keys and the accuracies recomputed from
the saved weights, a run killed with SIGKILL resumes bit-identically, the checkpoints load
(ours and DomainBed's model.pkl) and ``landscape score`` runs on them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from landscape.checkpoint import load_checkpoint, read_metadata
from landscape.cli import main
from landscape.data.domainbed import environment_indices
from landscape.data.domainbed.debug import debug_environments
from landscape.data.domainbed.images import ImageEnvironment, load_image
from landscape.inputs import load_for_analysis
from landscape.models.domainbed_checkpoint import domainbed_metadata
from landscape.training.minibatch import DomainBedConfig, DomainBedRunFolder, train_domainbed
from landscape.training.minibatch.augment import augment_image, crop_box
from landscape.training.minibatch.loaders import AugmentedImages, InfiniteLoader
from landscape.training.minibatch.loop import RunData, evaluate
from landscape.weights import read_torch_file

ROOT = Path(__file__).resolve().parents[2]
#: small Fishr runs: the penalty switches on (and Adam is re-created) inside the run
FISHR = {"batch_size": 4, "penalty_anneal_iters": 3, "lambda": 10.0}
#: what differs between two runs of the same settings: timings and the folder
UNEQUAL = ("step_time", "mem_gb")


def debug_config(**changes) -> DomainBedConfig:
    values = dict(dataset="Debug28", algorithm="Fishr", steps=8, checkpoint_freq=3,
                  hparams=FISHR, device="cpu", seed=1, trial_seed=2)  # fmt: skip
    values.update(changes)
    return DomainBedConfig(**values)


def comparable(record: dict) -> dict:
    """A record less what depends on the clock and the output folder."""
    out = {k: v for k, v in record.items() if k not in UNEQUAL}
    out["args"] = {k: v for k, v in record["args"].items() if k != "output_dir"}
    return out


def test_loaders_read_domainbeds_splits():
    """The training loaders hold each training environment's in split, the evaluation
    loaders every environment's in and out splits (DomainBed's indices), and a minibatch is
    ``randint(n, batch_size)`` from the domain's generator (with replacement)."""
    config = debug_config(test_envs=[1], holdout_fraction=0.25)
    data = RunData.build(config, config.resolved_hparams(), torch.device("cpu"))
    envs = debug_environments((3, 28, 28), seed=config.seed)
    assert data.train_envs == [0, 2] and list(data.loaders) == [0, 2]
    run = {"holdout_fraction": 0.25, "trial_seed": 2}
    for i, env in enumerate(envs):
        for split in ("in", "out"):
            index = environment_indices(len(env), i, split, test_env=i == 1, **run)
            X, y = next(iter(data.evals[f"env{i}_{split}_acc"]))
            torch.testing.assert_close(X, env.X[index], rtol=0, atol=0)
            assert torch.equal(y, env.y[index])
        if i in data.loaders:
            loader = data.loaders[i]
            index = environment_indices(len(env), i, "in", **run)
            assert len(loader.loader.dataset) == len(index) == 12
            generator = torch.Generator().manual_seed(loader.sampler.generator.initial_seed())
            X, y = next(loader)
            drawn = torch.randint(12, (4,), generator=generator)
            assert torch.equal(X, env.X[index][drawn]) and torch.equal(y, env.y[index][drawn])
    assert data.in_sizes == [12, 12, 12]  # 16 - int(16 * 0.25)


def test_records_keys_and_accuracies(tmp_path):
    """One record per evaluation step (0, 3, 6 and the last, 7) with DomainBed's keys; each
    accuracy equals the one recomputed from that step's checkpoint."""
    config = debug_config(save_domainbed_pkl=True)
    folder = DomainBedRunFolder(train_domainbed(config, tmp_path / "run", progress=False))
    names = {"args.json", "results.jsonl", "done", "model.safetensors", "model.json",
             "model.pkl", "state.safetensors", "checkpoints", "run.lock"}  # fmt: skip
    assert {p.name for p in folder.root.iterdir()} <= names
    assert folder.done_path.read_text() == "done" and not (folder.root / "run.lock").exists()
    records = folder.read_records()
    assert [r["step"] for r in records] == [0, 3, 6, 7] == folder.checkpoint_steps()
    accs = [f"env{i}_{s}_acc" for s in ("in", "out") for i in range(3)]
    logged = ["loss", "nll", "penalty", "step_time"]
    for r in records:
        assert sorted(r) == sorted(["step", "epoch", "mem_gb", "args", "hparams", *accs, *logged])
        assert r["epoch"] == r["step"] / (13 / 4)  # in splits of 16 - int(3.2) = 13 samples
        assert r["hparams"] == config.resolved_hparams() and r["mem_gb"] == 0.0
    args = records[-1]["args"]
    assert args["algorithm"] == "Fishr" and args["test_envs"] == [0]
    assert (args["hparams_seed"], args["trial_seed"], args["seed"]) == (0, 2, 1)
    assert (args["steps"], args["checkpoint_freq"], args["holdout_fraction"]) == (8, 3, 0.2)
    assert args["output_dir"] == str(folder.root) and args["data_dir"] is None
    line = folder.results_path.read_text().splitlines()[0]
    assert line == json.dumps(json.loads(line), sort_keys=True)  # DomainBed's sorted keys
    data = RunData.build(config, config.resolved_hparams(), torch.device("cpu"))
    for r in records[1:]:
        net, meta = load_checkpoint(folder.checkpoint_path(r["step"]))
        algo = torch.nn.Module()
        algo.predict = net  # what evaluate() needs: .predict, .eval(), .train()
        assert evaluate(algo, data.evals) == {k: r[k] for k in accs}
        assert meta["step"] == r["step"] and meta["updates"] == r["step"] + 1
    assert records[0]["nll"] == records[0]["loss"]  # weight 0 before the anneal step


def test_domainbed_pkl_and_checkpoint_load(tmp_path):
    """model.safetensors and DomainBed's model.pkl hold the same network; the pkl has
    DomainBed's keys and loads through landscape.models.domainbed_checkpoint."""
    config = debug_config(steps=4)
    folder = DomainBedRunFolder(train_domainbed(config, tmp_path / "run", progress=False))
    records = folder.read_records()
    assert not folder.domainbed_model_path.exists()
    config = debug_config(steps=4, save_domainbed_pkl=True)  # asked for once it finished
    train_domainbed(config, folder.root, progress=False)
    assert folder.read_records() == records
    net, meta = load_checkpoint(folder.model_path)
    assert meta["train_domains"] == ["1", "2"] and meta["test_domains"] == ["0"]
    assert meta["data"]["name"] == "domainbed" and meta["loss"] == "ce"
    saved = read_torch_file(folder.domainbed_model_path)  # weights_only
    expected = ["args", "model_input_shape", "model_num_classes", "model_num_domains",
                "model_hparams", "model_dict"]  # fmt: skip
    assert sorted(saved) == sorted(expected)
    assert saved["model_input_shape"] == (3, 28, 28) and saved["model_num_domains"] == 2
    keys = set(saved["model_dict"])
    for prefix in ("featurizer.conv1.", "classifier.", "network.0.conv1.", "network.1."):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert "update_count" in keys and "ema_variance" not in keys
    assert int(saved["model_dict"]["update_count"]) == 4
    pkl_net, pkl_meta = load_checkpoint(folder.domainbed_model_path)
    assert domainbed_metadata(saved, "x")["algorithm"] == pkl_meta["algorithm"] == "Fishr"
    for (name, a), (_, b) in zip(net.state_dict().items(), pkl_net.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(a, b), name
    assert pkl_meta["test_envs"] == [0] and pkl_meta["trial_seed"] == 2


def test_score_runs_on_the_checkpoint(tmp_path, capsys):
    """``landscape score`` on model.safetensors (head, dense): the domains are the run's
    training environments' in splits, as load_for_analysis rebuilds them."""
    config = debug_config(steps=2, test_envs=[2])
    folder = DomainBedRunFolder(train_domainbed(config, tmp_path / "run", progress=False))
    _, meta, domains, _ = load_for_analysis(folder.model_path)
    assert list(domains) == ["0", "1"] and meta["loss"] == "ce"
    envs = debug_environments((3, 28, 28), seed=1)
    index = environment_indices(16, 1, "in", holdout_fraction=0.2, trial_seed=2)
    X, _ = next(iter(domains["1"]))
    assert torch.equal(X, envs[1].X[index])
    out = tmp_path / "score"
    argv = [str(folder.model_path), "--params", "classifier", "--method", "dense",
            "--no-check", "--quiet", "--k", "4", "--out", str(out)]  # fmt: skip
    assert main(["score", *argv]) == 0
    summary = json.loads((out / "score_summary.json").read_text())
    assert summary["domains"] == ["0", "1"]
    net, _ = load_checkpoint(folder.model_path)
    for i in (0, 1):  # the risks are the cross-entropies on the in splits, computed here
        index = environment_indices(16, i, "in", holdout_fraction=0.2, trial_seed=2)
        with torch.no_grad():
            risk = torch.nn.functional.cross_entropy(net(envs[i].X[index]), envs[i].y[index])
        assert summary["risks"][str(i)] == pytest.approx(float(risk), rel=1e-5)


def _spawn(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "landscape", "train", *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    """A run killed (SIGKILL) after a state was written, then run again with the same
    command, writes the records and final weights of an uninterrupted run."""
    argv = ["--dataset", "Debug28", "--algorithm", "Fishr", "--steps", "24",
            "--checkpoint-freq", "4", "--seed", "3", "--test-envs", "1", "--hparams",
            json.dumps({**FISHR, "penalty_anneal_iters": 6}), "--device", "cpu",
            "--no-progress", "--threads", "1"]  # fmt: skip
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    process = _spawn([*argv, "--out", str(killed)])
    state = DomainBedRunFolder(killed).state_path
    deadline = time.time() + 900  # generous: a loaded machine starts python slowly
    reached = False
    while time.time() < deadline and process.poll() is None and not reached:
        reached = state.is_file() and read_metadata(state)["step"] >= 9  # past the anneal
        time.sleep(0.02)
    assert process.poll() is None, process.stderr.read().decode()[-2000:]
    assert reached, "the run wrote no state past step 9 in 900 s"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "done").exists()
    stopped = read_metadata(state)["step"]
    assert 9 <= stopped < 24
    assert main(["train", *argv, "--out", str(killed)]) == 0
    assert main(["train", *argv, "--out", str(whole)]) == 0
    a, b = DomainBedRunFolder(whole), DomainBedRunFolder(killed)
    records_a, records_b = a.read_records(), b.read_records()
    assert [r["step"] for r in records_b] == list(range(0, 24, 4)) + [23]
    assert [comparable(r) for r in records_a] == [comparable(r) for r in records_b]
    weights_a, _ = load_checkpoint(a.model_path)
    weights_b, _ = load_checkpoint(b.model_path)
    for (name, x), (_, y) in zip(weights_a.state_dict().items(), weights_b.state_dict().items(),
                                 strict=True):  # fmt: skip
        assert torch.equal(x, y), name
    assert read_metadata(a.state_path)["step"] == 24


def test_other_settings_in_the_folder_are_refused(tmp_path):
    """Rerunning with another result-changing setting names it; resume-free ones pass."""
    config = debug_config(steps=1)
    train_domainbed(config, tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"seed=1, not 5; pass the same options"):
        train_domainbed(debug_config(steps=1, seed=5), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"hparams="):
        train_domainbed(debug_config(steps=1, hparams={"batch_size": 5}), tmp_path,
                        progress=False)  # fmt: skip
    train_domainbed(debug_config(steps=1, num_workers=0), tmp_path, progress=False)
    before = DomainBedRunFolder(tmp_path).read_records()
    train_domainbed(debug_config(steps=1, seed=5), tmp_path, progress=False, resume=False)
    assert DomainBedRunFolder(tmp_path).read_records() != before


def test_loader_resumes_past_the_workers_prefetch():
    """With worker processes (which run ahead of training), a loader restored from the state
    after ``k`` consumed batches draws what the uninterrupted loader draws next."""
    env = debug_environments((3, 28, 28), seed=0)[0]
    make = dict(batch_size=3, seed=11, num_workers=2)
    whole = InfiniteLoader(env, **make)
    batches = [next(whole) for _ in range(8)]
    first = InfiniteLoader(env, **make)
    for _ in range(5):
        next(first)
    state = first.state()
    first.close()
    resumed = InfiniteLoader(env, **make)
    resumed.restore(state, 5)
    for k in range(5, 8):
        X, y = next(resumed)
        assert torch.equal(X, batches[k][0]) and torch.equal(y, batches[k][1])
    whole.close()
    resumed.close()


@pytest.fixture
def images(tmp_path) -> ImageEnvironment:
    """Six small RGB images of two classes, of several sizes."""
    rng = np.random.default_rng(0)
    samples = []
    for k, (w, h) in enumerate([(40, 30), (300, 12), (12, 300), (224, 224), (50, 50), (31, 47)]):
        path = tmp_path / f"{k}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        samples.append((str(path), k % 2))
    return ImageEnvironment(samples, ["a", "b"])


def test_augmentation_is_seeded_and_bounded(images):
    """An augmented image depends only on its seed; crops stay inside the image (the central
    fallback for extreme aspect ratios); loaders of augmented images resume exactly."""
    path = images.samples[0][0]
    a, b = augment_image(path, 7), augment_image(path, 7)
    assert a.shape == (3, 224, 224) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, augment_image(path, 8))
    assert not torch.equal(a, load_image(path))
    for w, h in [(40, 30), (300, 12), (12, 300), (7, 7)]:
        for seed in range(20):
            top, left, ch, cw = crop_box(w, h, torch.Generator().manual_seed(seed))
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w and ch * cw > 0
    assert crop_box(300, 12, torch.Generator().manual_seed(0)) == (0, 142, 12, 16)
    make = dict(batch_size=2, seed=4, augment=True)
    whole = InfiniteLoader(AugmentedImages(images), **make)
    batches = [next(whole) for _ in range(3)]
    resumed = InfiniteLoader(AugmentedImages(images), **make)
    next(resumed)
    state = resumed.state()
    again = InfiniteLoader(AugmentedImages(images), **make)
    again.restore(state, 1)
    for k in (1, 2):
        X, y = next(again)
        assert torch.equal(X, batches[k][0]) and torch.equal(y, batches[k][1])
