"""``landscape train --dataset NAME`` (DomainBed's protocol): the options reach the run, options
of the other protocol are one-line errors, and a RotatedMNIST subset trains end to end."""

from __future__ import annotations

import json

import pytest
import torch

from landscape.cli import build_parser, main
from landscape.cli._domainbed_train import DATASETS, config_from_args
from landscape.data.domainbed import DATASETS as CATALOG
from landscape.data.domainbed import environment_indices
from landscape.data.mnist import MNISTError, load_mnist
from landscape.training.minibatch import DomainBedRunFolder
from landscape.training.minibatch.loop import RunData


def error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1]


def test_datasets_match_the_catalog():
    assert DATASETS == list(CATALOG)


def test_options_reach_the_config():
    argv = ["train", "--dataset", "PACS", "--algorithm", "VREx", "--test-envs", "2", "0",
            "--hparams-seed", "3", "--trial-seed", "1", "--seed", "7", "--steps", "11",
            "--checkpoint-freq", "5", "--holdout-fraction", "0.3", "--hparams",
            '{"lr": 0.0001}', "--data-dir", "/data", "--num-workers", "2",
            "--save-domainbed-pkl", "--no-step-checkpoints", "--subsample", "9",
            "--device", "cpu"]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv))
    assert (config.dataset, config.algorithm, config.test_envs) == ("PACS", "VREx", [0, 2])
    assert (config.hparams_seed, config.trial_seed, config.seed) == (3, 1, 7)
    assert (config.steps, config.checkpoint_freq, config.holdout_fraction) == (11, 5, 0.3)
    assert config.hparams == {"lr": 0.0001} and config.data_dir == "/data"
    assert (config.num_workers, config.subsample, config.device) == (2, 9, "cpu")
    assert config.save_domainbed_pkl and not config.step_checkpoints
    default = config_from_args(build_parser().parse_args(["train", "--dataset", "PACS"]))
    assert (default.algorithm, default.test_envs, default.steps) == ("ERM", [0], 5001)
    assert (default.checkpoint_freq, default.holdout_fraction, default.device) == (300, 0.2, "auto")
    assert default.resolved_hparams()["batch_size"] == 32


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--dataset", "RotatedMNIST", "--lr", "0.1"], "--lr belongs to the Colored MNIST"),
        (["--dataset", "RotatedMNIST", "--restarts", "2"], "--restarts belongs to the Colored"),
        (["--dataset", "RotatedMNIST", "--same-data"], "--same-data belongs to the Colored"),
        (["--test-envs", "1"], "--test-envs belongs to DomainBed's protocol; add --dataset"),
        (["--hparams", "{}"], "--hparams belongs to DomainBed's protocol"),
        (["--save-domainbed-pkl"], "--save-domainbed-pkl belongs to DomainBed's protocol"),
        (["--dataset", "PACS", "--algorithm", "ERM", "Fishr"], "one algorithm per run"),
        (["--dataset", "PACS", "--algorithm", "fishr_all"], "unknown minibatch algorithm"),
        (["--dataset", "PACS", "--test-envs", "4"], "not an index of PACS's 4 environments"),
        (["--dataset", "PACS", "--test-envs", "0", "1", "2", "3"], "none to train on"),
        (["--dataset", "PACS", "--hparams", "[1]"], "--hparams must be a JSON object"),
        (["--dataset", "PACS", "--hparams", "{lr"], "--hparams must be a JSON object"),
        (["--dataset", "PACS", "--holdout-fraction", "1.5"], "holdout_fraction must be in"),
    ],
)
def test_wrong_protocol_options_are_one_line(capsys, tmp_path, argv, expected):
    line = error_line(capsys, ["train", *argv, "--out", str(tmp_path / "out")])
    assert expected in line and line.startswith("landscape train: error:")
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_help_lists_the_domainbed_options(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--dataset", "--test-envs", "--hparams-seed", "--trial-seed",
                 "--checkpoint-freq", "--holdout-fraction", "--hparams", "--num-workers",
                 "--save-domainbed-pkl", "--no-step-checkpoints"):  # fmt: skip
        assert flag in text


@pytest.mark.mnist
def test_rotated_mnist_subset_trains(tmp_path, capsys):
    """A RotatedMNIST run on the first 12 samples of each split: its loaders read DomainBed's
    in / out splits, its records name the six environments, and it prints one summary."""
    try:
        load_mnist(split="test", download=False)
    except MNISTError as err:
        pytest.skip(f"MNIST cache not available: {err}")
    out = tmp_path / "rmnist"
    argv = ["train", "--dataset", "RotatedMNIST", "--algorithm", "ERM", "--test-envs", "4",
            "--steps", "3", "--checkpoint-freq", "2", "--subsample", "12", "--hparams",
            json.dumps({"batch_size": 3}), "--device", "cpu", "--no-progress", "--out",
            str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("ERM on RotatedMNIST: step 2, env4 (test) in ")
    folder = DomainBedRunFolder(out)
    records = folder.read_records()
    assert [r["step"] for r in records] == [0, 2]
    for r in records:
        assert all(f"env{i}_{s}_acc" in r for i in range(6) for s in ("in", "out"))
        assert r["args"]["subsample"] == 12 and r["args"]["dataset"] == "RotatedMNIST"
        assert r["epoch"] == r["step"] / (12 / 3)
    config = config_from_args(build_parser().parse_args(argv))
    data = RunData.build(config, config.resolved_hparams(), torch.device("cpu"))
    from landscape.data.domainbed.mnist import mnist_environments

    envs = mnist_environments("RotatedMNIST", seed=0)
    for i in (0, 3, 4):
        for split in ("in", "out"):
            index = environment_indices(len(envs[i]), i, split, test_env=i == 4)[:12]
            expected = envs[i].subset(index).__getitems__(list(range(12)))
            X, y = next(iter(data.evals[f"env{i}_{split}_acc"]))
            assert torch.equal(X, expected[0]) and torch.equal(y, expected[1])
    assert 4 not in data.loaders and sorted(data.loaders) == [0, 1, 2, 3, 5]
