"""Text of an :class:`~landscape.inconsistency.result.InconsistencyResult`: the readable table
and the JSON summary of its headline numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CHECK_LEGEND = (
    "line: |R_B - R_A(theta*)| on the maximiser's ray where R_A changed by eps; "
    "search: projected ascent on R_B within |R_A - R_A(theta*)| <= eps (lower "
    "bound of Parascandolo's definition); empirical: the larger of the two and eps"
)


def short_names(names: Sequence[str]) -> str:
    """Up to four names, else the first three and the count."""
    return ", ".join(names) if len(names) <= 4 else f"{', '.join(names[:3])}, ... ({len(names)})"


def table(result) -> str:
    """Settings, per-domain facts, the pairwise matrices, the winning pair per ``ε`` and the
    solver's warnings, as lines of text."""
    width = max(10, *(len(d) + 2 for d in result.domains))
    lines = _settings(result) + [""] + _domains(result, width)
    lines += _matrix("risk gap R_B - R_A", result.risk_gap, result.domains, width)
    lines += _matrix(
        "generalized eigenvalue lambda_max(H_B, H_A)", result.eigenvalues, result.domains, width
    )
    for e, eps in enumerate(result.epsilon):
        lines += _matrix(f"pairwise value at eps={eps:g}", result.values[e], result.domains, width)
        if result.check is not None:
            lines += _matrix(
                f"empirical |R_B - R_A(theta*)| where R_A changed by eps={eps:g} along the"
                " maximiser",
                np.asarray(result.check["line_value"])[e],
                result.domains,
                width,
            )
    lines += ["", "winning pair and its parts"] + _winners(result, width) + _footer(result)
    return "\n".join(lines)


def _settings(result) -> list[str]:
    dim = sum(int(np.prod(s)) if len(s) else 1 for s in result.param_shapes)
    return [
        f"inconsistency score I^eps  method={result.method}  curvature={result.curvature}"
        + (f" ({result.diagonal_source} diagonal)" if result.method == "diagonal" else "")
        + f"  remedy={result.remedy or 'none'}"
        + (f" (damping {result.damping:g})" if result.remedy == "damping" else "")
        + (f" (k={result.k})" if result.remedy == "top-k" else ""),
        f"parameters: {short_names(result.param_names)} (D={dim})  seed={result.seed}  "
        f"time {result.seconds:.2f} s",
    ]


def _domains(result, width: int) -> list[str]:
    lines = [f"{'domain':<{width}}{'N':>8}{'risk':>12}{'|grad|':>12}  H_A"]
    for d in result.domains:
        info = result.definiteness.get(d, {})
        lo, hi = info.get("min_eigenvalue", float("nan")), info.get("max_eigenvalue", 0)
        lines.append(
            f"{d:<{width}}{result.num_samples.get(d, 0):>8}{result.risks[d]:>12.6g}"
            f"{result.gradient_norms[d]:>12.4g}  {info.get('status', '?')} "
            f"(min {lo:.3g}, max {hi:.3g}, {info.get('how', '')})"
        )
    return lines


def _matrix(title: str, M: np.ndarray, names: list[str], width: int) -> list[str]:
    lines = ["", f"{title} (rows A, columns B)"]
    lines.append(" " * width + "".join(f"{d:>{width}}" for d in names))
    for i, a in enumerate(names):
        lines.append(f"{a:<{width}}" + "".join(f"{M[i, j]:>{width}.6g}" for j in range(len(names))))
    return lines


def _winners(result, width: int) -> list[str]:
    head = f"{'eps':>10}  {'pair (A -> B)':<{2 * width}}{'score':>12}{'risk gap':>12}"
    head += f"{'curvature':>12}"
    if result.check is not None:
        head += f"{'line':>12}{'search':>12}{'empirical':>12}"
    lines = [head + f"{'g_A.theta':>12}{'g_B.theta':>12}"]
    idx = {d: i for i, d in enumerate(result.domains)}
    for e, (eps, score, (a, b)) in enumerate(
        zip(result.epsilon, result.scores, result.winning_pairs, strict=True)
    ):
        i, j = idx[a], idx[b]
        row = f"{eps:>10.4g}  {a + ' -> ' + b:<{2 * width}}{score:>12.6g}"
        row += f"{result.risk_gap[i, j]:>12.4g}{result.curvature_term[e, i, j]:>12.4g}"
        if result.check is not None:
            row += f"{np.asarray(result.check['line_value'])[e, i, j]:>12.4g}"
            row += f"{np.asarray(result.check['search_value'])[e]:>12.4g}"
            row += f"{np.asarray(result.check['empirical_score'])[e]:>12.4g}"
        row += f"{result.first_order[e, 0]:>12.3g}{result.first_order[e, 1]:>12.3g}"
        if result.from_diagonal[e]:
            row += "  (every A != B value is below eps: score = eps)"
        lines.append(row)
    return lines


def _footer(result) -> list[str]:
    lines = [CHECK_LEGEND] if result.check is not None else []
    how = (result.check or {}).get("evaluator") or {}
    if how:
        kinds = sorted(set(how.values()))
        lines.append(
            "check's risks: "
            + (kinds[0] if len(kinds) == 1 else "; ".join(f"{d}: {v}" for d, v in how.items()))
        )
    counts = {p[9:]: s["products"] for p, s in result.solver.items() if p.startswith("operator ")}
    if counts:
        lines.append(
            "curvature-vector products: "
            + ", ".join(f"{d} {c}" for d, c in counts.items())
            + f" (total {sum(counts.values())})"
        )
    unconverged = [p for p, s in result.solver.items() if not s.get("converged", True)]
    if unconverged:
        lines.append(f"WARNING: the eigensolver did not converge for {', '.join(unconverged)}")
    return lines


def summary(result) -> dict[str, Any]:
    """The headline numbers as plain JSON values (for the CLI and the README)."""
    idx = {d: i for i, d in enumerate(result.domains)}
    rows = []
    for e, (eps, score, pair) in enumerate(
        zip(result.epsilon, result.scores, result.winning_pairs, strict=True)
    ):
        i, j = idx[pair[0]], idx[pair[1]]
        row = {
            "epsilon": float(eps),
            "score": float(score),
            "pair": list(pair),
            "risk_gap": float(result.risk_gap[i, j]),
            "curvature_term": float(result.curvature_term[e, i, j]),
            "eigenvalue": float(result.eigenvalues[i, j]),
        }
        if result.check is not None:
            row["empirical_line"] = float(np.asarray(result.check["line_value"])[e, i, j])
            row["empirical_search"] = float(np.asarray(result.check["search_value"])[e])
            row["empirical_score"] = float(np.asarray(result.check["empirical_score"])[e])
        rows.append(row)
    return {
        "method": result.method,
        "curvature": result.curvature,
        "remedy": result.remedy,
        "domains": result.domains,
        "risks": result.risks,
        "gradient_norms": result.gradient_norms,
        "scores": rows,
    }
