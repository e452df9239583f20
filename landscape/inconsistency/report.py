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


#: significant digits of every number in the table
DIGITS = 6


def num(x) -> str:
    """One number as the table prints it: ``DIGITS`` significant digits.

    >>> num(0.00523975123), num(-1.5e-7), num(12)
    ('0.00523975', '-1.5e-07', '12')
    """
    return f"{x:.{DIGITS}g}"


def columns(rows: list[list[str]], align: str) -> list[str]:
    """Rows of cells as lines: each column as wide as its widest cell, two spaces apart
    (``align``: ``<`` or ``>`` per column), so that cells never run together.

    >>> columns([["", "a", "b"], ["a", "0.001", "-0.00523975"]], "<>>")
    ['       a            b', 'a  0.001  -0.00523975']
    """
    widths = [max(len(row[c]) for row in rows) for c in range(len(align))]
    return [
        "  ".join(f"{cell:{a}{w}}" for cell, a, w in zip(row, align, widths, strict=True)).rstrip()
        for row in rows
    ]


def table(result) -> str:
    """Settings, per-domain facts, the pairwise matrices, the winning pair per ``ε`` and the
    solver's warnings, as lines of text."""
    names = result.domains
    lines = _settings(result) + [""] + _domains(result)
    lines += _matrix("risk gap R_B - R_A", result.risk_gap, names)
    lines += _matrix("generalized eigenvalue lambda_max(H_B, H_A)", result.eigenvalues, names)
    for e, eps in enumerate(result.epsilon):
        lines += _matrix(f"pairwise value at eps={eps:g}", result.values[e], names)
        if result.check is not None:
            lines += _matrix(
                f"empirical |R_B - R_A(theta*)| where R_A changed by eps={eps:g} along the"
                " maximiser",
                np.asarray(result.check["line_value"])[e],
                names,
            )
    lines += ["", "winning pair and its parts"] + _winners(result) + _footer(result)
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


def _domains(result) -> list[str]:
    rows = [["domain", "N", "risk", "|grad|", "H_A"]]
    for d in result.domains:
        info = result.definiteness.get(d, {})
        lo, hi = info.get("min_eigenvalue", float("nan")), info.get("max_eigenvalue", 0)
        rows.append([
            d, str(result.num_samples.get(d, 0)), num(result.risks[d]),
            num(result.gradient_norms[d]),
            f"{info.get('status', '?')} (min {num(lo)}, max {num(hi)}, {info.get('how', '')})",
        ])  # fmt: skip
    return columns(rows, "<>>><")


def _matrix(title: str, M: np.ndarray, names: list[str]) -> list[str]:
    rows = [["", *names]]
    rows += [[a, *(num(M[i, j]) for j in range(len(names)))] for i, a in enumerate(names)]
    return ["", f"{title} (rows A, columns B)"] + columns(rows, "<" + ">" * len(names))


def _winners(result) -> list[str]:
    check = result.check is not None
    head = ["eps", "pair (A -> B)", "score", "risk gap", "curvature"]
    head += ["line", "search", "empirical"] if check else []
    rows = [[*head, "g_A.theta", "g_B.theta"]]
    idx = {d: i for i, d in enumerate(result.domains)}
    for e, (eps, score, (a, b)) in enumerate(
        zip(result.epsilon, result.scores, result.winning_pairs, strict=True)
    ):
        i, j = idx[a], idx[b]
        row = [num(eps), f"{a} -> {b}", num(score), num(result.risk_gap[i, j])]
        row.append(num(result.curvature_term[e, i, j]))
        if check:
            row.append(num(np.asarray(result.check["line_value"])[e, i, j]))
            row.append(num(np.asarray(result.check["search_value"])[e]))
            row.append(num(np.asarray(result.check["empirical_score"])[e]))
        rows.append(row + [num(result.first_order[e, 0]), num(result.first_order[e, 1])])
    lines = columns(rows, "><" + ">" * (len(rows[0]) - 2))
    for e in range(len(result.epsilon)):
        if result.from_diagonal[e]:
            lines[e + 1] += "  (every A != B value is below eps: score = eps)"
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
