"""Time ``landscape train``'s step beside the Colored MNIST script's step structure.

Both run on the same data with the same thread count, their steps interleaved (one of ours,
one of the script's, ...) so that a change of machine load hits both alike:

* **ours**: :func:`landscape.training.train` itself (the real loop: history rows, test-domain
  evaluation, resumable state, checkpoints, into a temporary run folder, with the memory
  setting it makes, :func:`landscape.device.keep_freed_memory`), one algorithm at a time;
* **script**: a reimplementation of the structure of the Fishr authors'
  ``coloredmnist/train_coloredmnist.py`` (``benchmarks/_script_step.py``): every environment
  forwarded with gradients, every penalty every step, BackPACK for the head's per-sample
  gradients, a printed line every 100 steps. It runs in a worker process of its own, so it
  has the allocator the official script has; ours waits while it steps, and it waits while
  ours steps (ours' per-step callback hands it each step).

For each thread count and algorithm it prints the mean seconds per step, the median, the
breakdown (forward, penalty, backward, optimizer, evaluation, logging, I/O, other: exclusive
times, see ``benchmarks/_phases.py``), the minor page faults per step (fresh memory the
kernel had to map: costly on some virtual machines) and the ratio script / ours, plus what
the machine is (CPU model, ``nproc``, affinity, physical cores, cgroup CPU quota,
``MALLOC_MMAP_MAX_``). Goal: ours >= 2x faster than the script's structure for Fishr.

    python benchmarks/bench_train_step.py --threads 1 2       # protocol size (25,000 / 10,000)
    MALLOC_MMAP_MAX_=0 python benchmarks/bench_train_step.py  # glibc never maps fresh blocks
    python benchmarks/bench_train_step.py --quick             # 2,000 samples per domain
    python benchmarks/bench_train_step.py --split             # + the colour-split step beside
                                                              #   the plain one (_split_step.py)
    python benchmarks/bench_train_step.py --split-only        # only that comparison
    python benchmarks/bench_train_step.py --fishr-over-erm --steps 40   # Fishr / ERM, in turn
"""

from __future__ import annotations

# first, as the CLI does: the thread pools' settings (landscape.thread_pools)
import landscape  # noqa: F401  # isort: skip

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _in_turn import print_fishr_over_erm  # noqa: E402
from _phases import PHASES, Phases, activate, instrument, summarise  # noqa: E402
from _script_step import serve  # noqa: E402
from _split_step import print_split  # noqa: E402

import landscape.device  # noqa: E402
from landscape.device import set_threads  # noqa: E402


def machine() -> str:
    """CPU model, logical / physical cores, affinity, CPU quota, allocator setting, versions."""
    model = "unknown CPU"
    try:
        text = Path("/proc/cpuinfo").read_text()
        lines = text.splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if "model name" in line]
        model = names[0] if names else model
    except OSError:
        pass
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    # the library before issue 15 (a "before" measurement) lacks the last two
    device = landscape.device
    physical = getattr(device, "physical_cores", lambda cpus: None)(affinity)
    quota = getattr(device, "cgroup_cpu_limit", lambda: None)()
    return (
        f"{model}; nproc {len(affinity) or os.cpu_count()} (os.cpu_count {os.cpu_count()}, "
        f"affinity {affinity}, {physical or '?'} physical cores among them, cgroup CPU quota "
        f"{quota or 'none'}; default threads {device.default_threads()}); "
        f"MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_', 'unset')}; "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def _instrument_ours() -> list:
    """Wrap the functions of ``landscape train``'s step so that their time goes to a phase."""
    from landscape.models import mlp
    from landscape.training import loop, objective, penalties

    def model_phase() -> str:
        return "forward" if torch.is_grad_enabled() else "evaluation"

    undo = [instrument(mlp.MLP, "forward", model_phase)]
    try:  # the colour-split forward of the training domains (MLP.forward when it falls back)
        from landscape.training.colour_split import ColourSplitForward
    except ImportError:  # the library before issue 15 (a "before" measurement)
        ColourSplitForward = None  # noqa: N806
    if ColourSplitForward is not None:
        undo.append(instrument(ColourSplitForward, "__call__", model_phase))
    for name in ("_deltas", "linear_moments", "irm_penalty", "fishr_penalty", "vrex_penalty"):
        undo.append(instrument(penalties, name, "penalty"))
    undo.append(instrument(torch.Tensor, "backward", "backward"))
    undo.append(instrument(torch.optim.Adam, "step", "optimizer"))
    undo.append(instrument(objective.Objective, "_row", "logging"))
    undo.append(instrument(penalties.Penalties, "_logged", "logging"))
    for name in ("save_tensors", "write_history", "save_checkpoint"):
        undo.append(instrument(loop, name, "io"))
    return undo


class ScriptWorker:
    """The script's step in a worker process (:func:`_script_step.serve`), one per call."""

    def __init__(self, config, algorithm: str, threads: int, data_dir):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        args = (child, config.data_spec(0), config.dtype, algorithm, config.seed, threads,
                data_dir)  # fmt: skip
        self.process = context.Process(target=serve, args=args, daemon=True)
        self.process.start()
        if self.conn.recv() != "ready":
            raise RuntimeError("the script's worker did not start")

    def step(self) -> dict[str, float]:
        self.conn.send("step")
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send("stop")
        self.process.join(timeout=30)


def run_pair(config, algorithm: str, threads: int, data_dir, warmup: int) -> dict:
    """Interleaved steps of ours and of the script for one algorithm; phase means of each."""
    from landscape.training import train

    ours, script_rows = Phases(), []
    worker = ScriptWorker(config, algorithm, threads, data_dir)

    def callback(trainer, row):
        ours.end_step()  # ours is not timed while the script steps
        activate(None)
        script_rows.append(worker.step())
        activate(ours)
        ours.begin_step()

    try:
        with tempfile.TemporaryDirectory() as out:
            activate(ours)
            ours.begin_step()
            try:
                train(config, out, progress=False, data_dir=data_dir, callback=callback)
            finally:
                activate(None)
    finally:
        worker.close()
    return {
        "ours": summarise(ours.steps[warmup:]),
        "script": summarise(script_rows[warmup:]),
        "final_io": ours._current.get("io", 0.0),  # the final checkpoint + state + history
    }


def table_rows(threads: int, algorithm: str, result: dict) -> list[str]:
    rows = []
    for who in ("ours", "script"):
        s = result[who]
        parts = " | ".join(f"{s[p]:.3f}" for p in (*PHASES, "other"))
        rows.append(
            f"| {threads} | {algorithm} | {who} | {s['step']:.3f} | {s['median']:.3f} | {parts} "
            f"| {s['faults'] / 1000:.0f}k |"
        )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="thread counts")
    parser.add_argument("--algorithms", nargs="+", default=["erm", "fishr"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per algorithm (8)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--quick", action="store_true", help="2,000 samples per domain")
    parser.add_argument("--data-dir", default=None, help="MNIST cache folder")
    parser.add_argument("--split", action="store_true", help="also time the colour split")
    parser.add_argument("--split-only", action="store_true", help="only the colour split")
    parser.add_argument("--fishr-over-erm", action="store_true",
                        help="only Fishr / ERM: both trainers stepping in turn")  # fmt: skip
    args = parser.parse_args(argv)
    from landscape.training import TrainConfig

    config = TrainConfig(
        algorithms=["erm"],
        restarts=1,
        steps=args.warmup + args.steps,
        subsample=2000 if args.quick else None,
        checkpoint_steps=[0],
        device="cpu",
    )
    print(f"machine: {machine()}")
    print(f"load average: {os.getloadavg()}")
    if args.fishr_over_erm:
        for threads in args.threads:
            with set_threads(threads):
                print_fishr_over_erm(config, threads, args.steps, args.warmup, args.data_dir)
        return
    if args.split or args.split_only:
        for threads in args.threads:
            with set_threads(threads):
                print_split(config, args.algorithms, threads, args.steps, args.warmup,
                            args.data_dir)  # fmt: skip
        if args.split_only:
            return
    print(
        f"Colored MNIST {config.dtype} on CPU, {'2,000' if args.quick else '25,000 / 10,000'} "
        f"samples per training / test domain; mean (and median) of {args.steps} steps after "
        f"{args.warmup} warm-up, interleaved with the script's (its own process); state "
        f"written every {config.state_every} steps\n"
    )
    head = " | ".join(("threads", "algorithm", "step of", "s/step", "median", *PHASES, "other"))
    print(f"| {head} | faults/step |")
    print("|" + "---|" * (len(PHASES) + 7))
    ratios, finals = [], []
    for threads in args.threads:
        with set_threads(threads):
            undo = _instrument_ours()
            try:
                for algo in args.algorithms:
                    cfg = TrainConfig.from_dict({**config.to_dict(), "algorithms": [algo]})
                    result = run_pair(cfg, algo, threads, args.data_dir, args.warmup)
                    print("\n".join(table_rows(threads, algo, result)), flush=True)
                    ratio = result["script"]["step"] / result["ours"]["step"]
                    ratios.append(f"{algo} {threads} thread(s): {ratio:.2f}")
                    finals.append(result["final_io"])
            finally:
                for u in undo:
                    u()
    print("\nscript / ours (mean s/step): " + "; ".join(ratios))
    print(
        f"one final save (checkpoint + state + history): {max(finals):.3f} s; the state is "
        f"written every {config.state_every} steps"
    )


if __name__ == "__main__":
    main()
