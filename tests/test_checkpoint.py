"""Checkpoints carry a checksum of their tensors, checked on load (issue 16 item 4)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save as st_save

from landscape.checkpoint import (
    CHECKSUM_KEY,
    load_checkpoint,
    load_tensors,
    read_metadata,
    save_checkpoint,
    save_tensors,
)
from landscape.models import build_model

SPEC = {"arch": "mlp", "input_dim": 4, "hidden_dims": [4], "output_dim": 1}


def _flip_tensor_byte(path):
    """Flip one byte inside the tensor data (after the JSON header)."""
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[:8], "little")
    data[8 + header_len + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def test_checkpoint_round_trip_records_a_checksum(tmp_path):
    torch.manual_seed(0)
    model = build_model(SPEC)
    path = save_checkpoint(tmp_path / "ckpt", model, {"step": 3})
    assert len(read_metadata(path)[CHECKSUM_KEY]) == 64
    loaded, meta = load_checkpoint(path)
    assert meta["step"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_flipped_bytes_in_the_tensors_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt", build_model(SPEC))
    load_checkpoint(path)
    _flip_tensor_byte(path)
    with pytest.raises(ValueError, match=r"ckpt\.safetensors is corrupted: .*checksum") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_state_files_are_checked_too(tmp_path):
    path = save_tensors(tmp_path / "state.safetensors", {"a": torch.arange(6.0)}, {"x": 1})
    tensors, meta = load_tensors(path)
    assert meta["x"] == 1 and torch.equal(tensors["a"], torch.arange(6.0))
    _flip_tensor_byte(path)
    with pytest.raises(ValueError, match="is corrupted"):
        load_tensors(path)


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    model = build_model(SPEC)
    meta = {"format": "landscape-checkpoint", "format_version": 1, "model_spec": SPEC}
    blob = st_save(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        metadata={"landscape": json.dumps(meta)},
    )
    path = tmp_path / "old.safetensors"
    path.write_bytes(blob)
    loaded, meta = load_checkpoint(path)
    assert CHECKSUM_KEY not in meta
    assert torch.equal(
        loaded.state_dict()["classifier.weight"], model.state_dict()["classifier.weight"]
    )


# ---- load_checkpoint tells the three formats apart by the file (issue 10 part 3) ----------
def test_a_landscape_checkpoint_loads_into_a_given_model_or_factory(tmp_path):
    model = build_model(SPEC).double()
    path = save_checkpoint(tmp_path / "ckpt", model)
    for given in (build_model(SPEC), lambda: build_model(SPEC)):
        loaded, meta = load_checkpoint(path, model=given)
        assert meta["format"] == "landscape-checkpoint"
        assert loaded.classifier.weight.dtype == torch.float64  # the saved precision
        assert torch.equal(loaded.classifier.weight, model.classifier.weight)
    with pytest.raises(ValueError, match=r"ckpt\.safetensors was saved from another model"):
        load_checkpoint(path, model=torch.nn.Linear(4, 1))


def test_a_safetensors_file_without_landscape_metadata_is_a_state_dict(tmp_path):
    from safetensors.torch import save_file

    model = build_model(SPEC)
    save_file(model.state_dict(), tmp_path / "plain.safetensors")
    loaded, meta = load_checkpoint(tmp_path / "plain.safetensors", model=lambda: build_model(SPEC))
    assert meta["format"] == "state_dict"
    assert torch.equal(loaded.classifier.bias, model.classifier.bias)
    with pytest.raises(ValueError, match="holds plain weights .* give the network") as err:
        load_checkpoint(tmp_path / "plain.safetensors")
    assert "\n" not in str(err.value)


def test_a_domainbed_dict_is_recognised_whatever_the_suffix(tmp_path):
    from tests.models.test_domainbed_models import mnist_algorithm, save_domainbed

    path = save_domainbed(tmp_path / "run.pt", mnist_algorithm())
    model, meta = load_checkpoint(path)
    assert meta["format"] == "domainbed" and meta["dataset"] == "ColoredMNIST"
    assert model.classifier.out_features == 2


def test_a_broken_safetensors_file_gets_one_line(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match=r"broken\.safetensors is not a readable safetensors"):
        load_checkpoint(tmp_path / "broken.safetensors")


def test_check_state_dict_stays_importable_from_checkpoint():
    from landscape.checkpoint import check_state_dict
    from landscape.weights import check_state_dict as in_weights

    assert check_state_dict is in_weights
