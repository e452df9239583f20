"""Colored MNIST, built exactly as the IRM protocol does (Arjovsky et al. 2019; Fishr script).

The 60,000 MNIST training images in their original order are split as follows:

* images ``0 .. 49,999`` are shuffled (images and digits with the same permutation); the
  even positions of the shuffled set form ``"+80%"`` (colour flip probability
  :math:`e = 0.2`), the odd positions ``"+90%"`` (:math:`e = 0.1`);
* images ``50,000 .. 59,999`` form ``"-90%"`` (:math:`e = 0.9`) and, built a second time
  with its own label-noise draw, ``"gray"`` (both channels kept, so colour carries nothing).

Each image (:func:`make_environment`) is reduced to 14×14 by keeping every other pixel
(``[:, ::2, ::2]``); its binary label is :math:`y = \\mathbb 1[\\text{digit} < 5] \\oplus
\\text{Bernoulli}(\\eta)` with label noise :math:`\\eta = 0.25`; its colour is
:math:`c = y \\oplus \\text{Bernoulli}(e)`; the image is stacked into two channels and
channel :math:`1 - c` is zeroed (channel 0 = red when :math:`c = 0`, channel 1 = green when
:math:`c = 1`); pixels are divided by 255. Inputs are ``X [N, 2, 14, 14]`` and targets
``y [N, 1]`` in {0, 1} (for ``BCEWithLogitsLoss``), both in the requested dtype.

Randomness (all from ``seed``, on the CPU, so every device gets the same data): one
``torch.Generator`` seeded with ``seed`` draws, in this order,

1. ``torch.randperm(50_000)``: the shuffle of images ``0 .. 49,999``;
2. for each domain in the order ``"+80%"``, ``"+90%"``, ``"-90%"``, ``"gray"``:
   ``torch.rand(n)`` for the label noise, then ``torch.rand(n)`` for the colour flips
   (drawn for ``"gray"`` too, though unused, as in the Fishr script).

A Bernoulli(p) draw is ``rand < p``. ``subsample`` keeps the first ``n`` images of each
domain **after** this construction, so a subsampled domain is a prefix of the full one and
its draws do not depend on ``n``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

DOMAINS = ("+80%", "+90%", "-90%", "gray")
TRAIN_DOMAINS = ("+80%", "+90%")
TEST_DOMAINS = ("-90%", "gray")
DEFAULT_COLOR_FLIP = {"+80%": 0.2, "+90%": 0.1, "-90%": 0.9, "gray": 0.9}
N_TRAIN = 50_000


def _check_probability(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise TypeError(f"{what} must be a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{what} must be in [0, 1], got {value}")
    return value


def _check_positive_int(value, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be a positive integer or None, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{what} must be a positive integer or None, got {value}")
    return int(value)


def resolve_color_flip(color_flip: Mapping[str, float] | None) -> dict[str, float]:
    """The colour-flip probability of every domain: the defaults updated by ``color_flip``.

    Raises:
        ValueError: an unknown domain name or a probability outside [0, 1].
    """
    resolved = dict(DEFAULT_COLOR_FLIP)
    if color_flip is None:
        return resolved
    if not isinstance(color_flip, Mapping):
        raise TypeError(
            f"color_flip must be a dict {{domain: probability}}, got {type(color_flip).__name__}"
        )
    for name, value in color_flip.items():
        if name not in resolved:
            raise ValueError(
                f"unknown Colored MNIST domain {name!r} in color_flip; use {', '.join(DOMAINS)}"
            )
        resolved[name] = _check_probability(value, f"color_flip[{name!r}]")
    return resolved


def colored_mnist_spec(
    *,
    label_noise: float = 0.25,
    color_flip: Mapping[str, float] | None = None,
    subsample: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict:
    """The JSON-serialisable description of a Colored MNIST build, with arguments checked.

    Stored in checkpoints; :func:`landscape.data.build_domains` rebuilds the same domains
    from it. ``color_flip`` is stored resolved (every domain's value).

    Example:
        >>> spec = colored_mnist_spec(subsample=100)
        >>> spec["name"], spec["color_flip"]["+90%"], spec["subsample"]
        ('colored_mnist', 0.1, 100)
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    return {
        "name": "colored_mnist",
        "label_noise": _check_probability(label_noise, "label_noise"),
        "color_flip": resolve_color_flip(color_flip),
        "subsample": _check_positive_int(subsample, "subsample"),
        "seed": int(seed),
        "batch_size": _check_positive_int(batch_size, "batch_size"),
    }


def make_environment(
    images: Tensor,
    digits: Tensor,
    e: float,
    *,
    label_noise: float,
    generator: torch.Generator,
    grayscale: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One Colored MNIST domain from ``uint8`` digit images (the IRM script's function).

    Args:
        images: ``uint8 [n, 28, 28]``.
        digits: integer digit labels ``[n]``.
        e: colour flip probability.
        label_noise: label flip probability.
        generator: CPU generator; consumes ``rand(n)`` (label noise) then ``rand(n)``
            (colour).
        grayscale: keep both channels (the ``"gray"`` domain).

    Returns:
        ``(x, y, colors)``: ``x`` ``uint8 [n, 2, 14, 14]`` (not yet divided by 255), ``y`` and
        ``colors`` ``int64 [n]`` in {0, 1}.
    """
    n = images.shape[0]
    small = images[:, ::2, ::2]
    y = (digits < 5).long() ^ (torch.rand(n, generator=generator) < label_noise).long()
    colors = y ^ (torch.rand(n, generator=generator) < e).long()
    x = torch.stack([small, small], dim=1).clone()
    if not grayscale:
        x[torch.arange(n), 1 - colors] = 0
    return x, y, colors


def colored_mnist_from_arrays(
    images: np.ndarray | Tensor,
    digits: np.ndarray | Tensor,
    *,
    label_noise: float = 0.25,
    color_flip: Mapping[str, float] | None = None,
    subsample: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    n_train: int = N_TRAIN,
) -> dict[str, list[tuple[Tensor, Tensor]]]:
    """Colored MNIST domains from given digit images (see the module doc for the protocol).

    ``images[:n_train]`` are shuffled and split even/odd into ``"+80%"`` / ``"+90%"``;
    ``images[n_train:]`` give ``"-90%"`` and ``"gray"``. :func:`colored_mnist` calls this
    with the 60,000 MNIST training images; tests call it with small synthetic arrays.

    Args:
        images: ``uint8 [M, 28, 28]``.
        digits: digit labels ``[M]`` (0..9).
        n_train: how many leading images form the two training domains (``< M``).
        Others: as in :func:`colored_mnist`.
    """
    spec = colored_mnist_spec(
        label_noise=label_noise,
        color_flip=color_flip,
        subsample=subsample,
        seed=seed,
        batch_size=batch_size,
    )
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype such as torch.float32, got {dtype}")
    images = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images)
    digits = torch.as_tensor(np.asarray(digits) if not isinstance(digits, Tensor) else digits)
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(
            f"images must be uint8 [M, 28, 28], got {images.dtype} {list(images.shape)}"
        )
    if digits.shape != images.shape[:1]:
        raise ValueError(f"digits must be [M] = [{images.shape[0]}], got {list(digits.shape)}")
    if not 0 < n_train < images.shape[0]:
        raise ValueError(f"n_train must be in (0, {images.shape[0]}), got {n_train}")
    images, digits = images.cpu(), digits.cpu().long()

    g = torch.Generator().manual_seed(spec["seed"])
    perm = torch.randperm(n_train, generator=g)
    train_x, train_d = images[:n_train][perm], digits[:n_train][perm]
    test_x, test_d = images[n_train:], digits[n_train:]
    sources = {
        "+80%": (train_x[::2], train_d[::2], False),
        "+90%": (train_x[1::2], train_d[1::2], False),
        "-90%": (test_x, test_d, False),
        "gray": (test_x, test_d, True),
    }
    domains = {}
    for name in DOMAINS:
        x_src, d_src, gray = sources[name]
        x, y, _ = make_environment(
            x_src,
            d_src,
            spec["color_flip"][name],
            label_noise=spec["label_noise"],
            generator=g,
            grayscale=gray,
        )
        if spec["subsample"] is not None:
            x, y = x[: spec["subsample"]], y[: spec["subsample"]]
        X = (x.to(dtype) / 255.0).to(device)
        Y = y.to(dtype)[:, None].to(device)
        size = spec["batch_size"] or X.shape[0]
        domains[name] = list(zip(X.split(size), Y.split(size), strict=True))
    return domains


def colored_mnist(
    data_dir: str | os.PathLike | None = None,
    *,
    label_noise: float = 0.25,
    color_flip: Mapping[str, float] | None = None,
    subsample: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
) -> dict[str, list[tuple[Tensor, Tensor]]]:
    """The four Colored MNIST domains of the IRM protocol, offline.

    Domains, in order: ``"+80%"`` (25,000 images, colour agrees with the label 80% of the
    time), ``"+90%"`` (25,000, 90%), ``"-90%"`` (10,000, 10%) and ``"gray"`` (10,000, no
    colour). Labels carry 25% noise, so an invariant classifier reaches at most 75%.

    Args:
        data_dir: MNIST cache folder (default ``$LANDSCAPE_DATA`` or ``~/.cache/landscape``;
            see :mod:`landscape.data.mnist`).
        label_noise: probability :math:`\\eta` of flipping the binary label.
        color_flip: per-domain overrides of the colour flip probability :math:`e`
            (defaults ``{"+80%": 0.2, "+90%": 0.1, "-90%": 0.9, "gray": 0.9}``; unused for
            ``"gray"``'s pixels).
        subsample: keep the first ``n`` images of each domain (after construction).
        seed: seeds the shuffle and every Bernoulli draw (order in the module doc).
        device: where the tensors go (built on the CPU first, so identical on any device).
        dtype: floating dtype of ``X`` and ``y``.
        batch_size: split each domain into consecutive batches of this size (default: one
            full batch per domain).

    Returns:
        ``{name: [(X [n, 2, 14, 14], y [n, 1]), ...]}``.

    Raises:
        ValueError: a probability outside [0, 1], an unknown domain in ``color_flip``,
            ``subsample`` or ``batch_size`` not positive, or MNIST unavailable (the message
            says how to provide it).

    Example:
        >>> domains = colored_mnist(subsample=1000)  # doctest: +SKIP
        >>> {k: v[0][0].shape[0] for k, v in domains.items()}  # doctest: +SKIP
        {'+80%': 1000, '+90%': 1000, '-90%': 1000, 'gray': 1000}
    """
    colored_mnist_spec(  # validate before touching the data
        label_noise=label_noise,
        color_flip=color_flip,
        subsample=subsample,
        seed=seed,
        batch_size=batch_size,
    )
    from landscape.data.mnist import load_mnist

    images, digits = load_mnist(data_dir)
    return colored_mnist_from_arrays(
        images,
        digits,
        label_noise=label_noise,
        color_flip=color_flip,
        subsample=subsample,
        seed=seed,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )
