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
