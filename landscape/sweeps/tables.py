"""DomainBed's results tables of a sweep, in Markdown and LaTeX, with the paper's numbers.

Facts from facebookresearch/DomainBed (``domainbed/scripts/collect_results.py``), followed
here (our own code):

* one table per data set and selection method: rows the algorithms, columns the test
  environments by name, then ``Avg``. A cell holds the selected test accuracies ``a`` of
  the trials (:mod:`landscape.sweeps.selection`) as ``mean ± SE``:

  .. math::  \\text{mean} = 100\\,\\bar a, \\qquad
             \\text{SE} = 100\\,\\operatorname{std}(a / \\sqrt n)
             = 100 \\sqrt{\\tfrac1n \\textstyle\\sum_k (a_k - \\bar a)^2} \\,/\\, \\sqrt n

  (NumPy's ``std``, ``ddof=0``); ``Avg`` is the mean of the row's cell means, ``X`` when a
  cell has no run;
* one *averages* table per selection method: rows the algorithms, columns the data sets,
  then ``Avg``. A cell first averages, in each trial, the selected accuracies of the test
  environments that trial has, then gives ``mean ± SE`` over the trials; ``Avg`` is the mean
  of the row's cell means, ``X`` when a data set is missing;
* algorithms in DomainBed's order (ours: ERM, IRM, VREx, Fishr, then the others sorted),
  data sets in DomainBed's order (then unknown ones sorted), environments by DomainBed's
  names (``env0, env1, ...`` for a data set we do not know).

Ours adds: where the paper gives a number (its averages over test domains,
:data:`landscape.paper.PAPER_DOMAINBED`), it follows ours in parentheses, ``57.2 ± 0.4
(57.8)``, in the averages table and in each data set's ``Avg`` column (the paper's ``Avg``
over data sets only when ours covers the same seven). A cell of one trial shows its mean
alone (one value has no spread; DomainBed prints ``± 0.0``), and a note names averages cells
whose trials lack test environments (DomainBed averages what is there).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from landscape.data.domainbed.catalog import DATASETS
from landscape.names import mean_spread
from landscape.paper import PAPER_DOMAINBED_DATASETS, paper_domainbed
from landscape.sweeps.jobs import ALGORITHMS
from landscape.sweeps.selection import (
    SELECTION_METHODS,
    SELECTIONS,
    GroupKey,
    Loaded,
    Record,
    RunAcc,
    SelectionMethod,
    load_records,
    select,
)
from landscape.tables import LATEX_PACKAGES, latex_escape, latex_tabular, markdown_table

#: What a missing cell shows (DomainBed's).
MISSING = "X"


@dataclass(frozen=True)
class Cell:
    """One table cell: our mean and standard error (%), over ``n`` values; the paper's number."""

    mean: float | None = None
    err: float | None = None
    n: int = 0
    paper: float | None = None

    def text(self) -> str:
        """``"57.2 ± 0.4 (57.8)"``, ``"57.2"`` (one value, or an average), ``"X"`` (no run)."""
        if self.mean is None:
            out = MISSING
        elif self.err is None:
            out = f"{self.mean:.1f}"
        else:
            out = mean_spread(self.mean, self.err, self.n)
        if self.paper is not None:
            out += f" ({self.paper:.1f})"
        return out


def mean_se(values: Iterable[float], paper: float | None = None) -> Cell:
    """DomainBed's ``format_mean``: ``100·mean(a)`` and ``100·std(a/√n)`` (``ddof=0``).

    Example:
        >>> c = mean_se([0.5, 0.7])
        >>> round(c.mean, 9), round(c.err, 9), c.text()
        (60.0, 7.071067812, '60.0 ± 7.1')
    """
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        return Cell(paper=paper)
    return Cell(100 * float(a.mean()), 100 * float(np.std(a / np.sqrt(a.size))), a.size, paper)


def average_cell(cells: Sequence[Cell], paper: float | None = None) -> Cell:
    """The ``Avg`` cell: the mean of the cells' means, missing when one of them is."""
    if not cells or any(c.mean is None for c in cells):
        return Cell(paper=paper)
    return Cell(sum(c.mean for c in cells) / len(cells), None, len(cells), paper)


@dataclass
class Table:
    """A titled table: header ``columns`` and ``rows`` of ``(label, cells)``, then notes."""

    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    notes: list[str] = field(default_factory=list)


def ordered_datasets(names: Iterable[str]) -> list[str]:
    """DomainBed's data sets in its order, then unknown ones sorted."""
    names = set(names)
    return [d for d in DATASETS if d in names] + sorted(names - set(DATASETS))


def ordered_algorithms(names: Iterable[str]) -> list[str]:
    """:data:`~landscape.sweeps.jobs.ALGORITHMS` in order, then the others sorted."""
    names = set(names)
    return [a for a in ALGORITHMS if a in names] + sorted(names - set(ALGORITHMS))


def environment_names(dataset: str, records: Sequence[Record]) -> list[str]:
    """DomainBed's environment names of ``dataset``; ``env0, env1, ...`` for one we do not
    know (as many as the records' ``env{i}_out_acc`` keys)."""
    if dataset in DATASETS:
        return list(DATASETS[dataset].environments)
    n = 0
    for r in records:
        if r["args"]["dataset"] == dataset:
            while f"env{n}_out_acc" in r:
                n += 1
    return [f"env{i}" for i in range(n)]


def dataset_table(
    selected: dict[GroupKey, RunAcc],
    dataset: str,
    algorithms: Sequence[str],
    environments: Sequence[str],
    method: SelectionMethod,
) -> Table:
    """One data set's table: algorithms × test environments (mean ± SE over trials) + Avg."""
    accs: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (_, d, a, t), acc in selected.items():
        if d == dataset:
            accs[(a, t)].append(acc.test_acc)
    rows = []
    for algorithm in algorithms:
        cells = [mean_se(accs.get((algorithm, t), [])) for t in range(len(environments))]
        avg = average_cell(cells, paper_domainbed(method.key, algorithm, dataset))
        rows.append((algorithm, [*cells, avg]))
    return Table(f"Dataset: {dataset}", ["Algorithm", *environments, "Avg"], rows)


def averages_table(
    selected: dict[GroupKey, RunAcc],
    datasets: Sequence[str],
    algorithms: Sequence[str],
    n_envs: dict[str, int],
    method: SelectionMethod,
) -> Table:
    """Algorithms × data sets: per trial the mean over test environments, then mean ± SE."""
    by_trial: dict[tuple[str, str], dict[object, list[float]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for (trial, d, a, _), acc in selected.items():
        by_trial[(a, d)][trial].append(acc.test_acc)
    same_datasets = set(datasets) == set(PAPER_DOMAINBED_DATASETS)
    rows, notes = [], []
    for algorithm in algorithms:
        cells = []
        for dataset in datasets:
            trials = by_trial.get((algorithm, dataset), {})
            averages = [float(np.mean(v)) for v in trials.values()]
            cells.append(mean_se(averages, paper_domainbed(method.key, algorithm, dataset)))
            partial = sorted(t for t, v in trials.items() if len(v) < n_envs[dataset])
            if partial:
                notes.append(
                    f"{algorithm} on {dataset}: trial(s) {', '.join(map(str, partial))} average "
                    f"fewer than its {n_envs[dataset]} test environments (runs missing)"
                )
        paper_avg = paper_domainbed(method.key, algorithm, "Avg") if same_datasets else None
        rows.append((algorithm, [*cells, average_cell(cells, paper_avg)]))
    return Table("Averages", ["Algorithm", *datasets, "Avg"], rows, notes)


@dataclass
class Report:
    """What ``landscape collect`` writes: header lines, then per selection method its tables."""

    header: list[str]
    sections: list[tuple[SelectionMethod, list[Table]]]


def build_report(loaded: Loaded, methods: Sequence[SelectionMethod], source: str) -> Report:
    """Every table of :mod:`this module <landscape.sweeps.tables>` for ``methods``."""
    records = loaded.records
    datasets = ordered_datasets(r["args"]["dataset"] for r in records)
    algorithms = ordered_algorithms(r["args"]["algorithm"] for r in records)
    envs = {d: environment_names(d, records) for d in datasets}
    header = [
        f"{len(records)} records from {len(loaded.runs)} finished runs under {source}"
        + (f"; unfinished runs skipped: {len(loaded.unfinished)}" if loaded.unfinished else "")
        + (f"; unreadable runs skipped: {len(loaded.unreadable)}" if loaded.unreadable else "")
        + ".",
        "Cells: test-domain accuracy (%) of the selected model, mean ± standard error over "
        "trial seeds (one trial: the mean alone); X: no finished run; (n): the Fishr paper's "
        "number (averages over test domains).",
    ]
    sections = []
    for method in methods:
        selected = select(records, method)
        tables = [dataset_table(selected, d, algorithms, envs[d], method) for d in datasets]
        n_envs = {d: len(e) for d, e in envs.items()}
        tables.append(averages_table(selected, datasets, algorithms, n_envs, method))
        sections.append((method, tables))
    return Report(header, sections)


def _cells(table: Table) -> list[list[str]]:
    return [[label, *(c.text() for c in cells)] for label, cells in table.rows]


def to_markdown(report: Report) -> str:
    """The report in Markdown: one ``##`` section per selection method, ``###`` per table."""
    lines = ["# DomainBed results", "", *[f"{h}\n" for h in report.header]]
    for method, tables in report.sections:
        lines += [f"## Model selection: {method.name}", ""]
        for table in tables:
            lines += [f"### {table.title}", ""]
            lines += markdown_table(table.columns, _cells(table))
            lines.append("")
            lines += [f"Note: {n}.\n" for n in table.notes]
    return "\n".join(lines).rstrip("\n") + "\n"


def _latex_table(table: Table) -> list[str]:
    lines = [f"\\subsubsection{{{latex_escape(table.title)}}}", "", r"\begin{center}"]
    lines += latex_tabular(table.columns, _cells(table))
    lines += [r"\end{center}", ""]
    lines += [f"Note: {latex_escape(n)}.\n" for n in table.notes]
    return lines


def to_latex(report: Report) -> str:
    """The report as a LaTeX document (booktabs, adjustbox), laid out as DomainBed's."""
    lines = [r"\documentclass{article}", *LATEX_PACKAGES]
    lines += [r"\begin{document}", r"\section{Full DomainBed results}", ""]
    lines += [f"{latex_escape(h)}\n" for h in report.header]
    for method, tables in report.sections:
        lines += [f"\\subsection{{Model selection: {latex_escape(method.name)}}}", ""]
        for table in tables:
            lines += _latex_table(table)
    lines.append(r"\end{document}")
    return "\n".join(lines) + "\n"


def selection_methods(selection: str = "all") -> list[SelectionMethod]:
    """The methods ``--selection`` names (``all``: training-domain, then oracle)."""
    if selection == "all":
        return list(SELECTION_METHODS.values())
    if selection not in SELECTION_METHODS:
        raise ValueError(f"unknown selection {selection!r}; choose from {', '.join(SELECTIONS)}")
    return [SELECTION_METHODS[selection]]


@dataclass
class Collected:
    """What :func:`collect` read and wrote."""

    loaded: Loaded
    report: Report
    markdown: str
    latex: str
    paths: tuple[Path, Path]


def collect(root: str | os.PathLike, selection: str = "all", write: bool = True) -> Collected:
    """Read every finished run under ``root``, select models, write ``results.md`` / ``.tex``.

    Args:
        root: a sweep folder (or any folder holding run folders, DomainBed's included).
        selection: ``"training"``, ``"oracle"`` or ``"all"``.
        write: write ``root/results.md`` and ``root/results.tex`` (atomically).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError: no finished run under ``root``, or an unknown selection.
    """
    from landscape.io import atomic_write

    methods = selection_methods(selection)
    loaded = load_records(root)
    if not loaded.records:
        raise ValueError(
            f"no finished run under {root} (a folder with results.jsonl and done); "
            f"{len(loaded.unfinished)} unfinished; launch or finish the sweep first"
        )
    report = build_report(loaded, methods, str(root))
    markdown, latex = to_markdown(report), to_latex(report)
    paths = (Path(root) / "results.md", Path(root) / "results.tex")
    if write:
        for path, text in zip(paths, (markdown, latex), strict=True):
            atomic_write(path, lambda f, text=text: f.write(text), binary=False)
    return Collected(loaded, report, markdown, latex, paths)
