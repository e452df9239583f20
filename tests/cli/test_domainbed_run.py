"""A DomainBed run's ``model.pkl`` analysed end to end through the command line (issue 10
parts 4-6): the file is written here as DomainBed's ``train.py`` saves it (an ERM algorithm
with DomainBed's MNIST_CNN featurizer and linear head, hparams holding numpy scalars), the
network and the environments are rebuilt from it, and every number equals the library's on
the same network and samples; each bad input is one line and nothing runs from a file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.cli import main

#: the device axis: CUDA runs where one is present and is skipped (visibly) elsewhere
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")),
]


class MNISTCNN(nn.Module):
    """DomainBed's ``networks.MNIST_CNN`` as its definition reads: four 3x3 convolutions
    (64, 128 stride 2, 128, 128 channels, padding 1), each followed by ReLU then
    ``GroupNorm(8, channels)``, a global average pool; 128 features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, padding=1)
        self.conv2 = nn.Conv2d(64, 128, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.conv4 = nn.Conv2d(128, 128, 3, 1, padding=1)
        self.bn0 = nn.GroupNorm(8, 64)
        self.bn1 = nn.GroupNorm(8, 128)
        self.bn2 = nn.GroupNorm(8, 128)
        self.bn3 = nn.GroupNorm(8, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x):
        for conv, norm in zip(
            (self.conv1, self.conv2, self.conv3, self.conv4),
            (self.bn0, self.bn1, self.bn2, self.bn3),
            strict=True,
        ):
            x = norm(F.relu(conv(x)))
        return self.avgpool(x).flatten(1)


class ERM(nn.Module):
    """What DomainBed's ``ERM`` algorithm holds: ``featurizer``, ``classifier`` and
    ``network = Sequential(featurizer, classifier)`` (so its state dict stores every tensor
    twice, as DomainBed's ``model_dict`` does)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.featurizer = MNISTCNN(channels)
        self.classifier = nn.Linear(128, num_classes)
        self.network = nn.Sequential(self.featurizer, self.classifier)

    def forward(self, x):
        return self.network(x)  # DomainBed's predict


HPARAMS = {  # hparams_seed != 0: DomainBed draws floats with numpy, they pickle as numpy
    "data_augmentation": True,
    "resnet18": False,
    "resnet_dropout": 0.0,
    "class_balanced": False,
    "nonlinear_classifier": False,
    "lr": np.float64(0.0012),
    "weight_decay": np.float64(1.5e-6),
    "batch_size": 41,
}


def domainbed_args(dataset: str, **changes) -> dict:
    """``vars(args)`` of DomainBed's train.py for a run on ``dataset``."""
    args = {
        "data_dir": "/nonexistent/domainbed/data", "dataset": dataset, "algorithm": "ERM",
        "task": "domain_generalization", "hparams": None, "hparams_seed": 2, "trial_seed": 1,
        "seed": 3, "steps": None, "checkpoint_freq": None, "test_envs": [0],
        "output_dir": "train_output", "holdout_fraction": 0.2, "uda_holdout_fraction": 0,
        "skip_model_save": False, "save_model_every_checkpoint": False,
    }  # fmt: skip
    return {**args, **changes}


def save_domainbed(path, algorithm, args, input_shape, num_classes, n_envs, hparams=HPARAMS):
    """``torch.save`` of the dict DomainBed's train.py writes (its ``save_checkpoint``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "args": args,
        "model_input_shape": tuple(input_shape),
        "model_num_classes": num_classes,
        "model_num_domains": n_envs - len(args["test_envs"]),
        "model_hparams": hparams,
        "model_dict": algorithm.state_dict(),
    }
    torch.save(saved, path)
    return path


def write_run(folder, dataset: str = "RotatedMNIST", **changes) -> ERM:
    """``folder/train_output/model.pkl`` of an ERM run on DomainBed's MNIST-sized data
    (RotatedMNIST and others: 1 channel, 10 classes, 6 environments; Debug28: 3, 2, 3);
    returns the
    algorithm (weights moved off their initialisation, so a wrong load shows)."""
    channels, classes, n_envs = {"Debug28": (3, 2, 3)}.get(dataset, (1, 10, 6))
    torch.manual_seed(7)
    algorithm = ERM(channels, classes)
    with torch.no_grad():
        algorithm.classifier.weight.mul_(20)  # a head far from uniform predictions
    args = domainbed_args(dataset, **changes)
    save_domainbed(folder / "train_output" / "model.pkl", algorithm, args,
                   (channels, 28, 28), classes, n_envs)  # fmt: skip
    return algorithm


def reference_domains(dataset, split, names, n):
    """The run's environments built directly, cut to their first ``n`` samples, in float64."""
    from landscape.data.domainbed import domainbed_domains

    built = domainbed_domains(
        dataset, test_envs=[0], trial_seed=1, seed=3, split=split, environments=names,
        batch_size=n,
    )  # fmt: skip
    return {
        name: [(X.double(), y) for X, y in [next(iter(loader))]] for name, loader in built.items()
    }


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


pytestmark = pytest.mark.mnist


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", ["in", "out"])
def test_score_of_a_domainbed_run_on_its_split(run_dir, split, device):
    """``--split in`` scores the samples the run trained on, ``--split out`` its held-out
    ones: the score equals the library's on DomainBed's samples and network."""
    from landscape.inconsistency import InconsistencyResult, inconsistency_score

    algorithm = write_run(run_dir)
    argv = ["score", "train_output/model.pkl", "--split", split, "--subsample", "12",
            "--domains", "15", "30", "--params", "classifier.bias", "--no-check", "--quiet",
            "--device", device, "--out", "out"]  # fmt: skip
    assert main(argv) == 0
    result = InconsistencyResult.load(run_dir / "out" / "score")
    summary = json.loads((run_dir / "out" / "score_summary.json").read_text())
    assert summary["device"].split(":")[0] == device
    model = algorithm.double().eval()
    domains = reference_domains("RotatedMNIST", split, ["15", "30"], n=12)
    loss = nn.CrossEntropyLoss()
    direct = inconsistency_score(
        model, loss, domains, 1e-3, params="classifier.bias", remedy="top-k", k=9, check=False,
        progress=False,
    )  # fmt: skip
    assert list(result.domains) == ["15", "30"]
    for name, data in domains.items():
        X, y = data[0]
        risk = loss(model(X), y).item()
        assert result.risks[name] == pytest.approx(risk, rel=1e-5)  # the model is float32
    np.testing.assert_allclose(result.values, direct.values, rtol=1e-3, atol=1e-7)


def test_curvature_of_a_domainbed_run_matches_the_dense_reference(run_dir):
    """DomainBed's Debug28 (three environments of 16 samples, MNIST_CNN on 3 channels):
    the gradient variances and Hessian diagonals of the head on the in split, every sample."""
    from landscape.curvature import GradientVarianceResult, HessianDiagonalResult
    from landscape.curvature import reference as R

    algorithm = write_run(run_dir, "Debug28")
    argv = ["curvature", "train_output/model.pkl", "--params", "classifier", "--methods",
            "variance", "diagonal", "--batch-size", "5", "--quiet", "--out", "out"]  # fmt: skip
    assert main(argv) == 0
    gv = GradientVarianceResult.load(run_dir / "out" / "variance")
    hd = HessianDiagonalResult.load(run_dir / "out" / "diagonal")
    model, loss = algorithm.double().eval(), nn.CrossEntropyLoss()
    domains = reference_domains("Debug28", "in", ["1", "2"], 16)
    assert list(gv.variance) == ["1", "2"]  # the training environments (test_envs [0])
    for name, data in domains.items():
        assert len(data[0][1]) == 16 - int(16 * 0.2)
        want = R.gradient_variance(model, loss, data, params="classifier").numpy()
        np.testing.assert_allclose(gv.variance[name], want, rtol=1e-4, atol=1e-9)
        H = R.dense_hessian(model, loss, data, params="classifier")
        np.testing.assert_allclose(hd.diagonal[name], torch.diagonal(H), rtol=1e-4, atol=1e-9)


def test_surface_of_a_domainbed_run_is_the_risk_at_its_centre(run_dir):
    from landscape.surface import SurfaceResult

    algorithm = write_run(run_dir, "Debug28")
    argv = ["surface", "train_output/model.pkl", "--split", "out", "--params", "classifier",
            "--grid", "-0.5", "0.5", "3", "--quiet", "--out", "out"]  # fmt: skip
    assert main(argv) == 0
    result = SurfaceResult.load(run_dir / "out" / "surface")
    assert list(result.losses) == ["1", "2", "0"]  # training, then test environments
    model, loss = algorithm.double().eval(), nn.CrossEntropyLoss()
    for name, [(X, y)] in reference_domains("Debug28", "out", ["1", "2", "0"], 16).items():
        assert len(y) == int(16 * 0.2)
        assert result.losses[name][1, 1] == pytest.approx(loss(model(X), y).item(), rel=1e-5)


# ---- bad input: one line each, nothing executed from a file ----------------------------


class Hostile:
    """Unpickling it would create a file: proof that code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--quiet", "--out", "bad"])
    assert stop.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    return line


def test_a_hostile_pickle_is_refused_and_never_run(run_dir, capsys):
    marker = run_dir / "ran"
    (run_dir / "mymodel.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Linear(2, 2)\n"
    )
    (run_dir / "mydata.py").write_text("def domains():\n    return {}\n")
    user = ["--model", "mymodel.py:make", "--data", "mydata.py:domains"]
    for name, extra in (("model.pkl", []), ("weights.pt", user)):
        torch.save({"model_dict": {}, "model_hparams": Hostile(marker), "args": {}}, name)
        line = _one_error_line(capsys, ["score", name, *extra])
        assert f"{name} was not loaded" in line and "would run code" in line, line
        assert not marker.exists()
    assert not (run_dir / "bad").exists()


def test_unknown_algorithm_data_set_and_environment_get_one_line(run_dir, capsys):
    write_run(run_dir, algorithm="ARM")
    line = _one_error_line(capsys, ["score", "train_output/model.pkl"])
    assert "DomainBed algorithm 'ARM' is not supported" in line
    write_run(run_dir)
    line = _one_error_line(capsys, ["score", "train_output/model.pkl", "--domains", "15", "90"])
    assert line.endswith("unknown domain '90'; available: 0, 15, 30, 45, 60, 75")
    write_run(run_dir, dataset="SVIRO")
    line = _one_error_line(capsys, ["score", "train_output/model.pkl"])
    assert "unknown DomainBed data set 'SVIRO'" in line


def test_missing_data_folder_says_the_layout_expected(run_dir, capsys):
    """A PACS run (ResNet-18 featurizer) whose images are not here: one line naming the
    folder layout DomainBed's download script writes."""
    from landscape.models.domainbed import DomainBedNetwork

    hparams = {**HPARAMS, "resnet18": True}
    net = DomainBedNetwork((3, 224, 224), 7, hparams)
    algorithm = nn.Module()
    algorithm.featurizer, algorithm.classifier = net.featurizer, net.classifier
    algorithm.network = nn.Sequential(net.featurizer, net.classifier)
    args = domainbed_args("PACS", data_dir=str(run_dir / "gone"))
    save_domainbed(run_dir / "model.pkl", algorithm, args, (3, 224, 224), 7, 4, hparams)
    for where in ([], ["--data-dir", str(run_dir / "here")]):
        folder = run_dir / ("here" if where else "gone")
        line = _one_error_line(capsys, ["score", "model.pkl", *where])
        assert f"PACS not found under {folder}: expected {folder}/PACS/" in line
        assert "{art_painting,cartoon,photo,sketch}/<class>/<image>" in line


def test_a_domainbed_run_saved_as_pt_needs_no_model(run_dir):
    """A DomainBed dict under a state-dict suffix (``.pt``) is still read as a DomainBed run
    (no ``--model`` asked for): the same risks as the ``.pkl``."""
    import shutil

    from landscape.inconsistency import InconsistencyResult

    write_run(run_dir)
    shutil.copy(run_dir / "train_output" / "model.pkl", run_dir / "model.pt")
    risks = {}
    for i, name in enumerate(("train_output/model.pkl", "model.pt")):
        argv = ["score", name, "--subsample", "8", "--domains", "15", "30", "--params",
                "classifier.bias", "--no-check", "--quiet", "--out", f"out{i}"]  # fmt: skip
        assert main(argv) == 0
        risks[name] = InconsistencyResult.load(run_dir / f"out{i}" / "score").risks
    assert risks["model.pt"] == risks["train_output/model.pkl"]
