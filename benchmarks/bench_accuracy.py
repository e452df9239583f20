"""Accuracy of the float32 eigensolvers on a trained checkpoint, against float64 references.

Prints, for one training domain of a checkpoint written by ``landscape train``:

1. top-5 Hessian eigenvalues of the head (``params="classifier"``): our Lanczos in float32
   at ``tol`` 1e-4 and 1e-6 against the eigenvalues of the dense float64 Hessian
   (``landscape.curvature.reference``): largest error relative to λ_max, products, and
   whether the solver said it converged;
2. the same for the whole network, against SciPy ``eigsh`` in float64 (tol 1e-10) on a
   float64 copy of the model and data;
3. with ``--topk``: the whole-network matrix-free I^ε with ``remedy="top-k"`` (k = 20), its
   generalized eigenvalues λ_max(H_B, H_A | top-k) against a float64 reference (``eigsh``
   top-k of H_A at tol 1e-12, then the projected k x k problem).

A number the solver reports as converged must be within its ``tol`` of the reference.

Usage::

    python benchmarks/bench_accuracy.py CHECKPOINT                    # 2,000 images
    python benchmarks/bench_accuracy.py CHECKPOINT --n 5000 --topk
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg
import scipy.sparse.linalg as spla
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from landscape import inconsistency_score, top_eigenpairs  # noqa: E402
from landscape.curvature import curvature_operator  # noqa: E402
from landscape.curvature import reference as ref  # noqa: E402
from landscape.device import set_threads  # noqa: E402
from landscape.runs import load_for_analysis  # noqa: E402


def _float64(model, domains):
    data = {d: [(X.double(), y.double()) for X, y in b] for d, b in domains.items()}
    return copy.deepcopy(model).double(), data


def _top5(model, loss, domain, params, method, tol):
    start = time.perf_counter()
    res = top_eigenpairs(model, loss, domain, k=5, params=params, method=method, tol=tol)
    (name,) = domain
    values = np.sort(np.asarray(res.largest_eigenvalues[name]))[::-1]
    return values, res.converged[name], res.num_products[name], time.perf_counter() - start


def _report(label, values, exact, converged, products, seconds):
    error = np.max(np.abs(values - exact)) / exact[0]
    print(f"  {label:34s} rel. error {error:8.1e}  converged {converged!s:5s}  "
          f"{products:4d} products  {seconds:6.1f} s")  # fmt: skip


def eigenvalues(model, loss, domain):
    model64, domain64 = _float64(model, domain)
    (name,) = domain
    H = ref.dense_hessian(model64, loss, domain64[name], params="classifier")
    exact = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1][:5]
    print(f"head, top-5 (float64 dense): {np.array2string(exact, precision=6)}")
    for tol in (1e-4, 1e-6):
        values, converged, products, seconds = _top5(model, loss, domain, "classifier",
                                                     "lanczos", tol)  # fmt: skip
        _report(f"float32 Lanczos, tol={tol:g}", values, exact, converged, products, seconds)
    values64, _, products, seconds = _top5(model64, loss, domain64, None, "eigsh", 1e-10)
    print(f"whole network, top-5 (float64 eigsh, {products} products, {seconds:.0f} s): "
          f"{np.array2string(values64, precision=6)}")  # fmt: skip
    for method, tol in (("lanczos", 1e-4), ("lanczos", 1e-6), ("eigsh", 1e-6)):
        values, converged, products, seconds = _top5(model, loss, domain, None, method, tol)
        _report(f"float32 {method}, tol={tol:g}", values, values64, converged, products, seconds)


def _scipy(op):
    def matvec(x):
        return op.matvec(torch.from_numpy(np.ascontiguousarray(x).ravel())).numpy()

    return spla.LinearOperator(op.shape, matvec=matvec, dtype=np.float64)


def topk_reference(model, loss, domains, k):
    """λ_max(H_B, H_A | top-k of H_A) for every ordered pair, in float64."""
    model64, domains64 = _float64(model, domains)
    ops = {d: curvature_operator(model64, loss, domains64[d], None, "hessian") for d in domains}
    lam = {}
    for a in domains:
        vals, V = spla.eigsh(_scipy(ops[a]), k=k, which="LA", tol=1e-12)
        for b in domains:
            if b != a:
                HBV = ops[b].matmat(torch.from_numpy(V)).numpy()
                lam[a, b] = scipy.linalg.eigh(V.T @ HBV, np.diag(vals), eigvals_only=True)[-1]
    return lam


def topk(model, loss, domains, k):
    start = time.perf_counter()
    res = inconsistency_score(model, loss, domains, 0.01, method="matrix-free",
                              remedy="top-k", k=k, check=False, progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    names = list(domains)
    reference = topk_reference(model, loss, domains, k)
    print(f"whole network I^eps, top-{k}, matrix-free float32 ({seconds:.0f} s):")
    for (a, b), exact in reference.items():
        ours = res.eigenvalues[names.index(a), names.index(b)]
        print(f"  {a} -> {b}: lambda_max {ours:.7f}, float64 reference {exact:.7f}, "
              f"rel. error {abs(ours - exact) / exact:.1e}")  # fmt: skip
    for d in names:
        info = res.solver.get(f"operator {d}", {})
        worst = max(info.get("lanczos_residuals", [float("nan")]))
        converged = info.get("lanczos_converged")
        print(f"  H_{d}: {info.get('products')} products, top-{k} Lanczos converged "
              f"{converged}, largest residual / lambda_max {worst:.1e}")  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a checkpoint written by landscape train")
    parser.add_argument("--n", type=int, default=2000, help="images per domain (2,000)")
    parser.add_argument("--domain", default="+90%", help="domain of the eigenvalues")
    parser.add_argument("--topk", action="store_true", help="also the top-k I^eps check")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    model, _, domains, loss = load_for_analysis(args.checkpoint, device="cpu", subsample=args.n)
    print(f"checkpoint {args.checkpoint}, {args.n} images per domain, {args.threads} thread(s)")
    eigenvalues(model, loss, {args.domain: domains[args.domain]})
    if args.topk:
        topk(model, loss, domains, args.k)


if __name__ == "__main__":
    main()
