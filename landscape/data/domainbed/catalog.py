"""DomainBed's data sets: their environments, folders and shapes, as DomainBed defines them.

Facts from facebookresearch/DomainBed (``domainbed/datasets.py``,
``domainbed/scripts/download.py``):

* environment ``i`` of a data set is ``ENVIRONMENTS[i]``; for the image data sets it is the
  ``i``-th environment folder in ``sorted(os.scandir(...))`` order, so the folders below are
  listed sorted (Python's code-point order: ``"location_100" < "location_38"``);
* the image data sets live in ``<data_dir>/<folder>/<env folder>/<class>/<image>``, with the
  folder names DomainBed's download script writes.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ImageNet statistics of DomainBed's ``transforms.Normalize`` (RGB).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DomainBedDataError(ValueError):
    """A DomainBed data set cannot be rebuilt (the message says what to provide)."""


@dataclass(frozen=True)
class DatasetInfo:
    """What DomainBed says about one data set.

    Attributes:
        name: DomainBed's class name (``"PACS"``).
        kind: ``"mnist"`` (built from MNIST), ``"images"`` (an image folder) or ``"debug"``
            (random tensors).
        environments: DomainBed's ``ENVIRONMENTS``, in its order (the domain names).
        input_shape: ``[C, H, W]`` of one input.
        num_classes: classes (for image folders: those of the usual download).
        folder: sub-folder of ``data_dir`` (image data sets).
        env_folders: the environment folders the download script writes, sorted as
            DomainBed sorts them (``env_folders[i]`` is environment ``i``).
    """

    name: str
    kind: str
    environments: tuple[str, ...]
    input_shape: tuple[int, ...]
    num_classes: int
    folder: str | None = None
    env_folders: tuple[str, ...] = ()

    def layout(self, data_dir) -> str:
        """The expected layout: ``/x/PACS/{art_painting,cartoon,photo,sketch}/<class>/<image>``."""
        envs = ",".join(self.env_folders)
        return f"{data_dir}/{self.folder}/{{{envs}}}/<class>/<image>"


_ALL = (
    DatasetInfo("Debug28", "debug", ("0", "1", "2"), (3, 28, 28), 2),
    DatasetInfo("Debug224", "debug", ("0", "1", "2"), (3, 224, 224), 2),
    DatasetInfo("ColoredMNIST", "mnist", ("+90%", "+80%", "-90%"), (2, 28, 28), 2),
    DatasetInfo("RotatedMNIST", "mnist", ("0", "15", "30", "45", "60", "75"), (1, 28, 28), 10),
    DatasetInfo(
        "VLCS",
        "images",
        ("C", "L", "S", "V"),
        (3, 224, 224),
        5,
        "VLCS",
        ("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    ),  # fmt: skip
    DatasetInfo(
        "PACS",
        "images",
        ("A", "C", "P", "S"),
        (3, 224, 224),
        7,
        "PACS",
        ("art_painting", "cartoon", "photo", "sketch"),
    ),  # fmt: skip
    DatasetInfo(
        "OfficeHome",
        "images",
        ("A", "C", "P", "R"),
        (3, 224, 224),
        65,
        "office_home",
        ("Art", "Clipart", "Product", "Real World"),
    ),  # fmt: skip
    DatasetInfo(
        "TerraIncognita",
        "images",
        ("L100", "L38", "L43", "L46"),
        (3, 224, 224),
        10,
        "terra_incognita",
        ("location_100", "location_38", "location_43", "location_46"),
    ),  # fmt: skip
    DatasetInfo(
        "DomainNet",
        "images",
        ("clip", "info", "paint", "quick", "real", "sketch"),
        (3, 224, 224),
        345,
        "domain_net",
        ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
    ),  # fmt: skip
)

#: The data sets we rebuild, by DomainBed's name.
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _ALL}


def dataset_info(name) -> DatasetInfo:
    """The :class:`DatasetInfo` of DomainBed data set ``name``.

    Raises:
        DomainBedDataError: an unknown name (the message lists the known ones).

    Example:
        >>> dataset_info("PACS").environments
        ('A', 'C', 'P', 'S')
    """
    if isinstance(name, str) and name in DATASETS:
        return DATASETS[name]
    raise DomainBedDataError(
        f"unknown DomainBed data set {name!r}; known: {', '.join(DATASETS)} (WILDS and "
        "Spawrious are not supported)"
    )
