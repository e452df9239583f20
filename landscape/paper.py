"""The Fishr paper's published numbers, and our results set beside them.

Table 2 of Rame, Dancette & Cord (ICML 2022): Colored MNIST, IRM protocol, accuracies (%)
at the last step, mean ± std over 10 restarts (docs/method.md section 4).

Its DomainBed results (docs/method.md section 6): test-domain accuracy (%) averaged over the
test domains of each data set, for each model selection method (:data:`PAPER_DOMAINBED`).
"""

from __future__ import annotations

from landscape.names import algorithm_name, mean_spread
from landscape.tables import latex_escape, latex_tabular, markdown_table

# algorithm -> column -> (mean, std)
PAPER_TABLE2: dict[str, dict[str, tuple[float, float]]] = {
    "erm": {"Train acc.": (86.4, 0.2), "Test acc.": (14.0, 0.7), "Grey test acc.": (71.0, 0.7)},
    "irm": {"Train acc.": (71.0, 0.5), "Test acc.": (65.6, 1.8), "Grey test acc.": (66.1, 0.2)},
    "vrex": {"Train acc.": (71.7, 1.5), "Test acc.": (67.2, 1.5), "Grey test acc.": (68.6, 2.2)},
    "fishr": {"Train acc.": (71.0, 0.9), "Test acc.": (69.5, 1.0), "Grey test acc.": (70.2, 1.1)},
}
#: display names of the paper's rows (from :mod:`landscape.names`)
NAMES = {algo: algorithm_name(algo) for algo in PAPER_TABLE2}


def tolerance(paper_std: float) -> float:
    """Allowed gap to the paper's mean: 2 paper standard deviations or 1.5 points."""
    return max(2.0 * paper_std, 1.5)


def within_tolerance(ours: float, paper_mean: float, paper_std: float) -> bool:
    """``|ours − paper_mean| <= max(2·paper_std, 1.5)``, up to float rounding (1e-9).

    The slack keeps a gap of exactly the tolerance on the right side (``86.4 + 1.5`` is
    ``87.9000000000000142`` in binary floating point).
    """
    return abs(ours - paper_mean) <= tolerance(paper_std) + 1e-9


TABLE2_COLUMNS = ("Train acc.", "Test acc.", "Grey test acc.")


def table2_cells(
    table: dict[str, dict[str, list[float]]], restarts: dict[str, int]
) -> tuple[list[str], list[list[str]]]:
    """``(columns, rows)`` of Table 2, ours beside the paper's (see :func:`compare_table2`).

    Raises:
        ValueError: an algorithm's row lacks one of the paper's columns (not a Colored MNIST
            run).
    """
    columns = ["Method", *(f"{c} ours (paper)" for c in TABLE2_COLUMNS), "Restarts"]
    rows = []
    for algo, paper in PAPER_TABLE2.items():
        if algo not in table:
            continue
        missing = [c for c in TABLE2_COLUMNS if c not in table[algo]]
        if missing:
            raise ValueError(
                f"{algo!r} has no {missing[0]!r} column; Table 2 needs a Colored MNIST run "
                f"(columns {', '.join(TABLE2_COLUMNS)}), got {', '.join(table[algo]) or 'none'}"
            )
        cells = []
        for col in TABLE2_COLUMNS:
            mean, std = table[algo][col]
            p_mean, p_std = paper[col]
            ok = "✓" if within_tolerance(mean, p_mean, p_std) else "✗"
            ours = mean_spread(mean, std, restarts.get(algo, 0))
            cells.append(f"{ours} ({p_mean:.1f} ± {p_std:.1f}) {ok}")
        rows.append([NAMES[algo], *cells, str(restarts.get(algo, 0))])
    return columns, rows


def compare_table2(table: dict[str, dict[str, list[float]]], restarts: dict[str, int]) -> str:
    """Markdown table: ours (mean ± std) beside the paper's, with a mark when outside tolerance.

    Args:
        table: ``RunResults.table`` (``{algorithm: {column: [mean, std]}}`` in percent).
        restarts: ``{algorithm: number of restarts}``.

    Each of our cells reads ``ours (paper)``, ours without a spread when the algorithm has
    fewer than two restarts; ``✓`` when ``|ours − paper| <=
    max(2·paper std, 1.5)``, ``✗`` otherwise. Algorithms the paper does not report are
    left out.

    Raises:
        ValueError: an algorithm's row lacks one of the paper's columns (not a Colored MNIST
            run).
    """
    return "\n".join(markdown_table(*table2_cells(table, restarts))) + "\n"


def compare_table2_latex(
    table: dict[str, dict[str, list[float]]], restarts: dict[str, int], caption: str = ""
) -> str:
    """The cells of :func:`compare_table2` as a LaTeX ``table`` (booktabs; needs the packages
    of :data:`landscape.tables.LATEX_PACKAGES`), with ``caption`` when given."""
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(f"\\caption{{{latex_escape(caption)}}}")
    lines += latex_tabular(*table2_cells(table, restarts))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


#: The paper's DomainBed results (docs/method.md section 6): selection method (``"oracle"``:
#: test-domain validation, ``"training"``: training-domain validation) -> algorithm
#: (DomainBed's name) -> data set (DomainBed's name) -> test-domain accuracy (%), averaged
#: over the data set's test domains. Standard errors are not given there.
PAPER_DOMAINBED: dict[str, dict[str, dict[str, float]]] = {
    "oracle": {
        "ERM": {
            "ColoredMNIST": 57.8, "RotatedMNIST": 97.8, "VLCS": 77.6, "PACS": 86.7,
            "OfficeHome": 66.4, "TerraIncognita": 53.0, "DomainNet": 41.3,
        },
        "Fishr": {
            "ColoredMNIST": 68.8, "RotatedMNIST": 97.8, "VLCS": 78.2, "PACS": 86.9,
            "OfficeHome": 68.2, "TerraIncognita": 53.6, "DomainNet": 41.8,
        },
    },
    "training": {
        "ERM": {
            "ColoredMNIST": 51.5, "RotatedMNIST": 98.0, "VLCS": 77.5, "PACS": 85.5,
            "OfficeHome": 66.5, "TerraIncognita": 46.1, "DomainNet": 40.9,
        },
        "Fishr": {
            "ColoredMNIST": 52.0, "RotatedMNIST": 97.8, "VLCS": 77.8, "PACS": 85.5,
            "OfficeHome": 67.8, "TerraIncognita": 47.4, "DomainNet": 41.7,
        },
    },
}  # fmt: skip
#: The paper's ``Avg`` column: the mean over its seven data sets, per selection and algorithm.
PAPER_DOMAINBED_AVG: dict[str, dict[str, float]] = {
    "oracle": {"ERM": 68.7, "Fishr": 70.8},
    "training": {"ERM": 66.6, "Fishr": 67.1},
}
#: The data sets of the paper's DomainBed table, in its column order.
PAPER_DOMAINBED_DATASETS: tuple[str, ...] = tuple(PAPER_DOMAINBED["oracle"]["ERM"])


def paper_domainbed(selection: str, algorithm: str, dataset: str) -> float | None:
    """The paper's DomainBed number (%), ``None`` where the paper gives none.

    ``dataset="Avg"`` asks for the mean over the paper's seven data sets.

    Example:
        >>> paper_domainbed("oracle", "Fishr", "ColoredMNIST")
        68.8
        >>> paper_domainbed("oracle", "IRM", "PACS") is None
        True
    """
    if dataset == "Avg":
        return PAPER_DOMAINBED_AVG.get(selection, {}).get(algorithm)
    return PAPER_DOMAINBED.get(selection, {}).get(algorithm, {}).get(dataset)
