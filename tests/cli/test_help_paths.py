"""Every checkpoint path a help text names is one the project writes."""

from __future__ import annotations

import argparse
import re

from landscape.cli import build_parser

# a path a user may copy (with a folder); bare file names (``model.safetensors``) name what a
# run folder holds, not a file to open
PATH = re.compile(r"[\w.$-]*/[\w./$-]+\.safetensors")


def _help_texts():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, cmd in sub.choices.items():
        yield name, cmd.format_help()
        yield name, cmd.description or ""


def test_help_examples_name_checkpoints_the_default_job_writes():
    from landscape.pipeline import reproduce_config
    from landscape.runs import JobFolder

    job = JobFolder("runs/demo")  # make demo's OUT
    steps = reproduce_config().steps
    expected = job.run.checkpoint_path("fishr", 0, steps).as_posix()
    found = {(name, path) for name, text in _help_texts() for path in PATH.findall(text)}
    assert found, "no help names a checkpoint"
    for name, path in found:
        assert "final.safetensors" not in path, name
        assert path == expected, (name, path)
