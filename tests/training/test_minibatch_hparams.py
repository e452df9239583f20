"""DomainBed's hparams (landscape.training.minibatch.hparams) against a brute-force
reimplementation of the registry's facts and values printed by DomainBed's own registries
(facebookresearch/DomainBed b93c22a and alexrame/fishr, run once on these seeds)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from landscape.data.domainbed.catalog import DomainBedDataError
from landscape.training.minibatch.hparams import (
    algorithm_key,
    checkpoint_freq,
    dataset_steps,
    default_hparams,
    hparams_for,
    random_hparams,
)

DATASETS = [
    "RotatedMNIST",
    "ColoredMNIST",
    "PACS",
    "VLCS",
    "OfficeHome",
    "TerraIncognita",
    "DomainNet",
    "Debug28",
    "Debug224",
]
SMALL = {"Debug28", "RotatedMNIST", "ColoredMNIST"}


def _stream(seed, name):
    """DomainBed's per-hparam stream, spelled out: md5 of ``str((seed, name))`` mod 2**31."""
    digest = hashlib.md5(f"({seed!r}, {name!r})".encode()).hexdigest()
    return np.random.RandomState(int(digest, 16) % 2**31)


def _facts(algorithm, dataset, release):
    """``{name: (default, sampler)}`` written from the registry's text."""
    facts = {"data_augmentation": (True, lambda r: True), "resnet18": (False, lambda r: False)}
    if release == "domainbed":
        for name, value in [("resnet50_augmix", True), ("dinov2", False), ("vit", False),
                            ("vit_attn_tune", False), ("freeze_bn", False), ("lars", False),
                            ("linear_steps", 500)]:  # fmt: skip
            facts[name] = (value, lambda r, v=value: v)
    facts["resnet_dropout"] = (0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    if release == "domainbed":
        facts["vit_dropout"] = (0.0, lambda r: r.choice([0.0, 0.1, 0.5]))
    facts["class_balanced"] = (False, lambda r: False)
    facts["nonlinear_classifier"] = (False, lambda r: bool(r.choice([False, False])))
    if algorithm == "IRM":
        facts["irm_lambda"] = (100.0, lambda r: 10 ** r.uniform(-1, 5))
        facts["irm_penalty_anneal_iters"] = (500, lambda r: int(10 ** r.uniform(0, 4)))
    if algorithm == "VREx":
        facts["vrex_lambda"] = (10.0, lambda r: 10 ** r.uniform(-1, 5))
        facts["vrex_penalty_anneal_iters"] = (500, lambda r: int(10 ** r.uniform(0, 4)))
    if algorithm == "Fishr":
        facts["lambda"] = (1000.0, lambda r: 10 ** r.uniform(1.0, 4.0))
        facts["penalty_anneal_iters"] = (1500, lambda r: int(r.uniform(0.0, 5000.0)))
        facts["ema"] = (0.95, lambda r: r.uniform(0.90, 0.99))
    if dataset in SMALL:
        facts["lr"] = (1e-3, lambda r: 10 ** r.uniform(-4.5, -2.5))
        facts["weight_decay"] = (0.0, lambda r: 0.0)
        facts["batch_size"] = (64, lambda r: int(2 ** r.uniform(3, 9)))
    else:
        high = 5 if dataset == "DomainNet" else 5.5
        facts["lr"] = (5e-5, lambda r: 10 ** r.uniform(-5, -3.5))
        facts["weight_decay"] = (0.0, lambda r: 10 ** r.uniform(-6, -2))
        facts["batch_size"] = (32, lambda r, h=high: int(2 ** r.uniform(3, h)))
    return facts


@pytest.mark.parametrize("release", ["domainbed", "fishr"])
@pytest.mark.parametrize("algorithm", ["ERM", "IRM", "VREx", "Fishr"])
def test_registry_matches_brute_force(algorithm, release):
    for dataset in DATASETS:
        facts = _facts(algorithm, dataset, release)
        defaults = default_hparams(algorithm, dataset, release=release)
        assert list(defaults) == list(facts)
        assert defaults == {k: d for k, (d, _) in facts.items()}
        for hparams_seed, trial_seed in [(1, 0), (17, 2)]:
            seed = int(hashlib.md5(f"({hparams_seed}, {trial_seed})".encode()).hexdigest(), 16)
            seed %= 2**31
            got = hparams_for(algorithm.lower(), dataset, hparams_seed, trial_seed, release=release)
            assert got == random_hparams(algorithm, dataset, seed, release=release)
            want = {k: s(_stream(seed, k)) for k, (_, s) in facts.items()}
            assert list(got) == list(want) and got == want
            assert all(type(v) in (bool, int, float) for v in got.values()), got


# Printed by DomainBed's own registries: random_hparams(alg, ds, seed_hash(hs, ts)).
DOMAINBED_PRINTED = [
    ("Fishr", "RotatedMNIST", 3, 1, {"lambda": 636.7590532387758, "penalty_anneal_iters": 47,
     "ema": 0.9403353191998677, "lr": 0.0021690714686971317, "weight_decay": 0.0,
     "batch_size": 14, "resnet_dropout": 0.1, "vit_dropout": 0.1}),
    ("IRM", "PACS", 5, 2, {"irm_lambda": 31.70652528258642, "irm_penalty_anneal_iters": 3,
     "lr": 6.768725917122619e-05, "weight_decay": 2.692204119563736e-06, "batch_size": 15,
     "resnet_dropout": 0.5}),
    ("VREx", "DomainNet", 7, 0, {"vrex_lambda": 4051.583453807215,
     "vrex_penalty_anneal_iters": 13, "lr": 0.0001336817295222666,
     "weight_decay": 1.696474495087739e-05, "batch_size": 11, "resnet_dropout": 0.1}),
]  # fmt: skip


@pytest.mark.parametrize("algorithm, dataset, hs, ts, printed", DOMAINBED_PRINTED)
def test_values_printed_by_domainbed(algorithm, dataset, hs, ts, printed):
    for release in ("domainbed", "fishr"):
        got = hparams_for(algorithm, dataset, hs, ts, release=release)
        for key, value in printed.items():
            if key in got or release == "domainbed":
                assert got[key] == value, (release, key)


def test_defaults_overrides_steps_and_names():
    assert hparams_for("fishr", "PACS") == default_hparams("Fishr", "PACS")
    over = hparams_for("irm", "VLCS", overrides=json.dumps({"lr": 0.5, "mlp_width": 8}))
    assert over["lr"] == 0.5 and over["mlp_width"] == 8
    assert hparams_for("irm", "VLCS", overrides={"lr": np.float64(0.25)})["lr"] == 0.25
    assert "freeze_bn" not in default_hparams("erm", "PACS", release="fishr")
    assert default_hparams("erm", "PACS")["resnet50_augmix"] is True
    assert [dataset_steps(d) for d in DATASETS] == [5001] * len(DATASETS)
    assert [checkpoint_freq(d) for d in DATASETS] == [100, 100, 300, 300, 300, 300, 1000, 100, 100]
    assert [algorithm_key(n) for n in ("ERM", "IRM", "VREx", "Fishr", "vrex")] == [
        "erm", "irm", "vrex", "fishr", "vrex"]  # fmt: skip


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: default_hparams("CORAL", "PACS"), "unknown minibatch algorithm 'CORAL'"),
        (lambda: default_hparams("erm", "MNIST"), "unknown DomainBed data set 'MNIST'"),
        (lambda: default_hparams("erm", "PACS", release="x"), "unknown hparams release"),
        (lambda: hparams_for("erm", "PACS", -1), "hparams_seed must be an integer >= 0"),
        (lambda: hparams_for("erm", "PACS", overrides="[1]"), "must be a JSON object"),
        (lambda: checkpoint_freq("SVIRO"), "unknown DomainBed data set"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises((ValueError, DomainBedDataError), match=match):
        call()
