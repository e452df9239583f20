"""File-system faults, Ctrl-C and library warnings: one line each, nothing computed in vain."""

from __future__ import annotations

import errno
import os
import warnings

import pytest
import torch

import landscape.inconsistency
import landscape.io
from landscape.cli import main


@pytest.fixture
def checkpoint(tmp_path):
    from landscape.checkpoint import save_checkpoint
    from landscape.data import data_spec
    from landscape.models import MLP

    torch.manual_seed(0)
    model = MLP(5, [4], 1).double()
    spec = data_spec("gaussian_classification", n_domains=2, n=40, dim=4)
    meta = {"data": spec, "loss": "bce", "train_domains": ["d0", "d1"]}
    return save_checkpoint(tmp_path / "model", model, meta)


@pytest.fixture
def calls(monkeypatch):
    """The calls of ``inconsistency_score`` (still computed by the real one)."""
    real, seen = landscape.inconsistency.inconsistency_score, []

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(landscape.inconsistency, "inconsistency_score", spy)
    return seen


def _score(checkpoint, out, *extra):
    return main(["score", str(checkpoint), "--params", "classifier", "--quiet", "--no-check",
                 "--out", str(out), *extra])  # fmt: skip


def _one_error_line(capsys, command="score") -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"landscape {command}: ")
    return err[0]


def test_out_under_a_regular_file_fails_before_computing(checkpoint, tmp_path, calls, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _score(checkpoint, blocker / "out") == 1
    line = _one_error_line(capsys)
    assert "cannot write to --out" in line and str(blocker / "out") in line
    assert calls == []  # nothing computed


def test_read_only_out_fails_before_computing(checkpoint, tmp_path, calls, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("chmod does not stop writes here (root)")
        assert _score(checkpoint, out) == 1
        assert "cannot write to --out" in _one_error_line(capsys)
        assert calls == []
    finally:
        out.chmod(0o700)


def test_disk_full_while_writing_is_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    real = landscape.io.write_json

    def full(path, *args, **kwargs):  # the disk fills up after the result was saved
        if str(path).endswith("score_summary.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "score_summary.json")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(landscape.io, "write_json", full)
    assert _score(checkpoint, tmp_path / "out") == 1
    line = _one_error_line(capsys)
    assert os.strerror(errno.ENOSPC) in line and "score_summary.json" in line
    assert "free some disk space" in line
    assert (tmp_path / "out" / "score.json").is_file()  # what finished is kept


def test_ctrl_c_is_one_line_with_status_130(checkpoint, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(landscape.inconsistency, "inconsistency_score", interrupted)
    assert _score(checkpoint, tmp_path / "out") == 130
    assert "interrupted" in _one_error_line(capsys)


def test_library_warnings_are_one_line_notes(checkpoint, tmp_path, monkeypatch, capsys):
    real = landscape.inconsistency.inconsistency_score

    def noisy(*args, **kwargs):
        warnings.warn("first line of a note\nsecond line\n  third", UserWarning, stacklevel=1)
        warnings.warn("torch.jit is deprecated", DeprecationWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(landscape.inconsistency, "inconsistency_score", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the command's own settings apply inside it
        assert _score(checkpoint, tmp_path / "out") == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["landscape: note: first line of a note"]


def test_the_probe_leaves_no_folder_behind(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    with pytest.raises(SystemExit):  # bad input after the probe: nothing is left
        main(["score", str(tmp_path / "missing.safetensors"), "--out", str(out)])
    assert not (tmp_path / "a").exists()
