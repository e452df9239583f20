"""Runs trained at once in worker processes (``train(..., jobs=N)``,
landscape.training.workers) against the same runs one after the other: the same histories,
checkpoints and results (float64, up to another thread count's rounding), a resumable folder,
the whole job's progress, and a worker's error raised in the parent with its message."""

from __future__ import annotations

import multiprocessing
import queue
import warnings

import pytest
import torch

from landscape.checkpoint import load_tensors
from landscape.training import NonFiniteLossError, read_history, train
from landscape.training.loop import checkpoint_path, run_dir
from tests.training.test_train import tiny_config


def _histories(out, config):
    return {
        (a, k): read_history(run_dir(out, a, k) / "history.csv")
        for a in config.algorithms
        for k in range(config.restarts)
    }


def test_runs_at_once_equal_runs_one_after_the_other_and_the_bar_counts_every_step(
    tmp_path, monkeypatch
):
    import landscape.training.loop as loop

    bars, real_tqdm = [], loop.tqdm

    def recording_tqdm(*args, **kwargs):
        bars.append(real_tqdm(*args, **kwargs))
        return bars[-1]

    monkeypatch.setattr(loop, "tqdm", recording_tqdm)
    config = tiny_config(restarts=2, checkpoint_steps=[0, 3])
    at_once = train(config, tmp_path / "jobs", jobs=3)
    assert bars[0].n == bars[0].total == 2 * 2 * config.steps
    in_turn = train(config, tmp_path / "one", progress=False)
    assert at_once.markdown() == in_turn.markdown()
    fast, slow = _histories(tmp_path / "jobs", config), _histories(tmp_path / "one", config)
    for pair, rows in slow.items():
        assert [list(r) for r in fast[pair]] == [list(r) for r in rows]
        for row, ref in zip(fast[pair], rows, strict=True):
            assert row == pytest.approx(ref, rel=1e-9, abs=1e-12, nan_ok=True)
        for step in (0, 3, config.steps):
            a, _ = load_tensors(checkpoint_path(tmp_path / "jobs", *pair, step))
            b, _ = load_tensors(checkpoint_path(tmp_path / "one", *pair, step))
            for name in b:
                torch.testing.assert_close(a[name], b[name], rtol=1e-9, atol=1e-12)


def test_finished_runs_stay_in_the_parent_and_new_restarts_go_to_the_workers(tmp_path, monkeypatch):
    import landscape.training.workers as workers

    sent, real = [], workers.train_in_workers

    def recording(config, folder, pairs, *args, **kwargs):
        sent.append(pairs)
        return real(config, folder, pairs, *args, **kwargs)

    monkeypatch.setattr(workers, "train_in_workers", recording)
    first = train(tiny_config(), tmp_path, progress=False)
    assert train(tiny_config(), tmp_path, progress=False, jobs=2).markdown() == first.markdown()
    assert sent == []  # every pair finished: no worker started
    more = train(tiny_config(restarts=2), tmp_path, progress=False, jobs=2)
    assert sent == [[("erm", 1), ("fishr", 1)]]
    assert len(_histories(tmp_path, tiny_config(restarts=2))) == 4
    assert all(len(seeds) == 2 for seeds in more.seeds.values())


def test_a_workers_error_is_raised_in_the_parent_with_its_message(tmp_path):
    config = tiny_config(algorithms=["erm", "fishr"], l2=1e308)
    with pytest.raises(NonFiniteLossError, match="restart 0, step 0") as err:
        train(config, tmp_path, progress=False, jobs=2)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("jobs", [0, -1, 1.5, True])
def test_bad_jobs_are_refused(tmp_path, jobs):
    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        train(tiny_config(), tmp_path, progress=False, jobs=jobs)


class _Exited:
    """A worker process that has exited (``exitcode``)."""

    def __init__(self, exitcode: int):
        self.exitcode = exitcode

    def is_alive(self) -> bool:
        return False


class _Bar:
    def __init__(self):
        self.n = 0

    def update(self, n):
        self.n += n


def test_a_worker_that_exits_without_a_result_is_reported():
    from landscape.training.workers import _receive

    messages = queue.Queue()
    messages.put(("update", 2))
    bar = _Bar()
    with pytest.raises(RuntimeError, match="fishr restart 1 exited with code -9 without a result"):
        _receive(messages, bar, {}, {("fishr", 1): _Exited(-9)})
    assert bar.n == 2


def test_a_result_sent_just_before_the_exit_is_taken():
    from landscape.training.workers import _receive

    messages, outcomes = queue.Queue(), {}
    messages.put(("done", ("erm", 0), "result"))
    assert _receive(messages, _Bar(), outcomes, {("erm", 0): _Exited(0)}) == [("erm", 0)]
    assert outcomes == {("erm", 0): "result"}


def _warn_in_worker(messages, filters):
    from landscape.training.workers import forward_warnings

    forward_warnings(messages, filters)
    warnings.warn("a worker's warning", RuntimeWarning, stacklevel=1)
    warnings.warn("a warning the parent ignores", FutureWarning, stacklevel=1)
    messages.put(("done", ("erm", 0), "result"))


def test_a_workers_warnings_follow_the_parents_filters_and_reach_its_display():
    """A spawned worker applies the parent's filters (FutureWarning ignored) and the parent
    shows what passes with its own ``showwarning`` (the CLI's one-line note)."""
    from landscape.training.workers import _receive, warning_filters

    shown = []

    def display(message, category, filename, lineno, file=None, line=None):
        shown.append((str(message), category, filename.endswith("test_workers.py")))

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = display
        process = context.Process(target=_warn_in_worker, args=(messages, warning_filters()))
        process.start()
        process.join(timeout=120)
        assert _receive(messages, _Bar(), {}, {("erm", 0): process}) == [("erm", 0)]
    assert shown == [("a worker's warning", RuntimeWarning, True)]
