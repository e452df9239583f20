"""Colored MNIST protocol on synthetic digits, data specs, build_domains, synthetic domains.

The protocol is checked against a plain per-image loop that follows the documented order of
random draws, and statistically on 20,000 fake images. Nothing here needs the real MNIST
(see tests/test_mnist.py for that).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.func import functional_call, hessian

from landscape.data import (
    DOMAINS,
    TEST_DOMAINS,
    TRAIN_DOMAINS,
    build_domains,
    colored_mnist,
    colored_mnist_from_arrays,
    colored_mnist_spec,
    data_spec,
    gaussian_classification_domains,
    linear_regression_domains,
    linear_regression_hessian,
)
from landscape.data import mnist as mnist_module
from landscape.data.colored_mnist import make_environment
from landscape.domains import check_domains
from landscape.io import save_arrays


def fake_digits(m=120, seed=0):
    """``uint8 [m, 28, 28]`` images where every kept pixel is > 0 and each image is unique.

    Pixel (0, 0) encodes ``i % 251 + 1`` and (0, 2) encodes ``i // 251 + 1``, so an image's
    index can be read back from its 14×14 version.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(1, 256, (m, 28, 28), dtype=np.uint8)
    index = np.arange(m)
    images[:, 0, 0] = index % 251 + 1
    images[:, 0, 2] = index // 251 + 1
    digits = rng.integers(0, 10, m).astype(np.int64)
    return images, digits


def index_of(X):
    """Index of each source image from its 14×14 two-channel float version."""
    pixels = torch.round(X.amax(dim=1) * 255).long()  # [n, 14, 14]: the lit channel
    return (pixels[:, 0, 0] - 1) + 251 * (pixels[:, 0, 1] - 1)


def reference_draws(stream, seed, n_train):
    """``(perm, rand)`` of restart 0 of ``stream``, from the documented calls: the script's
    global ``np.random.seed`` + ``np.random.shuffle`` and ``torch.manual_seed`` +
    ``torch.rand`` (global states restored afterwards), or one seeded generator."""
    if stream == "per-restart":
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(n_train, generator=g).numpy()
        return perm, lambda n: torch.rand(n, generator=g).numpy()
    saved = np.random.get_state()  # noqa: NPY002 (the script's global stream)
    np.random.seed(seed)  # noqa: NPY002 (the script's global stream)
    perm = np.arange(n_train)
    np.random.shuffle(perm)  # noqa: NPY002 (the script's global stream)
    np.random.set_state(saved)  # noqa: NPY002 (the script's global stream)
    g = torch.Generator().manual_seed(seed)  # the global CPU generator after manual_seed
    return perm, lambda n: torch.rand(n, generator=g).numpy()


def reference_colored_mnist(
    images, digits, n_train, seed, label_noise=0.25, e=None, stream="per-restart"
):
    """Brute force: one image at a time, following the documented order of draws."""
    e = e or {"+80%": 0.2, "+90%": 0.1, "-90%": 0.9, "gray": 0.9}
    perm, rand = reference_draws(stream, seed, n_train)
    shuffled = [perm[0::2], perm[1::2]]
    indices = {
        "+80%": shuffled[0],
        "+90%": shuffled[1],
        "-90%": np.arange(n_train, len(images)),
        "gray": np.arange(n_train, len(images)),
    }
    out = {}
    for name in DOMAINS:
        idx = indices[name]
        u_label = rand(len(idx))
        u_color = rand(len(idx))
        X = np.zeros((len(idx), 2, 14, 14))
        y = np.zeros((len(idx), 1))
        for k, i in enumerate(idx):
            label = int(digits[i] < 5)
            if u_label[k] < label_noise:
                label = 1 - label
            color = label if not u_color[k] < e[name] else 1 - label
            small = images[i][::2, ::2].astype(np.float64) / 255
            for channel in (0, 1):
                if name == "gray" or channel == color:
                    X[k, channel] = small
            y[k, 0] = label
        out[name] = (X, y)
    return out


# ----------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("stream", ["script", "per-restart"])
@pytest.mark.parametrize("seed", [0, 3])
def test_protocol_matches_brute_force_reference(seed, stream):
    images, digits = fake_digits(120)
    domains = colored_mnist_from_arrays(
        images, digits, n_train=100, seed=seed, dtype=torch.float64, stream=stream
    )
    reference = reference_colored_mnist(images, digits, 100, seed, stream=stream)
    assert list(domains) == list(DOMAINS)
    for name in DOMAINS:
        [(X, y)] = domains[name]
        np.testing.assert_array_equal(X.numpy(), reference[name][0], err_msg=name)
        np.testing.assert_array_equal(y.numpy(), reference[name][1], err_msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_shapes_dtypes_and_values(dtype):
    images, digits = fake_digits(130)
    domains = colored_mnist_from_arrays(images, digits, n_train=100, dtype=dtype)
    sizes = {"+80%": 50, "+90%": 50, "-90%": 30, "gray": 30}
    check_domains(domains)
    for name, batches in domains.items():
        assert len(batches) == 1
        X, y = batches[0]
        assert X.shape == (sizes[name], 2, 14, 14) and X.dtype == dtype
        assert y.shape == (sizes[name], 1) and y.dtype == dtype
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        assert float(X.min()) >= 0 and float(X.max()) <= 1
        # pixels are k / 255 for integers k, computed as uint8 -> dtype -> / 255
        k = torch.round(X * 255)
        torch.testing.assert_close(X, k / 255, rtol=0, atol=0)


def test_every_other_pixel_channel_rule_and_scaling():
    images, digits = fake_digits(120)
    domains = colored_mnist_from_arrays(images, digits, n_train=100, dtype=torch.float64)
    for name in DOMAINS:
        [(X, y)] = domains[name]
        source = torch.as_tensor(images)[index_of(X)]
        small = source[:, ::2, ::2].double() / 255
        assert small.shape[1:] == (14, 14)
        lit = X.flatten(2).amax(2) > 0  # [n, 2]: which channels carry the digit
        if name == "gray":
            assert bool(lit.all())
            torch.testing.assert_close(X[:, 0], small, rtol=0, atol=0)
            torch.testing.assert_close(X[:, 1], small, rtol=0, atol=0)
            continue
        assert bool((lit.sum(1) == 1).all()), "exactly one channel is kept"
        color = lit[:, 1].long()  # colour c keeps channel c, zeroes channel 1 - c
        rows = torch.arange(len(X))
        torch.testing.assert_close(X[rows, color], small, rtol=0, atol=0)
        assert bool((X[rows, 1 - color] == 0).all())


def test_make_environment_zeroes_channel_one_minus_colour():
    g = torch.Generator().manual_seed(0)
    images = torch.as_tensor(fake_digits(40)[0])
    x, y, colors = make_environment(
        images, torch.arange(40) % 10, 0.5, label_noise=0.3, generator=g
    )
    assert x.dtype == torch.uint8 and x.shape == (40, 2, 14, 14)
    for i in range(40):
        c = int(colors[i])
        assert torch.equal(x[i, c], images[i, ::2, ::2])
        assert bool((x[i, 1 - c] == 0).all())
    # draws: rand(n) for the label noise, then rand(n) for the colour
    g2 = torch.Generator().manual_seed(0)
    u_label, u_color = torch.rand(40, generator=g2), torch.rand(40, generator=g2)
    expected_y = ((torch.arange(40) % 10) < 5).long() ^ (u_label < 0.3).long()
    assert torch.equal(y, expected_y)
    assert torch.equal(colors, expected_y ^ (u_color < 0.5).long())


@pytest.mark.parametrize("stream", ["script", "per-restart"])
def test_even_odd_split_and_shuffle_keep_images_with_their_labels(stream):
    images, digits = fake_digits(120)
    domains = colored_mnist_from_arrays(images, digits, n_train=100, label_noise=0.0, stream=stream)
    perm = torch.as_tensor(reference_draws(stream, 0, 100)[0])
    got = {name: index_of(domains[name][0][0]) for name in DOMAINS}
    assert torch.equal(got["+80%"], perm[0::2])
    assert torch.equal(got["+90%"], perm[1::2])
    assert sorted(torch.cat([got["+80%"], got["+90%"]]).tolist()) == list(range(100))
    assert torch.equal(got["-90%"], torch.arange(100, 120))
    assert torch.equal(got["gray"], torch.arange(100, 120))
    for name in DOMAINS:  # no label noise: y = digit < 5 of the very same image
        y = domains[name][0][1][:, 0].long()
        assert torch.equal(y, torch.as_tensor(digits[got[name].numpy()] < 5).long()), name


@pytest.mark.parametrize("stream", ["script", "per-restart"])
@pytest.mark.parametrize("other", [{"seed": 6}, {"restart": 1}])
def test_determinism_and_seed_and_restart_dependence(stream, other):
    images, digits = fake_digits(120)
    kwargs = {"n_train": 100, "seed": 5, "stream": stream}
    a = colored_mnist_from_arrays(images, digits, **kwargs)
    b = colored_mnist_from_arrays(images, digits, **kwargs)
    c = colored_mnist_from_arrays(images, digits, **{**kwargs, **other})
    for name in DOMAINS:
        assert torch.equal(a[name][0][0], b[name][0][0]) and torch.equal(
            a[name][0][1], b[name][0][1]
        )
        assert not torch.equal(a[name][0][1], c[name][0][1]), name
    assert not torch.equal(a["+80%"][0][0], c["+80%"][0][0])


def test_gray_has_its_own_label_noise_draw():
    images, digits = fake_digits(300)
    domains = colored_mnist_from_arrays(images, digits, n_train=100)
    X_test, y_test = domains["-90%"][0]
    X_gray, y_gray = domains["gray"][0]
    assert torch.equal(X_test.amax(1), X_gray[:, 0])  # same images
    assert not torch.equal(y_test, y_gray)  # different noise


def stats(domains, digit_of):
    out = {}
    for name, [(X, y)] in domains.items():
        y = y[:, 0].long()
        digits = digit_of[index_of(X)]
        lit_green = X[:, 1].flatten(1).amax(1) > 0
        out[name] = {
            "noise": (y != (digits < 5).long()).double().mean().item(),
            "agree": (lit_green.long() == y).double().mean().item(),
        }
    return out


def test_label_noise_and_colour_flip_rates_statistically():
    """20,000 fake images: 8,000 / 8,000 / 4,000 / 4,000; rates within 4 standard errors."""
    m = 20_000
    images, digits = fake_digits(m, seed=1)
    domains = colored_mnist_from_arrays(images, digits, n_train=16_000, seed=0)
    s = stats(domains, torch.as_tensor(digits))
    expected_agree = {"+80%": 0.8, "+90%": 0.9, "-90%": 0.1}
    for name in DOMAINS:
        n = domains[name][0][0].shape[0]
        assert n == (8_000 if name in TRAIN_DOMAINS else 4_000)
        se = (0.25 * 0.75 / n) ** 0.5
        assert abs(s[name]["noise"] - 0.25) < 4 * se, (name, s[name])
        if name in expected_agree:
            p = expected_agree[name]
            assert abs(s[name]["agree"] - p) < 4 * (p * (1 - p) / n) ** 0.5, (name, s[name])
    # overrides: no label noise, colour always / never agreeing
    flip = {"+80%": 0.0, "+90%": 1.0, "-90%": 0.5}
    domains = colored_mnist_from_arrays(
        images, digits, n_train=16_000, label_noise=0.0, color_flip=flip
    )
    s = stats(domains, torch.as_tensor(digits))
    assert all(s[name]["noise"] == 0.0 for name in DOMAINS)
    assert s["+80%"]["agree"] == 1.0 and s["+90%"]["agree"] == 0.0
    assert abs(s["-90%"]["agree"] - 0.5) < 4 * (0.25 / 4_000) ** 0.5
    all_noise = colored_mnist_from_arrays(images, digits, n_train=16_000, label_noise=1.0)
    s = stats(all_noise, torch.as_tensor(digits))
    assert all(s[name]["noise"] == 1.0 for name in DOMAINS)


def test_subsample_is_a_prefix_and_batches_tile_the_domain():
    images, digits = fake_digits(130)
    full = colored_mnist_from_arrays(images, digits, n_train=100, seed=2)
    small = colored_mnist_from_arrays(images, digits, n_train=100, seed=2, subsample=20)
    for name in DOMAINS:
        X, y = small[name][0]
        assert X.shape[0] == 20
        assert torch.equal(X, full[name][0][0][:20]) and torch.equal(y, full[name][0][1][:20])
    big = colored_mnist_from_arrays(images, digits, n_train=100, subsample=1000)
    assert {k: v[0][0].shape[0] for k, v in big.items()} == {
        "+80%": 50,
        "+90%": 50,
        "-90%": 30,
        "gray": 30,
    }
    batched = colored_mnist_from_arrays(images, digits, n_train=100, seed=2, batch_size=16)
    for name in DOMAINS:
        n = full[name][0][0].shape[0]
        assert [len(b[0]) for b in batched[name]] == [16] * (n // 16) + ([n % 16] if n % 16 else [])
        assert torch.equal(torch.cat([b[0] for b in batched[name]]), full[name][0][0])
        assert torch.equal(torch.cat([b[1] for b in batched[name]]), full[name][0][1])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"label_noise": -0.1}, ValueError, r"label_noise must be in \[0, 1\], got -0.1"),
        ({"label_noise": 1.5}, ValueError, r"label_noise must be in \[0, 1\], got 1.5"),
        ({"label_noise": float("nan")}, ValueError, "label_noise must be in"),
        ({"label_noise": "0.25"}, TypeError, "label_noise must be a number"),
        ({"color_flip": {"+70%": 0.3}}, ValueError, "unknown Colored MNIST domain '\\+70%'"),
        ({"color_flip": {"+80%": 2}}, ValueError, r"color_flip\['\+80%'\] must be in \[0, 1\]"),
        ({"color_flip": [0.1]}, TypeError, "color_flip must be a dict"),
        ({"subsample": 0}, ValueError, "subsample must be a positive integer or None, got 0"),
        ({"subsample": -3}, ValueError, "subsample must be a positive integer"),
        ({"subsample": 2.5}, TypeError, "subsample must be a positive integer"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
        ({"stream": "numpy"}, ValueError, "unknown data stream 'numpy'; choose from script, per-"),
        ({"restart": -1}, ValueError, "restart must be an integer >= 0, got -1"),
        ({"restart": 1.0}, TypeError, "restart must be an integer"),
        ({"stream": "per-restart", "init_layers": [[392, 1]]}, ValueError, "init_layers belongs"),
        ({"init_layers": [[392, 0]]}, ValueError, r"init_layers must be a list of \[in, out\]"),
        ({"init_layers": "392"}, ValueError, "init_layers must be a list"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating torch dtype"),
        ({"n_train": 130}, ValueError, r"n_train must be in \(0, 130\)"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    images, digits = fake_digits(130)
    kwargs = {"n_train": 100, **kwargs}
    with pytest.raises(error, match=message):
        colored_mnist_from_arrays(images, digits, **kwargs)


def test_bad_images():
    images, digits = fake_digits(130)
    with pytest.raises(ValueError, match=r"images must be uint8 \[M, 28, 28\], got torch.float32"):
        colored_mnist_from_arrays(images.astype(np.float32), digits, n_train=100)
    with pytest.raises(ValueError, match=r"digits must be \[M\] = \[130\], got \[129\]"):
        colored_mnist_from_arrays(images, digits[:-1], n_train=100)


def test_colored_mnist_checks_arguments_before_reading_data(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("data must not be read")

    monkeypatch.setattr(mnist_module, "build_cache", fail)
    with pytest.raises(ValueError, match="label_noise must be in"):
        colored_mnist(tmp_path, label_noise=2.0)
    with pytest.raises(ValueError, match="unknown Colored MNIST domain 'test'"):
        colored_mnist(tmp_path, color_flip={"test": 0.9})
    with pytest.raises(ValueError, match="subsample must be a positive integer"):
        colored_mnist(tmp_path, subsample=0)


def test_domain_constants():
    assert TRAIN_DOMAINS == ("+80%", "+90%") and TEST_DOMAINS == ("-90%", "gray")
    assert DOMAINS == TRAIN_DOMAINS + TEST_DOMAINS


# ----------------------------------------------------------------------------- specs


def test_colored_mnist_spec_is_complete_and_json():
    spec = colored_mnist_spec(color_flip={"-90%": 0.8}, subsample=10, seed=4)
    assert spec == {
        "name": "colored_mnist",
        "label_noise": 0.25,
        "color_flip": {"+80%": 0.2, "+90%": 0.1, "-90%": 0.8, "gray": 0.9},
        "subsample": 10,
        "seed": 4,
        "batch_size": None,
        "stream": "script",
        "restart": 0,
        "init_layers": [[392, 390], [390, 390], [390, 1]],
    }
    assert json.loads(json.dumps(spec)) == spec
    assert data_spec("colored_mnist", seed=4, subsample=10) == colored_mnist_spec(
        seed=4, subsample=10
    )


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A full-size MNIST-shaped cache of fake digits in ``tmp_path`` (digests pinned to it)."""
    images = np.zeros((60_000, 28, 28), np.uint8)
    rng = np.random.default_rng(0)
    images[:, 4:24:2, 4:24:2] = rng.integers(0, 256, (60_000, 10, 10), dtype=np.uint8)
    labels = rng.integers(0, 10, 60_000).astype(np.int64)
    save_arrays(
        tmp_path / "mnist.npz",
        {
            "train_images": images,
            "train_labels": labels,
            "test_images": images[:10_000],
            "test_labels": labels[:10_000],
        },
    )
    raw = {"train_images": images, "train_labels": labels, "test_images": images[:10_000]}
    raw["test_labels"] = labels[:10_000]
    pinned = {k: mnist_module.sha256_array(v.astype(np.uint8)) for k, v in raw.items()}
    monkeypatch.setattr(mnist_module, "ARRAY_SHA256", pinned)
    return tmp_path, images, labels


@pytest.mark.parametrize(
    "stream", [{"restart": 1}, {"stream": "per-restart", "restart": 1}], ids=["script", "per"]
)
def test_build_domains_rebuilds_colored_mnist_from_its_spec(fake_cache, stream):
    folder, images, labels = fake_cache
    kwargs = {"subsample": 300, "seed": 7, "color_flip": {"+80%": 0.3}, "batch_size": 128}
    kwargs.update(stream)
    direct = colored_mnist(folder, **kwargs)
    spec = json.loads(json.dumps(colored_mnist_spec(**kwargs)))
    rebuilt = build_domains(spec, data_dir=folder)
    from_arrays = colored_mnist_from_arrays(images, labels, **kwargs)
    for name in DOMAINS:
        assert len(direct[name]) == 3  # 128 + 128 + 44
        for a, b, c in zip(direct[name], rebuilt[name], from_arrays[name], strict=True):
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            assert torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    as64 = build_domains(spec, data_dir=folder, dtype=torch.float64)
    assert as64["gray"][0][0].dtype == torch.float64


def test_a_spec_from_before_streams_is_rebuilt_per_restart(fake_cache):
    """A checkpoint's spec without ``stream`` was drawn by the per-restart stream."""
    folder, _, _ = fake_cache
    old = {"name": "colored_mnist", "label_noise": 0.25, "color_flip": None, "subsample": 50,
           "seed": 3, "batch_size": None}  # fmt: skip
    rebuilt = build_domains(old, data_dir=folder)
    per_restart = colored_mnist(folder, subsample=50, seed=3, stream="per-restart")
    script = colored_mnist(folder, subsample=50, seed=3)
    for name in DOMAINS:
        assert torch.equal(rebuilt[name][0][0], per_restart[name][0][0])
        assert torch.equal(rebuilt[name][0][1], per_restart[name][0][1])
    assert not torch.equal(rebuilt["+80%"][0][0], script["+80%"][0][0])


def test_build_domains_errors():
    with pytest.raises(ValueError, match="unknown data set 'cifar'; known: colored_mnist, line"):
        build_domains({"name": "cifar"})
    with pytest.raises(ValueError, match="a data spec must be a dict with a 'name'"):
        build_domains({"seed": 0})
    with pytest.raises(ValueError, match="'depth' is not an argument of the 'colored_mnist'"):
        build_domains({"name": "colored_mnist", "depth": 3})
    with pytest.raises(ValueError, match="'depth' is not an argument of the 'linear_regression'"):
        build_domains({"name": "linear_regression", "depth": 3})
    with pytest.raises(ValueError, match="unknown data set 'cifar'"):
        data_spec("cifar")
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        data_spec("linear_regression", n=0)
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        data_spec("linear_regression", noise=-1.0)
    with pytest.raises(ValueError, match="'dtype' is not an argument"):
        data_spec("linear_regression", dtype=torch.float32)


@pytest.mark.parametrize(
    ("name", "func", "kwargs"),
    [
        ("linear_regression", linear_regression_domains, {"n": 30, "dim": 3, "n_domains": 3}),
        (
            "gaussian_classification",
            gaussian_classification_domains,
            {"n": 40, "spurious": (0.9, 0.5, 0.1), "n_domains": 3, "loss": "ce", "num_classes": 3},
        ),
    ],
)
def test_synthetic_specs_round_trip(name, func, kwargs):
    spec = data_spec(name, **kwargs, seed=3)
    assert spec["name"] == name and spec["seed"] == 3
    assert json.loads(json.dumps(spec)) == spec
    rebuilt = build_domains(json.loads(json.dumps(spec)))
    direct = func(**kwargs, seed=3)
    assert list(rebuilt) == list(direct) == [f"d{e}" for e in range(3)]
    for key in direct:
        assert torch.equal(rebuilt[key][0][0], direct[key][0][0])
        assert torch.equal(rebuilt[key][0][1], direct[key][0][1])
    as32 = build_domains(spec, dtype=torch.float32)
    assert as32["d0"][0][0].dtype == torch.float32


# ----------------------------------------------------------------------------- synthetic


def test_linear_regression_hessian_matches_torch_func():
    domains = linear_regression_domains(n_domains=3, n=40, dim=4, shift=0.7, seed=1)
    model = torch.nn.Linear(4, 1).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss_func = torch.nn.MSELoss()
    for [(X, y)] in domains.values():

        def loss(p, X=X, y=y):
            return loss_func(functional_call(model, p, (X,)), y)

        H = hessian(loss)(params)
        dense = torch.cat(
            [
                torch.cat(
                    [H["weight"]["weight"].reshape(4, 4), H["weight"]["bias"].reshape(4, 1)], 1
                ),
                torch.cat([H["bias"]["weight"].reshape(1, 4), H["bias"]["bias"].reshape(1, 1)], 1),
            ]
        )
        torch.testing.assert_close(linear_regression_hessian(X), dense, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            linear_regression_hessian(X, bias=False), dense[:4, :4], rtol=1e-12, atol=1e-12
        )


def test_linear_regression_domains_structure():
    d = linear_regression_domains(n_domains=3, n=20_000, dim=3, noise=0.0, shift=0.5, seed=0)
    u = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    solutions = []
    for e, (name, [(X, y)]) in enumerate(d.items()):
        assert name == f"d{e}" and X.dtype == torch.float64 and y.shape == (20_000, 1)
        # empirical second moments match the documented scales exp(2 * shift * e * u)
        torch.testing.assert_close(X.pow(2).mean(0), torch.exp(u * e), rtol=0.05, atol=0)
        design = torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype)], 1)
        solutions.append(torch.linalg.lstsq(design, y).solution)
    for s in solutions[1:]:  # one shared mechanism, recovered exactly without noise
        torch.testing.assert_close(s, solutions[0], rtol=1e-9, atol=1e-9)
    same = linear_regression_domains(n_domains=2, n=5, shift=0.0, seed=0)
    assert not torch.equal(same["d0"][0][0], same["d1"][0][0])  # fresh samples per domain
    assert torch.equal(
        linear_regression_domains(seed=4)["d1"][0][0], linear_regression_domains(seed=4)["d1"][0][0]
    )
    assert not torch.equal(
        linear_regression_domains(seed=4)["d1"][0][0], linear_regression_domains(seed=5)["d1"][0][0]
    )


def test_gaussian_classification_spurious_rates():
    spurious = (0.95, 0.7, 0.2)
    d = gaussian_classification_domains(
        n_domains=3, n=20_000, dim=3, spurious=spurious, spurious_noise=0.1, seed=0
    )
    for (name, [(X, y)]), p in zip(d.items(), spurious, strict=True):
        assert X.shape == (20_000, 4) and y.shape == (20_000, 1) and y.dtype == torch.float64
        agree = ((X[:, -1] > 0).double() == y[:, 0]).double().mean().item()
        assert abs(agree - p) < 4 * (p * (1 - p) / 20_000) ** 0.5 + 1e-4, (name, agree)
        # the invariant block: class means are +mu / -mu with |mu| = separation = 1
        mu1 = X[y[:, 0] == 1, :3].mean(0)
        mu0 = X[y[:, 0] == 0, :3].mean(0)
        assert abs(mu1.norm().item() - 1.0) < 0.05 and abs(mu0.norm().item() - 1.0) < 0.05
        torch.testing.assert_close(mu1, -mu0, rtol=0, atol=0.06)
        assert abs(y.mean().item() - 0.5) < 0.02


def test_gaussian_classification_multiclass():
    d = gaussian_classification_domains(
        n=3000, dim=5, num_classes=4, loss="ce", spurious=(1.0, 0.0), spurious_noise=0.0
    )
    X0, y0 = d["d0"][0]
    X1, y1 = d["d1"][0]
    assert X0.shape == (3000, 9) and y0.dtype == torch.int64 and y0.shape == (3000,)
    assert set(y0.unique().tolist()) == {0, 1, 2, 3}
    assert torch.equal(X0[:, 5:].argmax(1), y0)  # always agrees
    assert not bool((X1[:, 5:].argmax(1) == y1).any())  # never agrees
    torch.testing.assert_close(X0[:, 5:].sum(1), torch.ones(3000, dtype=torch.float64))
    batches = gaussian_classification_domains(n=50, batch_size=20)["d0"]
    assert [len(b[0]) for b in batches] == [20, 20, 10]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "bce", "num_classes": 3}, "loss='bce' needs num_classes=2, got 3; use loss='ce'"),
        ({"loss": "mse"}, "loss must be 'bce'"),
        ({"spurious": (0.9,)}, r"spurious needs one probability per domain \(2\), got 1"),
        ({"spurious": (0.9, 1.2)}, r"spurious\[1\] must be a probability in \[0, 1\], got 1.2"),
        ({"n": 0}, "n must be an integer >= 1, got 0"),
        ({"num_classes": 1, "loss": "ce"}, "num_classes must be an integer >= 2"),
        ({"separation": -1.0}, "separation must be a finite number >= 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_gaussian_classification_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gaussian_classification_domains(**kwargs)


def test_linear_regression_errors():
    with pytest.raises(ValueError, match="noise must be a finite number >= 0, got -0.1"):
        linear_regression_domains(noise=-0.1)
    with pytest.raises(TypeError, match="n_domains must be an integer"):
        linear_regression_domains(n_domains=2.0)
    with pytest.raises(TypeError, match="dtype must be a floating torch dtype"):
        linear_regression_domains(dtype=torch.int32)
    with pytest.raises(ValueError, match=r"X must be a non-empty \[N, D\] matrix"):
        linear_regression_hessian(torch.zeros(3))
