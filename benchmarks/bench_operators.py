"""Curvature operator products on the Colored MNIST MLP, ours and curvlinops', side by side.

Prints one table (one run, one thread): the cost per vector, as a ratio to one gradient
(forward + backward of the mean loss), of

* our Hessian-vector product (retained graph: one forward and first backward, reused);
* our block product ``op @ V`` of ``k`` columns (``k = 1, 2, 8, 20``) in vectorised blocks
  of up to 8 columns, and one column at a time (a loop of products), for the Hessian, the
  GGN and the empirical Fisher of the whole network and of the head (``*`` marks what
  ``op @ V`` does by default);
* curvlinops 3's ``HessianLinearOperator``: its matvec, and its ``@`` on a ``[D, k]``
  matrix (``vmap`` over the columns, forward recomputed for every call);
* the two determinism checks: ours (two forwards on 256 samples) and curvlinops'
  (``check_deterministic=True``: two passes over the data with gradients, two products);
* every row also per Hessian-vector product (``/ HVP``: HVP-equivalents per vector, the
  issue's goal <= 0.7 for blocks of k >= 8), and the floor of any exact block product: its
  flops per vector (``torch.utils.flop_counter``) at the gradient's speed per flop.

Data: ``benchmarks/_data.py:load_domains`` (real Colored MNIST when the MNIST cache is
present). Usage:

    python benchmarks/bench_operators.py            # N = 2,000 samples
    python benchmarks/bench_operators.py --quick    # N = 256, few repeats (smoke test)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _data import load_domains  # noqa: E402
from _timing import median_time  # noqa: E402

COLUMNS = (1, 2, 8, 20)


T_HVP: list[float] = []  # our single-vector Hessian-vector product, once measured


def _row(name: str, seconds: float, per: int, t_grad: float) -> list[str]:
    hvp = f"{seconds / per / T_HVP[0]:.2f}" if T_HVP else "-"
    return [name, f"{1e3 * seconds / per:.1f}", f"{seconds / per / t_grad:.2f}", hvp]


def _flop_floor(model, loss_func, data, k: int = 8) -> tuple[float, float]:
    """Flops of one Hessian-vector product and of one vector of a vectorised block of ``k``,
    each relative to one gradient's (``torch.utils.flop_counter``): a block cannot cost less
    per vector than its flops at the gradient's speed."""
    from torch.utils.flop_counter import FlopCounterMode

    import landscape.curvature.operators as ops

    X, y = data[0]

    def flops(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    grad = flops(lambda: loss_func(model(X), y).backward())
    model.zero_grad(set_to_none=True)
    op = ops.curvature_operator(model, loss_func, data)
    op.build()
    saved = ops.BLOCK_COLUMNS, ops.BLOCK_MAX_DIM
    ops.BLOCK_COLUMNS, ops.BLOCK_MAX_DIM = k, op.dim
    try:
        one = flops(lambda: op @ torch.randn(op.dim))
        block = flops(lambda: op @ torch.randn(op.dim, k)) / k
    finally:
        ops.BLOCK_COLUMNS, ops.BLOCK_MAX_DIM = saved
        op.release()
    return one / grad, block / grad


def _ours(model, loss_func, data, t_grad, repeats, columns) -> list[list[str]]:
    """Per-vector cost of our products (retained graph): vectorised blocks of up to
    ``BLOCK_COLUMNS`` columns and one column at a time, for the whole network and the head;
    ``*`` marks what ``op @ V`` does by default (``op.block_columns``)."""
    import landscape.curvature.operators as ops

    rows = []
    for params, what in ((None, "all"), ("classifier", "head")):
        for curvature in ("hessian", "ggn", "ef"):
            op = ops.curvature_operator(model, loss_func, data, params, curvature)
            op.build()
            g = torch.Generator().manual_seed(0)
            default = op.block_columns
            if curvature == "hessian" and params is None:
                v = torch.randn(op.dim, generator=g)
                t = median_time(lambda op=op, v=v: op @ v, repeats)
                T_HVP[:] = [t]
                rows.append(_row("ours: Hessian-vector product", t, 1, t_grad))
            for k in columns:
                V = torch.randn(op.dim, k, generator=g)
                for blocks in (ops.BLOCK_COLUMNS, 1):
                    size = min(k, blocks)
                    saved = ops.BLOCK_COLUMNS, ops.BLOCK_MAX_DIM
                    ops.BLOCK_COLUMNS, ops.BLOCK_MAX_DIM = blocks, op.dim
                    try:
                        t = median_time(lambda op=op, V=V: op @ V, repeats)
                    finally:
                        ops.BLOCK_COLUMNS, ops.BLOCK_MAX_DIM = saved
                    mark = "*" if size == min(k, default) else " "
                    name = f"ours{mark} {curvature} ({what}) @ [D, {k}], blocks of {size}"
                    rows.append(_row(name, t, k, t_grad))
                    if k == 1:
                        break
            op.release()
    return rows


def _curvlinops(model, loss_func, data, t_grad, repeats, columns) -> list[list[str]]:
    from curvlinops import HessianLinearOperator

    params = [p for p in model.parameters() if p.requires_grad]
    H = HessianLinearOperator(model, loss_func, params, data, check_deterministic=False)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(H.shape[1], generator=g)
    t = median_time(lambda: H @ v, repeats)
    rows = [_row("curvlinops: HessianLinearOperator @ v", t, 1, t_grad)]
    for k in columns:
        V = torch.randn(H.shape[1], k, generator=g)
        t = median_time(lambda V=V: H @ V, repeats)
        rows.append(_row(f"curvlinops: HessianLinearOperator @ [D, {k}]", t, k, t_grad))
    return rows


def _checks(model, loss_func, data, t_grad, repeats) -> list[list[str]]:
    from curvlinops import HessianLinearOperator

    from landscape.curvature import check_deterministic

    params = [p for p in model.parameters() if p.requires_grad]
    ours = median_time(lambda: check_deterministic(model, data[0]), repeats)
    theirs = median_time(
        lambda: HessianLinearOperator(model, loss_func, params, data, check_deterministic=True),
        max(1, repeats // 2),
    )
    return [
        _row("ours: determinism check (2 forwards, 256 rows)", ours, 1, t_grad),
        _row("curvlinops: determinism check (check_deterministic=True)", theirs, 1, t_grad),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="samples")
    parser.add_argument("--quick", action="store_true", help="N=256, 2 repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats = 256, 2
    from landscape.device import set_threads

    set_threads(args.threads)  # torch and BLAS pools alike

    from landscape.models import colored_mnist_mlp

    torch.manual_seed(0)
    model = colored_mnist_mlp().eval()
    domains, source = load_domains(args.n, "cpu")
    data = domains["+90%"]
    X, y = data[0]
    loss_func = nn.BCEWithLogitsLoss()
    D = sum(p.numel() for p in model.parameters())
    print(f"Colored MNIST MLP, D = {D:,}, N = {len(X):,} ({source}), float32, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")  # fmt: skip

    def gradient():
        model.zero_grad(set_to_none=True)
        loss_func(model(X), y).backward()
        model.zero_grad(set_to_none=True)

    t_grad = median_time(gradient, args.repeats)
    rows = [_row("one gradient (forward + backward)", t_grad, 1, t_grad)]
    rows += _ours(model, loss_func, data, t_grad, args.repeats, COLUMNS)
    rows += _curvlinops(model, loss_func, data, t_grad, args.repeats, COLUMNS)
    rows += _checks(model, loss_func, data, t_grad, args.repeats)
    header = ["what", "ms per vector", "/ gradient", "/ HVP"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    one, block = _flop_floor(model, loss_func, data)
    print(
        f"\nflops per vector, in gradients: Hessian-vector product {one:.2f}, vectorised block "
        f"of 8 {block:.2f}. A block has the same flops per vector as one product (the k "
        "vectors share no matrix product), so at the gradient's speed per flop it costs at "
        f"least {block:.2f} gradients = {block * t_grad / T_HVP[0]:.2f} HVP-equivalents per "
        "vector (goal <= 0.7 for k >= 8): the measured floor of exact block products here."
    )


if __name__ == "__main__":
    main()
