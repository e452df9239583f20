"""Plain weights files (issue 10 part 3): a state dict in ``.pt`` / ``.pth`` / ``.bin`` or
``.safetensors``, loaded into a model or a factory's model; every bad input gets one line and
nothing in a file is executed."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from landscape.checkpoint import load_checkpoint
from landscape.weights import numpy_scalar_globals, read_torch_file


class Net(nn.Module):
    """A small conv net whose head is ``classifier``."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten()
        )
        self.classifier = nn.Linear(2 * 4 * 4, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def trained(dtype=torch.float32) -> Net:
    torch.manual_seed(1)
    net = Net().to(dtype)
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-1, 1)
        net.features[1].running_var.uniform_(0.5, 2)
    return net.eval()


def write(path, net: nn.Module, wrap: str | None = None):
    state = net.state_dict()
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path, metadata={"by": "me"})
    else:
        torch.save(state if wrap is None else {wrap: state, "epoch": np.int64(3)}, path)
    return path


def assert_same_model(model, net):
    assert not model.training
    x = torch.randn(4, 1, 6, 6, dtype=next(net.parameters()).dtype)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)


def one_line(err) -> str:
    assert "\n" not in str(err.value), str(err.value)
    return str(err.value)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin", ".safetensors"])
@pytest.mark.parametrize("given", ["module", "factory"])
def test_a_state_dict_loads_into_a_model_or_a_factory(tmp_path, suffix, given):
    net = trained()
    path = write(tmp_path / f"weights{suffix}", net)
    fresh = Net()
    model, meta = load_checkpoint(path, model=fresh if given == "module" else Net)
    assert meta["format"] == "state_dict" and meta["source"] == str(path)
    assert_same_model(model, net)
    if given == "module":
        assert model is fresh
    if suffix == ".safetensors":
        assert meta["header"] == {"by": "me"}


def test_float64_weights_make_a_float64_model(tmp_path):
    net = trained(torch.float64)
    model, _ = load_checkpoint(write(tmp_path / "w.pt", net), model=Net)
    assert model.classifier.weight.dtype == torch.float64
    assert_same_model(model, net)


@pytest.mark.parametrize("wrap", ["state_dict", "model_state_dict", "model"])
def test_a_wrapped_state_dict_loads(tmp_path, wrap):
    net = trained()
    model, meta = load_checkpoint(write(tmp_path / "w.pth", net, wrap=wrap), model=Net)
    assert meta["wrapper_key"] == wrap
    assert_same_model(model, net)


def test_a_data_parallel_prefix_is_stripped(tmp_path):
    net = trained()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "w.pt")
    model, meta = load_checkpoint(tmp_path / "w.pt", model=Net)
    assert meta["stripped_prefix"] == "module."
    assert_same_model(model, net)
    wrapped = nn.Module()  # a model whose own names start with module. keeps them
    wrapped.module = Net()
    model, meta = load_checkpoint(tmp_path / "w.pt", model=wrapped)
    assert meta["stripped_prefix"] is None
    assert_same_model(model.module, net)


def test_the_model_moves_to_the_device(tmp_path, device):
    net = trained()
    model, _ = load_checkpoint(write(tmp_path / "w.pt", net), model=Net, device=device)
    assert model.classifier.weight.device.type == torch.device(device).type


# ---- bad input: one line each -------------------------------------------------------------
def not_a_module():
    return {"weight": torch.zeros(1)}


def raising():
    raise RuntimeError("no GPU here")


@pytest.mark.parametrize(
    ("model", "error", "message"),
    [
        (not_a_module, TypeError, "the model factory not_a_module() returned a dict, expected"),
        (raising, TypeError, "the model factory raising() raised RuntimeError: no GPU here"),
        (3, TypeError, "model must be an nn.Module or a factory returning one, got int"),
        (None, ValueError, "holds plain weights (a state dict): give the network"),
        (lambda: Net(classes=5), ValueError, "w.pt was saved from another model: classifier"),
        (nn.Linear(2, 2), ValueError, "w.pt was saved from another model: missing"),
    ],
    ids=[
        "factory returns no module",
        "factory raises",
        "not callable",
        "no model",
        "other shapes",
        "other names",
    ],  # fmt: skip
)
def test_a_wrong_model_gets_one_line(tmp_path, model, error, message):
    path = write(tmp_path / "w.pt", trained())
    with pytest.raises(error) as err:
        load_checkpoint(path, model=model)
    assert message in one_line(err)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a pickle", "w.pt is not a readable PyTorch file (UnpicklingError: Unsupported"),
        ([torch.zeros(2)], "w.pt holds a list, not a state dict {name: tensor}"),
        ({"epoch": 3}, "w.pt holds a dict with keys ['epoch'], not a state dict"),
    ],
    ids=["garbage", "a list", "no tensors"],
)
def test_a_file_without_a_state_dict_gets_one_line(tmp_path, content, message):
    path = tmp_path / "w.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, model=Net)
    assert message in one_line(err)


def test_a_missing_file_gets_one_line(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(tmp_path / "nothere.pt", model=Net)
    assert "nothere.pt does not exist" in one_line(err)
    with pytest.raises(FileNotFoundError) as err:
        load_checkpoint(tmp_path, model=Net)
    assert "is a folder, not a weights file" in one_line(err)


class Hostile:
    """Unpickling it opens (creates) a file: it stands for any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "legacy", "pickle.dump"])
def test_a_hostile_pickle_is_refused_and_nothing_runs(tmp_path, how):
    marker = tmp_path / "ran"
    payload = {**trained().state_dict(), "x": Hostile(marker)}
    path = tmp_path / "w.pt"
    if how == "pickle.dump":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=how == "torch.save")
    with pytest.raises(ValueError) as err:
        load_checkpoint(path, model=Net)
    assert not marker.exists()
    if how != "pickle.dump":
        assert "unpickling it would run code from the file" in one_line(err)
        assert "it holds a io.open object" in str(err.value)
    else:  # pickle protocol 4 uses opcodes a torch.save file never holds: refused at once
        assert "is not a readable PyTorch file (UnpicklingError: Unsupported operand" in one_line(
            err
        )
    pickle.loads(pickle.dumps(Hostile(marker))).close()  # noqa: S301 - the control runs
    assert marker.exists()


def test_numpy_scalars_are_read_and_nothing_else_is_allowed(tmp_path):
    values = {"f": np.float64(0.1), "i": np.int64(3), "b": np.bool_(True), "s": np.str_("a")}
    values["f32"] = np.float32(0.5)
    torch.save(values, tmp_path / "h.pt")
    back = read_torch_file(tmp_path / "h.pt")
    assert back == values
    names = {g[1] if isinstance(g, tuple) else g.__name__ for g in numpy_scalar_globals()}
    assert {"numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "dtype"} <= names
    assert all(
        (g[0] if isinstance(g, tuple) else g).__module__.startswith("numpy")
        for g in numpy_scalar_globals()
    )
