"""Time per grid point of ``loss_surface`` against one forward pass and a plain loop.

The plain loop is what the reference loss-landscape code (Li et al. 2018,
``net_plotter.set_weights`` + ``evaluation.eval_loss``) does: at every grid point it copies
:math:`\\theta^* + \\alpha\\delta + \\beta\\eta` into the model's parameters, then runs the
forward pass. It leaves the model displaced by the last grid offset; the distance is
printed.

Setup (``--model mlp``, default): the Colored MNIST MLP
(``landscape.models.colored_mnist_mlp``), two domains of 5,000 samples (real Colored MNIST
when the offline MNIST cache is there, else random inputs ``[N, 2, 14, 14]``), BCE, a 31 x 31
grid, filter-normalised random directions. ``--model mnist_cnn`` (DomainBed's MNIST_CNN with
GroupNorm and a linear head, random ``[N, 2, 28, 28]`` images, 2 classes) and ``--model
resnet18`` (BatchNorm in eval mode, random ``[N, 3, 32, 32]`` images: small images on a CPU)
time the same with cross-entropy; a convolution comes first there, so only the plain path
runs (the first-layer shortcut needs a linear first layer). Printed:

* ``forward``: median time of one forward pass + loss over one domain, timed in every round
  between the paths (so that its ratio is measured side by side), and the floor of the
  first-layer shortcut: the forward pass minus the first layer's product alone;
* for each of our evaluation paths and the plain loop: time per (grid point, domain), its
  ratio to one forward pass (goal <= 1.2) and the speed-up over the plain loop (goal
  >= 1.0 on CPU). Both compute loss and accuracy. With ``--params classifier`` only the head
  moves, and the frozen-prefix path (the layers before the head evaluated once per domain,
  :mod:`landscape.surface.prefix`) is timed beside the others. The paths take turns on the same rows
  of the grid (``--rounds``), so that a change of machine load hits them alike.

Usage::

    python benchmarks/bench_surface.py            # full size (minutes on a CPU)
    python benchmarks/bench_surface.py --quick    # 5 x 5 grid, 1,000 samples
    python benchmarks/bench_surface.py --device cuda --points-per-call 1 4 16 64
    python benchmarks/bench_surface.py --model resnet18 --n 64 --grid 5
    python benchmarks/bench_surface.py --params classifier   # head directions: + frozen prefix
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from _data import load_domains  # noqa: E402  (benchmarks/_data.py)

from landscape.device import resolve_device, set_threads  # noqa: E402
from landscape.models import DomainBedNetwork, colored_mnist_mlp, resnet  # noqa: E402
from landscape.surface import loss_surface, make_grid, random_directions  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_loop(model, loss_func, domains, dirs, alphas, betas):
    """The reference approach: copy the displaced weights into the model at every point, then
    evaluate loss and accuracy (as ``evaluation.eval_loss`` of the reference code does)."""
    params = dict(model.named_parameters())
    theta = {n: params[n].detach().clone() for n in dirs.names}
    out = {}
    with torch.no_grad():
        for name, batches in domains.items():
            losses = torch.empty(len(alphas), len(betas))
            for i, a in enumerate(alphas):
                for j, b in enumerate(betas):
                    for n in dirs.names:  # set_weights
                        params[n].data.copy_(theta[n] + a * dirs.d1[n] + b * dirs.d2[n])
                    total, correct = 0.0, 0
                    for X, y in batches:
                        logits = model(X)
                        total += float(loss_func(logits, y)) * X.shape[0]
                        hits = (
                            (logits > 0).to(y.dtype) == y
                            if logits.shape[-1] == 1
                            else (logits.argmax(-1) == y)
                        )
                        correct += int(hits.sum())
                    losses[i, j] = total / sum(X.shape[0] for X, _ in batches)
            out[name] = losses
    displaced = max(float((params[n].detach() - theta[n]).norm()) for n in dirs.names)
    return out, displaced


def build(name: str, n: int, device):
    """``(model, loss, domains, source)`` of ``--model`` (module docstring), seeded."""
    torch.manual_seed(0)
    if name == "mlp":
        domains, source = load_domains(n, device)
        return colored_mnist_mlp().to(device).eval(), torch.nn.BCEWithLogitsLoss(), domains, source
    if name == "mnist_cnn":
        model, shape = DomainBedNetwork((2, 28, 28), 2, {}), (2, 28, 28)
    else:
        model, shape = resnet(18, num_classes=2, use_torchvision=False), (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    domains = {
        name: [(torch.rand(n, *shape, generator=g).to(device),
                torch.randint(0, 2, (n,), generator=g).to(device))]
        for name in ("A", "B")
    }  # fmt: skip
    source = f"random images [N, {', '.join(map(str, shape))}], 2 classes"
    return model.to(device).eval(), torch.nn.CrossEntropyLoss(), domains, source


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 x 5 grid, 1,000 samples")
    parser.add_argument("--n", type=int, default=None, help="samples per domain (5,000)")
    parser.add_argument("--grid", type=int, default=None, help="points per axis (31)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--model", choices=["mlp", "mnist_cnn", "resnet18"], default="mlp")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--points-per-call",
        type=int,
        nargs="+",
        default=None,
        help="vmap sizes to time (default: 1 on CPU, 1 4 16 on GPU)",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the plain loop")
    parser.add_argument(
        "--params", default=None, help="move only these parameters (e.g. classifier: then the "
        "frozen-prefix path runs the head alone on cached inputs, timed beside the others)"
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds of grid rows (default 5)"
    )
    return parser.parse_args(argv)


def _median(fn, device, repeats: int) -> float:
    times = []
    with torch.no_grad():
        fn()
        for _ in range(repeats):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_forward(model, loss_func, domains, device, repeats: int) -> tuple[float, float]:
    """Median times of one forward pass + loss over the first domain, and of its first
    ``nn.Linear`` layer's product alone (``nan`` when the model starts otherwise): the
    difference is the floor of the first-layer shortcut (the rest of the network)."""
    X, y = domains[next(iter(domains))][0]
    forward = _median(lambda: loss_func(model(X), y), device, repeats)
    first = next(m for m in model.modules() if any(True for _ in m.parameters(recurse=False)))
    if not isinstance(first, torch.nn.Linear):
        return forward, float("nan")
    x = X.flatten(1)
    if x.shape[1] != first.in_features:
        return forward, float("nan")
    return forward, _median(lambda: first(x), device, repeats)


BEFORE = "ours: first-layer, 1 point(s)/call, no row sum (before)"


def _variant(label: str):
    """The ``BEFORE`` path: the first-layer shortcut without the row's :math:`Z_0 + \\alpha
    Z_1` (three terms summed at every point, as before the row sum); else nothing."""
    if label != BEFORE:
        return contextlib.nullcontext()
    from landscape.surface.first_layer import FirstLayer

    return mock.patch.object(FirstLayer, "at_row", lambda self, domain, a: domain)


def run_rounds(model, loss_func, domains, dirs, alphas, betas, paths, args, device):
    """Every path on the same rows of the grid, interleaved in rounds so that a change of
    machine load hits all paths alike; ``(seconds per path, losses per path, seconds of the
    plain loop or None, its losses, how far it left the model displaced)``."""
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    spent = {label: 0.0 for label, *_ in paths}
    forwards = []  # (forward, first layer's product) per round, timed between the paths
    results = {label: [] for label, *_ in paths}
    reference, displaced, ref = (None if args.no_reference else 0.0), None, []
    rounds = min(args.rounds, len(alphas))
    for r in range(rounds):
        rows_alpha = alphas[r::rounds]
        forwards.append(time_forward(model, loss_func, domains, device, 5))
        for label, first, size, prefix in paths:
            sync(device)
            t = time.perf_counter()
            with _variant(label):
                res = loss_surface(model, loss_func, domains, dirs, grid=(rows_alpha, betas),
                                   first_layer=first, points_per_call=size,
                                   frozen_prefix=prefix, progress=False)  # fmt: skip
            sync(device)
            spent[label] += time.perf_counter() - t
            results[label].append(res)
        if not args.no_reference:
            sync(device)
            t = time.perf_counter()
            part, displaced = plain_loop(model, loss_func, domains, dirs, rows_alpha, betas)
            sync(device)
            reference += time.perf_counter() - t
            ref.append(part)
            model.load_state_dict(before)
    if ref:
        ref = {k: torch.cat([p[k] for p in ref]) for k in ref[0]}
    results = {
        label: {k: torch.cat([torch.as_tensor(r.losses[k]) for r in parts]) for k in domains}
        for label, parts in results.items()
    }
    forward = statistics.median(f for f, _ in forwards)
    floor = statistics.median(f - p for f, p in forwards)
    return spent, results, reference, ref, displaced, forward, floor


def main(argv=None) -> int:
    args = parse(argv)
    if args.threads:
        set_threads(args.threads)  # torch and BLAS pools alike
    n = args.n or (1000 if args.quick else 5000)
    num = args.grid or (5 if args.quick else 31)
    device = resolve_device(args.device)
    sizes = args.points_per_call or ([1, 4, 16] if device.type == "cuda" else [1])

    model, loss_func, domains, source = build(args.model, n, device)
    dirs = random_directions(model, params=args.params, seed=0)
    alphas, betas = make_grid((-1.0, 1.0, num))
    points = num * num * len(domains)
    print(f"device {device}, threads {torch.get_num_threads()}, data: {source}")
    print(f"{len(domains)} domains x {n} samples, grid {num} x {num} ({points} domain-points)")

    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shortcut = (True, False) if args.model == "mlp" else (False,)
    paths = [(f"ours: {'first-layer' if first else 'plain'}, {size} point(s)/call", first, size,
              False) for first in shortcut for size in sizes]  # fmt: skip
    if True in shortcut and 1 in sizes and args.params is None:
        paths.append((BEFORE, True, 1, False))
    if args.params is not None:
        paths += [(f"ours: frozen prefix ({args.params} alone), {size} point(s)/call", "auto",
                   size, "auto") for size in sizes]  # fmt: skip
    spent, results, reference, ref, displaced, forward, floor = run_rounds(
        model, loss_func, domains, dirs, alphas, betas, paths, args, device
    )
    print(f"forward pass + loss over one domain: {forward * 1e3:.2f} ms (median of the rounds)")
    print(
        f"the rest of the network (forward minus the first layer's product): {floor * 1e3:.2f}"
        f" ms = {floor / forward:.2f} x forward, the floor of the first-layer shortcut"
    )
    rows = [(label, spent[label] / points) for label, *_ in paths]
    after = model.state_dict()
    untouched = all(torch.equal(before[k], after[k]) for k in before)
    report(rows, forward, reference / points if reference else reference, results, ref, displaced)
    print(f"loss_surface leaves the model untouched: {untouched}")
    best = min(per for _, per in rows)
    print(
        f"\nbest: {best / forward:.2f} x one forward pass per point (goal <= 0.5 with the "
        f"first-layer shortcut; floor {floor / forward:.2f})"
        + (f", {reference / points / best:.2f}x the plain loop (goal >= 1.0 on CPU)"
           if reference else "")
    )  # fmt: skip
    return 0


def report(rows, forward, reference, results, ref, displaced) -> None:
    """The table: ms per point, per forward pass, speed-up over the plain loop."""
    print()
    print(f"{'path':48s} {'ms/point':>9s} {'/forward':>9s} {'speed-up vs plain loop':>23s}")
    for label, per in rows:
        speed = f"{reference / per:.2f}x" if reference else "-"
        print(f"{label:48s} {per * 1e3:9.2f} {per / forward:9.2f} {speed:>23s}")
    if reference:
        print(
            f"{'plain loop copying weights (reference code)':48s} {reference * 1e3:9.2f} "
            f"{reference / forward:9.2f} {'1.00x':>23s}"
        )
        worst = max(
            float((r[k] - ref[k].double()).abs().max()) for r in results.values() for k in ref
        )
        print(f"\nmax |ours - plain loop| over all paths: {worst:.2e}")
        print(f"plain loop leaves the model displaced: ||theta_after - theta*|| = {displaced:.3f}")


if __name__ == "__main__":
    sys.exit(main())
