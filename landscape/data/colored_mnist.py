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

Randomness: every draw is on the CPU, so every device gets the same data. Two streams
(``stream=``), both seeded by ``seed``, both giving restart ``restart``'s data:

``"script"`` (default): the official Colored MNIST script's stream (alexrame/fishr,
``coloredmnist/train_coloredmnist.py``; the IRM script). The script seeds NumPy and torch
once and continues both streams restart after restart (training draws nothing); restart
``k`` of ours *is* restart ``k`` of the script run with ``--seed seed``. :class:`ScriptStream`
holds the two streams (``np.random.RandomState(seed)``, the MT19937 of ``np.random.seed``,
and ``torch.Generator().manual_seed(seed)``, the CPU stream of ``torch.manual_seed``); each
restart draws, in this order,

1. NumPy: one shuffle of images ``0 .. 49,999`` (``RandomState.shuffle``; the script
   shuffles the images and then, from the same saved state, the digits, so both get the
   same permutation and the stream advances by one shuffle);
2. torch, for each domain in the order ``"+80%"``, ``"+90%"``, ``"-90%"``, ``"gray"``:
   ``rand(n)`` for the label flips, then ``rand(n)`` for the colour flips (``"gray"`` draws
   its own label flips, so its labels differ from ``"-90%"``'s, and colour flips it does not
   use);
3. torch: the model's initial weights: the ``nn.Linear`` layers ``init_layers`` (the script's
   2·14·14 → 390 → 390 → 1) are constructed in order (their default initialisation draws),
   then each weight gets ``xavier_uniform_`` in the same order and each bias zeros
   (:meth:`ScriptStream.initial_weights`, :func:`script_initial_weights`).

Restart ``k`` is reached by replaying the draws of restarts ``0 .. k-1`` (shuffles, flips and
layer initialisations, no training): a few tens of milliseconds per restart.

``"per-restart"``: one ``torch.Generator`` seeded with ``seed + restart`` draws
``torch.randperm(50_000)`` (the shuffle), then the flips of step 2; the model is
initialised elsewhere. ``landscape train`` stores restart ``k``'s spec as ``seed =
data_seed + k``, ``restart = 0`` (as before streams existed) and seeds the model ``seed + k``.

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

from landscape.data.script_stream import SCRIPT_INIT_LAYERS, ScriptStream, check_init_layers

DOMAINS = ("+80%", "+90%", "-90%", "gray")
TRAIN_DOMAINS = ("+80%", "+90%")
TEST_DOMAINS = ("-90%", "gray")
DEFAULT_COLOR_FLIP = {"+80%": 0.2, "+90%": 0.1, "-90%": 0.9, "gray": 0.9}
N_TRAIN = 50_000
N_IMAGES = 60_000
#: The random streams a build can follow (see the module doc).
STREAMS = ("script", "per-restart")


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


def _check_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be an integer, got {type(value).__name__}")
    return int(value)


def colored_mnist_spec(
    *,
    label_noise: float = 0.25,
    color_flip: Mapping[str, float] | None = None,
    subsample: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    stream: str = "script",
    restart: int = 0,
    init_layers: list | None = None,
) -> dict:
    """The JSON-serialisable description of a Colored MNIST build, with arguments checked.

    Stored in checkpoints; :func:`landscape.data.build_domains` rebuilds the same domains
    from it (a spec without ``stream``, written before streams existed, is ``"per-restart"``).
    ``color_flip`` is stored resolved (every domain's value); ``init_layers`` too for the
    ``"script"`` stream (the layers whose initialisation the replay of earlier restarts draws;
    default :data:`~landscape.data.script_stream.SCRIPT_INIT_LAYERS`), ``None`` for
    ``"per-restart"``.

    Example:
        >>> spec = colored_mnist_spec(subsample=100, restart=2)
        >>> spec["name"], spec["color_flip"]["+90%"], spec["stream"], spec["init_layers"][-1]
        ('colored_mnist', 0.1, 'script', [390, 1])
    """
    seed = _check_int(seed, "seed")
    restart = _check_int(restart, "restart")
    if restart < 0:
        raise ValueError(f"restart must be an integer >= 0, got {restart}")
    if stream not in STREAMS:
        raise ValueError(f"unknown data stream {stream!r}; choose from {', '.join(STREAMS)}")
    if stream == "per-restart" and init_layers is not None:
        raise ValueError("init_layers belongs to the 'script' stream; leave it out for per-restart")
    if stream == "script":
        init_layers = check_init_layers(SCRIPT_INIT_LAYERS if init_layers is None else init_layers)
    return {
        "name": "colored_mnist",
        "label_noise": _check_probability(label_noise, "label_noise"),
        "color_flip": resolve_color_flip(color_flip),
        "subsample": _check_positive_int(subsample, "subsample"),
        "seed": seed,
        "batch_size": _check_positive_int(batch_size, "batch_size"),
        "stream": stream,
        "restart": restart,
        "init_layers": init_layers,
    }


def domain_sizes(n_images: int, n_train: int = N_TRAIN) -> dict[str, int]:
    """Images per domain before ``subsample``: the shuffled ``n_train`` split even / odd, the
    remaining ``n_images - n_train`` twice (``{"+80%": 25000, "+90%": 25000, "-90%": 10000,
    "gray": 10000}`` for MNIST)."""
    rest = n_images - n_train
    return {"+80%": (n_train + 1) // 2, "+90%": n_train // 2, "-90%": rest, "gray": rest}


def _skip_restart_data(stream: ScriptStream, n_images: int, n_train: int) -> None:
    """Advance ``stream`` past the data draws of one restart (steps 1 and 2 of the module
    doc) without building anything."""
    sizes = domain_sizes(n_images, n_train)
    stream.permutation(n_train)
    for name in DOMAINS:
        stream.rand(sizes[name])  # label flips
        stream.rand(sizes[name])  # colour flips


def script_stream_at(
    spec: Mapping, n_images: int = N_IMAGES, n_train: int = N_TRAIN
) -> ScriptStream:
    """The :class:`ScriptStream` of ``spec["seed"]`` positioned at the start of restart
    ``spec["restart"]``: the draws of every earlier restart (shuffle, label and colour flips,
    layer initialisation; see the module doc) are replayed, nothing is built or trained."""
    stream = ScriptStream(spec["seed"])
    for _ in range(spec["restart"]):
        _skip_restart_data(stream, n_images, n_train)
        stream.initial_weights(spec["init_layers"])
    return stream


def script_initial_weights(
    spec: Mapping, *, n_images: int = N_IMAGES, n_train: int = N_TRAIN
) -> list[tuple[Tensor, Tensor]]:
    """The script's initial weights of restart ``spec["restart"]`` (the ``"script"`` stream).

    The draws of restarts ``0 .. restart - 1`` and the data draws of restart ``restart`` are
    replayed (a few tens of milliseconds per restart), then :meth:`ScriptStream.initial_weights`
    draws the layers of ``spec["init_layers"]``: what the script's ``MLP()`` holds before its
    first step.

    Args:
        spec: a Colored MNIST spec (:func:`colored_mnist_spec`) with ``stream="script"``.
        n_images, n_train: the data's size (MNIST: 60,000 images, 50,000 shuffled).

    Returns:
        ``[(weight [out, in], bias [out]), ...]``, float32, one pair per layer in order.

    Raises:
        ValueError: not a ``"script"`` spec.
    """
    stream_name = spec.get("stream", "per-restart")
    if stream_name != "script":
        raise ValueError(
            "initial weights come with the 'script' data stream only; this spec's stream is "
            f"{stream_name!r}"
        )
    spec = colored_mnist_spec(**{k: v for k, v in spec.items() if k != "name"})
    stream = script_stream_at(spec, n_images, n_train)
    _skip_restart_data(stream, n_images, n_train)
    return stream.initial_weights(spec["init_layers"])


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


def _checked_arrays(images, digits, dtype, n_train: int) -> tuple[Tensor, Tensor]:
    """``(images uint8 [M, 28, 28], digits int64 [M])`` on the CPU; one-line errors."""
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
    return images.cpu(), digits.cpu().long()


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
    stream: str = "script",
    restart: int = 0,
    init_layers: list | None = None,
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
        stream=stream,
        restart=restart,
        init_layers=init_layers,
    )
    images, digits = _checked_arrays(images, digits, dtype, n_train)

    if spec["stream"] == "script":
        script = script_stream_at(spec, n_images=images.shape[0], n_train=n_train)
        perm, g = script.permutation(n_train), script.torch
    else:
        g = torch.Generator().manual_seed(spec["seed"] + spec["restart"])
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
    stream: str = "script",
    restart: int = 0,
    init_layers: list | None = None,
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
        stream: ``"script"`` (restart ``restart`` of the official script run with ``--seed
            seed``) or ``"per-restart"`` (one generator seeded ``seed + restart``); see the
            module doc.
        restart: the restart whose data to build.
        init_layers: ``"script"`` stream only: the ``[in, out]`` widths of the linear layers
            whose initialisation every earlier restart drew (default: the script's MLP).
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
    spec = colored_mnist_spec(  # validate before touching the data
        label_noise=label_noise,
        color_flip=color_flip,
        subsample=subsample,
        seed=seed,
        batch_size=batch_size,
        stream=stream,
        restart=restart,
        init_layers=init_layers,
    )
    from landscape.data.mnist import load_mnist

    images, digits = load_mnist(data_dir)
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    return colored_mnist_from_arrays(images, digits, device=device, dtype=dtype, **kwargs)
