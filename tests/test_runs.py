"""The run-folder layout (landscape.runs): paths, discovery, the folder lock, load_for_analysis."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from landscape.checkpoint import save_checkpoint
from landscape.data import build_domains, data_spec
from landscape.models import build_model
from landscape.runs import (
    AnalysisFolder,
    JobFolder,
    RunFolder,
    RunFolderLockedError,
    load_for_analysis,
)

SPEC = data_spec("gaussian_classification", n_domains=3, n=20, dim=3, spurious=[0.9, 0.8, 0.1])


def dead_pid() -> int:
    """The pid of a process that has exited (reaped, so it no longer exists)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_layout_paths_and_discovery(tmp_path):
    folder = RunFolder(tmp_path)
    assert RunFolder(folder) == folder
    assert folder.checkpoint_path("erm", 2, 7) == (
        tmp_path / "erm" / "restart_2" / "checkpoints" / "step_00007.safetensors"
    )
    assert folder.history_path("erm", 0) == tmp_path / "erm" / "restart_0" / "history.csv"
    with pytest.raises(FileNotFoundError, match="holds no checkpoints"):
        folder.layout()
    for algo, k, step in [("erm", 0, 0), ("erm", 0, 5), ("erm", 10, 5), ("fishr", 1, 3)]:
        path = folder.checkpoint_path(algo, k, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    assert folder.layout() == {"erm": [0, 10], "fishr": [1]}
    assert folder.checkpoint_steps("erm", 0) == [0, 5]
    folder.write_config({"steps": 5})
    assert folder.has_final("erm", 0) and not folder.has_final("fishr", 1)
    with pytest.raises(FileNotFoundError, match="finish the run"):
        folder.final_checkpoint("fishr", 1)
    assert folder.finished_algorithms() == ["erm"]
    job = JobFolder(tmp_path / "job")
    assert job.run.root == tmp_path / "job" / "run"
    assert job.analysis.score("head", "erm") == tmp_path / "job" / "analysis" / "score_head_erm"
    assert job.figures == tmp_path / "job" / "figures"


def test_analysis_folder_finds_saved_results(tmp_path):
    folder = AnalysisFolder(tmp_path)
    for stem in ("score_head_erm", "score_head_fishr_all", "score_network_erm"):
        (tmp_path / f"{stem}.json").write_text("{}")
    (tmp_path / "score_head_erm.npz").write_bytes(b"")
    assert folder.scores("head") == {
        "erm": tmp_path / "score_head_erm",
        "fishr_all": tmp_path / "score_head_fishr_all",
    }
    assert folder.done(folder.score("head", "erm"))
    assert not folder.done(folder.score("network", "erm"))


def test_lock_is_exclusive_and_released_on_exceptions(tmp_path):
    folder = RunFolder(tmp_path / "run")
    with pytest.raises(RuntimeError, match="boom"), folder.lock():
        assert folder.lock_path.is_file()
        owner = json.loads(folder.lock_path.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunFolderLockedError, match=f"in use by process {os.getpid()}"):
            folder.lock().acquire()
        raise RuntimeError("boom")
    assert not folder.lock_path.exists()
    with folder.lock():  # free again
        pass


def test_lock_held_by_another_live_process_is_refused(tmp_path):
    folder = RunFolder(tmp_path)
    script = textwrap.dedent(f"""
        import sys, time
        from landscape.runs import RunFolder
        with RunFolder({str(tmp_path)!r}).lock():
            print("locked", flush=True)
            sys.stdin.readline()
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderLockedError) as err:
            folder.lock().acquire()
        message = str(err.value)
        assert isinstance(err.value, ValueError) and "\n" not in message
        assert str(tmp_path) in message and f"process {proc.pid}" in message
    finally:
        proc.communicate("\n", timeout=60)
    assert proc.returncode == 0 and not folder.lock_path.exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    folder = RunFolder(tmp_path)
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "token": "old"}
    folder.lock_path.write_text(json.dumps(stale))
    with folder.lock() as lock:
        owner = json.loads(folder.lock_path.read_text())
        assert owner["pid"] == os.getpid() and owner["token"] == lock.token
    assert not folder.lock_path.exists()


def test_lock_of_another_host_is_not_taken_over(tmp_path):
    folder = RunFolder(tmp_path)
    other = {"pid": dead_pid(), "host": socket.gethostname() + "-elsewhere", "token": "x"}
    folder.lock_path.write_text(json.dumps(other))
    with pytest.raises(RunFolderLockedError, match="-elsewhere"):
        folder.lock().acquire()
    assert json.loads(folder.lock_path.read_text()) == other


@pytest.mark.parametrize("default", ["train", "all"])
def test_load_for_analysis_rebuilds_model_domains_and_loss(tmp_path, default):
    torch.manual_seed(0)
    model = build_model({"arch": "mlp", "input_dim": 4, "hidden_dims": [4], "output_dim": 1})
    meta = {"data": SPEC, "loss": "bce", "train_domains": ["d0", "d1"], "test_domains": ["d2"]}
    path = save_checkpoint(tmp_path / "ckpt", model, meta)
    loaded, got, domains, loss = load_for_analysis(path, device="cpu", default=default,
                                                   subsample=7)  # fmt: skip
    assert not loaded.training and got["train_domains"] == ["d0", "d1"]
    assert list(domains) == (["d0", "d1"] if default == "train" else ["d0", "d1", "d2"])
    full = build_domains(SPEC)
    for name, batches in domains.items():
        (X, y), (X0, y0) = batches[0], full[name][0]
        assert torch.equal(X, X0[:7].to(X.dtype)) and torch.equal(y, y0[:7].to(y.dtype))
    assert isinstance(loss, torch.nn.BCEWithLogitsLoss)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_load_for_analysis_errors(tmp_path):
    model = build_model({"arch": "mlp", "input_dim": 4, "hidden_dims": [4], "output_dim": 1})
    path = save_checkpoint(tmp_path / "ckpt", model, {})
    with pytest.raises(ValueError, match="no data spec"):
        load_for_analysis(path, device="cpu")
    with pytest.raises(ValueError, match="positive number of samples"):
        load_for_analysis(path, device="cpu", subsample=0)
