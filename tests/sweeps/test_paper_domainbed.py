"""The paper's DomainBed numbers in landscape.paper: those of docs/method.md section 6."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from landscape.paper import (
    PAPER_DOMAINBED,
    PAPER_DOMAINBED_AVG,
    PAPER_DOMAINBED_DATASETS,
    paper_domainbed,
)

ROOT = Path(__file__).resolve().parents[2]
SELECTION = {"Test-domain": "oracle", "Training-domain": "training"}


def method_doc_table() -> dict[tuple[str, str], list[float]]:
    """``{(selection, algorithm): [7 data sets..., Avg]}`` from docs/method.md section 6."""
    text = (ROOT / "docs" / "method.md").read_text()
    section = text.split("## 6. DomainBed results")[1].split("\n## ")[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| (Test-domain|Training-domain) \| (\w+) \|(.*)\|$", line)
        if m:
            rows[(SELECTION[m.group(1)], m.group(2))] = [float(x) for x in m.group(3).split("|")]
    return rows


def test_numbers_match_the_method_doc_cell_by_cell():
    rows = method_doc_table()
    assert len(rows) == 4
    for (selection, algorithm), cells in rows.items():
        ours = [PAPER_DOMAINBED[selection][algorithm][d] for d in PAPER_DOMAINBED_DATASETS]
        assert ours + [PAPER_DOMAINBED_AVG[selection][algorithm]] == cells


def test_dataset_names_are_domainbeds_in_the_papers_column_order():
    from landscape.data.domainbed.catalog import DATASETS

    assert PAPER_DOMAINBED_DATASETS == (
        "ColoredMNIST", "RotatedMNIST", "VLCS", "PACS", "OfficeHome", "TerraIncognita",
        "DomainNet",
    )  # fmt: skip
    assert set(PAPER_DOMAINBED_DATASETS) <= set(DATASETS)
    for selection in PAPER_DOMAINBED.values():
        for row in selection.values():
            assert tuple(row) == PAPER_DOMAINBED_DATASETS


@pytest.mark.parametrize("selection", ["oracle", "training"])
@pytest.mark.parametrize("algorithm", ["ERM", "Fishr"])
def test_avg_is_the_mean_of_the_seven_up_to_rounding(selection, algorithm):
    mean = sum(PAPER_DOMAINBED[selection][algorithm].values()) / 7
    assert abs(mean - PAPER_DOMAINBED_AVG[selection][algorithm]) <= 0.05 + 1e-9


def test_lookup():
    assert paper_domainbed("training", "ERM", "TerraIncognita") == 46.1
    assert paper_domainbed("oracle", "Fishr", "Avg") == 70.8
    assert paper_domainbed("oracle", "IRM", "PACS") is None
    assert paper_domainbed("training", "ERM", "Debug28") is None
    assert paper_domainbed("leave-one-out", "ERM", "PACS") is None
