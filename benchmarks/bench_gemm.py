"""torch's BLAS against NumPy's for the training step (:mod:`landscape.gemm`), side by side.

Prints the machine (CPU, vendor, torch's and NumPy's BLAS, the backend
:func:`landscape.gemm.default_backend` picks, threads) and, interleaved (one repetition of
each backend in turn, so that a change of machine load hits both alike):

(a) GFLOPS of the step's GEMM shapes (Colored MNIST protocol: 25,000 images per training
    domain, 12,500 per lit colour channel; MLP 392-390-390-1) with torch (``torch.matmul``)
    and NumPy (:func:`landscape.gemm.matmul`), the operands laid out as in the step;
(b) the pool hand-over: a torch element-wise op (ReLU of ``[25,000, 390]``) right after a
    torch GEMM and right after a NumPy GEMM (OpenBLAS's idle workers poll for a while,
    ``OPENBLAS_THREAD_TIMEOUT``, and may take CPU from torch's OpenMP threads);
(c) the full training step (:meth:`landscape.training.Trainer.train_step`: forward, penalty,
    backward, Adam, the test domains every 10 steps) with each backend, per algorithm, and
    the ratio torch / numpy.

(a') is the one-logit head's backward outer product ``[25,000, 1] @ [1, 390]``: OpenBLAS's
GEMM against the broadcast multiplication :func:`landscape.gemm.matmul` uses for it.

    python benchmarks/bench_gemm.py                     # 1 and 2 threads, ERM and Fishr
    python benchmarks/bench_gemm.py --threads 2 --steps 10 --quick
    OPENBLAS_THREAD_TIMEOUT=4 python benchmarks/bench_gemm.py   # idle OpenBLAS workers sleep
"""

from __future__ import annotations

# first, as the CLI does: the thread pools' settings (landscape.thread_pools)
import landscape  # noqa: F401  # isort: skip

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train_step import machine  # noqa: E402

from landscape import gemm  # noqa: E402
from landscape.device import keep_freed_memory, set_threads  # noqa: E402

N, N_CHANNEL, N_TEST, D_IN, HIDDEN = 25_000, 12_500, 10_000, 392, 390


def blas_line() -> str:
    """What computes the products here, and what :mod:`landscape.gemm` picks."""
    from threadpoolctl import threadpool_info

    pools = ", ".join(
        f"{p['internal_api']} {p.get('version') or ''} ({p.get('architecture') or '?'}, "
        f"{p['num_threads']} threads)".replace("  ", " ")
        for p in threadpool_info()
    )
    env = {k: os.environ.get(k, "unset") for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_WAIT_POLICY")}
    return (
        f"vendor {gemm.cpu_vendor() or '?'}; torch BLAS {gemm.torch_blas() or '?'}; NumPy "
        f"{np.__version__} BLAS {gemm.numpy_blas() or '?'}; pools: {pools}; default backend "
        f"{gemm.default_backend()}, {gemm.ENV_VAR}={os.environ.get(gemm.ENV_VAR, 'unset')}; "
        + ", ".join(f"{k}={v}" for k, v in env.items())
    )


def shapes(g: torch.Generator) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(name, a, b)`` for the step's products, the operands laid out as the step has them
    (weights ``[out, in]`` used transposed, gradients ``grad^T x``)."""

    def r(*shape):
        return torch.randn(*shape, generator=g)

    w1, w2 = r(HIDDEN, D_IN), r(HIDDEN, HIDDEN)
    x_c, h, grad = r(N_CHANNEL, D_IN // 2), r(N, HIDDEN), r(N, HIDDEN)
    grad_c = r(N_CHANNEL, HIDDEN)
    return [
        ("layer 1 forward, one channel [12500,196]@[196,390]", x_c, w1[:, : D_IN // 2].t()),
        ("layer 1 weight grad [390,12500]@[12500,196]", grad_c.t(), x_c),
        ("layer 2 forward [25000,390]@[390,390]^T", h, w2.t()),
        ("layer 2 input grad [25000,390]@[390,390]", grad, w2),
        ("layer 2 weight grad [390,25000]@[25000,390]", grad.t(), h),
        ("test forward [10000,392]@[392,390]^T", r(N_TEST, D_IN), w1.t()),
    ]


def interleaved(fns: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each function per repetition, the functions taking turns (after a warm-up)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return times


def print_gflops(threads: int, repeats: int) -> None:
    print(f"\n(a) GFLOPS, {threads} thread(s), best (median) of {repeats} interleaved")
    print("| product | torch | numpy | numpy / torch |\n|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for name, a, b in shapes(g):
        flop = 2 * a.shape[0] * a.shape[1] * b.shape[1]
        times = interleaved(
            {
                "torch": lambda a=a, b=b: torch.matmul(a, b),
                "numpy": lambda a=a, b=b: gemm.matmul(a, b, backend="numpy"),
            },
            repeats,
        )
        best = {k: flop / min(v) / 1e9 for k, v in times.items()}
        med = {k: flop / statistics.median(v) / 1e9 for k, v in times.items()}
        print(f"| {name} | {best['torch']:.1f} ({med['torch']:.1f}) | {best['numpy']:.1f} "
              f"({med['numpy']:.1f}) | {best['numpy'] / best['torch']:.2f} |")  # fmt: skip


def print_outer(threads: int, repeats: int) -> None:
    """The one-logit head's backward outer product through OpenBLAS's GEMM (``K = 1``) and
    as :func:`landscape.gemm.matmul` computes it (a broadcast multiplication)."""
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(N, 1, generator=g), torch.randn(1, HIDDEN, generator=g)
    times = interleaved(
        {
            "gemm": lambda: np.matmul(a.numpy(), b.numpy()),
            "broadcast": lambda: gemm.matmul(a, b, backend="numpy"),
        },
        repeats,
    )
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    print(
        f"\n(a') outer product [25000,1]@[1,390], {threads} thread(s), median of {repeats}: "
        f"OpenBLAS GEMM {med['gemm']:.2f} ms, broadcast (gemm.matmul) {med['broadcast']:.2f} "
        f"ms (ratio {med['gemm'] / med['broadcast']:.2f})"
    )


def print_handover(threads: int, repeats: int) -> None:
    """A torch ReLU right after a torch GEMM and right after a NumPy GEMM."""
    g = torch.Generator().manual_seed(1)
    h, w = torch.randn(N, HIDDEN, generator=g), torch.randn(HIDDEN, HIDDEN, generator=g)
    out = torch.empty(N, HIDDEN)
    relu_after = {k: [] for k in gemm.BACKENDS}
    interleaved({k: (lambda k=k: _pair(h, w, out, k, relu_after)) for k in gemm.BACKENDS},
                repeats)  # fmt: skip
    med = {k: 1e3 * statistics.median(v) for k, v in relu_after.items()}
    print(f"\n(b) ReLU [25000,390] right after a GEMM, {threads} thread(s), median of "
          f"{repeats}: after torch's {med['torch']:.2f} ms, after NumPy's {med['numpy']:.2f} ms "
          f"(ratio {med['numpy'] / med['torch']:.2f})")  # fmt: skip


def _pair(h, w, out, name, store) -> None:
    gemm.matmul(h, w, backend=name)
    start = time.perf_counter()
    torch.clamp_min(h, 0.0, out=out)
    store[name].append(time.perf_counter() - start)


def trainers(config, algorithm: str, data) -> dict:
    """One :class:`Trainer` per backend (``$LANDSCAPE_GEMM`` set while it is built), same data
    and initial weights."""
    from landscape.training import Trainer

    out, saved = {}, os.environ.get(gemm.ENV_VAR)
    try:
        for name in gemm.BACKENDS:
            os.environ[gemm.ENV_VAR] = name
            out[name] = Trainer(config, algorithm, 0, data.batches, data.train_domains,
                                data.test_domains,
                                initial_weights=data.initial_weights)  # fmt: skip
            assert out[name].gemm == name
    finally:
        if saved is None:
            os.environ.pop(gemm.ENV_VAR, None)
        else:
            os.environ[gemm.ENV_VAR] = saved
    return out


def print_steps(config, algorithms, threads: int, steps: int, warmup: int, data) -> None:
    """Wall seconds per step (median, mean, min) of each backend, their steps interleaved, and
    the process's CPU seconds per step (median: the work, whoever else runs on the cores)."""
    print(f"\n(c) training step, {threads} thread(s): wall s/step, median (mean, min) of {steps} "
          f"steps after {warmup} warm-up, interleaved; test domains every {config.eval_every} "
          "steps; CPU s/step of the process, median")  # fmt: skip
    print("| algorithm | torch wall | numpy wall | torch / numpy wall (medians) | torch CPU | "
          "numpy CPU | torch / numpy CPU | last row rel. gap |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for algo in algorithms:
        pair = trainers(config, algo, data)
        wall, cpu = {k: [] for k in pair}, {k: [] for k in pair}
        rows = {}
        for t in range(warmup + steps):
            for k, trainer in pair.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                rows[k] = trainer.train_step()
                if t >= warmup:
                    wall[k].append(time.perf_counter() - start)
                    cpu[k].append(time.process_time() - start_cpu)
        s = {k: (statistics.median(v), statistics.mean(v), min(v)) for k, v in wall.items()}
        c = {k: statistics.median(v) for k, v in cpu.items()}
        keys = [k for k in rows["torch"] if k.startswith(("loss", "risk", "acc/+"))]
        gap = max(abs(rows["numpy"][k] - rows["torch"][k]) / max(abs(rows["torch"][k]), 1e-12)
                  for k in keys)  # fmt: skip
        cells = " | ".join("{:.3f} ({:.3f}, {:.3f})".format(*s[k]) for k in gemm.BACKENDS)
        print(f"| {algo} | {cells} | {s['torch'][0] / s['numpy'][0]:.2f} | {c['torch']:.3f} | "
              f"{c['numpy']:.3f} | {c['torch'] / c['numpy']:.2f} | {gap:.1e} |",
              flush=True)  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="thread counts")
    parser.add_argument("--algorithms", nargs="+", default=["erm", "fishr"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per backend (10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--repeats", type=int, default=7, help="GEMM repetitions (7)")
    parser.add_argument("--quick", action="store_true", help="2,000 samples per domain")
    parser.add_argument("--skip-gemm", action="store_true", help="only the training step")
    parser.add_argument("--data-dir", default=None, help="MNIST cache folder")
    args = parser.parse_args(argv)
    from landscape.training import TrainConfig
    from landscape.training.loop import RestartData

    keep_freed_memory()  # as landscape train does, for both backends
    config = TrainConfig(algorithms=["erm"], restarts=1, steps=args.warmup + args.steps + 1,
                         subsample=2000 if args.quick else None, device="cpu")  # fmt: skip
    print(f"machine: {machine()}")
    print(f"BLAS: {blas_line()}")
    print(f"load average: {os.getloadavg()}")
    data = RestartData.build(config, 0, args.data_dir, torch.device("cpu"))
    for threads in args.threads:
        with set_threads(threads):
            if not args.skip_gemm:
                print_gflops(threads, args.repeats)
                print_outer(threads, 5 * args.repeats)
                print_handover(threads, 5 * args.repeats)
            print_steps(config, args.algorithms, threads, args.steps, args.warmup, data)
    print(f"\nload average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
