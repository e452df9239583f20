"""Where `make demo`'s time goes: `landscape reproduce`'s phases at the demo's analysis sizes.

Trains ERM and Fishr on the protocol's data (one restart) for a few steps only, with as many
checkpoints as the demo saves (8 before the final one), then runs :func:`analyse_run` with
the demo's settings (``--analysis-subsample 2000``, ``--grid 21``, ``epsilon 0.01``) and
:func:`draw_figures`, timing each phase (each ``_Analysis`` method, and within ``scores`` the
dense head score and the matrix-free network score apart). The training time printed is
that of the few steps; the demo's is ``2 x 501`` steps (see ``bench_train_step.py``). A
barely trained model may need other iteration counts than the demo's final one in the
iterative analyses, so read the numbers as a breakdown, not as the demo's exact time.

    python benchmarks/bench_demo_phases.py --out /tmp/demo_phases --steps 20
"""

from __future__ import annotations

import argparse
import functools
import os
import time

TIMES: dict[str, float] = {}

PHASES = ("load", "scores", "alignment", "plane_surface", "direction_surfaces",
          "head_figures_data", "score_trajectory", "spectra", "examples")  # fmt: skip


def timed(name, fn):
    """``fn`` that adds its wall time to ``TIMES[name]`` (its name: ``name(*args)`` if
    ``name`` is callable)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        key = name(*args, **kwargs) if callable(name) else name
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[key] = TIMES.get(key, 0.0) + time.perf_counter() - start
            print(f"  {key}: {TIMES[key]:.1f} s", flush=True)

    return wrapper


def instrument() -> None:
    import landscape.inconsistency as inconsistency
    import landscape.pipeline as pipeline

    for phase in PHASES:
        setattr(pipeline._Analysis, phase, timed(phase, getattr(pipeline._Analysis, phase)))
    inconsistency.inconsistency_score = timed(
        lambda *a, **k: f"  inconsistency_score {k.get('method')} {k.get('params')}",
        inconsistency.inconsistency_score,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="a new folder for the job")
    parser.add_argument("--steps", type=int, default=20, help="training steps (20)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import landscape.pipeline as pipeline
    from landscape.device import set_threads
    from landscape.training import TrainConfig, train

    instrument()
    print(f"load average before: {os.getloadavg()}")
    every = max(1, (args.steps - 1) // 8)
    checkpoints = list(range(0, 8 * every, every))[:8]  # the demo saves 8 before the final
    config = TrainConfig(algorithms=["erm", "fishr"], restarts=1, steps=args.steps,
                         checkpoint_steps=checkpoints, device="cpu")  # fmt: skip
    out = args.out
    with set_threads(args.threads):
        start = time.perf_counter()
        timed("train", train)(config, f"{out}/run", progress=False)
        timed("analyse_run", pipeline.analyse_run)(
            f"{out}/run", f"{out}/analysis", subsample=2000, grid=21, epsilon=0.01,
            device="cpu", progress=False,
        )  # fmt: skip
        timed("summary", pipeline.summary)(f"{out}/analysis")
        timed("draw_figures", pipeline.draw_figures)(
            f"{out}/run", f"{out}/analysis", f"{out}/figures"
        )
        total = time.perf_counter() - start
    print(f"\nload average after: {os.getloadavg()}; {args.threads} threads")
    print("| phase | seconds |\n|---|---|")
    for key, seconds in TIMES.items():
        print(f"| {key} | {seconds:.1f} |")
    print(f"| total ({args.steps} training steps) | {total:.1f} |")


if __name__ == "__main__":
    main()
