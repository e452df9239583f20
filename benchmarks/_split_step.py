"""The colour-split training step beside the plain one (``bench_train_step.py --split``).

Two :class:`landscape.training.Trainer` of the same algorithm, restart and data, one with the
colour-split first layer (the default, :mod:`landscape.training.colour_split`) and one
without (``split_colours=False``), step in turn (one step of each, ...), so that a change of
machine load hits both alike. The test domains are evaluated at every step in both (the
split does not touch them): the ratio is the training step's own.
"""

from __future__ import annotations

import statistics

from _in_turn import build_trainers, step_in_turn


def time_split(config, algorithm: str, steps: int, warmup: int, data_dir) -> dict:
    """Seconds per step (mean, median) of the split and the plain trainer, interleaved, and
    the largest relative difference of their last rows' training numbers."""
    from landscape.training import TrainConfig

    config = TrainConfig.from_dict({**config.to_dict(), "eval_every": 1,
                                    "steps": warmup + steps})  # fmt: skip
    variants = {split: (algorithm, {"split_colours": split}) for split in (True, False)}
    trainers = build_trainers(config, variants, data_dir)
    times, rows = step_in_turn(trainers, steps, warmup)
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
