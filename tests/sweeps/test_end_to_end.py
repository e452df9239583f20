"""A real sweep: Debug28, ERM and Fishr, test environment 0, one trial, two steps, through
the local launcher and `landscape train --dataset`, then `landscape collect`."""

from __future__ import annotations

import argparse

import pytest

from landscape.cli import build_parser, main
from landscape.sweeps.selection import ORACLE, TRAINING, load_records


def _train_takes_dataset() -> bool:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return any("--dataset" in a.option_strings for a in sub.choices["train"]._actions)


pytestmark = pytest.mark.skipif(
    not _train_takes_dataset(), reason="landscape train has no --dataset (DomainBed protocol)"
)


def test_debug28_sweep_then_collect(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--dataset", "Debug28", "--algorithm", "ERM", "Fishr", "--test-envs", "0"]
    argv += ["--trials", "1", "--steps", "2", "--out", str(out), "--jobs", "2", "--threads", "1"]
    assert main([*argv, "--skip-confirmation"]) == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "2 jobs: 2 done, 0 failed, 0 skipped (already done)" in text
    loaded = load_records(out)
    assert len(loaded.runs) == 2 and not loaded.unfinished and not loaded.unreadable
    assert {r["args"]["algorithm"] for r in loaded.records} == {"ERM", "Fishr"}
    assert main([*argv, "--skip-confirmation"]) == 0  # resumable: nothing left to do
    assert "nothing to launch" in capsys.readouterr().out

    assert main(["collect", str(out)]) == 0
    md = capsys.readouterr().out
    assert md == (out / "results.md").read_text() and (out / "results.tex").is_file()
    for method, section in [(TRAINING, "training-domain"), (ORACLE, "test-domain")]:
        block = md.split(f"## Model selection: {section}")[1].split("## Model selection")[0]
        assert "| Algorithm | 0 | 1 | 2 | Avg |" in block  # Debug28's environments
        for algorithm in ("ERM", "Fishr"):
            runs = [r for r in loaded.records if r["args"]["algorithm"] == algorithm]
            # one run per algorithm: the selected record, computed here by hand
            if method is ORACLE:
                chosen = max(runs, key=lambda r: r["step"])
            else:
                chosen = max(runs, key=lambda r: (r["env1_out_acc"] + r["env2_out_acc"]) / 2)
            row = f"| {algorithm} | {100 * chosen['env0_in_acc']:.1f} | X | X | X |"
            assert row in block, (row, block)
