"""DomainBed's RotatedMNIST and ColoredMNIST, rebuilt offline from our MNIST cache.

Facts from facebookresearch/DomainBed (``domainbed/datasets.py``, ``scripts/train.py``):

* ``MultipleEnvironmentMNIST`` concatenates MNIST's 60,000 training and 10,000 test images
  (and labels), shuffles all 70,000 with ``torch.randperm(70000)`` on the global CPU stream,
  which ``train.py`` seeded with ``torch.manual_seed(args.seed)`` just before building the
  data set (nothing draws from it in between), and gives environment ``i`` of ``n`` the
  images ``[i::n]``: RotatedMNIST's six environments hold 11,667 (``i < 4``) or 11,666
  images, ColoredMNIST's three 23,334, 23,333 and 23,333.
* RotatedMNIST (``'0', '15', '30', '45', '60', '75'``): torchvision's
  ``rotate(ToPILImage(digit), angle, fill=(0,), interpolation=BILINEAR)``, i.e. Pillow's
  ``Image.rotate(angle, BILINEAR, expand=False, center=None, fillcolor=(0,))`` on the ``L``
  image, then ``ToTensor`` (``uint8 / 255`` in float32); ``y`` is the digit. Input
  ``[1, 28, 28]``, 10 classes. (Bilinear since DomainBed's commit 27e115e of 2021-04-21,
  as in alexrame/fishr; earlier DomainBed releases rotated with BICUBIC, so their images
  differ slightly from these.)
* ColoredMNIST (``'+90%', '+80%', '-90%'`` with colour-flip probabilities 0.1, 0.2, 0.9):
  environment by environment, in that order, ``y = (digit < 5) xor (rand(n) < 0.25)`` and
  ``colour = y xor (rand(n) < p)``, both ``torch.rand`` on the same global stream after the
  shuffle; ``X`` stacks the digit twice and zeroes channel ``1 - colour``, then
  ``uint8 / 255``. Input ``[2, 28, 28]``, 2 classes.

Here the global stream is a ``torch.Generator`` seeded with the run's ``--seed`` (its CPU
``randperm`` and ``rand`` draw exactly what the global stream draws after
``torch.manual_seed``). Digits stay ``uint8`` (rotated ones are rotated once, when first fetched);
each batch is converted to float when it is fetched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from landscape.data.mnist import CACHE_FILE, load_mnist

#: RotatedMNIST's angles and ColoredMNIST's colour-flip probabilities, per environment.
ROTATIONS = (0, 15, 30, 45, 60, 75)
COLOR_FLIPS = (0.1, 0.2, 0.9)
LABEL_FLIP = 0.25
N_MNIST = 70_000


def mnist_folder(data_dir: str | os.PathLike | None) -> Path | None:
    """Where our MNIST cache is: ``data_dir`` itself, or DomainBed's ``<data_dir>/MNIST/raw``.

    A folder with our ``mnist.npz`` cache is used as it is; otherwise, when it holds
    DomainBed's torchvision layout ``MNIST/raw/`` (the idx files), that sub-folder is read
    (the cache is written beside the idx files). ``None``: the default cache folder.
    """
    if data_dir is None:
        return None
    folder = Path(data_dir).expanduser()
    raw = folder / "MNIST" / "raw"
    if not (folder / CACHE_FILE).is_file() and raw.is_dir():
        return raw
    return folder


def mnist_70k(data_dir: str | os.PathLike | None = None) -> tuple[Tensor, Tensor]:
    """MNIST's training then test images, as DomainBed concatenates them.

    Returns:
        ``uint8 [70000, 28, 28]`` images and ``int64 [70000]`` digits.
    """
    folder = mnist_folder(data_dir)
    train_x, train_y = load_mnist(folder, split="train")
    test_x, test_y = load_mnist(folder, split="test")
    images = torch.from_numpy(np.concatenate([train_x, test_x]))
    labels = torch.from_numpy(np.concatenate([train_y, test_y]))
    return images, labels


def rotate_digits(digits: Tensor, angle: float) -> Tensor:
    """Rotate each ``uint8 [n, 28, 28]`` digit by ``angle`` degrees as DomainBed does.

    Pillow's bilinear ``Image.rotate`` about the centre, same size, black fill (what
    torchvision's ``rotate`` calls on a PIL image).
    """
    out = np.empty(tuple(digits.shape), dtype=np.uint8)
    for k, digit in enumerate(digits.numpy()):
        image = Image.fromarray(digit).rotate(
            angle, Image.Resampling.BILINEAR, expand=False, center=None, fillcolor=(0,)
        )
        out[k] = np.asarray(image)
    return torch.from_numpy(out)


class DigitEnvironment(Dataset):
    """Some samples of one MNIST environment: ``uint8`` digits, converted per batch.

    RotatedMNIST's digits are rotated when first fetched and kept rotated (a digit is
    rotated once however many passes an analysis makes, and a ``--subsample`` rotates only
    the digits it reads).

    Args:
        digits: ``uint8 [n, 28, 28]``, not rotated yet.
        labels: ``int64 [n]``.
        channels: ``int64 [n]`` the colour channel each digit is drawn in (ColoredMNIST, input
            ``[2, 28, 28]``), or ``None`` (grey, input ``[1, 28, 28]``).
        angle: RotatedMNIST's rotation in degrees, or ``None``.
    """

    def __init__(
        self,
        digits: Tensor,
        labels: Tensor,
        channels: Tensor | None = None,
        angle: int | None = None,
    ) -> None:
        self.digits, self.labels, self.channels = digits.clone(), labels, channels
        self.angle = angle
        self.rotated = torch.zeros(len(labels), dtype=torch.bool) if angle else None

    def _rotate(self, index: Tensor) -> None:
        """Rotate the digits at ``index`` not rotated yet, in place."""
        todo = index[~self.rotated[index]].unique()
        if len(todo):
            self.digits[todo] = rotate_digits(self.digits[todo], self.angle)
            self.rotated[todo] = True

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        X, y = self.__getitems__([index])
        return X[0], y[0]

    def __getitems__(self, indices) -> tuple[Tensor, Tensor]:
        """``X`` float32 ``[B, C, 28, 28]`` (``uint8 / 255``) and ``y`` int64 ``[B]``."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        if self.rotated is not None:
            self._rotate(index)
        gray = self.digits[index].to(torch.float32).div(255)
        if self.channels is None:
            return gray.unsqueeze(1), self.labels[index]
        X = torch.zeros(len(index), 2, 28, 28)
        X[torch.arange(len(index)), self.channels[index]] = gray
        return X, self.labels[index]


@dataclass
class MNISTEnvironment:
    """One whole environment before selection: ``uint8`` digits in DomainBed's order.

    Attributes:
        digits: ``uint8 [n, 28, 28]``, not rotated yet.
        labels: ``int64 [n]`` (the digit, or ColoredMNIST's noisy binary label).
        channels: ColoredMNIST's colour channel per sample ``int64 [n]``, else ``None``.
        angle: RotatedMNIST's rotation in degrees, else ``None``.
    """

    digits: Tensor
    labels: Tensor
    channels: Tensor | None = None
    angle: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> DigitEnvironment:
        """The samples at ``indices`` (in that order), rotated when fetched."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        channels = None if self.channels is None else self.channels[index]
        return DigitEnvironment(self.digits[index], self.labels[index], channels, self.angle)


def mnist_environments(
    name: str, *, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> list[MNISTEnvironment]:
    """Every environment of DomainBed's ``"RotatedMNIST"`` or ``"ColoredMNIST"`` for ``--seed``.

    Example:
        >>> envs = mnist_environments("RotatedMNIST")  # doctest: +SKIP
        >>> [len(e) for e in envs]  # doctest: +SKIP
        [11667, 11667, 11667, 11667, 11666, 11666]
    """
    if name not in ("RotatedMNIST", "ColoredMNIST"):
        raise ValueError(f"{name!r} is not one of DomainBed's MNIST data sets")
    images, digits = mnist_70k(data_dir)
    generator = torch.Generator().manual_seed(seed)
    shuffle = torch.randperm(len(images), generator=generator)
    images, digits = images[shuffle], digits[shuffle]
    if name == "RotatedMNIST":
        n = len(ROTATIONS)
        return [
            MNISTEnvironment(images[i::n], digits[i::n], angle=angle)
            for i, angle in enumerate(ROTATIONS)
        ]
    n = len(COLOR_FLIPS)
    envs = []
    for i, flip in enumerate(COLOR_FLIPS):
        env_digits = digits[i::n]
        label_noise = torch.rand(len(env_digits), generator=generator) < LABEL_FLIP
        labels = (env_digits < 5) ^ label_noise
        color_noise = torch.rand(len(env_digits), generator=generator) < flip
        channels = labels ^ color_noise
        envs.append(MNISTEnvironment(images[i::n], labels.long(), channels=channels.long()))
    return envs
