"""Time DomainBed's minibatch Fishr step beside its ERM step and print the ratio Fishr / ERM.

RotatedMNIST-shaped random data (1x28x28, 10 classes), 5 training domains of 64 samples
each (DomainBed's defaults), the MNIST_CNN of :class:`~landscape.models.domainbed.DomainBedNetwork`,
on the CPU. One :meth:`update` of each algorithm is timed in turn (ERM, Fishr before its anneal
step, Fishr with the penalty on, ERM, ...), so a change of machine load hits all alike; the
median of each is printed with the ratios. Goal: Fishr / ERM <= 1.05.

    python benchmarks/bench_minibatch_step.py --threads 1
    python benchmarks/bench_minibatch_step.py --threads 1 --clock process   # CPU time

Fishr before its anneal step (weight 0) computes the penalty without a graph (logged only);
with the penalty on, the head's per-sample moments are differentiated into the network.
Fishr's extra work is all in the head (the featurizer's forward and backward are ERM's), so
it is also timed alone, on fixed features, with many repeats: on a busy machine the step
ratio is dominated by noise, the head's extra milliseconds are not.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from landscape.device import set_threads
from landscape.training.minibatch import build_algorithm, default_hparams

SETTINGS = {"erm": ("erm", None), "fishr (warm-up)": ("fishr", 10**9), "fishr": ("fishr", 0)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per setting")
    parser.add_argument("--domains", type=int, default=5, help="training domains")
    parser.add_argument("--batch", type=int, default=64, help="samples per domain and step")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock", choices=("wall", "process"), default="wall", help="wall or process CPU time"
    )
    return parser.parse_args(argv)


def build(setting: str, domains: int, seed: int):
    algorithm, anneal = SETTINGS[setting]
    hparams = default_hparams(algorithm, "RotatedMNIST")
    if anneal is not None:
        hparams["penalty_anneal_iters"] = anneal  # 0: the penalty is on from the first step
    torch.manual_seed(seed)
    return build_algorithm(algorithm, (1, 28, 28), 10, domains, hparams)


def head_extra(algo, x, y, sizes, repeats: int, clock) -> tuple[float, float]:
    """Median seconds of Fishr's head work minus ERM's (CE and its backward) on fixed
    features: ``(penalty on, warm-up)``."""
    with torch.no_grad():
        z0 = algo.featurizer(x)
    head = algo.classifier

    def erm():
        z = z0.clone().requires_grad_()
        F.cross_entropy(head(z), y).backward()

    def fishr(count):
        z = z0.clone().requires_grad_()
        featurizer, algo.network.featurizer = algo.network.featurizer, nn.Identity()
        try:
            algo.objective(z, y, sizes, count)[0].backward()
        finally:
            algo.network.featurizer = featurizer

    calls = {"erm": erm, "on": lambda: fishr(10**9), "warm-up": lambda: fishr(0)}
    anneal = algo.hparams["penalty_anneal_iters"]
    algo.hparams["penalty_anneal_iters"] = 1  # count 0: warm-up, count 10**9: penalty on
    times = {name: [] for name in calls}
    for _ in range(repeats + 1):
        for name, fn in calls.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    algo.hparams["penalty_anneal_iters"] = anneal
    med = {name: statistics.median(t[1:]) for name, t in times.items()}
    return med["on"] - med["erm"], med["warm-up"] - med["erm"]


def main(argv=None) -> None:
    args = parse_args(argv)
    set_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    g = torch.Generator().manual_seed(args.seed)

    def minibatch():
        x = torch.rand(args.batch, 1, 28, 28, generator=g)
        return x, torch.randint(0, 10, (args.batch,), generator=g)

    data = [[minibatch() for _ in range(args.domains)] for _ in range(4)]
    algos = {name: build(name, args.domains, args.seed) for name in SETTINGS}
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for rep in range(args.repeats + 1):  # the first round warms up
        for name, algo in algos.items():
            start = clock()
            algo.update(data[rep % len(data)])
            if rep:
                times[name].append(clock() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"DomainBed minibatch step, MNIST_CNN, {args.domains} domains x {args.batch}, "
        f"{args.threads} thread(s), {args.repeats} interleaved repeats, {args.clock} clock, "
        f"torch {torch.__version__}"
    )
    for name, seconds in med.items():
        low, high = min(times[name]), max(times[name])
        ratio = seconds / med["erm"]
        print(f"  {name:16s} median {seconds * 1e3:8.1f} ms  [{low * 1e3:.1f} .. "
              f"{high * 1e3:.1f}]  / erm {ratio:.3f}")  # fmt: skip
    x = torch.cat([x for x, _ in data[0]])
    y = torch.cat([y for _, y in data[0]])
    on, warm = head_extra(algos["fishr"], x, y, [args.batch] * args.domains, 200, clock)
    share = on / med["erm"] * 100
    print(
        f"  Fishr's head work beyond ERM's (200 repeats): {on * 1e3:.2f} ms with the penalty "
        f"on ({share:.2f}% of the ERM step), {warm * 1e3:.2f} ms in warm-up"
    )
    verdict = "meets" if med["fishr"] / med["erm"] <= 1.05 else "misses"
    print(f"Fishr / ERM = {med['fishr'] / med['erm']:.3f} ({verdict} the goal <= 1.05)")


if __name__ == "__main__":
    main()
