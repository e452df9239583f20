"""README.md: the paths it gives a new user exist after the two commands it gives."""

from __future__ import annotations

import re
from pathlib import Path

from landscape.cli import build_parser
from landscape.runs import JobFolder

ROOT = Path(__file__).resolve().parents[2]


def _demo_out() -> str:
    match = re.search(r"^OUT \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile has no OUT ?= default"
    return match.group(1)


def test_python_example_loads_the_checkpoint_make_demo_writes():
    # issue 8 item 12: the example loaded runs/table2/..., which `make demo` does not write
    readme = (ROOT / "README.md").read_text()
    example = readme[readme.index("```python") :]
    example = example[: example.index("```", 3)]
    args = build_parser().parse_args(["reproduce", "--out", _demo_out()])
    assert "fishr" in args.algorithm
    final = JobFolder(args.out).run.checkpoint_path("fishr", 0, args.steps)
    assert "runs/table2" not in example
    assert f'RunFolder("{JobFolder(args.out).run.root.as_posix()}")' in example
    assert final.as_posix() in example


def test_make_demo_runs_reproduce_into_the_folder_the_readme_names():
    makefile = (ROOT / "Makefile").read_text()
    assert "landscape reproduce --out $(OUT)" in makefile
    readme = (ROOT / "README.md").read_text()
    assert f"`landscape reproduce` ({_demo_out()})" in readme


def readme_section(title: str) -> str:
    """The text of README section ``### title``, up to the next heading."""
    lines = (ROOT / "README.md").read_text().splitlines(keepends=True)
    start = lines.index(f"### {title}\n")
    fenced, end = False, len(lines)
    for i in range(start + 1, len(lines)):
        fenced ^= lines[i].startswith("```")
        if not fenced and lines[i].startswith("#"):  # a heading, not a comment in a block
            end = i
            break
    return "".join(lines[start:end])


def code_blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def readme_commands(section: str) -> list[list[str]]:
    """The ``landscape ...`` lines of a section's bash blocks, as argv (without the program)."""
    import shlex

    lines = [x for block in code_blocks(section, "bash") for x in block.splitlines()]
    return [shlex.split(x)[1:] for x in lines if x.startswith("landscape ")]


def test_score_your_own_model_runs_as_written(tmp_path, monkeypatch):
    """The files and the commands of "Score your own model", verbatim, on tiny data."""
    import torch

    from landscape.cli import main

    section = readme_section("Score your own model")
    files = {b.split(":")[0].removeprefix("# "): b for b in code_blocks(section, "python")}
    assert set(files) == {"mymodel.py", "mydata.py"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    g = torch.Generator().manual_seed(0)
    for name in ("a", "b"):
        X = torch.rand(12, 1, 28, 28, generator=g)
        torch.save((X, torch.randint(0, 10, (12,), generator=g)), tmp_path / "data" / f"{name}.pt")
    from landscape.specs import call_spec

    torch.save(call_spec("mymodel.py:make").state_dict(), tmp_path / "weights.pt")
    commands = readme_commands(section)
    assert [c[0] for c in commands] == ["score", "curvature", "surface"]
    for i, argv in enumerate(commands):
        fast = ["--check-steps", "2"] if argv[0] == "score" else []
        fast += ["--grid", "-1", "1", "3"] if argv[0] == "surface" else []
        assert main([*argv, *fast, "--quiet", "--out", f"out{i}"]) == 0, argv
        written = {"score": "score_summary.json", "curvature": "curvature_summary.json"}
        assert (tmp_path / f"out{i}" / written.get(argv[0], "surface.json")).is_file()


def test_score_a_domainbed_run_runs_as_written(tmp_path, monkeypatch):
    """The commands of "Score a DomainBed run", verbatim, on a RotatedMNIST model.pkl written
    as DomainBed's train.py writes it, with options appended that keep them fast (argparse
    keeps the last value: a few samples of two environments, the head's bias)."""
    import pytest

    from landscape.cli import main
    from landscape.data.mnist import MNISTError, load_mnist
    from tests.cli.test_domainbed_run import write_run

    try:
        load_mnist(split="test", download=False)
    except MNISTError as err:
        pytest.skip(f"MNIST cache not available: {err}")
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path)
    commands = readme_commands(readme_section("Score a DomainBed run"))
    assert [c[0] for c in commands] == ["score", "score", "curvature", "surface"]
    fast = ["--subsample", "8", "--domains", "15", "30", "--params", "classifier.bias"]
    for i, argv in enumerate(commands):
        assert argv[1] == "train_output/model.pkl"
        extra = {"score": ["--check-steps", "1"], "surface": ["--grid", "-1", "1", "3"]}
        argv = [*argv, *fast, *extra.get(argv[0], []), "--quiet", "--out", f"out{i}"]
        assert main(argv) == 0, argv
