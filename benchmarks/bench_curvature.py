"""Curvature hot paths on the Colored MNIST MLP, side by side.

Prints four tables (one run):

1. product costs: one gradient, our Hessian-vector product (retained graph, one batch), a
   hand-written retained-graph double backward, a curvlinops operator (recomputes the
   forward), and our matrix-free loop over 4 batches; ratios to the gradient (goal <= 3);
2. top-1 / top-5 Hessian eigenvalues of the float32 model: products, time and max error
   (relative to lambda_1, against SciPy eigsh on a float64 copy of model and data, so float32
   errors show) of our Lanczos (and whether it reports convergence), SciPy eigsh on our
   operator, and a PyHessian-style deflated power iteration (loose tolerance 1e-3, and tight
   1e-6 to reach the same accuracy);
3. Hutchinson trace: estimate and standard error vs products, and the exact trace from the
   BackPACK diagonal;
4. each diagonal method's time relative to one gradient (the gradient variance by its
   default path, the nn.Linear factorisation of landscape.persample, and by BackPACK).

Data: the real Colored MNIST +90% domain when the MNIST cache is present, else random inputs
of the same shape with random 0/1 labels. Usage:

    python benchmarks/bench_curvature.py            # N = 5,000 samples per domain
    python benchmarks/bench_curvature.py --quick    # small and fast, for CI / smoke tests
    python benchmarks/bench_curvature.py --checkpoint runs/demo/run/erm/restart_0/final.safetensors
                                                    # a trained model (graded spectrum)

An untrained network's spectrum is nearly flat at the top (eigensolvers converge slowly);
a trained one is graded like the spectra users analyse: quote both.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import median_time  # noqa: E402  (benchmarks/_timing.py)


def _data(n: int, seed: int):
    try:
        from landscape.data import colored_mnist

        domains = colored_mnist()
        X, y = domains["+90%"][0] if isinstance(domains["+90%"], list) else domains["+90%"]
        return X[:n].float(), y[:n].float().reshape(-1, 1), "Colored MNIST +90%"
    except Exception as err:  # no MNIST cache (or loader not available): random inputs
        g = torch.Generator().manual_seed(seed)
        X = torch.rand(n, 2, 14, 14, generator=g)
        y = (torch.rand(n, 1, generator=g) < 0.5).float()
        return X, y, f"random inputs ({type(err).__name__}: no MNIST data)"


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def power_iteration(matvec, dim, top_n, tol, max_iter=100, seed=0):
    """PyHessian's deflated power iteration: relative change of the eigenvalue < tol."""
    g = torch.Generator().manual_seed(seed)
    values, vectors, products = [], [], 0
    for _ in range(top_n):
        v = torch.randn(dim, generator=g)
        v /= v.norm()
        value = None
        for _ in range(max_iter):
            for u in vectors:
                v = v - (v @ u) * u
            v /= v.norm()
            Hv = matvec(v)
            products += 1
            new = float(v @ Hv)
            v = Hv / Hv.norm()
            if value is not None and abs(value - new) / (abs(value) + 1e-6) < tol:
                value = new
                break
            value = new
        values.append(value)
        vectors.append(v)
    return np.array(values), products


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="samples per domain")
    parser.add_argument("--quick", action="store_true", help="N=256, few repeats")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probes", type=int, default=100, help="Hutchinson probes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--checkpoint", default=None, help="weights of a trained Colored MNIST MLP (any format "
        "landscape.checkpoint.load_checkpoint reads); default: the seeded untrained network"
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.n, args.repeats, args.probes = 256, 2, 20
    if args.threads:
        from landscape.device import set_threads

        set_threads(args.threads)  # torch and BLAS pools alike

    from landscape.models import colored_mnist_mlp

    torch.manual_seed(args.seed)
    model = colored_mnist_mlp().eval()
    if args.checkpoint:
        from landscape.checkpoint import load_checkpoint

        model = load_checkpoint(args.checkpoint, model=colored_mnist_mlp)[0].float().eval()
    X, y, source = _data(args.n, args.seed)
    loss_func = nn.BCEWithLogitsLoss()
    params = list(model.parameters())
    D = sum(p.numel() for p in params)
    weights = args.checkpoint or f"untrained, seed {args.seed}"
    print(f"Colored MNIST MLP ({weights}), D = {D:,} parameters, N = {len(X):,} ({source}), "
          "float32, ")  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    domains = {"+90%": [(X, y)]}

    t_grad, op = _product_costs(model, loss_func, X, y, args.repeats)
    _eigenvalue_table(op, model, loss_func, X, y, D)
    _trace_table(model, loss_func, domains, args.probes, args.seed)
    _diagonal_table(model, loss_func, domains, max(1, args.repeats // 2), t_grad)
    op.release()


def _product_costs(model, loss_func, X, y, repeats):
    """Section 1: seconds per product against one gradient; returns ``(t_grad, operator)``."""
    from curvlinops import HessianLinearOperator

    from landscape.curvature import curvature_operator

    params = list(model.parameters())
    D = sum(p.numel() for p in params)
    v = torch.randn(D, generator=torch.Generator().manual_seed(1))
    domains = {"+90%": [(X, y)]}

    # 1. product costs -------------------------------------------------------------------
    def gradient():
        model.zero_grad(set_to_none=True)
        loss_func(model(X), y).backward()
        model.zero_grad(set_to_none=True)

    t_grad = median_time(gradient, repeats)
    op = curvature_operator(model, loss_func, domains["+90%"])

    def build():  # graphs are built lazily (first product); build() forces it
        fresh = curvature_operator(model, loss_func, domains["+90%"])
        fresh.build()
        fresh.release()

    t_build = median_time(build, 1)
    t_ours = median_time(lambda: op @ v, repeats)

    leaves = [p.detach().requires_grad_(True) for p in params]
    out = torch.func.functional_call(
        model, {n: t for (n, _), t in zip(model.named_parameters(), leaves, strict=True)}, (X,)
    )
    grads = torch.autograd.grad(loss_func(out, y), leaves, create_graph=True)
    vs = list(torch.split(v, [p.numel() for p in params]))
    vs = [a.view_as(p) for a, p in zip(vs, params, strict=True)]

    def double_backward():
        torch.autograd.grad(grads, leaves, grad_outputs=vs, retain_graph=True)

    t_retained = median_time(double_backward, repeats)
    H_cl = HessianLinearOperator(model, loss_func, params, [(X, y)], check_deterministic=False)
    t_curvlinops = median_time(lambda: H_cl @ v, repeats)
    size = -(-len(X) // 4)
    batches = [(X[i : i + size], y[i : i + size]) for i in range(0, len(X), size)]
    op_loop = curvature_operator(model, loss_func, batches, retain_graph=False)
    t_loop = median_time(lambda: op_loop @ v, repeats)
    op_ggn = curvature_operator(model, loss_func, [(X, y)], curvature="ggn")
    t_ggn = median_time(lambda: op_ggn @ v, repeats)
    op_ggn.release()
    rows = [
        [label, f"{t:.4f}", f"{t / t_grad:.2f}"]
        for label, t in [
            ("gradient (forward + backward)", t_grad),
            ("operator construction (forward + backward, create_graph)", t_build),
            ("HVP, ours (retained graph, 1 batch)", t_ours),
            ("HVP, hand-written retained double backward", t_retained),
            ("HVP, curvlinops HessianLinearOperator", t_curvlinops),
            ("HVP, ours matrix-free over 4 batches", t_loop),
            ("GGN-vector product, ours (retained)", t_ggn),
        ]
    ]
    _table("1. Product cost (median seconds)", ["operation", "seconds", "/ gradient"], rows)

    return t_grad, op


def _eigenvalue_table(op, model, loss_func, X, y, D):
    """Section 2: top eigenvalues by Lanczos, eigsh and power iteration."""
    # 2. eigenvalues -------------------------------------------------------------------
    truth = _float64_reference(model, loss_func, X, y, D)
    rows = []
    for k in (1, 5):
        runs = []
        for label, fn in [
            ("ours: Lanczos (tol 1e-4)", lambda k=k: _ours(op, D, k, 1e-4)),
            ("ours: Lanczos (tol 1e-5)", lambda k=k: _ours(op, D, k, 1e-5)),
            ("SciPy eigsh on our operator (tol 1e-4)", lambda k=k: (_eigsh(op, D, k, 1e-4), None)),
            ("power iteration (PyHessian, tol 1e-3)", lambda k=k: (_power(op, D, k, 1e-3), None)),
            ("power iteration (tol 1e-6, for equal accuracy)",
             lambda k=k: (_power(op, D, k, 1e-6), None)),
        ]:  # fmt: skip
            before = op.num_products
            start = time.perf_counter()
            values, converged = fn()
            seconds = time.perf_counter() - start
            products = op.num_products - before
            err = np.max(np.abs(values - truth[:k]) / np.abs(truth[0]))
            runs.append((label, products, seconds, err, converged))
        base = next(r[1] for r in runs if r[0].startswith("power iteration (PyHessian"))
        for label, products, seconds, err, converged in runs:
            flag = "-" if converged is None else ("yes" if converged else "no")
            rows.append(
                [f"top-{k}", label, str(products), f"{seconds:.2f}", f"{err:.1e}", flag,
                 f"{base / products:.1f}x"]
            )  # fmt: skip
    _table(
        "2. Top Hessian eigenvalues of the float32 model (error: max |lambda_i - ref_i| / "
        "ref_1 against SciPy eigsh on a float64 copy, tol 1e-12)",
        ["", "method", "products", "seconds", "rel. error", "converged",
         "fewer products vs PyHessian"],
        rows,
    )  # fmt: skip
    print(f"   top-5 eigenvalues (float64): {np.array2string(truth, precision=6)}")
    print(
        "   power iteration converges to the largest |eigenvalue|: an error near 1 means it "
        "returned negative eigenvalues (the Hessian is indefinite) instead of the top-5"
    )


def _trace_table(model, loss_func, domains, probes, seed):
    """Section 3: Hutchinson's trace against the exact one."""
    from landscape import curvature as C

    # 3. Hutchinson trace ----------------------------------------------------------------
    start = time.perf_counter()
    tr = C.hessian_trace(model, loss_func, domains, num_probes=probes, seed=seed)
    t_hutch = time.perf_counter() - start
    start = time.perf_counter()
    exact = C.hessian_trace(model, loss_func, domains, method="exact")
    t_exact = time.perf_counter() - start
    samples = tr.samples["+90%"]
    true = exact.trace["+90%"]
    rows = []
    for m in sorted({10, 20, 50, 100, 200, len(samples)}):
        if m > len(samples) or m < 2:
            continue
        s = samples[:m]
        se = s.std(ddof=1) / np.sqrt(m)
        rows.append([str(m), f"{s.mean():.5g}", f"{se:.3g}", f"{abs(s.mean() - true) / se:.2f}"])
    _table(
        f"3. Hutchinson trace vs products (exact trace from the BackPACK diagonal: {true:.5g}, "
        f"{t_exact:.2f} s; {len(samples)} products took {t_hutch:.2f} s)",
        ["products", "estimate", "standard error", "|error| / SE"],
        rows,
    )


def _diagonal_table(model, loss_func, domains, repeats, t_grad):
    """Section 4: the diagonal methods' cost."""
    from landscape import curvature as C

    # 4. diagonals -----------------------------------------------------------------------
    rows = []

    def variance(params=None, **kw):
        return C.gradient_variance(model, loss_func, domains, params, **kw)

    def diagonal(params=None, **kw):
        return C.hessian_diagonal(model, loss_func, domains, params, **kw)

    for label, fn in [
        (f"gradient variance (default: {variance().settings['method']})", variance),
        ("gradient variance (BackPACK Variance)", lambda: variance(method="backpack")),
        ("exact Hessian diagonal (DiagHessian)", diagonal),
        ("GGN diagonal (DiagGGNExact)", lambda: diagonal(method="ggn")),
        ("MC Fisher diagonal (DiagGGNMC, 1 sample)", lambda: diagonal(method="fisher_mc")),
        ("Hutchinson diagonal (10 probes)", lambda: diagonal(method="hutchinson", num_probes=10)),
        ("head only: gradient variance", lambda: variance("classifier")),
        ("head only: exact Hessian diagonal", lambda: diagonal("classifier")),
    ]:
        t = median_time(fn, repeats)
        rows.append([label, f"{t:.3f}", f"{t / t_grad:.1f}"])
    header = ["method", "seconds", "/ gradient"]
    _table("4. Diagonal methods (median seconds)", header, rows)


def _ours(op, D, k, tol):
    from landscape.curvature import lanczos

    v0 = torch.randn(D, generator=torch.Generator().manual_seed(0))
    out = lanczos(op.matvec, v0, k=k, tol=tol)
    return out["largest"][0], out["converged"]


def _float64_reference(model, loss_func, X, y, D):
    """Top-5 Hessian eigenvalues of a float64 copy of the model and data (SciPy eigsh)."""
    import copy

    from landscape.curvature import curvature_operator

    model64 = copy.deepcopy(model).double()
    op64 = curvature_operator(model64, loss_func, [(X.double(), y.double())])
    values = _eigsh(op64, D, 5, 1e-12)
    op64.release()
    return values


def _eigsh(op, D, k, tol):
    from scipy.sparse.linalg import eigsh

    v0 = torch.randn(D, generator=torch.Generator().manual_seed(0)).double().numpy()
    values = eigsh(op.to_scipy(), k=k, which="LA", v0=v0, tol=tol, return_eigenvectors=False)
    return np.sort(values)[::-1]


def _power(op, D, k, tol):
    values, _ = power_iteration(op.matvec, D, k, tol)
    return np.sort(values)[::-1]


if __name__ == "__main__":
    main()
