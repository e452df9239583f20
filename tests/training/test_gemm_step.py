"""The training step on NumPy's BLAS (landscape.gemm, ``$LANDSCAPE_GEMM=numpy``) against the
step on torch's: the same history up to rounding (float64 short runs of every algorithm, with
the colour-split first layer; float32 runs of ``train`` on a small Colored MNIST subsample),
the penalties' hooks still firing, the products really going through NumPy, the layers
restored after every step, and the backend recorded in the checkpoints."""

from __future__ import annotations

import pytest
import torch

from landscape import gemm
from landscape.checkpoint import read_metadata
from landscape.training import TrainConfig, Trainer, checkpoint_path, read_history, train
from tests.training.test_colour_split import coloured
from tests.training.test_script_stream import needs_mnist


def _short_run(algorithm: str, monkeypatch, name: str, calls: list | None = None):
    monkeypatch.setenv(gemm.ENV_VAR, name)
    config = TrainConfig(
        algorithms=[algorithm], steps=8, anneal_step=4, restarts=1, hidden_dims=[7, 6],
        lr=1e-2, penalty_weight=100.0, device="cpu", dtype="float64", eval_every=3,
        train_domains=["a", "b"], test_domains=["gray"],
    )  # fmt: skip
    batches = {"a": coloured(60, 6), "b": coloured(60, 7), "gray": coloured(30, 8, gray=True)}
    trainer = Trainer(config, algorithm, 0, batches, ["a", "b"], ["gray"])
    assert trainer.gemm == name and set(trainer.colour_splits) == {"a", "b"}
    while trainer.step < config.steps:
        trainer.train_step()
        assert not any("forward" in m.__dict__ for m in trainer.model.modules())
    return trainer.rows + [trainer.evaluate()], trainer.model


@pytest.mark.parametrize("algorithm", ["erm", "irm", "vrex", "fishr"])
def test_a_short_run_on_numpys_blas_has_torchs_history(algorithm, monkeypatch):
    counted = []
    real = gemm.mm_into

    def counting(a, b, out, backend):
        counted.append(backend)
        return real(a, b, out, backend)

    monkeypatch.setattr(gemm, "mm_into", counting)
    rows, model = _short_run(algorithm, monkeypatch, "numpy")
    assert counted and set(counted) == {"numpy"}  # the products went through NumPy
    counted.clear()
    plain_rows, plain_model = _short_run(algorithm, monkeypatch, "torch")
    assert "numpy" not in counted  # nothing through NumPy on the torch path
    assert [list(r) for r in rows] == [list(r) for r in plain_rows]
    for row, plain in zip(rows, plain_rows, strict=True):
        assert row == pytest.approx(plain, rel=1e-8, abs=1e-10, nan_ok=True)
    for p, q in zip(model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)


def test_the_penalties_hooks_fire_in_a_numpy_step(monkeypatch):
    """Fishr's per-sample moments read the head's input and output gradient through forward
    hooks (landscape.persample.LinearCapture): they must fire on the patched layers."""
    from landscape import persample

    fired = []
    real = persample.LinearCapture._hook

    def spy(self, name):
        hook = real(self, name)

        def wrapped(module, inputs, output):
            fired.append((name, "forward" in module.__dict__))
            return hook(module, inputs, output)

        return wrapped

    monkeypatch.setattr(persample.LinearCapture, "_hook", spy)
    _short_run("fishr", monkeypatch, "numpy")
    # the head, once per training domain and step (9 rows: 8 updates + the final weights)
    assert fired == [("classifier", True)] * (2 * 9)


@needs_mnist
def test_train_on_colored_mnist_with_numpys_blas_matches_torchs(tmp_path, monkeypatch):
    """float32, the protocol's network on 300 images per domain: the histories agree to
    1e-4 (relative) and each run's checkpoints say which backend computed them."""
    config = TrainConfig(algorithms=["erm", "fishr"], steps=5, anneal_step=3, restarts=1,
                         subsample=300, device="cpu", checkpoint_steps=[0])  # fmt: skip
    histories = {}
    for name in gemm.BACKENDS:
        monkeypatch.setenv(gemm.ENV_VAR, name)
        train(config, tmp_path / name, progress=False)
        for algo in config.algorithms:
            meta = read_metadata(checkpoint_path(tmp_path / name, algo, 0, config.steps))
            assert meta["gemm"] == name
            histories[name, algo] = read_history(tmp_path / name / algo / "restart_0" /
                                                 "history.csv")  # fmt: skip
    for algo in config.algorithms:
        ours, theirs = histories["numpy", algo], histories["torch", algo]
        assert [list(r) for r in ours] == [list(r) for r in theirs]
        for row, want in zip(ours, theirs, strict=True):
            assert row == pytest.approx(want, rel=1e-4, abs=1e-6, nan_ok=True)
