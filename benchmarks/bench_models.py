"""Cost of a Hessian-vector product and of a loss-surface grid point on convolutional nets.

One run, one table, ratios measured side by side (issue 10): for DomainBed's ``MNIST_CNN``
(GroupNorm; featurizer + linear head) on 1x28x28 and 2x28x28 images and a ResNet-18
(BatchNorm in eval mode) on 3x32x32 images, one batch of ``--batch`` samples on the CPU:

* ``gradient``: forward + backward of the mean loss (the unit of the HVP rows);
* ``HVP, ours (retained graph)``: one product of
  :func:`landscape.curvature.curvature_operator` ``(curvature="hessian")`` after its first
  product, i.e. one double backward through the stored graph (the default for a one-batch
  domain: Lanczos, Hutchinson and the rows of a diagonal pay this per product);
* ``HVP, ours (streamed)``: ``retain_graph=False``, the path of a domain of several batches:
  forward, backward with ``create_graph`` and the double backward, every product;
* ``HVP, curvlinops``: curvlinops' ``HessianLinearOperator @ v`` on the same model, loss and
  batch (forward-over-reverse with ``torch.func``, everything redone at every product;
  ``nan`` where it fails: PyTorch has no forward-mode derivative of GroupNorm's backward, so
  it cannot multiply MNIST_CNN's Hessian);
* ``forward``: the mean loss under ``no_grad`` (the unit of the grid-point row);
* ``grid point``: one point of :func:`landscape.surface.loss_surface` (loss and accuracy on
  the same batch, one domain, random filter-normalised directions), measured as the slope
  between a 2 x 2 and a 4 x 4 grid, so the fixed cost of a call (checks, set-up) is left out.

All operations of a model are timed in turns (one call of each per round, medians over the
rounds), so that the load of a shared machine hits them alike.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_models.py            # batch 32, 5 repeats
    python benchmarks/bench_models.py --batch 16 --repeats 3 --models resnet18
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from landscape.curvature import curvature_operator  # noqa: E402
from landscape.surface import loss_surface  # noqa: E402
from landscape.surface.directions import random_directions  # noqa: E402


def mnist_cnn(channels: int, classes: int) -> nn.Module:
    """DomainBed's MNIST_CNN featurizer and a linear head named ``classifier``."""
    from landscape.models.mnist_cnn import MNIST_CNN

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.featurizer = MNIST_CNN((channels, 28, 28))
            self.classifier = nn.Linear(MNIST_CNN.n_outputs, classes)

        def forward(self, x):
            return self.classifier(self.featurizer(x))

    return Net()


def resnet18(classes: int) -> nn.Module:
    from landscape.models.resnet import resnet

    return resnet(18, num_classes=classes)


MODELS = {
    "mnist_cnn-1ch": (lambda: mnist_cnn(1, 10), (1, 28, 28), 10),
    "mnist_cnn-2ch": (lambda: mnist_cnn(2, 2), (2, 28, 28), 2),
    "resnet18": (lambda: resnet18(10), (3, 32, 32), 10),
}


def _batch(shape, classes: int, n: int):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def measure(name: str, n: int, repeats: int) -> dict[str, float]:
    """Seconds of each operation on one model and batch (medians)."""
    from curvlinops import HessianLinearOperator

    build, shape, classes = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    loss_func = nn.CrossEntropyLoss()
    X, y = _batch(shape, classes, n)
    params = [p for p in model.parameters() if p.requires_grad]
    v = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1))

    def forward():
        with torch.no_grad():
            return loss_func(model(X), y)

    def gradient():
        return torch.autograd.grad(loss_func(model(X), y), params)

    ops = {"forward": forward, "gradient": gradient}
    for label, retain in (("retained", True), ("streamed", False)):
        op = curvature_operator(model, loss_func, [(X, y)], retain_graph=retain)
        ops[f"hvp_{label}"] = lambda op=op: op @ v
    theirs = HessianLinearOperator(model, loss_func, params, [(X, y)], check_deterministic=False)
    try:
        theirs @ v
        ops["hvp_curvlinops"] = lambda: theirs @ v
    except NotImplementedError as err:  # forward-over-reverse: no forward AD for some layers
        print(f"{name}: curvlinops' HVP fails: {str(err).splitlines()[0]}")
    directions = random_directions(model, seed=0)
    for points in (2, 4):
        ops[f"surface_{points}"] = lambda points=points: loss_surface(
            model, loss_func, {"d": [(X, y)]}, directions, grid=(-1, 1, points), progress=False
        )
    times = interleaved(ops, repeats)
    times.setdefault("hvp_curvlinops", float("nan"))
    times["grid_point"] = (times["surface_4"] - times["surface_2"]) / (16 - 4)
    return times


def interleaved(ops: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each operation, timed in turns (one call of each per round, after
    one warm-up call each), so that a change of machine load hits them alike."""
    for fn in ops.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeats):
        for name, fn in ops.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="samples in the batch (32)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per median (5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"batch {args.batch}, {args.threads} thread(s), medians of {args.repeats} calls, CPU")
    header = (
        f"{'model':<15}{'D':>11}{'grad ms':>9}{'HVP/grad ours':>15}{'ours streamed':>15}"
        f"{'curvlinops':>12}{'point/forward':>15}{'fwd ms':>8}"
    )
    print(header)
    for name in args.models:
        t = measure(name, args.batch, args.repeats)
        dim = sum(p.numel() for p in MODELS[name][0]().parameters())
        g, f = t["gradient"], t["forward"]
        print(
            f"{name:<15}{dim:>11,}{1e3 * g:>9.1f}{t['hvp_retained'] / g:>15.2f}"
            f"{t['hvp_streamed'] / g:>15.2f}{t['hvp_curvlinops'] / g:>12.2f}"
            f"{t['grid_point'] / f:>15.2f}{1e3 * f:>8.1f}"
        )
    print(
        "HVP columns: seconds of one Hessian-vector product / one gradient (ours with the graph "
        "retained, ours streamed, curvlinops' HessianLinearOperator); point/forward: one grid "
        "point of loss_surface / one forward."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
