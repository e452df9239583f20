"""Restart k of `landscape train` on Colored MNIST is restart k of the official script (issue 11).

The reference below re-implements, from the published facts about the script
(alexrame/fishr, ``coloredmnist/train_coloredmnist.py``), the calls it makes on the
*global* generators: ``np.random.seed`` / ``torch.manual_seed`` once, then per restart the
in-place ``np.random.shuffle`` of images and digits from one saved NumPy state, the
``torch.rand`` label then colour flips of the four environments, and the construction and
Xavier initialisation of the network's linear layers. Ours holds the streams in private
generators, builds restart ``k`` by replaying restarts ``0 .. k-1`` and must draw the same.
"""

# ruff: noqa: NPY002  (the script's global NumPy stream is what the reference re-implements)

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from landscape.checkpoint import load_checkpoint, load_tensors
from landscape.data import DOMAINS, colored_mnist_from_arrays, script_initial_weights
from landscape.data.colored_mnist import colored_mnist_spec, script_stream_at
from landscape.data.script_stream import SCRIPT_INIT_LAYERS, ScriptStream
from landscape.models import build_model
from landscape.training import RunResults, TrainConfig, checkpoint_path, read_history, train
from landscape.training.loop import RestartData
from tests.training.test_train import Interrupt, _mnist_available

N_IMAGES, N_TRAIN = 60_000, 50_000


def environments(n_train):
    """Name, rows (of the shuffled set, or the rest), colour flip and greyness of the four
    environments, in the script's order."""
    return (
        ("+80%", slice(0, n_train, 2), 0.2, False),
        ("+90%", slice(1, n_train, 2), 0.1, False),
        ("-90%", slice(n_train, None), 0.9, False),
        ("gray", slice(n_train, None), 0.9, True),
    )


def indexed_digits(m=N_IMAGES, seed=0):
    """``uint8 [m, 28, 28]`` images (MNIST-sized by default) whose kept pixels (0, 0) and
    (0, 2) encode their index, and random digits."""
    index = np.arange(m)
    images = np.zeros((m, 28, 28), np.uint8)
    images[:, 0, 0] = index % 251 + 1
    images[:, 0, 2] = index // 251 + 1
    images[:, 6, 6] = 200
    digits = np.random.default_rng(seed).integers(0, 10, m).astype(np.int64)
    return images, digits


def index_of_image(images):
    """The index encoded in ``uint8 [n, 28, 28]`` images (see :func:`indexed_digits`)."""
    pixels = torch.from_numpy(images[:, 0, ::2]).long()
    return (pixels[:, 0] - 1) + 251 * (pixels[:, 1] - 1)


def script_reference(
    images, digits, seed, restarts, layers=SCRIPT_INIT_LAYERS, n_train=N_TRAIN, keep=None
):
    """The script's global-stream draws for ``restarts`` restarts (global states restored
    afterwards): ``[(order, {env: (X, y)}, [(weight, bias), ...]), ...]`` per restart,
    ``order`` the image index at each position of the shuffled training set; ``X`` and
    ``y`` of the first ``keep`` images of each environment (all by default; every draw is
    made all the same)."""
    saved = np.random.get_state()
    out = []
    try:
        with torch.random.fork_rng(devices=[]):
            np.random.seed(seed)
            torch.manual_seed(seed)
            for _ in range(restarts):
                imgs, labels = images.copy(), digits.copy()  # MNIST read afresh each restart
                state = np.random.get_state()
                np.random.shuffle(imgs[:n_train])  # in place, on the [n_train, 28, 28] view
                np.random.set_state(state)
                np.random.shuffle(labels[:n_train])
                order = index_of_image(imgs[:n_train])
                envs = {}
                for name, rows, e, grey in environments(n_train):
                    y = (torch.from_numpy(labels[rows]) < 5).float()
                    y = (y - (torch.rand(len(y)) < 0.25).float()).abs()
                    colour = (y - (torch.rand(len(y)) < e).float()).abs()
                    y, colour = y[:keep], colour[:keep]
                    small = torch.from_numpy(imgs[rows][:keep, ::2, ::2])
                    x = torch.stack([small, small], dim=1)
                    if not grey:
                        x[torch.arange(len(x)), (1 - colour).long()] *= 0
                    envs[name] = (x.float() / 255.0, y[:, None])
                linears = [nn.Linear(i, o) for i, o in layers]
                for linear in linears:
                    nn.init.xavier_uniform_(linear.weight)
                    nn.init.zeros_(linear.bias)
                weights = [(m.weight.detach().clone(), m.bias.detach().clone()) for m in linears]
                out.append((order, envs, weights))
    finally:
        np.random.set_state(saved)
    return out


@pytest.mark.parametrize(
    "seed, m, n_train, keep", [(0, N_IMAGES, N_TRAIN, 400), (4, 700, 500, None)]
)
def test_restarts_0_and_1_are_the_scripts(seed, m, n_train, keep):
    """MNIST's sizes (images compared on a prefix of each environment, every draw made),
    and small ones (every image compared)."""
    images, digits = indexed_digits(m)
    reference = script_reference(images, digits, seed, restarts=2, n_train=n_train, keep=keep)
    for k, (order, envs, weights) in enumerate(reference):
        spec = colored_mnist_spec(seed=seed, restart=k)
        # the shuffle: one permutation of the training images
        stream = script_stream_at(spec, n_images=m, n_train=n_train)
        assert torch.equal(stream.permutation(n_train), order)
        # the flips: every image, label and colour of the four environments
        ours = colored_mnist_from_arrays(
            images, digits, seed=seed, restart=k, n_train=n_train, subsample=keep
        )
        for name in DOMAINS:
            [(X, y)] = ours[name]
            assert torch.equal(X, envs[name][0]), (k, name)
            assert torch.equal(y, envs[name][1]), (k, name)
        # the initial weights, drawn after the data
        drawn = script_initial_weights(spec, n_images=m, n_train=n_train)
        assert len(drawn) == len(weights) == 3
        for (w, b), (w_ref, b_ref) in zip(drawn, weights, strict=True):
            assert torch.equal(w, w_ref) and torch.equal(b, b_ref)


def test_other_layers_change_what_later_restarts_draw():
    """Restart 1 starts after restart 0's initialisation, so the layers drawn there count."""
    images, digits = indexed_digits(700)
    layers = [[392, 16], [16, 1]]
    [_, (_, envs, weights)] = script_reference(
        images, digits, 0, restarts=2, layers=layers, n_train=500
    )
    spec = colored_mnist_spec(restart=1, init_layers=layers)
    ours = colored_mnist_from_arrays(images, digits, restart=1, init_layers=layers, n_train=500)
    assert torch.equal(ours["+90%"][0][1], envs["+90%"][1])
    drawn = script_initial_weights(spec, n_images=700, n_train=500)
    for (w, b), (w_ref, b_ref) in zip(drawn, weights, strict=True):
        assert torch.equal(w, w_ref) and torch.equal(b, b_ref)
    default = colored_mnist_from_arrays(images, digits, restart=1, n_train=500)
    assert not torch.equal(default["+90%"][0][1], envs["+90%"][1])


def test_script_stream_leaves_the_global_generators_alone():
    np.random.seed(11)
    torch.manual_seed(11)
    want_np, want_torch = np.random.rand(3), torch.rand(3)
    np.random.seed(11)
    torch.manual_seed(11)
    stream = ScriptStream(0)
    stream.permutation(100)
    stream.rand(10)
    stream.initial_weights([[3, 2]])
    script_initial_weights(colored_mnist_spec(restart=1))
    np.testing.assert_array_equal(np.random.rand(3), want_np)
    assert torch.equal(torch.rand(3), want_torch)


def test_initial_weights_need_the_script_stream():
    with pytest.raises(ValueError, match="initial weights come with the 'script' data stream"):
        script_initial_weights(colored_mnist_spec(stream="per-restart"))


# ----------------------------------------------------------------------- landscape train


def cmnist_config(**kw) -> TrainConfig:
    values = dict(algorithms=["vrex"], steps=4, anneal_step=2, restarts=2, subsample=200,
                  hidden_dims=[8], device="cpu", state_every=1, checkpoint_steps=[0])  # fmt: skip
    return TrainConfig(**{**values, **kw})


def needs_mnist(test):
    """Marks a test that trains on the real MNIST cache (skipped without it)."""
    missing = pytest.mark.skipif(not _mnist_available(), reason="offline MNIST cache missing")
    return pytest.mark.mnist(missing(test))


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("script_run")
    config = cmnist_config()
    return config, out, train(config, out, progress=False)


@needs_mnist
@pytest.mark.parametrize("k", [0, 1])
def test_train_starts_restart_k_at_the_scripts_weights(script_run, k):
    config, out, _ = script_run
    model, meta = load_checkpoint(checkpoint_path(out, "vrex", k, 0))
    assert meta["data"] == config.data_spec(k) and meta["data"]["restart"] == k
    assert meta["seed"] == config.seed
    want = script_initial_weights(meta["data"])
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for linear, (w, b) in zip(linears, want, strict=True):
        assert torch.equal(linear.weight, w) and torch.equal(linear.bias, b)
    # not the per-restart seeding
    torch.manual_seed(config.seed + k)
    seeded = build_model(model.spec)
    assert not torch.equal(next(seeded.parameters()), next(model.parameters()))


@needs_mnist
def test_results_hold_the_scripts_number_and_ours(script_run):
    config, out, results = script_run
    for k in range(2):
        rows = read_history(out / "vrex" / f"restart_{k}" / "history.csv")
        assert rows[-1]["step"] == config.steps and rows[-2]["step"] == config.steps - 1
        for column in ("acc/+80%", "acc/-90%", "loss", "penalty/vrex"):
            assert results.final["vrex"][column][k] == rows[-1][column]
            assert results.last_update["vrex"][column][k] == rows[-2][column]
    train_acc = [np.mean([results.last_update["vrex"][f"acc/{d}"][k] for d in ("+80%", "+90%")])
                 for k in range(2)]  # fmt: skip
    assert results.table_last_update["vrex"]["Train acc."] == pytest.approx(
        [100 * np.mean(train_acc), 100 * np.std(train_acc)]
    )
    text = results.markdown()
    assert "Final weights (after 4 updates)" in text
    assert "The script's number (the forward pass of the last update, step 3" in text
    assert text.count("| V-REx |") == 2 and results.seeds == {"vrex": [0, 0]}
    loaded = RunResults.load(out / "results")
    assert loaded.table_last_update == results.table_last_update


@needs_mnist
def test_resuming_restart_1_replays_restart_0_without_training_it(script_run, tmp_path):
    """Interrupted in restart 1 and resumed in a new call: restart 1 is rebuilt by replaying
    restart 0's draws, and ends bit-identical to the uninterrupted run."""
    config, out, _ = script_run

    def stop_in_restart_1(trainer, row):
        if (trainer.restart, trainer.step) == (1, 2):
            raise Interrupt

    with pytest.raises(Interrupt):
        train(config, tmp_path, progress=False, callback=stop_in_restart_1)
    steps = []
    train(config, tmp_path, progress=False, callback=lambda t, r: steps.append((t.restart, t.step)))
    assert steps and all(k == 1 for k, _ in steps)  # restart 0 was not trained again
    for k in range(2):
        a, _ = load_tensors(checkpoint_path(out, "vrex", k, config.steps))
        b, _ = load_tensors(checkpoint_path(tmp_path, "vrex", k, config.steps))
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    # restart 1 alone is built the same as after restart 0
    alone = RestartData.build(config, 1, None, torch.device("cpu"))
    first = RestartData.build(config, 0, None, torch.device("cpu"))
    assert not torch.equal(alone.batches["+80%"][0], first.batches["+80%"][0])
    model, _ = load_checkpoint(checkpoint_path(out, "vrex", 1, 0))
    assert torch.equal(model.classifier.weight, alone.initial_weights[-1][0])


@needs_mnist
def test_per_restart_stream_keeps_the_seeded_initialisation(tmp_path):
    config = cmnist_config(stream="per-restart", restarts=1, steps=1, data_seed=2, seed=5)
    results = train(config, tmp_path, progress=False)
    model, meta = load_checkpoint(checkpoint_path(tmp_path, "vrex", 0, 0))
    torch.manual_seed(5)
    seeded = build_model(model.spec)
    assert all(
        torch.equal(p, q) for p, q in zip(seeded.parameters(), model.parameters(), strict=True)
    )
    assert meta["data"]["stream"] == "per-restart" and meta["data"]["seed"] == 2
    assert results.seeds == {"vrex": [5]}
