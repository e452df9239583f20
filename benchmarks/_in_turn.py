"""Trainers that step in turn (one step of each, ...), so that a change of machine load hits
them alike; and the Fishr / ERM step ratio measured that way (``bench_train_step.py
--fishr-over-erm``)."""

from __future__ import annotations

import statistics
import time

import torch


def build_trainers(config, variants: dict, data_dir) -> dict:
    """``{label: Trainer}`` on restart 0's data of ``config``; ``variants`` maps each label
    to ``(algorithm, extra Trainer keyword arguments)``. Freed memory is kept for reuse, as
    ``landscape train`` does (:func:`landscape.device.keep_freed_memory`)."""
    from landscape.device import keep_freed_memory
    from landscape.training import Trainer
    from landscape.training.loop import RestartData

    keep_freed_memory()

    data = RestartData.build(config, 0, data_dir, torch.device("cpu"))
    return {
        label: Trainer(config, algorithm, 0, data.batches, data.train_domains,
                       data.test_domains, initial_weights=data.initial_weights, **extra)
        for label, (algorithm, extra) in variants.items()
    }  # fmt: skip


def step_in_turn(trainers: dict, steps: int, warmup: int) -> tuple[dict, dict]:
    """``({label: [seconds per timed step]}, {label: last row})``: ``warmup + steps`` steps
    of every trainer in turn, the first ``warmup`` untimed."""
    times: dict = {label: [] for label in trainers}
    rows: dict = {}
    for t in range(warmup + steps):
        for label, trainer in trainers.items():
            start = time.perf_counter()
            rows[label] = trainer.train_step()
            if t >= warmup:
                times[label].append(time.perf_counter() - start)
    return times, rows


def print_fishr_over_erm(config, threads: int, steps: int, warmup: int, data_dir) -> None:
    """ERM and Fishr trainers of the protocol (test domains on logged steps only, as in
    ``landscape train``) stepping in turn: seconds per step and the ratio Fishr / ERM."""
    from landscape.training import TrainConfig

    config = TrainConfig.from_dict({**config.to_dict(), "steps": warmup + steps})
    trainers = build_trainers(config, {"erm": ("erm", {}), "fishr": ("fishr", {})}, data_dir)
    times, _ = step_in_turn(trainers, steps, warmup)
    erm, fishr = (statistics.mean(times[a]) for a in ("erm", "fishr"))
    med = {a: statistics.median(times[a]) for a in times}
    ratio, ratio_med = fishr / erm, med["fishr"] / med["erm"]
    print(f"\nFishr / ERM, {threads} thread(s), {steps} steps after {warmup} warm-up, in turn; "
          f"test domains every {config.eval_every} steps: ERM {erm:.3f} s/step (median "
          f"{med['erm']:.3f}), Fishr {fishr:.3f} ({med['fishr']:.3f}); Fishr / ERM "
          f"{ratio:.3f} (medians {ratio_med:.3f}; goal <= 1.03)", flush=True)  # fmt: skip
