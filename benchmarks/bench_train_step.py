"""Time one training step of ERM and of Fishr side by side, and print the ratio Fishr / ERM.

One step is what :meth:`landscape.training.Trainer.train_step` does in a run: the full-batch
forward of both training domains (25,000 images each), the risks, the penalty, the
backward and the Adam update, plus the cheap no-grad evaluation of the two test domains
(10,000 images each). Measured with and without logging every penalty (IRM, V-REx, Fishr)
at every step, as the Colored MNIST script does. ERM and Fishr steps are interleaved so
that a change of machine load hits both alike; the median of ``--repeats`` steps after
``--warmup`` steps is reported.

Goal: Fishr / ERM <= 1.15 on CPU (the paper reports +2.7% training time on GPU for
head-only Fishr on PACS with a ResNet-50).

    python benchmarks/bench_train_step.py                 # protocol size, real Colored MNIST
    python benchmarks/bench_train_step.py --synthetic     # random tensors of the same shape
    python benchmarks/bench_train_step.py --quick         # small size, seconds
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from landscape.device import resolve_device, set_threads
from landscape.training import TrainConfig, Trainer

FULL = {"train": 25_000, "test": 10_000}
QUICK = {"train": 2_000, "test": 1_000}


def synthetic_batches(sizes, dtype, seed=0):
    """Random inputs shaped like Colored MNIST ``[N, 2, 14, 14]`` with 0/1 labels ``[N, 1]``."""
    g = torch.Generator().manual_seed(seed)
    batches = {}
    for name in ("+80%", "+90%", "-90%", "gray"):
        n = sizes["train"] if name.startswith("+") else sizes["test"]
        X = torch.rand(n, 2, 14, 14, generator=g, dtype=dtype)
        y = (torch.rand(n, 1, generator=g) < 0.5).to(dtype)
        batches[name] = (X, y)
    return batches


def mnist_batches(sizes, dtype, data_dir=None):
    from landscape.data import colored_mnist
    from landscape.domains import concat

    quick = sizes is QUICK
    domains = colored_mnist(data_dir, subsample=sizes["train"] if quick else None, dtype=dtype)
    out = {}
    for name, data in domains.items():
        X, y = concat(data)
        n = sizes["train"] if name.startswith("+") else sizes["test"]
        out[name] = (X[:n], y[:n])
    return out


def time_steps(trainers, device, warmup, repeats):
    """Median seconds per ``train_step`` of each trainer, interleaved."""
    times = {name: [] for name in trainers}
    for i in range(warmup + repeats):
        for name, trainer in trainers.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 / 1,000 samples per domain")
    parser.add_argument("--synthetic", action="store_true", help="random tensors, no MNIST")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5/10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", default=None, help="MNIST cache folder")
    args = parser.parse_args(argv)
    if args.threads:
        set_threads(args.threads)  # torch and BLAS pools alike
    device = resolve_device(args.device)
    repeats = args.repeats or (10 if args.quick else 5)
    sizes = QUICK if args.quick else FULL
    dtype = getattr(torch, args.dtype)

    source = "synthetic"
    if not args.synthetic:
        try:
            batches = mnist_batches(sizes, dtype, args.data_dir)
            source = "Colored MNIST"
        except ValueError as err:
            print(f"Colored MNIST unavailable ({err}); using synthetic tensors")
    if source == "synthetic":
        batches = synthetic_batches(sizes, dtype)
    batches = {k: (X.to(device), y.to(device)) for k, (X, y) in batches.items()}

    print(
        f"device {device}, {args.dtype}, {torch.get_num_threads()} threads, {source} data: "
        f"{sizes['train']:,} samples per training domain, {sizes['test']:,} per test domain; "
        f"median of {repeats} steps after {args.warmup} warm-up"
    )
    print(f"{'log all penalties':>18} | {'ERM s/step':>10} | {'Fishr s/step':>12} | Fishr/ERM")
    for log_all in (True, False):
        trainers = {}
        for algo in ("erm", "fishr"):
            config = TrainConfig(
                algorithms=[algo],
                steps=args.warmup + repeats,
                anneal_step=0,  # the full penalty weight (and the division) from step 0
                restarts=1,
                log_all=log_all,
                device=str(device),
                dtype=args.dtype,
            )
            trainers[algo] = Trainer(config, algo, 0, batches, ["+80%", "+90%"], ["-90%", "gray"])
        med = time_steps(trainers, device, args.warmup, repeats)
        ratio = med["fishr"] / med["erm"]
        print(f"{str(log_all):>18} | {med['erm']:>10.4f} | {med['fishr']:>12.4f} | {ratio:.3f}")


if __name__ == "__main__":
    main()
