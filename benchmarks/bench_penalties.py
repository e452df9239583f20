"""Time one full-batch training step (forward both domains, loss, backward, Adam step) of the
Colored MNIST MLP for ERM and for each penalty via :class:`landscape.training.penalties.Penalties`,
and print the ratios to ERM. The project's CPU goal: Fishr / ERM <= 1.15.

    python benchmarks/bench_penalties.py            # 2 x 25,000 samples, 2 threads
    python benchmarks/bench_penalties.py --quick    # 2 x 2,000 samples, few repeats

Then the head's diagonal moments alone (forward + backward of ``persample._DiagonalMoments``
on ``[N, 390]`` features of a binary head), their ``K = 1`` products as broadcast
multiplications (ours) and as ``torch.mm`` (before), interleaved.

Inputs are random (seeded); only the timing matters.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from landscape.device import set_threads
from landscape.models import colored_mnist_mlp
from landscape.training.penalties import Penalties


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--n", type=int, default=25_000, help="samples per domain")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps per setting")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared machine with 1 thread)",
    )
    parser.add_argument(
        "--stat",
        choices=("median", "min"),
        default="median",
        help="summary of the timed steps (min is steadier on a shared machine)",
    )
    parser.add_argument(
        "--algorithms",
        default="erm,fishr",
        help="comma-separated algorithms to time (erm is always timed)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    n, repeats = (2_000, 3) if args.quick else (args.n, args.repeats)
    set_threads(args.threads)  # torch and BLAS pools alike
    torch.manual_seed(args.seed)
    model = colored_mnist_mlp()
    loss_func = torch.nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(args.seed)
    batches = {
        name: (torch.rand(n, 392, generator=g), (torch.rand(n, 1, generator=g) < 0.5).float())
        for name in ("+80%", "+90%")
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def plain_erm():
        risks = [loss_func(model(X), y) for X, y in batches.values()]
        loss = torch.stack(risks).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def via_penalties(algorithm, log_all):
        penalties = Penalties(model, loss_func, list(batches))

        def step():
            out = penalties(batches, algorithm, log_all=log_all)
            loss = torch.stack(list(out.risks.values())).mean() + out.penalty
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return step

    clock = time.perf_counter if args.clock == "wall" else time.process_time

    def timeit(fn):
        fn()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = clock()
            fn()
            times.append(clock() - t0)
        return statistics.median(times) if args.stat == "median" else min(times)

    algorithms = ["erm"] + [a for a in args.algorithms.split(",") if a and a != "erm"]
    print(f"N = 2 x {n}, {args.threads} threads, {args.stat} {args.clock} time of {repeats} steps")
    base = timeit(plain_erm)
    print(f"{'plain ERM loop':28s} {base:7.3f} s")
    results = {}
    for log_all in (False, True):
        for algorithm in algorithms:
            results[algorithm, log_all] = timeit(via_penalties(algorithm, log_all))
    for log_all in (False, True):
        erm = results["erm", log_all]
        for algorithm in algorithms:
            t = results[algorithm, log_all]
            print(
                f"{algorithm:18s} log_all={log_all!s:5s} {t:7.3f} s   "
                f"/ERM(same log) {t / erm:5.3f}   /plain ERM {t / base:5.3f}"
            )

    print(time_moments(n, max(repeats, 15), clock))


def time_moments(n: int, repeats: int, clock) -> str:
    """Median seconds of the moments' forward + backward with broadcast and with ``mm``
    outer products, interleaved; one line."""
    from contextlib import nullcontext
    from unittest import mock

    import landscape.persample as P

    g = torch.Generator().manual_seed(0)
    a = torch.rand(n, 390, generator=g).requires_grad_()
    delta = (torch.rand(n, 1, generator=g) - 0.5).requires_grad_()

    def run():
        v_weight, v_bias = P._DiagonalMoments.apply(a, delta, True)
        (v_weight.sum() + v_bias.sum()).backward()

    with_mm = {
        "_product": lambda x, w, out: torch.mm(x, w, out=out),
        "_subtract_product": lambda block, x, w: block.addmm_(x, w, alpha=-1.0),
    }
    times = {"broadcast": [], "mm": []}
    for _ in range(repeats + 1):  # the first round warms up
        for label in times:
            patched = mock.patch.multiple(P, **with_mm) if label == "mm" else nullcontext()
            with patched:
                t0 = clock()
                run()
                times[label].append(clock() - t0)
    ours, before = (statistics.median(times[k][1:]) * 1e3 for k in ("broadcast", "mm"))
    return (f"head moments [{n}, 390], forward + backward: {ours:.1f} ms with broadcast outer "
            f"products, {before:.1f} ms with torch.mm (before)")  # fmt: skip


if __name__ == "__main__":
    main()
