"""DomainBed's training augmentation of image data sets, seeded per sample, without torchvision.

DomainBed (``domainbed/datasets.py``, ``MultipleEnvironmentImageFolder``) reads the images of
a training environment with, when ``hparams["data_augmentation"]``::

    RandomResizedCrop(224, scale=(0.7, 1.0)), RandomHorizontalFlip(), ColorJitter(0.3, 0.3,
    0.3, 0.3), RandomGrayscale(), ToTensor(), Normalize(ImageNet mean, std)

on the decoded Pillow image (original size). torchvision does not import on the machines
this project is built on, so its Pillow path is rebuilt here (``transforms.py``,
``_functional_pil.py``), draw for draw, with every random number taken from a
``torch.Generator`` instead of the global stream:

* crop: up to 10 tries of ``area · U(0.7, 1)`` and ``exp U(log 3/4, log 4/3)`` for the aspect
  ratio, ``w = round(sqrt(a·r))``, ``h = round(sqrt(a/r))``, accepted when it fits, then
  ``top = randint(H - h + 1)``, ``left = randint(W - w + 1)``; else the central crop;
  Pillow ``crop`` then bilinear ``resize`` to 224 × 224;
* flip when ``rand() < 0.5``;
* jitter: order ``randperm(4)``, factors brightness, contrast, saturation ``U(0.7, 1.3)``,
  hue ``U(-0.3, 0.3)``; Pillow's ``ImageEnhance`` and an HSV hue shift by
  ``uint8(int32(hue · 255))`` modulo 256;
* grey (``L``, copied to 3 channels) when ``rand() < 0.1``.

A sample's augmentation depends only on its seed (:func:`augment_image`), which the
training sampler draws from its own generator: a resumed run augments exactly as an
uninterrupted one, whichever worker process decodes the image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import Tensor

from landscape.data.domainbed.images import IMAGE_SIZE, image_tensor, open_image

#: DomainBed's augmentation constants.
CROP_SCALE = (0.7, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_P = 0.5
JITTER = 0.3
GRAY_P = 0.1


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def crop_box(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """``RandomResizedCrop.get_params``: ``(top, left, h, w)`` of the crop."""
    area = height * width
    log_ratio = torch.log(torch.tensor(CROP_RATIO))
    for _ in range(10):
        target = area * _uniform(*CROP_SCALE, generator)
        aspect = math.exp(_uniform(float(log_ratio[0]), float(log_ratio[1]), generator))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    ratio = width / height
    if ratio < min(CROP_RATIO):
        w, h = width, int(round(width / min(CROP_RATIO)))
    elif ratio > max(CROP_RATIO):
        h, w = height, int(round(height * max(CROP_RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def adjust_hue(image: Image.Image, factor: float) -> Image.Image:
    """Shift the hue of an RGB image by ``factor`` turns (``[-0.5, 0.5]``), through HSV."""
    h, s, v = image.convert("HSV").split()
    shifted = np.array(h, dtype=np.uint8)
    shifted += np.int32(factor * 255).astype(np.uint8)  # wraps around, as intended
    return Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert("RGB")


def color_jitter(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """``ColorJitter(0.3, 0.3, 0.3, 0.3)``: the four adjustments in a random order."""
    order = torch.randperm(4, generator=generator).tolist()
    factors = [_uniform(1 - JITTER, 1 + JITTER, generator) for _ in range(3)]
    factors.append(_uniform(-JITTER, JITTER, generator))
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for k in order:
        if k < 3:
            image = enhancers[k](image).enhance(factors[k])
        else:
            image = adjust_hue(image, factors[3])
    return image


def augment_pil(image: Image.Image, generator: torch.Generator) -> Image.Image:
    """DomainBed's random crop, flip, colour jitter and greying of one RGB image (224 × 224)."""
    top, left, h, w = crop_box(image.width, image.height, generator)
    image = image.crop((left, top, left + w, top + h)).resize(IMAGE_SIZE, Image.Resampling.BILINEAR)
    if float(torch.rand(1, generator=generator)) < FLIP_P:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = color_jitter(image, generator)
    if float(torch.rand(1, generator=generator)) < GRAY_P:
        gray = np.array(image.convert("L"), dtype=np.uint8)
        image = Image.fromarray(np.dstack([gray, gray, gray]), "RGB")
    return image


def augment_image(path: str, seed: int) -> Tensor:
    """The augmented, normalised image at ``path`` for sample seed ``seed``: float32
    ``[3, 224, 224]``; the same ``(path, seed)`` always gives the same tensor."""
    generator = torch.Generator().manual_seed(int(seed))
    return image_tensor(augment_pil(open_image(path), generator))
