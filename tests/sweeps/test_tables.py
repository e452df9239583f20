"""DomainBed's tables: mean ± SE by hand, Markdown / LaTeX layout, X, the paper's numbers,
and `landscape collect` on a folder laid out as DomainBed's sweep output."""

from __future__ import annotations

import math

import pytest

from landscape.cli import main
from landscape.paper import PAPER_DOMAINBED_DATASETS
from landscape.sweeps.selection import ORACLE, TRAINING, RunAcc
from landscape.sweeps.tables import Cell, averages_table, collect, latex_escape, mean_se
from tests.sweeps.helpers import run_records, write_run

# ColoredMNIST ERM: selected test accuracy per test env, trials 0, 1, 2
ERM = {0: [0.70, 0.72, 0.74], 1: [0.60, 0.66, 0.63], 2: [0.10, 0.13, 0.16]}


def hand_mean_se(values):
    """mean and standard error (%), as DomainBed: sqrt(mean of squared deviations) / sqrt(n)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return 100 * mean, 100 * std / math.sqrt(n)


def one_step(dataset, algorithm, test_env, trial, acc, n_envs):
    """A run of one record whose test env's in split is ``acc`` (both methods select it)."""
    accs = {e: (0.9, 0.9) for e in range(n_envs)}
    accs[test_env] = (acc, acc + 0.01)
    return run_records(dataset, algorithm, test_env, 0, trial, [(0, accs)])


def sweep_folder(root):
    """ColoredMNIST: ERM 3 trials × 3 envs, Fishr trial 0 envs 0, 1; an unknown data set
    MyData (2 envs) with ERM and CORAL; one unfinished run; runs at two depths."""
    for env, accs in ERM.items():
        for trial, acc in enumerate(accs):
            write_run(root, one_step("ColoredMNIST", "ERM", env, trial, acc, 3))
    write_run(root / "more", one_step("ColoredMNIST", "Fishr", 0, 0, 0.80, 3))
    write_run(root / "more", one_step("ColoredMNIST", "Fishr", 1, 0, 0.50, 3))
    write_run(root, one_step("ColoredMNIST", "Fishr", 2, 0, 0.99, 3), done=False)
    write_run(root, one_step("MyData", "ERM", 0, 0, 0.50, 2))
    write_run(root, one_step("MyData", "ERM", 1, 0, 0.70, 2))
    write_run(root, one_step("MyData", "CORAL", 0, 0, 0.40, 2))


def parse_markdown(text):
    """``{(section, table title): (header cells, {row label: cells})}``."""
    tables, section, title = {}, None, None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:]
        elif line.startswith("### "):
            title = line[4:]
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if (section, title) not in tables:
                tables[(section, title)] = (cells, {})
            else:
                tables[(section, title)][1][cells[0]] = cells[1:]
    return tables


TRAIN_SECTION = "Model selection: training-domain validation set"
ORACLE_SECTION = "Model selection: test-domain validation set (oracle)"


def test_mean_se_is_domainbeds_format_mean_by_hand():
    for values in ERM.values():
        cell = mean_se(values)
        mean, se = hand_mean_se(values)
        assert cell.mean == pytest.approx(mean, abs=1e-12) and cell.err == pytest.approx(se)
        assert cell.n == 3
    assert mean_se([0.70, 0.72, 0.74]).text() == "72.0 ± 0.9"  # SE = 0.9428
    assert mean_se([0.6]).text() == "60.0"  # one value: no spread
    assert mean_se([]).text() == "X"
    assert mean_se([], paper=57.8).text() == "X (57.8)"
    assert Cell(49.333, None, 3, 51.5).text() == "49.3 (51.5)"


def test_dataset_and_averages_tables_in_markdown(tmp_path):
    sweep_folder(tmp_path)
    result = collect(tmp_path)
    tables = parse_markdown(result.markdown)
    header, rows = tables[(TRAIN_SECTION, "Dataset: ColoredMNIST")]
    assert header == ["Algorithm", "+90%", "+80%", "-90%", "Avg"]
    assert list(rows) == ["ERM", "Fishr", "CORAL"]  # ours in order, then the others
    assert rows["ERM"][:3] == ["72.0 ± 0.9", "63.0 ± 1.4", "13.0 ± 1.4"]
    avg = (72.0 + 63.0 + 13.0) / 3
    assert rows["ERM"][3] == f"{avg:.1f} (51.5)"  # the paper's training-domain ERM
    assert rows["Fishr"] == ["80.0", "50.0", "X", "X (52.0)"]  # the unfinished run is skipped
    assert rows["CORAL"] == ["X", "X", "X", "X"]
    header, rows = tables[(TRAIN_SECTION, "Dataset: MyData")]
    assert header == ["Algorithm", "env0", "env1", "Avg"]  # unknown data set: env{i}
    assert rows["ERM"] == ["50.0", "70.0", "60.0"] and rows["CORAL"] == ["40.0", "X", "X"]
    # averages: per trial the mean over test envs, then mean ± SE over trials
    header, rows = tables[(TRAIN_SECTION, "Averages")]
    assert header == ["Algorithm", "ColoredMNIST", "MyData", "Avg"]
    mean, se = hand_mean_se([sum(ERM[e][k] for e in range(3)) / 3 for k in range(3)])
    assert rows["ERM"][0] == f"{mean:.1f} ± {se:.1f} (51.5)"
    assert rows["ERM"][1:] == ["60.0", f"{(mean + 60.0) / 2:.1f}"]  # no paper Avg: 2 data sets
    assert rows["Fishr"] == ["65.0 (52.0)", "X", "X"]
    assert "Fishr on ColoredMNIST: trial(s) 0 average fewer than its 3" in result.markdown
    # the oracle section carries the paper's test-domain numbers
    _, rows = tables[(ORACLE_SECTION, "Dataset: ColoredMNIST")]
    assert rows["ERM"][3] == f"{avg:.1f} (57.8)" and rows["Fishr"][3] == "X (68.8)"
    assert "14 records from 14 finished runs" in result.markdown
    assert "unfinished runs skipped: 1." in result.markdown


def test_latex_layout(tmp_path):
    sweep_folder(tmp_path)
    tex = collect(tmp_path).latex
    assert tex.startswith("\\documentclass{article}") and tex.rstrip().endswith("\\end{document}")
    assert "\\subsection{Model selection: training-domain validation set}" in tex
    assert "\\subsubsection{Dataset: ColoredMNIST}" in tex
    assert (
        "\\textbf{Algorithm} & \\textbf{+90\\%} & \\textbf{+80\\%} & \\textbf{-90\\%} & "
        "\\textbf{Avg} \\\\" in tex
    )
    assert "\\begin{tabular}{lcccc}" in tex and "\\begin{tabular}{lccc}" in tex
    assert "ERM & 72.0 $\\pm$ 0.9 & 63.0 $\\pm$ 1.4 & 13.0 $\\pm$ 1.4 & 49.3 (51.5) \\\\" in tex
    assert "Fishr & 80.0 & 50.0 & X & X (52.0) \\\\" in tex
    assert tex.count("\\toprule") == tex.count("\\bottomrule") == 6  # 3 tables × 2 methods
    assert "±" not in tex


def test_latex_escape():
    assert latex_escape("a_b & 5% #1 {x} $") == "a\\_b \\& 5\\% \\#1 \\{x\\} \\$"


def test_paper_average_only_over_the_papers_seven_datasets():
    selected = {}
    for k, dataset in enumerate(PAPER_DOMAINBED_DATASETS):
        selected[(0, dataset, "ERM", 0)] = RunAcc(0.5, 0.5 + k / 100)
    n_envs = dict.fromkeys(PAPER_DOMAINBED_DATASETS, 1)
    table = averages_table(selected, list(PAPER_DOMAINBED_DATASETS), ["ERM"], n_envs, TRAINING)
    assert table.columns[1:] == [*PAPER_DOMAINBED_DATASETS, "Avg"]
    cells = [c.text() for c in table.rows[0][1]]
    assert cells[0] == "50.0 (51.5)" and cells[-1] == "53.0 (66.6)"
    table = averages_table(selected, list(PAPER_DOMAINBED_DATASETS), ["ERM"], n_envs, ORACLE)
    assert table.rows[0][1][-1].text() == "53.0 (68.7)"
    six = list(PAPER_DOMAINBED_DATASETS[:6])
    table = averages_table(selected, six, ["ERM"], n_envs, TRAINING)
    assert table.rows[0][1][-1].paper is None


def test_collect_command_writes_both_files_and_notes_unfinished(tmp_path, capsys):
    sweep_folder(tmp_path)
    assert main(["collect", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out == (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.tex").read_text().startswith("\\documentclass")
    assert "landscape collect: note: skipped 1 unfinished run without a done file" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    assert main(["collect", str(tmp_path), "--latex", "--selection", "oracle"]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("\\documentclass") and "oracle" in out
    assert "training-domain validation" not in out
    assert "training-domain" not in (tmp_path / "results.md").read_text().split("\n## ")[1]


def test_collect_of_a_folder_without_finished_runs_is_one_line(tmp_path, capsys):
    write_run(tmp_path, one_step("ColoredMNIST", "ERM", 0, 0, 0.5, 3), done=False)
    with pytest.raises(SystemExit) as info:
        main(["collect", str(tmp_path)])
    assert info.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert "no finished run under" in line and "1 unfinished" in line
    with pytest.raises(SystemExit):
        main(["collect", str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err
