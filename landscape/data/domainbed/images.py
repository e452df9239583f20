"""DomainBed's image data sets (PACS, VLCS, OfficeHome, TerraIncognita, DomainNet), read lazily.

Facts from facebookresearch/DomainBed (``domainbed/datasets.py``,
``MultipleEnvironmentImageFolder``) and torchvision (``datasets/folder.py``,
``transforms/functional.py``), carried over without importing torchvision:

* the environments are ``sorted(f.name for f in os.scandir(root) if f.is_dir())`` of
  ``<data_dir>/<folder>/``; environment ``i`` is ``ENVIRONMENTS[i]``;
* each is a torchvision ``ImageFolder``: classes ``sorted`` sub-folder names, labelled
  ``0 .. K-1`` in that order; for each class in turn, files from
  ``sorted(os.walk(class_dir, followlinks=True))`` then ``sorted(files)``, kept when the
  lower-cased path ends with an image extension (:data:`IMG_EXTENSIONS`); read with
  Pillow and ``convert("RGB")``; DomainBed sets ``ImageFile.LOAD_TRUNCATED_IMAGES = True``;
* the evaluation transform (DomainBed trains its training environments with random
  augmentation when ``data_augmentation`` is on; analyses need the deterministic one):
  ``Resize((224, 224))`` (Pillow bilinear, skipped when the image is already 224 × 224),
  ``ToTensor`` (``uint8 / 255`` in float32, ``[3, 224, 224]``) and
  ``Normalize(ImageNet mean, std)`` (``(x - mean) / std`` per channel in float32).

Images are decoded when a batch is fetched, so memory is bounded by one batch.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from landscape.data.domainbed.catalog import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetInfo,
    DomainBedDataError,
)

#: torchvision's ``IMG_EXTENSIONS`` (compared with the lower-cased path).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_SIZE = (224, 224)
_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)


def subfolders(root: str | os.PathLike) -> list[str]:
    """Names of the folders in ``root`` (symbolic links followed), sorted as DomainBed does."""
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def image_folder(root: str | os.PathLike) -> tuple[list[str], list[tuple[str, int]]]:
    """torchvision's ``ImageFolder`` listing of ``root``: ``(classes, [(path, label), ...])``.

    Raises:
        DomainBedDataError: ``root`` has no class folder, or a class folder holds no image.
    """
    root = str(root)
    classes = subfolders(root)
    if not classes:
        raise DomainBedDataError(f"{root} holds no class folder: expected {root}/<class>/<image>")
    samples = []
    for label, name in enumerate(classes):
        count = len(samples)
        for folder, _, files in sorted(os.walk(os.path.join(root, name), followlinks=True)):
            for file in sorted(files):
                path = os.path.join(folder, file)
                if path.lower().endswith(IMG_EXTENSIONS):
                    samples.append((path, label))
        if len(samples) == count:
            raise DomainBedDataError(
                f"class folder {os.path.join(root, name)} holds no image (extensions "
                f"{', '.join(IMG_EXTENSIONS)}); add its images or remove the folder"
            )
    return classes, samples


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode one image as Pillow RGB (truncated files read as DomainBed reads them).

    Raises:
        DomainBedDataError: the file is not a readable image.
    """
    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = True
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            with open(path, "rb") as f:
                return Image.open(f).convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DomainBedDataError(
            f"{path} cannot be read as an image ({err}); replace or remove the file"
        ) from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated


def image_tensor(image: Image.Image) -> Tensor:
    """``ToTensor`` then ``Normalize(ImageNet)``: float32 ``[3, H, W]``,
    ``(rgb / 255 - mean) / std`` per channel."""
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    x = pixels.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    return x.sub_(_MEAN).div_(_STD)


def load_image(path: str | os.PathLike) -> Tensor:
    """Decode one image and apply DomainBed's evaluation transform: float32 ``[3, 224, 224]``.

    ``x = (resize_224x224(rgb) / 255 - mean) / std`` per channel (ImageNet statistics).
    """
    image = open_image(path)
    if image.size != IMAGE_SIZE:
        image = image.resize(IMAGE_SIZE, Image.Resampling.BILINEAR)
    return image_tensor(image)


class ImageEnvironment(Dataset):
    """Images of one environment, decoded and transformed when fetched.

    Args:
        samples: ``[(path, label), ...]`` in the order the batches should follow.
        classes: the environment's class names (``classes[label]``).
    """

    def __init__(self, samples: list[tuple[str, int]], classes: list[str]) -> None:
        self.samples, self.classes = samples, classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        path, label = self.samples[index]
        return load_image(path), torch.tensor(label, dtype=torch.int64)

    def __getitems__(self, indices) -> tuple[Tensor, Tensor]:
        """``X`` float32 ``[B, 3, 224, 224]`` and ``y`` int64 ``[B]``."""
        picked = [self.samples[int(i)] for i in indices]
        X = torch.stack([load_image(path) for path, _ in picked])
        return X, torch.tensor([label for _, label in picked], dtype=torch.int64)

    def subset(self, indices: np.ndarray) -> ImageEnvironment:
        """The samples at ``indices``, in that order."""
        return ImageEnvironment([self.samples[int(i)] for i in indices], self.classes)


def _root(info: DatasetInfo, data_dir) -> Path:
    if data_dir is None:
        raise DomainBedDataError(
            f"{info.name} is read from a local folder: pass data_dir (--data-dir), the folder "
            f"holding {info.layout('<data_dir>')}"
        )
    root = Path(data_dir).expanduser() / info.folder
    if not root.is_dir():
        raise DomainBedDataError(
            f"{info.name} not found under {data_dir}: expected {info.layout(data_dir)}; "
            f"download it with DomainBed's download script (python -m "
            f"domainbed.scripts.download --data_dir {data_dir})"
        )
    return root


def image_environments(
    info: DatasetInfo, data_dir: str | os.PathLike | None, wanted: list[int]
) -> tuple[dict[int, ImageEnvironment], int]:
    """The environments ``wanted`` (indices in DomainBed's order) of image data set ``info``.

    Returns:
        ``({env_i: ImageEnvironment}, num_classes)``: each environment's files listed in
        ``ImageFolder`` order (nothing is decoded), and DomainBed's number of classes (those
        of the last environment).

    Raises:
        DomainBedDataError: the folder is missing, or does not hold one sub-folder per
            environment (DomainBed numbers the environments by the sorted sub-folders).
    """
    root = _root(info, data_dir)
    found = subfolders(root)
    if len(found) != len(info.environments):
        raise DomainBedDataError(
            f"{root} holds {len(found)} folders ({', '.join(found) or 'none'}) but DomainBed "
            f"numbers the {len(info.environments)} environments of {info.name} by its sorted "
            f"sub-folders: expected exactly {', '.join(info.env_folders)}"
        )
    envs = {}
    for env_i in wanted:
        classes, samples = image_folder(root / found[env_i])
        envs[env_i] = ImageEnvironment(samples, classes)
    return envs, len(subfolders(root / found[-1]))
