"""The colour-split training step beside the plain one (``bench_train_step.py --split``).

Two :class:`landscape.training.Trainer` of the same algorithm, restart and data, one with the
colour-split first layer (the default, :mod:`landscape.training.colour_split`) and one
without (``split_colours=False``), step in turn (one step of each, ...), so that a change of
machine load hits both alike. The test domains are evaluated at every step in both (the
split does not touch them): the ratio is the training step's own.
"""

from __future__ import annotations

import statistics
import time

import torch


def time_split(config, algorithm: str, steps: int, warmup: int, data_dir) -> dict:
    """Seconds per step (mean, median) of the split and the plain trainer, interleaved, and
    the largest relative difference of their last rows' training numbers."""
    from landscape.training import TrainConfig, Trainer
    from landscape.training.loop import RestartData

    config = TrainConfig.from_dict({**config.to_dict(), "eval_every": 1,
                                    "steps": warmup + steps})  # fmt: skip
    data = RestartData.build(config, 0, data_dir, torch.device("cpu"))
    trainers = {
        split: Trainer(
            config,
            algorithm,
            0,
            data.batches,
            data.train_domains,
            data.test_domains,
            initial_weights=data.initial_weights,
            split_colours=split,
        )  # fmt: skip
        for split in (True, False)
    }
    times: dict[bool, list[float]] = {True: [], False: []}
    rows = {}
    for t in range(warmup + steps):
        for split, trainer in trainers.items():
            start = time.perf_counter()
            rows[split] = trainer.train_step()
            if t >= warmup:
                times[split].append(time.perf_counter() - start)
    keys = [k for k in rows[True] if k.startswith(("loss", "risk", "penalty/fishr"))]
    gap = max(abs(rows[True][k] - rows[False][k]) / max(abs(rows[False][k]), 1e-12) for k in keys)
    return {
        "split": (statistics.mean(times[True]), statistics.median(times[True])),
        "plain": (statistics.mean(times[False]), statistics.median(times[False])),
        "applies": sorted(trainers[True].colour_splits),
        "gap": gap,
    }


def print_split(config, algorithms, threads: int, steps: int, warmup: int, data_dir) -> None:
    """One table row per algorithm: plain and split seconds per step and their ratio."""
    print(f"\ncolour-split first layer, {threads} thread(s): {steps} steps after {warmup} "
          "warm-up, interleaved; test domains evaluated every step in both")  # fmt: skip
    print("| algorithm | plain s/step (median) | split s/step (median) | plain / split | "
          "split domains | last row rel. gap |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for algo in algorithms:
        r = time_split(config, algo, steps, warmup, data_dir)
        (pm, pmed), (sm, smed) = r["plain"], r["split"]
        print(f"| {algo} | {pm:.3f} ({pmed:.3f}) | {sm:.3f} ({smed:.3f}) | {pm / sm:.2f} | "
              f"{', '.join(r['applies']) or 'none'} | {r['gap']:.1e} |", flush=True)  # fmt: skip
