"""DomainBed checkpoints load into the network DomainBed's algorithm predicts with (issue 10
part 3).

Each test builds, here, an independent reference of DomainBed's published networks
(``domainbed/networks.py``: MNIST_CNN, the MLP, the ResNet featurizer with torchvision's
names, the linear / nonlinear Classifier), holds them in a module with the attributes of the
algorithm (``featurizer``, ``classifier`` and ``network = Sequential(featurizer,
classifier)``, so its state dict stores every tensor twice as DomainBed's does), and
``torch.save``-s the dict of ``domainbed/scripts/train.py`` with numpy scalars in its
hparams. ``load_checkpoint`` must give the reference's logits.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoint import load_checkpoint
from landscape.models import build_model
from landscape.models.domainbed import DomainBedNetwork
from landscape.models.domainbed_checkpoint import PREDICTORS
from landscape.params import select_params
from tests.test_weights import Hostile


# ---- independent references of DomainBed's networks --------------------------------------
class RefMNISTCNN(nn.Module):
    """DomainBed's MNIST_CNN: four 3×3 convs (64, 128/2, 128, 128), each conv -> ReLU ->
    GroupNorm(8), named conv1..conv4 / bn0..bn3, then the spatial mean: [N, 128]."""

    def __init__(self, channels: int):
        super().__init__()
        widths = [channels, 64, 128, 128, 128]
        for i in range(4):
            stride = 2 if i == 1 else 1
            setattr(self, f"conv{i + 1}", nn.Conv2d(widths[i], widths[i + 1], 3, stride, 1))
            setattr(self, f"bn{i}", nn.GroupNorm(8, widths[i + 1]))

    def forward(self, x):
        for i in range(4):
            x = getattr(self, f"bn{i}")(torch.relu(getattr(self, f"conv{i + 1}")(x)))
        return x.mean(dim=(2, 3))


class RefMLP(nn.Module):
    """DomainBed's MLP: input, hiddens.*, output; dropout then ReLU between layers."""

    def __init__(self, n_in: int, n_out: int, width: int, depth: int):
        super().__init__()
        self.input = nn.Linear(n_in, width)
        self.dropout = nn.Dropout(0.5)
        self.hiddens = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 2))
        self.output = nn.Linear(width, n_out)

    def forward(self, x):
        for layer in [self.input, *self.hiddens]:
            x = F.relu(self.dropout(layer(x)))
        return self.output(x)


class RefBlock(nn.Module):
    """torchvision's BasicBlock (names conv1, bn1, conv2, bn2, downsample.0/.1)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        short = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + short)


class RefResNet18(nn.Module):
    """torchvision's resnet18 with ``fc`` removed (DomainBed's ResNet trunk): [N, 512]."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, width in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(RefBlock(cin, width, stride), RefBlock(width, width, 1))
            setattr(self, f"layer{i + 1}", layer)
            cin = width

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))


class RefResNetFeaturizer(nn.Module):
    """DomainBed's ResNet featurizer: ``dropout(network(x))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.network = RefResNet18(channels)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x):
        return self.dropout(self.network(x))


def ref_classifier(n_in: int, n_out: int, nonlinear: bool) -> nn.Module:
    """DomainBed's Classifier: Linear, or F -> F/2 -> ReLU -> F/4 -> ReLU -> K."""
    if not nonlinear:
        return nn.Linear(n_in, n_out)
    return nn.Sequential(
        nn.Linear(n_in, n_in // 2),
        nn.ReLU(),
        nn.Linear(n_in // 2, n_in // 4),
        nn.ReLU(),
        nn.Linear(n_in // 4, n_out),
    )


class RefAlgorithm(nn.Module):
    """The attributes of DomainBed's ERM: featurizer, classifier, network (both again)."""

    def __init__(self, featurizer: nn.Module, classifier: nn.Module, **extra: nn.Module):
        super().__init__()
        self.featurizer = featurizer
        self.classifier = classifier
        self.network = nn.Sequential(featurizer, classifier)
        for name, module in extra.items():
            setattr(self, name, module)

    def forward(self, x):
        return self.network(x)


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random parameters and normalisation statistics, so that no name mix-up goes unseen:
    weights ``N(0, 1 / fan_in)`` (activations stay of order one through deep networks),
    norm scales and running variances in ``[0.5, 1.5]``, biases and means ``N(0, 0.2²)``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * (t[0].numel() ** -0.5))
            elif name.endswith(("running_var", "weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=g))
    return module.eval()


HPARAMS = {  # numpy scalars, as DomainBed's random hparams hold them
    "data_augmentation": True,
    "resnet18": False,
    "resnet50_augmix": False,
    "resnet_dropout": np.float64(0.5),
    "freeze_bn": np.bool_(True),
    "nonlinear_classifier": np.bool_(False),
    "lr": np.float64(1e-3),
    "batch_size": np.int64(64),
    "weight_decay": 0.0,
}


def save_domainbed(path, algo, algorithm="ERM", dataset="ColoredMNIST", input_shape=(2, 28, 28),
                   num_classes=2, hparams=None, **args):  # fmt: skip
    """``torch.save`` the dict of DomainBed's train.py (``vars(args)`` included)."""
    run_args = {
        "data_dir": "/data/domainbed", "dataset": dataset, "algorithm": algorithm,
        "task": "domain_generalization", "hparams": None, "hparams_seed": 3, "trial_seed": 1,
        "seed": 7, "steps": None, "checkpoint_freq": None, "test_envs": [2],
        "output_dir": "train_output", "holdout_fraction": 0.2, "uda_holdout_fraction": 0,
        "skip_model_save": False, "save_model_every_checkpoint": False, **args,
    }  # fmt: skip
    torch.save(
        {
            "args": run_args,
            "model_input_shape": input_shape,
            "model_num_classes": num_classes,
            "model_num_domains": 2,
            "model_hparams": {**HPARAMS, **(hparams or {})},
            "model_dict": algo.state_dict(),
        },
        path,
    )
    return path


def mnist_algorithm(channels=2, classes=2, nonlinear=False, seed=0, **extra):
    return randomize(
        RefAlgorithm(RefMNISTCNN(channels), ref_classifier(128, classes, nonlinear), **extra),
        seed,
    )


def assert_same_logits(model, reference, x):
    with torch.no_grad():
        want = reference(x)
        got = model(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ---- the networks DomainBed builds -------------------------------------------------------
def test_mnist_cnn_with_a_linear_head_gives_domainbed_logits(tmp_path):
    algo = mnist_algorithm()
    path = save_domainbed(tmp_path / "model.pkl", algo)
    assert any(k.startswith("network.0.") for k in algo.state_dict())  # stored twice
    model, meta = load_checkpoint(path)
    assert isinstance(model, DomainBedNetwork) and not model.training
    x = torch.randn(5, 2, 28, 28)
    assert_same_logits(model, algo, x)
    head = select_params(model, "classifier")
    assert sorted(head) == ["classifier.bias", "classifier.weight"]
    assert meta["format"] == "domainbed" and meta["loss"] == "ce"
    assert meta["algorithm"] == "ERM" and meta["dataset"] == "ColoredMNIST"
    assert meta["test_envs"] == [2] and meta["holdout_fraction"] == 0.2
    assert meta["trial_seed"] == 1 and meta["seed"] == 7
    assert meta["input_shape"] == [2, 28, 28]
    assert (meta["num_classes"], meta["num_domains"]) == (2, 2)
    assert meta["hparams"]["resnet_dropout"] == 0.5 and meta["hparams"]["batch_size"] == 64
    assert type(meta["hparams"]["freeze_bn"]) is bool
    json.dumps(meta)  # plain values only
    rebuilt = build_model(meta["model_spec"])
    rebuilt.load_state_dict(model.state_dict())
    assert_same_logits(rebuilt.eval(), algo, x)


def test_nonlinear_classifier(tmp_path):
    algo = mnist_algorithm(channels=1, classes=10, nonlinear=True)
    hparams = {"nonlinear_classifier": np.bool_(True)}
    path = save_domainbed(tmp_path / "model.pkl", algo, dataset="RotatedMNIST",
                          input_shape=(1, 28, 28), num_classes=10, hparams=hparams)  # fmt: skip
    model, _ = load_checkpoint(path)
    assert isinstance(model.classifier, nn.Sequential) and len(model.classifier) == 5
    assert_same_logits(model, algo, torch.randn(4, 1, 28, 28))
    assert len(select_params(model, "classifier")) == 6


@pytest.mark.parametrize("channels", [3, 1])
def test_resnet18_featurizer_gives_domainbed_logits(tmp_path, channels):
    algo = randomize(RefAlgorithm(RefResNetFeaturizer(channels), ref_classifier(512, 7, False)))
    hparams = {"resnet18": np.bool_(True)}
    path = save_domainbed(
        tmp_path / "model_step100.pkl", algo, dataset="PACS",
        input_shape=(channels, 224, 224), num_classes=7, hparams=hparams,
    )  # fmt: skip
    model, meta = load_checkpoint(path)
    assert meta["model_spec"]["hparams"]["resnet18"] is True
    # the network does not depend on the image size: a small image keeps the test fast
    assert_same_logits(model, algo, torch.randn(2, channels, 32, 32))
    model.train()  # frozen batch norms (freeze_bn) stay in eval mode, as in DomainBed
    assert not model.featurizer.network.bn1.training and model.featurizer.dropout.training


def test_resnet50_is_chosen_as_domainbed_chooses_it():
    for hparams in ({"resnet18": False}, {"resnet18": True, "resnet50_augmix": True}):
        net = DomainBedNetwork((3, 224, 224), 5, hparams)
        assert net.featurizer.n_outputs == 2048
        assert "featurizer.network.layer4.2.conv3.weight" in net.state_dict()
        assert net.classifier.in_features == 2048
        x = torch.randn(1, 3, 32, 32)
        assert net.eval()(x).shape == (1, 5)


@pytest.mark.parametrize("stored_width", [16, 128])  # DomainBed since 2021 / before
def test_mlp_featurizer_takes_its_width_from_the_file(tmp_path, stored_width):
    head = ref_classifier(stored_width, 3, False)
    algo = randomize(RefAlgorithm(RefMLP(6, stored_width, 16, 3), head))
    hparams = {"mlp_width": np.int64(16), "mlp_depth": 3, "mlp_dropout": np.float64(0.5)}
    path = save_domainbed(tmp_path / "model.pkl", algo, dataset="Mine", input_shape=(6,),
                          num_classes=3, hparams=hparams)  # fmt: skip
    model, _ = load_checkpoint(path)
    assert_same_logits(model, algo, torch.randn(8, 6))


# ---- algorithms that keep their network elsewhere ----------------------------------------
def test_an_algorithm_with_extra_modules_loads_its_prediction_network(tmp_path):
    algo = mnist_algorithm(discriminator=nn.Linear(128, 2))  # DANN's extra module
    algo.register_buffer("update_count", torch.tensor([5]))
    model, meta = load_checkpoint(save_domainbed(tmp_path / "m.pkl", algo, algorithm="DANN"))
    assert meta["algorithm"] == "DANN"
    assert_same_logits(model, algo, torch.randn(3, 2, 28, 28))


def test_ermplusplus_predicts_with_its_moving_average(tmp_path):
    algo = mnist_algorithm(seed=0)
    average = mnist_algorithm(seed=1)
    algo.network_sma = average.network
    model, _ = load_checkpoint(save_domainbed(tmp_path / "m.pkl", algo, algorithm="ERMPlusPlus"))
    x = torch.randn(3, 2, 28, 28)
    assert_same_logits(model, average, x)
    assert not torch.allclose(model(x), algo(x))


@pytest.mark.parametrize("algorithm", ["Fish", "SagNet"])
def test_algorithms_that_name_their_network_otherwise(tmp_path, algorithm):
    reference = mnist_algorithm()
    holder = nn.Module()
    if algorithm == "Fish":  # network = WholeFish, whose net = Sequential(featurizer, head)
        holder.network = nn.Module()
        holder.network.net = reference.network
    else:  # network_f (featurizer), network_c (content head), network_s (style head)
        holder.network_f, holder.network_c = reference.featurizer, reference.classifier
        holder.network_s = nn.Linear(128, 2)
    model, _ = load_checkpoint(save_domainbed(tmp_path / "m.pkl", holder, algorithm=algorithm))
    assert_same_logits(model, reference, torch.randn(3, 2, 28, 28))


def test_urm_features_go_through_its_activation(tmp_path):
    algo = mnist_algorithm()
    hparams = {"urm_generator_output": np.str_("tanh")}
    model, _ = load_checkpoint(
        save_domainbed(tmp_path / "m.pkl", algo, algorithm="URM", hparams=hparams)
    )
    x = torch.randn(3, 2, 28, 28)
    with torch.no_grad():
        want = algo.classifier(torch.tanh(algo.featurizer(x)))
    torch.testing.assert_close(model(x).detach(), want, rtol=1e-5, atol=1e-5)


def test_weights_go_into_a_given_model(tmp_path):
    algo = mnist_algorithm()
    path = save_domainbed(tmp_path / "model.pkl", algo)
    mine = nn.Module()  # a user's own network with DomainBed's two module names
    mine.featurizer, mine.classifier = RefMNISTCNN(2), nn.Linear(128, 2)
    mine.forward = lambda x: mine.classifier(mine.featurizer(x))
    model, meta = load_checkpoint(path, model=lambda: mine)
    assert model is mine and meta["format"] == "domainbed"
    assert_same_logits(model, algo, torch.randn(2, 2, 28, 28))


def test_a_numpy_1_file_loads(tmp_path):
    """Files pickled under numpy 1 name ``numpy.core.multiarray.scalar``."""
    path = save_domainbed(tmp_path / "model.pkl", mnist_algorithm())
    legacy = tmp_path / "legacy.pkl"
    torch.save(torch.load(path, weights_only=False), legacy, _use_new_zipfile_serialization=False)
    blob = legacy.read_bytes()
    assert b"numpy._core.multiarray\nscalar" in blob
    legacy.write_bytes(blob.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    _, meta = load_checkpoint(legacy)
    assert meta["hparams"]["lr"] == 1e-3


# ---- bad DomainBed files: one line each ---------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"algorithm": "MyMethod"}, "'MyMethod' is not supported (it is not one of DomainBed's"),
        ({"algorithm": "ARM"}, "'ARM' is not supported (it predicts from the image and a context"),
        ({"input_shape": (3, 32, 32)}, "input shape (3, 32, 32): DomainBed builds its Wide ResNet"),
        ({"input_shape": (3, 224, 224)}, "model.pkl was saved from another model: missing"),
        ({"hparams": {"vit": True}, "input_shape": (3, 224, 224)}, "builds a ViT / DINOv2"),
    ],
    ids=["unknown algorithm", "unsupported algorithm", "32x32", "other network", "vit"],
)
def test_unsupported_domainbed_files_get_one_line(tmp_path, changes, message):
    changes = dict(changes)
    path = save_domainbed(tmp_path / "model.pkl", mnist_algorithm(), **changes)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    assert message in one_line(err)
    assert "model.pkl" in str(err.value)


def test_an_incomplete_domainbed_file_gets_one_line(tmp_path):
    algo = mnist_algorithm()
    saved = {"model_dict": algo.state_dict(), "model_hparams": {}, "args": {}}
    torch.save(saved, tmp_path / "m.pkl")
    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "m.pkl")
    assert "is not a complete DomainBed checkpoint: it lacks ['model_input_shape'" in one_line(err)


def test_an_unknown_data_set_gets_one_line_when_its_domains_are_built(tmp_path):
    from landscape.data.domainbed import DomainBedDataError, domainbed_domains_from_metadata

    path = save_domainbed(tmp_path / "model.pkl", mnist_algorithm(), dataset="MyImages")
    _, meta = load_checkpoint(path)  # the network does not depend on the data set
    with pytest.raises(DomainBedDataError) as err:
        domainbed_domains_from_metadata(meta)
    assert "MyImages" in one_line(err)


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_hostile_domainbed_pickle_is_refused_and_nothing_runs(tmp_path, zipped):
    marker = tmp_path / "ran"
    saved = {
        "args": {"algorithm": "ERM", "dataset": "ColoredMNIST"},
        "model_input_shape": (2, 28, 28), "model_num_classes": 2, "model_num_domains": 2,
        "model_hparams": {"lr": Hostile(marker)}, "model_dict": mnist_algorithm().state_dict(),
    }  # fmt: skip
    path = tmp_path / "model.pkl"
    torch.save(saved, path, _use_new_zipfile_serialization=zipped)
    with open(tmp_path / "check.pkl", "wb") as f:  # the file does run code when unpickled
        pickle.dump(Hostile(tmp_path / "control"), f)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path)
    assert "unpickling it would run code from the file" in one_line(err)
    assert "open" in str(err.value)
    assert not marker.exists()
    with open(tmp_path / "check.pkl", "rb") as f:
        pickle.load(f).close()  # noqa: S301 - the control: this one runs
    assert (tmp_path / "control").exists()


def test_every_supported_algorithm_is_a_domainbed_algorithm():
    domainbed_algorithms = {
        "ERM", "ERMPlusPlus", "Fish", "IRM", "GroupDRO", "Mixup", "MLDG", "CORAL", "MMD",
        "DANN", "CDANN", "MTL", "SagNet", "ARM", "VREx", "RSC", "SD", "ANDMask", "SANDMask",
        "IGA", "SelfReg", "Fishr", "TRM", "IB_ERM", "IB_IRM", "CAD", "CondCAD", "Transfer",
        "CausIRL_CORAL", "CausIRL_MMD", "EQRM", "RDM", "ADRMX", "URM",
    }  # domainbed/algorithms.py's ALGORITHMS  # fmt: skip
    assert set(PREDICTORS) == domainbed_algorithms - {"ARM", "MTL"}
