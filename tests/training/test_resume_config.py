"""Resuming refuses states and checkpoints another configuration wrote (issue 16 item 1)."""

from __future__ import annotations

import pytest

from landscape.checkpoint import load_tensors, save_tensors
from landscape.training import checkpoint_path, run_dir, train
from tests.training import test_train as base


def test_states_of_another_config_are_refused_not_reported(tmp_path):
    """Issue 16 item 1: a restart left by a run with another lr is not resumed as ours."""
    config = base.tiny_config(algorithms=["erm"], steps=2, restarts=2)
    train(config, tmp_path, progress=False)
    other = base.dataclass_replace(config, lr=0.5, restarts=1)
    train(other, tmp_path, progress=False, resume=False)  # restart 1 keeps lr 0.01's state
    more = base.dataclass_replace(other, restarts=2)
    with pytest.raises(ValueError, match=r"erm/restart_1/state\.safetensors was written with "
                       r"another configuration \(lr: saved 0\.01, now 0\.5\)"):  # fmt: skip
        train(more, tmp_path, progress=False)


def test_state_whose_config_differs_from_config_json_is_refused(tmp_path):
    """A folder written by someone else: config.json agrees, the state does not."""
    config = base.tiny_config(algorithms=["erm"], steps=3, state_every=1)
    with pytest.raises(base.Interrupt):
        train(config, tmp_path, progress=False, callback=base._stop_at(2))
    state = run_dir(tmp_path, "erm", 0) / "state.safetensors"
    tensors, meta = load_tensors(state)
    save_tensors(state, tensors, {**meta, "config": {**meta["config"], "steps": 7, "lr": 0.2}})
    with pytest.raises(ValueError, match=r"lr: saved 0\.2, now 0\.01; steps: saved 7, now 3"):
        train(config, tmp_path, progress=False)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    config = base.tiny_config(algorithms=["erm"], steps=3, state_every=1, checkpoint_steps=[1])
    with pytest.raises(base.Interrupt):
        train(config, tmp_path, progress=False, callback=base._stop_at(2))
    path = checkpoint_path(tmp_path, "erm", 0, 1)
    tensors, meta = load_tensors(path)
    meta["hyperparameters"] = {**meta["hyperparameters"], "seed": 9}
    save_tensors(path, tensors, meta)
    with pytest.raises(ValueError, match=r"step_00001\.safetensors was written with another "
                       r"configuration \(seed: saved 9, now 0\)"):  # fmt: skip
        train(config, tmp_path, progress=False)


def test_a_config_from_before_streams_resumes_as_per_restart():
    """A config.json written before `stream` existed was re-seeded per restart (issue 11)."""
    from landscape.training import TrainConfig

    old = TrainConfig(stream="per-restart").to_dict()
    del old["stream"]
    assert TrainConfig(stream="per-restart").differing_keys(old) == []
    assert TrainConfig().describe_differences(old) == ("stream: saved 'per-restart', now 'script'")


def test_a_run_resumes_with_another_eval_every_and_from_before_it(tmp_path):
    """eval_every changes which history rows hold the test domains, no finished number: a
    folder written with another value (or before the key existed) resumes, and the final
    results are the uninterrupted run's."""
    import json
    import math

    from landscape.training import read_history

    config = base.tiny_config(algorithms=["erm"], steps=6, state_every=2, eval_every=1)
    train(config, tmp_path / "a", progress=False)
    with pytest.raises(base.Interrupt):
        train(config, tmp_path / "b", progress=False, callback=base._stop_at(3))
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    del saved["eval_every"]  # as a folder from before eval_every
    (tmp_path / "b" / "config.json").write_text(json.dumps(saved))
    train(base.tiny_config(algorithms=["erm"], steps=6, state_every=2, eval_every=4),
          tmp_path / "b", progress=False)  # fmt: skip
    whole, rows = (read_history(run_dir(tmp_path / x, "erm", 0) / "history.csv") for x in "ab")
    assert rows[-2:] == whole[-2:]  # the last update's and the final weights' rows
    evaluated = [int(r["step"]) for r in rows if math.isfinite(r[f"acc/{base.TEST[0]}"])]
    assert evaluated == [0, 1, 4, 5, 6]  # every step before the resume at 2, then every 4
