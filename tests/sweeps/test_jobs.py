"""The jobs of a sweep: enumeration, DomainBed's folder hash and seed, states."""

from __future__ import annotations

import hashlib
import json

import pytest

from landscape.sweeps.jobs import (
    JobState,
    canonical_algorithm,
    count_states,
    job_hash,
    make_jobs,
    single_test_envs,
    train_args,
)


def test_count_is_the_product_of_the_axes(tmp_path):
    # ColoredMNIST has 3 environments, VLCS 4: (3 + 4) test envs × 2 algorithms × 3 trials
    # × 2 hparams seeds
    jobs = make_jobs(["ColoredMNIST", "VLCS"], ["ERM", "Fishr"], tmp_path, hparams_draws=2)
    assert len(jobs) == 7 * 2 * 3 * 2
    assert len({job.folder for job in jobs}) == len(jobs)  # unique folders
    assert all(job.folder.parent == tmp_path for job in jobs)
    assert {tuple(j.args["test_envs"]) for j in jobs if j.args["dataset"] == "VLCS"} == {
        (0,),
        (1,),
        (2,),
        (3,),
    }
    assert {j.args["hparams_seed"] for j in jobs} == {0, 1}
    assert {j.args["trial_seed"] for j in jobs} == {0, 1, 2}


def test_order_is_domainbeds(tmp_path):
    """trial seed, then data set, algorithm, test environment, hparams seed (innermost)."""
    jobs = make_jobs(["Debug28"], ["ERM", "IRM"], tmp_path, trials=2, hparams_draws=2)
    keys = [
        (j.args["trial_seed"], j.args["algorithm"], j.args["test_envs"][0], j.args["hparams_seed"])
        for j in jobs
    ]
    expected = [
        (t, a, e, h) for t in (0, 1) for a in ("ERM", "IRM") for e in (0, 1, 2) for h in (0, 1)
    ]
    assert keys == expected


def test_defaults_are_one_hparams_seed_and_three_trials(tmp_path):
    jobs = make_jobs(["Debug28"], ["ERM"], tmp_path)
    assert [j.args["hparams_seed"] for j in jobs] == [0] * 9
    assert sorted({j.args["trial_seed"] for j in jobs}) == [0, 1, 2]


def test_folder_is_the_md5_of_the_sorted_arguments_written_by_hand(tmp_path):
    args = train_args("Debug28", "ERM", [0], 0, 0, data_dir="/data")
    seed = int(hashlib.md5(b"('Debug28', 'ERM', [0], 0, 0)").hexdigest(), 16) % 2**31
    text = (
        '{"algorithm": "ERM", "data_dir": "/data", "dataset": "Debug28", "holdout_fraction": 0.2, '
        f'"hparams_seed": 0, "seed": {seed}, "task": "domain_generalization", '
        '"test_envs": [0], "trial_seed": 0}'
    )
    assert args["seed"] == seed
    assert job_hash(args) == hashlib.md5(text.encode()).hexdigest()
    # the insertion order does not matter, only the content
    assert job_hash(dict(reversed(list(args.items())))) == job_hash(args)


def test_hash_is_stable_across_calls_and_changes_with_any_argument(tmp_path):
    a = [j.folder.name for j in make_jobs(["Debug28"], ["ERM"], tmp_path, steps=5)]
    b = [j.folder.name for j in make_jobs(["Debug28"], ["erm"], tmp_path / "x", steps=5)]
    assert a == b  # same arguments, same names (the case of the algorithm is normalised)
    c = [j.folder.name for j in make_jobs(["Debug28"], ["ERM"], tmp_path, steps=6)]
    d = [j.folder.name for j in make_jobs(["Debug28"], ["ERM"], tmp_path, holdout_fraction=0.3)]
    assert not set(a) & set(c) and not set(a) & set(d)


def test_optional_arguments_join_only_when_given(tmp_path):
    (job,) = make_jobs(["Debug28"], ["ERM"], tmp_path, test_envs=[1], trials=1)
    assert "steps" not in job.args and "checkpoint_freq" not in job.args
    assert "hparams" not in job.args and job.args["data_dir"] is None
    (job,) = make_jobs(
        ["Debug28"], ["ERM"], tmp_path, test_envs=[1], trials=1, steps=7, checkpoint_freq=2,
        hparams='{"lr": 0.1}', data_dir="/d",
    )  # fmt: skip
    assert job.args["steps"] == 7 and job.args["checkpoint_freq"] == 2
    assert job.args["hparams"] == '{"lr": 0.1}' and job.args["data_dir"] == "/d"


def test_seed_is_domainbeds_seed_hash(tmp_path):
    for job in make_jobs(["RotatedMNIST"], ["Fishr"], tmp_path, trials=2, hparams_draws=2):
        a = job.args
        text = str(
            (a["dataset"], a["algorithm"], a["test_envs"], a["hparams_seed"], a["trial_seed"])
        )
        assert a["seed"] == int(hashlib.md5(text.encode()).hexdigest(), 16) % 2**31


def test_test_envs_subset_and_duplicates(tmp_path):
    assert single_test_envs("PACS", None) == [[0], [1], [2], [3]]
    assert single_test_envs("PACS", [2, 0, 2]) == [[2], [0]]
    jobs = make_jobs(["PACS"], ["ERM"], tmp_path, test_envs=[3], trials=1)
    assert [j.args["test_envs"] for j in jobs] == [[3]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"datasets": ["Nope"]}, r"unknown DomainBed data set 'Nope'"),
        (
            {"algorithms": ["CORAL"]},
            r"unknown algorithm 'CORAL'; choose from ERM, IRM, VREx, Fishr",
        ),
        ({"test_envs": [3]}, r"ColoredMNIST has no environment 3 .*pass indices 0 to 2"),
        ({"trials": 0}, r"--trials and --hparams-draws must be >= 1"),
        ({"hparams": "{lr: 1}"}, r"--hparams is not JSON"),
        ({"hparams": "[1]"}, r"--hparams must be a JSON object"),
        ({"datasets": []}, r"at least one --dataset"),
        ({"holdout_fraction": 1.0}, r"--holdout-fraction must be in \(0, 1\), got 1.0"),
        ({"holdout_fraction": float("nan")}, r"--holdout-fraction must be in \(0, 1\)"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, kwargs, message):
    args = {"datasets": ["ColoredMNIST"], "algorithms": ["ERM"], **kwargs}
    with pytest.raises(ValueError, match=message) as info:
        make_jobs(args.pop("datasets"), args.pop("algorithms"), tmp_path, **args)
    assert "\n" not in str(info.value)


def test_algorithm_names_are_domainbeds():
    assert [canonical_algorithm(a) for a in ("erm", "IRM", "vrex", "FISHR")] == [
        "ERM",
        "IRM",
        "VREx",
        "Fishr",
    ]


def test_states_follow_the_folder(tmp_path):
    jobs = make_jobs(["Debug28"], ["ERM"], tmp_path, trials=1)
    assert [j.state for j in jobs] == [JobState.NOT_LAUNCHED] * 3
    jobs[0].folder.mkdir()
    jobs[1].folder.mkdir()
    (jobs[1].folder / "done").write_text("")
    assert [j.state for j in jobs] == [JobState.INCOMPLETE, JobState.DONE, JobState.NOT_LAUNCHED]
    assert count_states(jobs) == {
        JobState.NOT_LAUNCHED: 1,
        JobState.INCOMPLETE: 1,
        JobState.DONE: 1,
    }
    assert json.loads(json.dumps(jobs[0].args)) == jobs[0].args  # plain JSON
