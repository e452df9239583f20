"""The ``landscape`` parser: no abbreviations, ``--threads`` everywhere, help texts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from landscape.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[2]
# positional arguments each command needs before its options can be parsed
POSITIONALS = {
    "curvature": ["ckpt"],
    "score": ["ckpt"],
    "surface": ["ckpt"],
    "figures": ["run"],
    "collect": ["dir"],
    "sweep": ["--dataset", "Debug28", "--algorithm", "ERM", "--out", "x"],  # required options
}
# files a user of the repository does not have
OUTSIDE = re.compile(r"PAPER\.md|ENV\.md|DESIGN\.md|STYLE\.md|\.\./shared")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _value_options(parser: argparse.ArgumentParser):
    """``(option, value)`` for every long option that takes one value given as ``--opt=v``."""
    for action in parser._actions:
        if action.nargs == 0 or isinstance(action.nargs, int) and action.nargs != 1:
            continue
        value = str(action.choices[0]) if action.choices else "1"
        if action.metavar == "SPEC":  # --model / --data: a SPEC's syntax is checked
            value = "m.py:make"
        elif action.dest == "loss":
            value = "mse"
        for option in action.option_strings:
            if option.startswith("--"):
                yield option, value


def _unique_prefix(option: str, options: list[str]) -> str | None:
    """The shortest prefix of ``option`` that argparse's abbreviation would have expanded."""
    for end in range(3, len(option)):
        prefix = option[:end]
        if prefix not in options and [o for o in options if o.startswith(prefix)] == [option]:
            return prefix
    return None


def test_every_command_is_registered():
    assert sorted(_subparsers()) == sorted(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_abbreviated_options(command, capsys):
    parser = _subparsers()[command]
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    checked = 0
    for option, value in _value_options(parser):
        prefix = _unique_prefix(option, options)
        if prefix is None:
            continue
        head = POSITIONALS.get(command, [])
        parser.parse_args([*head, f"{option}={value}"])  # the full name works
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([*head, f"{prefix}={value}"])
        assert exit_info.value.code == 2, (command, prefix)
        assert "unrecognized arguments" in capsys.readouterr().err
        checked += 1
    assert checked >= 1  # at least --threads


def test_score_data_is_not_read_as_data_dir(capsys):
    # issue 8 item 9: `landscape score W --data X` used to load X as the MNIST cache folder;
    # --data is now a SPEC of its own, whose syntax is checked while parsing
    with pytest.raises(SystemExit) as exit_info:
        main(["score", "W.safetensors", "--data", "X"])
    assert exit_info.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "argument --data: 'X' is not a SPEC" in line and "file.py:callable" in line


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option(command):
    parser = _subparsers()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and action.help.strip(), (command, action.dest)
    text = parser.format_help()
    assert "--threads" in text
    assert not OUTSIDE.search(text), OUTSIDE.search(text).group()


def test_threads_help_states_the_library_cap():
    from landscape.device import MAX_DEFAULT_THREADS

    text = " ".join(_subparsers()["score"].format_help().split())
    assert f"at most {MAX_DEFAULT_THREADS}" in text


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_threads_must_be_a_positive_integer(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "where", "--threads", bad])
    assert exit_info.value.code == 2
    assert "--threads: expected a positive integer" in capsys.readouterr().err


def test_readme_and_docs_refer_to_nothing_outside_the_repository():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        match = OUTSIDE.search(path.read_text())
        assert match is None, f"{path.name} refers to {match.group()}"


def test_surface_grid_help_states_the_library_default():
    from landscape.surface import DEFAULT_GRID

    lo, hi, num = DEFAULT_GRID
    text = " ".join(_subparsers()["surface"].format_help().split())
    assert f"default {lo:g} {hi:g} {num}" in text


def test_examples_in_help_use_the_run_folder_layout():
    from landscape.runs import JobFolder

    final = JobFolder("runs/demo").run.checkpoint_path("fishr", 0, 501).as_posix()
    for command in ("score", "curvature", "surface"):
        assert final in _subparsers()[command].format_help(), command
