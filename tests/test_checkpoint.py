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
