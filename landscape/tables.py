"""Tables as text: one header row and rows of cells, rendered as Markdown or LaTeX.

Every table the project writes (Table 2 beside the paper, DomainBed's results of a sweep)
is built as ``columns`` and ``rows`` of strings and rendered here, so both formats hold
the same cells.
"""

from __future__ import annotations

from collections.abc import Sequence

_LATEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"}
_LATEX_SPECIAL.update({"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\^{}"})
#: Unicode marks of our cells and their LaTeX spelling (after escaping).
_LATEX_SYMBOLS = {"±": r"$\pm$", "✓": r"\checkmark{}", "✗": r"$\times$", "→": r"$\to$"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, ``±`` as ``$\\pm$`` (and ✓ ✗ →).

    Example:
        >>> latex_escape("+90% a_b 1.0 ± 0.2")
        '+90\\\\% a\\\\_b 1.0 $\\\\pm$ 0.2'
    """
    out = "".join(_LATEX_SPECIAL.get(c, c) for c in text)
    for symbol, latex in _LATEX_SYMBOLS.items():
        out = out.replace(symbol, latex)
    return out


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table (a header, its rule, one line per row)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def latex_tabular(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a booktabs ``tabular`` (first column left-aligned, the others centred),
    wrapped in ``\\adjustbox{max width=\\textwidth}`` so that a wide table fits the page."""
    lines = [r"\adjustbox{max width=\textwidth}{%"]
    lines += [r"\begin{tabular}{l" + "c" * (len(columns) - 1) + "}", r"\toprule"]
    lines.append(" & ".join(f"\\textbf{{{latex_escape(c)}}}" for c in columns) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    return lines


#: The packages :func:`latex_tabular` needs.
LATEX_PACKAGES = (r"\usepackage{booktabs}", r"\usepackage{adjustbox}", r"\usepackage{amssymb}")

__all__ = ["LATEX_PACKAGES", "latex_escape", "latex_tabular", "markdown_table"]
