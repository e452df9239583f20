"""DomainBed's model selection on hand-made records, where the chosen step is known."""

from __future__ import annotations

import json
import math

import pytest

from landscape.sweeps.selection import (
    ORACLE,
    TRAINING,
    group_records,
    load_records,
    select,
    training_domain_acc,
)
from tests.sweeps.helpers import record, run_records, write_run

# Debug28 has 3 environments; test environment 0. accs = {env: (in, out)}.
# hparams seed 0: training-domain val = mean(env1_out, env2_out) per step
#   step 0: 0.65, step 1: 0.78 (best, test in 0.62), step 2 (last): 0.72, oracle val 0.66
HP0 = [
    (2, {0: (0.40, 0.66), 1: (0.90, 0.71), 2: (0.90, 0.73)}),  # file order is not step order
    (0, {0: (0.50, 0.55), 1: (0.90, 0.60), 2: (0.90, 0.70)}),
    (1, {0: (0.62, 0.58), 1: (0.90, 0.80), 2: (0.90, 0.76)}),
]
# hparams seed 1: step 0: 0.77 (best, test in 0.30), step 1: 0.75, step 2 (last): 0.61,
#   oracle val 0.72 (test in 0.70)
HP1 = [
    (0, {0: (0.30, 0.35), 1: (0.90, 0.74), 2: (0.90, 0.80)}),
    (1, {0: (0.45, 0.41), 1: (0.90, 0.75), 2: (0.90, 0.75)}),
    (2, {0: (0.70, 0.72), 1: (0.90, 0.60), 2: (0.90, 0.62)}),
]


def two_runs(trial=0, algorithm="ERM"):
    return run_records("Debug28", algorithm, 0, 0, trial, HP0) + run_records(
        "Debug28", algorithm, 0, 1, trial, HP1
    )


def test_training_domain_val_is_the_mean_of_the_training_envs_out_splits():
    rec = record("Debug28", "ERM", [1], 0, 0, 5, {0: (0.1, 0.2), 1: (0.3, 0.4), 2: (0.5, 0.6)})
    acc = training_domain_acc(rec)
    assert acc.val_acc == pytest.approx((0.2 + 0.6) / 2)  # envs 0 and 2 (1 is the test env)
    assert acc.test_acc == 0.3  # env1_in_acc
    assert acc.step == 5


def test_training_domain_picks_the_best_step_then_the_best_hparams():
    acc = TRAINING.sweep_acc(two_runs())
    # hp0's best step (1, val 0.78) beats hp1's (step 0, val 0.77)
    assert (acc.hparams_seed, acc.step) == (0, 1)
    assert acc.val_acc == pytest.approx(0.78) and acc.test_acc == 0.62
    ranked = TRAINING.hparams_accs(two_runs())
    assert [(a.hparams_seed, a.step) for a in ranked] == [(0, 1), (1, 0)]
    assert ranked[1].test_acc == 0.30


def test_oracle_takes_the_last_step_and_the_best_test_env_out_split():
    acc = ORACLE.sweep_acc(two_runs())
    # last steps: hp0 val 0.66, hp1 val 0.72 -> hp1, its test-env in split 0.70
    assert (acc.hparams_seed, acc.step) == (1, 2)
    assert acc.val_acc == 0.72 and acc.test_acc == 0.70
    ranked = ORACLE.hparams_accs(two_runs())
    assert [(a.hparams_seed, a.step, a.test_acc) for a in ranked] == [(1, 2, 0.70), (0, 2, 0.40)]


def test_hparams_choice_flips_when_the_validation_flips():
    """Raise hp1's best training-domain step above hp0's: training-domain now picks hp1."""
    hp1 = [(0, {0: (0.30, 0.35), 1: (0.90, 0.79), 2: (0.90, 0.80)}), *HP1[1:]]
    records = run_records("Debug28", "ERM", 0, 0, 0, HP0) + run_records(
        "Debug28", "ERM", 0, 1, 0, hp1
    )
    acc = TRAINING.sweep_acc(records)
    assert (acc.hparams_seed, acc.step, acc.test_acc) == (1, 0, 0.30)


def test_groups_are_trial_dataset_algorithm_test_env_and_two_test_env_runs_are_ignored():
    records = two_runs(trial=0) + two_runs(trial=1, algorithm="Fishr")
    two_envs = [record("Debug28", "ERM", [0, 1], 0, 0, 9, {0: (1.0, 1.0), 1: (1.0, 1.0)})]
    groups = group_records(records + two_envs)
    assert set(groups) == {
        (0, "Debug28", "ERM", 0),
        (1, "Debug28", "Fishr", 0),
        (0, "Debug28", "ERM", 1),
    }
    selected = select(records + two_envs, ORACLE)
    # the 2-test-env record joined groups (ERM, 0) and (ERM, 1) but is never selected
    assert set(selected) == {(0, "Debug28", "ERM", 0), (1, "Debug28", "Fishr", 0)}
    assert selected[(0, "Debug28", "ERM", 0)].test_acc == 0.70
    assert select(records + two_envs, TRAINING)[(0, "Debug28", "ERM", 0)].test_acc == 0.62


def test_several_test_envs_and_trials_are_selected_independently():
    # test env 2 of trial 1: only one hparams seed, best training-domain step is step 3
    rows = [
        (3, {0: (0.9, 0.91), 1: (0.9, 0.89), 2: (0.33, 0.2)}),  # val 0.90
        (4, {0: (0.9, 0.80), 1: (0.9, 0.80), 2: (0.44, 0.5)}),  # val 0.80, last
    ]
    records = two_runs(trial=0) + run_records("Debug28", "ERM", 2, 0, 1, rows)
    training, oracle = select(records, TRAINING), select(records, ORACLE)
    assert training[(1, "Debug28", "ERM", 2)].test_acc == 0.33
    assert oracle[(1, "Debug28", "ERM", 2)].test_acc == 0.44
    assert training[(0, "Debug28", "ERM", 0)].test_acc == 0.62
    assert oracle[(0, "Debug28", "ERM", 0)].test_acc == 0.70


def test_nan_validation_never_wins():
    rows = [
        (0, {0: (0.99, math.nan), 1: (0.9, math.nan), 2: (0.9, math.nan)}),
        (1, {0: (0.11, 0.5), 1: (0.9, 0.5), 2: (0.9, 0.5)}),
    ]
    records = run_records("Debug28", "ERM", 0, 0, 0, rows)
    assert TRAINING.sweep_acc(records).test_acc == 0.11


def test_load_records_reads_finished_runs_recursively_and_lists_the_rest(tmp_path):
    a = write_run(tmp_path, run_records("Debug28", "ERM", 0, 0, 0, HP0))
    b = write_run(tmp_path / "nested" / "deeper", run_records("Debug28", "ERM", 0, 1, 0, HP1))
    c = write_run(tmp_path, run_records("Debug28", "IRM", 0, 0, 0, HP1), done=False)
    bad = write_run(tmp_path, run_records("Debug28", "VREx", 0, 0, 0, HP1))
    (bad / "results.jsonl").write_text(json.dumps({"step": 0}) + "\n")
    (tmp_path / "empty").mkdir()
    loaded = load_records(tmp_path)
    assert sorted(loaded.runs) == sorted([a, b])
    assert loaded.unfinished == [c]
    assert len(loaded.unreadable) == 1 and "line 1 has no 'args'" in loaded.unreadable[0]
    assert len(loaded.records) == 6
    assert ORACLE.sweep_acc(loaded.records).test_acc == 0.70


def test_a_record_without_its_test_env_accuracy_is_unreadable(tmp_path):
    rec = record("Debug28", "ERM", [2], 0, 0, 0, {0: (0.5, 0.5), 1: (0.5, 0.5)})
    write_run(tmp_path, [rec])
    loaded = load_records(tmp_path)
    assert not loaded.records and "no 'env2_in_acc'" in loaded.unreadable[0]


def test_load_records_of_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_records(tmp_path / "nope")
