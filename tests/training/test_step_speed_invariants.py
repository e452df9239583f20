"""What the training loop does around the step to be fast leaves the numbers alone.

``train`` keeps freed memory in the process (:func:`landscape.device.keep_freed_memory`),
writes the resumable state every ``state_every`` steps and shows one progress bar for the
whole job; its history must equal what a bare :class:`Trainer` loop computes in a fresh
interpreter with the default allocator, and the bar of a resumed job must start from the
steps already done.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from landscape.data import data_spec
from landscape.device import set_threads
from landscape.training import TrainConfig, read_history, run_dir, train
from landscape.training import loop as training_loop

SPEC = data_spec("gaussian_classification", n_domains=4, n=48, dim=3, spurious=[0.9, 0.8, 0.1, 0.5])


def tiny_config(**kw) -> TrainConfig:
    values = dict(
        algorithms=["erm", "fishr"], steps=6, anneal_step=3, restarts=1, hidden_dims=[5, 4],
        data=SPEC, train_domains=["d0", "d1"], test_domains=["d2", "d3"], dtype="float64",
        device="cpu", lr=1e-2, penalty_weight=100.0, state_every=2,
    )  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


# A bare loop over Trainer.train_step in a fresh interpreter: glibc's default allocator,
# no state, checkpoint or history written, no progress bar.
BARE_LOOP = """
import json, sys, torch
torch.set_num_threads(1)
from landscape.training import TrainConfig, Trainer
from landscape.training.loop import RestartData
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
data = RestartData.build(config, 0, None, torch.device("cpu"))
rows = {}
for algo in config.algorithms:
    trainer = Trainer(config, algo, 0, data.batches, data.train_domains, data.test_domains)
    while trainer.step < config.steps:
        trainer.train_step()
    rows[algo] = trainer.rows + [trainer.evaluate()]
print(json.dumps(rows))
"""


def test_train_logs_the_numbers_of_a_bare_step_loop(tmp_path):
    config = tiny_config(checkpoint_steps=[0, 3])
    with set_threads(1):
        train(config, tmp_path, progress=False)
    out = subprocess.run(
        [sys.executable, "-c", BARE_LOOP, json.dumps(config.to_dict())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    bare = json.loads(out.stdout)
    for algo in config.algorithms:
        logged = read_history(run_dir(tmp_path, algo, 0) / "history.csv")
        assert len(logged) == config.steps + 1
        # the same operations in the same order: bit for bit (JSON's repr of every float,
        # NaN included: the test domains of the rows that do not evaluate them)
        assert json.dumps(logged) == json.dumps(bare[algo])


class RecordingBar:
    """A stand-in for tqdm that records how it was built and how far it was moved."""

    made: list[RecordingBar] = []

    def __init__(self, total=None, initial=0, **kwargs):
        self.total, self.initial, self.updates = total, initial, 0
        RecordingBar.made.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1):
        self.updates += n

    def set_description(self, text):
        self.description = text

    def set_postfix(self, **kwargs):
        pass


class Interrupt(Exception):
    pass


def test_the_bar_covers_the_whole_job_and_a_resumed_job_starts_it_at_the_steps_done(
    tmp_path, monkeypatch
):
    config = tiny_config()

    def stop(trainer, row):
        if trainer.algorithm == "fishr" and trainer.step == 3:
            raise Interrupt  # ERM finished (6 steps), Fishr's state saved at step 2

    monkeypatch.setattr(training_loop, "tqdm", RecordingBar)
    RecordingBar.made.clear()
    with pytest.raises(Interrupt):
        train(config, tmp_path, callback=stop)
    first = RecordingBar.made[-1]
    assert (first.total, first.initial, first.updates) == (12, 0, 9)
    train(config, tmp_path)
    resumed = RecordingBar.made[-1]
    assert (resumed.total, resumed.initial) == (12, 6 + 2)  # all algorithms x restarts
    assert resumed.initial + resumed.updates == resumed.total
    assert resumed.description == "fishr (2/2), restart 1/1"
