"""Tests of landscape.paper: the published Table 2 and the ✓/✗ comparison at its tolerance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from landscape.paper import (
    NAMES,
    PAPER_TABLE2,
    compare_table2,
    compare_table2_latex,
    tolerance,
    within_tolerance,
)

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["Train acc.", "Test acc.", "Grey test acc."]


def paper_copy(**overrides) -> dict:
    """Our table equal to the paper's means (std 0.3), with ``{algo: {column: mean}}`` changes."""
    table = {a: {c: [m, 0.3] for c, (m, _) in cols.items()} for a, cols in PAPER_TABLE2.items()}
    for algo, cols in overrides.items():
        for col, mean in cols.items():
            table[algo][col] = [mean, 0.3]
    return table


def rows(markdown: str) -> dict[str, list[str]]:
    """``{method name: [cell, ...]}`` of the Markdown table (header and rule dropped)."""
    lines = [line for line in markdown.strip().splitlines()][2:]
    out = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def marks(markdown: str) -> dict[str, list[str]]:
    return {name: [c[-1] for c in cells[:-1]] for name, cells in rows(markdown).items()}


def test_paper_numbers_match_the_method_doc():
    """PAPER_TABLE2 is the table of docs/method.md (section 4), cell by cell."""
    path = ROOT / "docs" / "method.md"
    parsed = {}
    for line in path.read_text().splitlines():
        m = re.match(r"\| (ERM|IRM|V-REx|Fishr) \|(.*)\|$", line)
        if m:
            cells = re.findall(r"([\d.]+) ± ([\d.]+)", m.group(2))
            parsed[m.group(1)] = [(float(a), float(b)) for a, b in cells]
    assert len(parsed) == 4
    for algo, cols in PAPER_TABLE2.items():
        assert [cols[c] for c in COLUMNS] == parsed[NAMES[algo]]


@pytest.mark.parametrize(
    "std, expected", [(0.2, 1.5), (0.7, 1.5), (0.75, 1.5), (0.9, 1.8), (2.2, 4.4)]
)
def test_tolerance_is_two_std_or_one_and_a_half(std, expected):
    assert tolerance(std) == pytest.approx(expected)


def test_identical_table_is_all_ticks():
    text = compare_table2(paper_copy(), {a: 10 for a in PAPER_TABLE2})
    assert marks(text) == {NAMES[a]: ["✓"] * 3 for a in PAPER_TABLE2}
    # every cell: ours ± std (paper ± std)
    assert rows(text)["ERM"][0] == "86.4 ± 0.3 (86.4 ± 0.2) ✓"
    assert rows(text)["Fishr"][-1] == "10"


@pytest.mark.parametrize(
    "algo, column, delta, expected",
    [
        # ERM train: std 0.2, tolerance max(0.4, 1.5) = 1.5 (the 1.5-point floor)
        ("erm", "Train acc.", 1.5, "✓"),
        ("erm", "Train acc.", -1.5, "✓"),
        ("erm", "Train acc.", 1.51, "✗"),
        ("erm", "Train acc.", -1.51, "✗"),
        # IRM test: std 1.8, tolerance 3.6 (two stds)
        ("irm", "Test acc.", 3.6, "✓"),
        ("irm", "Test acc.", -3.6, "✓"),
        ("irm", "Test acc.", 3.61, "✗"),
        ("irm", "Test acc.", -3.61, "✗"),
        # V-REx grey: std 2.2, tolerance 4.4; 1.6 would fail a 1.5 floor but is inside
        ("vrex", "Grey test acc.", 4.4, "✓"),
        ("vrex", "Grey test acc.", 4.41, "✗"),
        # Fishr test: std 1.0, tolerance 2.0
        ("fishr", "Test acc.", -2.0, "✓"),
        ("fishr", "Test acc.", -2.01, "✗"),
    ],
)
def test_marks_switch_exactly_at_the_tolerance(algo, column, delta, expected):
    mean = PAPER_TABLE2[algo][column][0] + delta
    text = compare_table2(paper_copy(**{algo: {column: mean}}), {})
    got = marks(text)
    col = COLUMNS.index(column)
    assert got[NAMES[algo]][col] == expected
    # every other cell is untouched
    for other, cells in got.items():
        for j, mark in enumerate(cells):
            if (other, j) != (NAMES[algo], col):
                assert mark == "✓"
    assert within_tolerance(mean, *PAPER_TABLE2[algo][column]) == (expected == "✓")


def test_algorithms_absent_or_unknown_to_the_paper_are_skipped():
    table = paper_copy()
    ours = {"fishr": table["fishr"], "erm": table["erm"], "fishr_all": table["fishr"]}
    text = compare_table2(ours, {"erm": 3, "fishr": 2, "fishr_all": 1})
    got = rows(text)
    assert list(got) == ["ERM", "Fishr"]  # paper order, no IRM / V-REx, no fishr_all
    assert got["ERM"][-1] == "3" and got["Fishr"][-1] == "2"
    header = text.splitlines()[0]
    assert header.count("|") == 6 and "Test acc. ours (paper)" in header


def test_restarts_default_to_zero_and_empty_table_has_only_header():
    text = compare_table2({"erm": paper_copy()["erm"]}, {})
    assert rows(text)["ERM"][-1] == "0"
    assert len(compare_table2({}, {}).strip().splitlines()) == 2


def test_table_without_the_paper_columns_is_a_clear_error():
    synthetic = {"erm": {"Train acc.": [80.0, 1.0], "d2 acc.": [50.0, 2.0]}}
    with pytest.raises(ValueError, match=r"'erm' has no 'Test acc.' column.*Colored MNIST"):
        compare_table2(synthetic, {"erm": 1})


def test_single_restart_prints_no_spread():
    """One restart has no spread: the cell shows our mean alone, never ``± 0.0``."""
    table = paper_copy()
    text = compare_table2(table, {a: 1 for a in PAPER_TABLE2})
    assert "± 0.0 (" not in text
    assert rows(text)["ERM"][0] == "86.4 (86.4 ± 0.2) ✓"
    two = compare_table2(table, {a: 2 for a in PAPER_TABLE2})
    assert rows(two)["ERM"][0] == "86.4 ± 0.3 (86.4 ± 0.2) ✓"


def test_names_are_the_shared_display_names():
    from landscape.names import ALGORITHM_NAMES
    from landscape.plot.style import algorithm_name

    for algo in PAPER_TABLE2:
        assert NAMES[algo] == ALGORITHM_NAMES[algo] == algorithm_name(algo)


def test_latex_table_holds_the_markdown_cells():
    ours = paper_copy(erm={"Test acc.": 20.0})
    markdown = rows(compare_table2(ours, {"erm": 3, "fishr": 2}))
    latex = compare_table2_latex(ours, {"erm": 3, "fishr": 2}, caption="Table 2 (ours)")
    body = [line for line in latex.splitlines() if line.endswith(r" \\")][1:]  # after the header
    assert len(body) == len(markdown) == len(PAPER_TABLE2)
    for line in body:
        cells = [c.strip() for c in line.removesuffix(r" \\").split(" & ")]
        expected = markdown[cells[0]]
        assert len(cells) == len(expected) + 1
        for cell, text in zip(cells[1:], expected, strict=True):
            assert cell == text.replace("±", r"$\pm$").replace("✓", r"\checkmark{}").replace(
                "✗", r"$\times$"
            )
    assert r"\caption{Table 2 (ours)}" in latex and latex.count(r"\toprule") == 1
