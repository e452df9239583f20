"""Check `landscape train` against the official Colored MNIST script, step by step (issue 11).

Not part of CI: it needs the published script, which this project does not ship. Point it at
a checkout of https://github.com/alexrame/fishr::

    python benchmarks/check_official_script.py /path/to/fishr --algorithm vrex --steps 12 \\
        --restarts 2

Both run on the CPU in this process, with the same ``--seed``: first ``landscape train``
(the default ``"script"`` data stream, into a temporary folder), then the script itself,
``coloredmnist/train_coloredmnist.py``, unmodified, with its command-line flags. Every
logged quantity of every update of every restart is compared, and the largest absolute
difference per quantity is printed (float32 noise is ~1e-6 relative).

The script runs as published; only its surroundings are adapted, from the outside:

* ``torchvision.datasets.MNIST`` is replaced by the offline MNIST cache of
  :mod:`landscape.data.mnist` (a fresh copy per call, since the script shuffles it in place);
* ``.cuda()`` returns the tensor / module itself when no GPU is present;
* BackPACK issue 233 (see ENV.md): ``backward(inputs=<head parameters>)`` yields no
  ``grad_batch`` on this stack when the head's input requires grad, so ``inputs=`` is dropped
  from the backward passes the script makes inside ``with backpack(...)``. Its only other
  effect is to fill ``.grad`` of the other parameters, which the script zeroes before its
  training backward;
* the values of each update are read from the script's module namespace by a global
  optimizer step pre-hook (the script prints them only every 100 steps).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import runpy
import sys
import tempfile
import types
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from landscape.data.mnist import load_mnist
from landscape.io import read_json, write_json
from landscape.training import TrainConfig, read_history, train

SCRIPT = Path("coloredmnist") / "train_coloredmnist.py"
#: the script's names of the algorithms
SCRIPT_ALGORITHMS = {"erm": "erm", "irm": "irm", "vrex": "rex", "fishr": "fishr"}
QUANTITIES = ("train nll", "train acc", "irm penalty", "rex penalty", "fishr penalty",
              "test acc", "gray test acc")  # fmt: skip


def ours(algorithm: str, steps: int, restarts: int, seed: int, anneal: int, out: Path):
    """``{(restart, step): {quantity: value}}`` of `landscape train` (history rows)."""
    config = TrainConfig(algorithms=[algorithm], steps=steps, restarts=restarts, seed=seed,
                         anneal_step=anneal, device="cpu", log_all=True)  # fmt: skip
    train(config, out, progress=False)
    return history_values(out, algorithm, steps, restarts)


def saved_run(run: Path, algorithm: str, steps: int, restarts: int, seed: int, anneal: int):
    """As :func:`ours`, read from a finished `landscape train` folder (``--run``): its first
    ``steps`` rows (the script run for fewer steps follows the same trajectory)."""
    config = TrainConfig.from_dict(read_json(run / "config.json"))
    wanted = {"stream": "script", "seed": seed, "anneal_step": anneal, "log_all": True}
    for key, value in wanted.items():
        if getattr(config, key) != value:
            raise SystemExit(f"{run}: {key} is {getattr(config, key)!r}, the check needs {value!r}")
    if algorithm not in config.algorithms or config.steps < steps or config.restarts < restarts:
        raise SystemExit(f"{run} holds no {algorithm} run of {restarts} restarts x {steps} steps")
    return history_values(run, algorithm, steps, restarts)


def history_values(out: Path, algorithm: str, steps: int, restarts: int):
    """The logged quantities of the first ``steps`` history rows of each restart."""
    values = {}
    for k in range(restarts):
        for row in read_history(out / algorithm / f"restart_{k}" / "history.csv")[:steps]:
            values[(k, int(row["step"]))] = {
                "train nll": (row["loss/+80%"] + row["loss/+90%"]) / 2,
                "train acc": (row["acc/+80%"] + row["acc/+90%"]) / 2,
                "irm penalty": row["penalty/irm"],
                "rex penalty": row["penalty/vrex"],
                "fishr penalty": row["penalty/fishr"],
                "test acc": row["acc/-90%"],
                "gray test acc": row["acc/gray"],
            }
    return values


class _OfflineMNIST:
    """Stands in for ``torchvision.datasets.MNIST(root, train=True, download=True)``."""

    def __init__(self, *args, train: bool = True, **kwargs):
        if not train:
            raise ValueError("the check serves the MNIST training set only")
        images, labels = load_mnist()
        self.data = torch.from_numpy(images.copy())
        self.targets = torch.from_numpy(labels.copy()).long()


@contextlib.contextmanager
def _script_surroundings(script: Path, record):
    """The adaptations listed in the module doc, undone on exit."""
    fake = types.ModuleType("torchvision")
    fake.datasets = types.SimpleNamespace(MNIST=_OfflineMNIST)
    saved_modules = {name: sys.modules.get(name) for name in ("torchvision",)}
    sys.modules["torchvision"] = fake
    saved = (torch.Tensor.cuda, nn.Module.cuda, torch.Tensor.backward)
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self
        nn.Module.cuda = lambda self, *a, **k: self
    original_backward = saved[2]

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        if inputs is not None and _called_from(script):
            inputs = None  # BackPACK issue 233 (module doc)
        return original_backward(self, gradient, retain_graph, create_graph, inputs)

    torch.Tensor.backward = backward

    def pre_hook(optimizer, args, kwargs):
        frame = _script_frame(script)
        if frame is not None:
            record(frame.f_globals)

    handle = register_optimizer_step_pre_hook(pre_hook)
    try:
        yield
    finally:
        handle.remove()
        torch.Tensor.cuda, nn.Module.cuda, torch.Tensor.backward = saved
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _script_frame(script: Path):
    frame = sys._getframe(1)
    while frame is not None and Path(frame.f_code.co_filename) != script:
        frame = frame.f_back
    return frame


def _called_from(script: Path) -> bool:
    return _script_frame(script) is not None


def theirs(fishr: Path, algorithm: str, steps: int, restarts: int, seed: int, anneal: int):
    """``{(restart, step): {quantity: value}}`` of the published script, read at each update
    (its forward pass of that update, as it prints every 100 steps)."""
    script = (fishr / SCRIPT).resolve()
    if not script.is_file():
        raise SystemExit(f"{script} not found; pass the root of a fishr checkout")
    values = {}

    def record(g):
        envs = g["envs"]
        values[(int(g["restart"]), int(g["step"]))] = {
            "train nll": float(g["train_nll"].detach()),
            "train acc": float(g["train_acc"].detach()),
            "irm penalty": float(g["irm_penalty"].detach()),
            "rex penalty": float(g["rex_penalty"].detach()),
            "fishr penalty": float(g["fishr_penalty"].detach()),
            "test acc": float(envs[2]["acc"].detach()),
            "gray test acc": float(envs[3]["acc"].detach()),
        }

    argv = [str(script), "--algorithm", SCRIPT_ALGORITHMS[algorithm], "--steps", str(steps),
            "--n_restarts", str(restarts), "--seed", str(seed),
            "--penalty_anneal_iters", str(anneal)]  # fmt: skip
    saved_argv, sys.argv = sys.argv, argv
    printed = io.StringIO()
    try:
        with (
            _script_surroundings(script, record),
            contextlib.redirect_stdout(printed),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")  # the script's, on this newer stack
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved_argv
    return values, printed.getvalue()


def _difference(x: float, y: float) -> float:
    d = abs(x - y)
    return math.inf if math.isnan(d) else d


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fishr", type=Path, help="root of a checkout of alexrame/fishr")
    parser.add_argument("--algorithm", nargs="+", default=["erm", "irm", "vrex", "fishr"],
                        choices=list(SCRIPT_ALGORITHMS))  # fmt: skip
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anneal-step", type=int, default=190,
                        help="first step with the full penalty weight (both sides)")  # fmt: skip
    parser.add_argument("--run", type=Path, default=None,
                        help="compare with this finished `landscape train` folder instead of "
                        "training again (its first --steps rows)")  # fmt: skip
    parser.add_argument("--save", type=Path, default=None,
                        help="write every compared value of both to this JSON file")  # fmt: skip
    parser.add_argument("--show-script-output", action="store_true")
    args = parser.parse_args(argv)
    saved = {}
    for algorithm in args.algorithm:
        setting = (algorithm, args.steps, args.restarts, args.seed, args.anneal_step)
        if args.run is not None:
            a = saved_run(args.run, *setting)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                a = ours(*setting, Path(tmp))
        b, printed = theirs(args.fishr, algorithm, args.steps, args.restarts, args.seed,
                            args.anneal_step)  # fmt: skip
        if args.show_script_output:
            print(printed)
        if sorted(a) != sorted(b):
            raise SystemExit(f"{algorithm}: steps differ: ours {sorted(a)[:3]}..., "
                             f"the script's {sorted(b)[:3]}...")  # fmt: skip
        print(f"{algorithm}: {len(a)} updates ({args.restarts} restarts x {args.steps} steps), "
              f"seed {args.seed}; largest |ours - script's| per quantity:")  # fmt: skip
        for q in QUANTITIES:
            # NaN sorts last: a NaN on either side is reported as the largest difference
            key = max(a, key=lambda k: _difference(a[k][q], b[k][q]))
            print(f"  {q:<14} {_difference(a[key][q], b[key][q]):.3e}   (restart {key[0]}, "
                  f"step {key[1]}: ours {a[key][q]:.7g}, script {b[key][q]:.7g})")  # fmt: skip
        saved[algorithm] = [{"restart": k, "step": t, "ours": a[(k, t)], "script": b[(k, t)]}
                            for k, t in sorted(a)]  # fmt: skip
    if args.save is not None:
        write_json(args.save, saved)
    return 0


if __name__ == "__main__":
    sys.exit(main())
