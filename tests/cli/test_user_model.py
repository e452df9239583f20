"""A user's own model file + a plain state dict + a data file, scored end to end through the
command line (issue 10 part 5): ``landscape score | curvature | surface weights.pt --model
mymodel.py:make --data mydata.py:domains --loss cross_entropy``; and every bad input gets
one line naming the fix."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from landscape.cli import main

MODEL_FILE = '''
import torch
from torch import nn

VALUE = 3


class Net(nn.Module):
    """A small conv net: [N, 1, 6, 6] -> [N, 3], head named classifier."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten())
        self.classifier = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x):
        return self.classifier(self.features(x))


def make():
    return Net().double()


def broken():
    raise RuntimeError("no GPU here")


def needs(width):
    return Net()


def other():
    """A network the weights do not belong to: the wrong factory."""
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
'''

DATA_FILE = """
import torch


def domains():
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in ("a", "b"):
        X = torch.randn(24, 1, 6, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (24,), generator=g)
        out[name] = [(X[:10], y[:10]), (X[10:], y[10:])]
    return out


def float_targets():
    X = torch.randn(8, 1, 6, 6, dtype=torch.float64)
    return {"a": [(X, torch.rand(8, 3, dtype=torch.float64))]}


def not_a_mapping():
    return [1, 2]
"""


@pytest.fixture
def user(tmp_path, monkeypatch):
    """The user's folder: mymodel.py, mydata.py and weights.pt (a state dict of make()
    with weights other than make()'s own initialisation). Paths are relative to it."""
    (tmp_path / "mymodel.py").write_text(textwrap.dedent(MODEL_FILE))
    (tmp_path / "mydata.py").write_text(textwrap.dedent(DATA_FILE))
    monkeypatch.chdir(tmp_path)
    from landscape.specs import call_spec

    torch.manual_seed(1)
    model = call_spec("mymodel.py:make")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    return tmp_path


def _reference(user):
    """The model with the saved weights, the user's domains and the loss, built directly."""
    from landscape.specs import call_spec

    model = call_spec("mymodel.py:make")
    model.load_state_dict(torch.load(user / "weights.pt", weights_only=True))
    return model.eval(), call_spec("mydata.py:domains"), torch.nn.CrossEntropyLoss()


USER = ["--model", "mymodel.py:make", "--data", "mydata.py:domains", "--loss", "cross_entropy"]
#: the device axis: CUDA runs where one is present and is skipped (visibly) elsewhere
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


def _rtol(device: str) -> float:
    """float64 on CPU agrees to rounding; CUDA's kernels sum in other orders."""
    return 1e-8 if device == "cpu" else 1e-6


def _score(out, *extra):
    argv = ["score", "weights.pt", *USER, "--params", "classifier", "--no-check", "--quiet",
            "--out", str(out), *extra]  # fmt: skip
    assert main(argv) == 0
    from landscape.inconsistency import InconsistencyResult

    return InconsistencyResult.load(out / "score")


@pytest.mark.parametrize("device", DEVICES)
def test_score_of_a_state_dict_equals_the_library_on_the_same_weights(user, device):
    from landscape.inconsistency import inconsistency_score

    result = _score(user / "out", "--device", device)
    model, domains, loss = _reference(user)
    direct = inconsistency_score(
        model, loss, domains, 1e-3, params="classifier", remedy="top-k", k=20, check=False,
        progress=False,
    )  # fmt: skip
    assert list(result.domains) == ["a", "b"]
    np.testing.assert_allclose(result.values, direct.values, rtol=_rtol(device), atol=1e-12)
    for name in ("a", "b"):  # the risks of the saved weights, not make()'s initialisation
        X = torch.cat([b[0] for b in domains[name]])
        y = torch.cat([b[1] for b in domains[name]])
        risk = loss(model(X), y).item()
        assert result.risks[name] == pytest.approx(risk, rel=_rtol(device))
    summary = json.loads((user / "out" / "score_summary.json").read_text())
    assert summary["checkpoint"] == "weights.pt"
    assert summary["device"].split(":")[0] == device  # the analysis ran on the model's device


def test_device_auto_is_cuda_when_present(user):
    _score(user / "auto", "--device", "auto")
    summary = json.loads((user / "auto" / "score_summary.json").read_text())
    assert summary["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_batch_size_gives_the_full_batch_score(user):
    full = _score(user / "full")
    batched = _score(user / "batched", "--batch-size", "7")
    np.testing.assert_allclose(batched.values, full.values, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(batched.eigenvalues, full.eigenvalues, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_curvature_of_a_state_dict_matches_the_dense_reference(user, device):
    from landscape.curvature import GradientVarianceResult, HessianDiagonalResult
    from landscape.curvature import reference as R

    model, domains, loss = _reference(user)
    for out, extra in (("full", []), ("batched", ["--batch-size", "5"])):
        argv = ["curvature", "weights.pt", *USER, "--params", "classifier", "--methods",
                "variance", "diagonal", "--device", device, "--quiet", "--out", out,
                *extra]  # fmt: skip
        assert main(argv) == 0
        summary = json.loads((user / out / "curvature_summary.json").read_text())
        assert summary["device"].split(":")[0] == device
        gv = GradientVarianceResult.load(user / out / "variance")
        hd = HessianDiagonalResult.load(user / out / "diagonal")
        for name, data in domains.items():
            want = R.gradient_variance(model, loss, data, params="classifier").numpy()
            np.testing.assert_allclose(gv.variance[name], want, rtol=_rtol(device), atol=1e-14)
            H = R.dense_hessian(model, loss, data, params="classifier")
            np.testing.assert_allclose(
                hd.diagonal[name], torch.diagonal(H).numpy(), rtol=_rtol(device), atol=1e-14
            )


@pytest.mark.parametrize("device", DEVICES)
def test_surface_of_a_state_dict_is_the_risk_at_its_centre(user, device):
    from landscape.surface import SurfaceResult

    argv = ["surface", "weights.pt", *USER, "--params", "classifier", "--grid", "-0.5", "0.5",
            "3", "--batch-size", "9", "--device", device, "--quiet", "--out", "surf"]  # fmt: skip
    assert main(argv) == 0
    result = SurfaceResult.load(user / "surf" / "surface")
    assert result.settings["device"].split(":")[0] == device
    model, domains, loss = _reference(user)
    assert list(result.losses) == ["a", "b"]
    for name, data in domains.items():
        X = torch.cat([b[0] for b in data])
        y = torch.cat([b[1] for b in data])
        risk = loss(model(X), y).item()
        assert result.losses[name][1, 1] == pytest.approx(risk, rel=_rtol(device))


def test_the_loss_of_integer_labels_is_inferred_and_said(user, capsys):
    argv = ["score", "weights.pt", "--model", "mymodel.py:make", "--data", "mydata.py:domains",
            "--params", "classifier", "--no-check", "--quiet", "--out", "inferred"]  # fmt: skip
    assert main(argv) == 0
    assert "loss: cross_entropy (the targets are integer labels)" in capsys.readouterr().out


# ---- bad input: one line each ----------------------------------------------------------

BAD = {
    "spec syntax": (["--model", "mymodel.py"], "argument --model: 'mymodel.py' is not a SPEC"),
    "file not found": (["--model", "nothere.py:make"], "--model: nothere.py does not exist"),
    "no module": (["--model", "nothere_pkg.mod:make"], "no module named 'nothere_pkg.mod'"),
    "callable missing": (["--model", "mymodel.py:nope"], "mymodel.py has no 'nope'; it defines"),
    "not callable": (["--model", "mymodel.py:VALUE"], "mymodel.py:VALUE is not callable"),
    "takes arguments": (["--model", "mymodel.py:needs"], "must be callable with no arguments"),
    "raises": (["--model", "mymodel.py:broken"], "broken() raised RuntimeError: no GPU here"),
    "wrong factory": (["--model", "mymodel.py:other"], "weights.pt was saved from another model"),
    "model of wrong type": (
        ["--model", "mydata.py:domains"],
        "returned a dict, expected a torch.nn.Module",
    ),
    "data of wrong type": (
        ["--data", "mydata.py:not_a_mapping"],
        "returned a list, expected a mapping {domain name: data}",
    ),
    "unknown loss": (["--loss", "hinge"], "unknown loss 'hinge'; use cross_entropy, bce or mse"),
    "loss not inferable": (
        ["--data", "mydata.py:float_targets", "--loss", None],
        "cannot tell the loss of weights.pt",
    ),
    "split of a state dict": (["--split", "out"], "--split out selects a part of DomainBed"),
    "no model": (["--model", None], "weights.pt holds plain weights (a state dict): give the "),
    "no data": (["--data", None], "give the domains, --data path/to/file.py:callable"),
    "bad batch size": (["--batch-size", "0"], "--batch-size: expected a positive integer"),
}


def _argv(changes):
    """``score weights.pt`` with USER's options changed: ``[option, value]`` pairs, a value
    of None dropping the option."""
    options = dict(zip(USER[::2], USER[1::2], strict=True))
    extra = []
    for option, value in zip(changes[::2], changes[1::2], strict=True):
        if option in options:
            options[option] = value
        else:
            extra += [option, value]
    kept = [x for o, v in options.items() if v is not None for x in (o, v)]
    return ["score", "weights.pt", *kept, *extra, "--quiet", "--out", "bad"]


@pytest.mark.parametrize("changes, message", BAD.values(), ids=list(BAD))
def test_bad_input_gets_one_line(user, capsys, changes, message):
    with pytest.raises(SystemExit) as stop:
        main(_argv(changes))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    assert line.startswith("landscape score: error: ")
    assert message in line, line
    assert not (user / "bad").exists()  # nothing written


def test_weights_of_another_model_get_one_line(user, capsys):
    torch.save({"weight": torch.zeros(2, 2)}, user / "other.pt")
    with pytest.raises(SystemExit) as stop:
        main(["score", "other.pt", *USER, "--quiet", "--out", "bad"])
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "other.pt" in line and "another model" in line


def test_a_user_file_that_fails_to_import_gets_one_line(user, capsys):
    (user / "bad.py").write_text("import torch\nundefined_name\n")
    with pytest.raises(SystemExit):
        main(_argv(["--model", "bad.py:make"]))
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "--model: importing bad.py raised NameError: name 'undefined_name'" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_asked_for_where_there_is_none_gets_one_line(user, capsys):
    with pytest.raises(SystemExit):
        main(_argv(["--device", "cuda"]))
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert "CUDA is not available; use --device cpu" in line
    assert not (user / "bad").exists()
