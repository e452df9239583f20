"""Arguments shared by several sub-commands: the names they offer are the library's."""

from __future__ import annotations

import argparse

from landscape.cli import _common


def test_curvature_and_remedy_choices_are_the_library_names():
    from landscape.inconsistency import CURVATURES, REMEDIES

    assert tuple(_common.CURVATURES) == tuple(CURVATURES)
    assert tuple(_common.REMEDIES) == tuple(r for r in REMEDIES if r is not None)


def test_remedy_arguments_carry_their_prefix():
    parser = argparse.ArgumentParser()
    _common.add_remedy_arguments(parser, "inconsistency: ")
    actions = {a.dest: a for a in parser._actions}
    assert {"remedy", "damping", "k"} <= set(actions)
    assert all(actions[d].help.startswith("inconsistency: ") for d in ("remedy", "damping", "k"))
    args = parser.parse_args(["--remedy", "top-k", "--k", "3"])
    assert (args.remedy, args.damping, args.k) == ("top-k", 1e-3, 3)
