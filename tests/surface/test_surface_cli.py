"""Tests for the `landscape surface` command (landscape.cli.surface) end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.models import MLP
from landscape.surface import (
    SurfaceResult,
    loss_surface,
)
from landscape.surface.directions import (
    Directions,
)


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import build_domains, data_spec

    spec = data_spec("gaussian_classification", n=30, dim=4)
    X = build_domains(spec)["d0"][0][0]
    torch.manual_seed(0)
    model = MLP(X.shape[1], [5], 1).double()
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta), model, spec


def test_cli_surface_writes_the_result_and_resumes(tmp_path, checkpoint, capsys):
    from landscape.cli import main
    from landscape.data import build_domains

    path, model, spec = checkpoint
    out = tmp_path / "out"
    argv = [
        "surface",
        str(path),
        "--grid",
        "-1",
        "1",
        "3",
        "--seed",
        "4",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    res = SurfaceResult.load(out / "surface")
    dirs = Directions.load(out / "directions")
    assert dirs.seed == 4 and res.directions["fingerprint"] == dirs.fingerprint()
    expected = loss_surface(
        model.eval(),
        nn.BCEWithLogitsLoss(),
        build_domains(spec),
        dirs,
        grid=(-1, 1, 3),
        progress=False,
    )
    assert res.domains == ["d0", "d1"]
    for name in res.domains:
        np.testing.assert_array_equal(res.losses[name], expected.losses[name])
    assert len(list((out / "surface_rows").glob("row_*.npz"))) == 3
    # the saved directions share the plane; a changed grid in the same folder is an error
    assert main(argv[:2] + ["--directions", str(out / "directions")] + argv[2:]) == 0
    with pytest.raises(SystemExit):
        main(argv[:3] + ["-1", "1", "5"] + argv[6:])
    assert (
        "other settings (alphas differs); use another checkpoint_dir or delete it; "
        "or pass --restart" in capsys.readouterr().err
    )
    assert main(argv[:3] + ["-1", "1", "5"] + argv[6:] + ["--restart"]) == 0
    # the plane through the checkpoint and two others
    others = []
    for s in (1, 2):
        torch.manual_seed(s)
        from landscape.checkpoint import save_checkpoint

        others.append(
            str(
                save_checkpoint(
                    tmp_path / f"m{s}",
                    MLP(model.spec["input_dim"], [5], 1).double(),
                    {"data": spec},
                )
            )
        )
    assert (
        main(
            [
                "surface",
                str(path),
                "--directions",
                "plane",
                "--checkpoints",
                *others,
                "--out",
                str(tmp_path / "plane"),
                "--quiet",
            ]
        )
        == 0
    )
    plane = SurfaceResult.load(tmp_path / "plane" / "surface")
    assert set(plane.directions["points"]) == {"model", "m1", "m2"}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--domains", "d9"], "unknown domain 'd9'; available: d0, d1"),
        (["--grid", "-1", "1", "0"], "alpha grid has 0 points"),
        (["--directions", "sideways"], "unknown directions 'sideways'; use random, eigen"),
        (["--directions", "plane"], "--directions plane needs --checkpoints"),
    ],
)
def test_cli_bad_inputs(tmp_path, checkpoint, capsys, extra, message):
    from landscape.cli import main

    path, _, _ = checkpoint
    with pytest.raises(SystemExit) as info:
        main(["surface", str(path), "--out", str(tmp_path / "o"), "--quiet", *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
