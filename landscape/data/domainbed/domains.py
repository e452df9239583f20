"""The domains of a DomainBed run: ``{environment: unshuffled DataLoader}`` from its arguments.

:func:`domainbed_domains` rebuilds the environments of a DomainBed data set as
``domainbed/scripts/train.py`` built them (same samples, same order) and keeps the
requested split of each: ``"in"`` is what DomainBed trained on (for the training
environments), ``"out"`` its held-out validation part, ``"all"`` the whole environment.
:func:`domainbed_domains_from_metadata` does the same from the metadata that
``landscape.load_checkpoint`` returns for a DomainBed ``model.pkl``.

Inputs are always built with DomainBed's evaluation transform: training-time augmentation
(``hparams["data_augmentation"]`` on the image data sets) is random, and an analysis needs
the same data at every pass.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from landscape.data.domainbed.catalog import DatasetInfo, DomainBedDataError, dataset_info
from landscape.data.domainbed.debug import debug_environments
from landscape.data.domainbed.images import image_environments
from landscape.data.domainbed.loader import DomainLoader
from landscape.data.domainbed.mnist import mnist_environments
from landscape.data.domainbed.split import SPLITS, environment_indices
from landscape.data.mnist import CACHE_FILE

#: Samples per batch when ``batch_size`` is not given, by kind of data set (64 is the batch
#: size of DomainBed's evaluation loaders).
DEFAULT_BATCH_SIZE = {"images": 64, "mnist": 1024, "debug": 16}


class DomainBedDomains(dict):
    """``{environment name: DomainLoader}``, in the order asked for, and what DomainBed calls them.

    A plain ``dict`` for every analysis (each value is an unshuffled ``DataLoader`` of
    ``(X, y)`` batches on the requested device), with attributes:

    Attributes:
        dataset: DomainBed's data set name.
        split: ``"in"``, ``"out"``, ``"all"`` or ``"uda"``.
        environments: every environment of the data set, in DomainBed's order.
        test_envs: the names of the run's test environments (loaded or not).
        input_shape: ``[C, H, W]`` of one input.
        num_classes: number of classes.
        settings: JSON-serialisable description of the build (to record with results).
    """

    def __init__(self, loaders, *, info: DatasetInfo, split, test_envs, num_classes, settings):
        super().__init__(loaders)
        self.dataset = info.name
        self.split = split
        self.environments = info.environments
        self.test_envs = tuple(test_envs)
        self.input_shape = info.input_shape
        self.num_classes = num_classes
        self.settings = settings

    @property
    def train_envs(self) -> tuple[str, ...]:
        """The run's training environments (every environment that is not a test one)."""
        return tuple(e for e in self.environments if e not in self.test_envs)

    def describe(self) -> str:
        """One line, e.g. ``PACS, split 'in': A (test) 1,639, C 1,876, P 1,336, S 3,144``."""
        parts = []
        for name, loader in self.items():
            test = " (test)" if name in self.test_envs else ""
            parts.append(f"{name}{test} {len(loader.dataset):,}")
        return f"{self.dataset}, split {self.split!r}: {', '.join(parts)}"


def _env_index(info: DatasetInfo, ref, what: str) -> int:
    """Environment ``ref`` (an index, or one of DomainBed's names) as an index."""
    n = len(info.environments)
    if isinstance(ref, str) and ref in info.environments:
        return info.environments.index(ref)
    if not isinstance(ref, bool) and hasattr(ref, "__index__") and 0 <= int(ref) < n:
        return int(ref)
    raise DomainBedDataError(
        f"{what}: {ref!r} is not an environment of {info.name}; use an index 0..{n - 1} or "
        f"one of {', '.join(map(repr, info.environments))}"
    )


def _indices(info: DatasetInfo, refs, what: str) -> list[int]:
    if isinstance(refs, str) or not hasattr(refs, "__iter__"):
        refs = [refs]
    out = []
    for ref in refs:
        index = _env_index(info, ref, what)
        if index not in out:
            out.append(index)
    return out


def _wanted(info: DatasetInfo, environments, tests: list[int]) -> list[int]:
    if environments is None:
        return list(range(len(info.environments)))
    if isinstance(environments, str) and environments in ("train", "test"):
        picked = [
            i for i in range(len(info.environments)) if (i in tests) == (environments == "test")
        ]
        if not picked:
            raise DomainBedDataError(f"{info.name} has no {environments} environment in this run")
        return picked
    return _indices(info, environments, "environments")


def _environments(info: DatasetInfo, data_dir, wanted: list[int], seed: int):
    """``({env_i: environment}, num_classes)``: each environment has ``len`` and ``subset``."""
    if info.kind == "images":
        return image_environments(info, data_dir, wanted)
    if info.kind == "mnist":
        envs = mnist_environments(info.name, seed=seed, data_dir=data_dir)
    else:
        envs = debug_environments(info.input_shape, seed=seed)
    return {i: envs[i] for i in wanted}, info.num_classes


def _seed(value, what: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 0:
        raise ValueError(f"{what} must be an integer >= 0 (DomainBed's --{what}), got {value!r}")
    return int(value)


def _check_args(split, batch_size, first, dtype) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    for what, value in (("batch_size", batch_size), ("first", first)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{what} must be a positive integer or None, got {value!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(
            f"dtype must be a floating torch dtype such as torch.float32, got {dtype!r}"
        )


def _split_indices(info: DatasetInfo, env_i: int, n: int, split: str, **run):
    """:func:`environment_indices` of environment ``env_i`` (``n`` samples); an empty split
    is an error (an analysis of no samples)."""
    index = environment_indices(n, env_i, split, **run)
    if len(index) == 0:
        raise DomainBedDataError(
            f"the {split!r} split of {info.name} environment {info.environments[env_i]!r} is "
            f"empty (of {n} samples, holdout_fraction={run['holdout_fraction']}, "
            f"uda_holdout_fraction={run['uda_holdout_fraction']}); choose another split"
        )
    return index


def domainbed_domains(
    dataset: str,
    data_dir: str | os.PathLike | None = None,
    *,
    test_envs: Sequence[int | str] = (),
    holdout_fraction: float = 0.2,
    trial_seed: int = 0,
    seed: int = 0,
    split: str = "in",
    uda_holdout_fraction: float = 0.0,
    environments: Sequence[int | str] | str | None = None,
    first: int | None = None,
    batch_size: int | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DomainBedDomains:
    """The environments of a DomainBed run, as ``{name: unshuffled DataLoader}``.

    Args:
        dataset: DomainBed's data set name (``"RotatedMNIST"``, ``"ColoredMNIST"``,
            ``"PACS"``, ``"VLCS"``, ``"OfficeHome"``, ``"TerraIncognita"``, ``"DomainNet"``,
            ``"Debug28"``, ``"Debug224"``).
        data_dir: image data sets: the folder holding e.g. ``PACS/<env>/<class>/<image>``
            (DomainBed's ``--data_dir``). MNIST data sets: our MNIST cache folder or
            DomainBed's (with ``MNIST/raw/``); ``None`` is the default cache.
        test_envs: the run's ``--test_envs`` (indices or names).
        holdout_fraction: the run's ``--holdout_fraction``.
        trial_seed: the run's ``--trial_seed`` (seeds the in / out split).
        seed: the run's ``--seed`` (seeds the MNIST shuffle and colours, and Debug's data).
        split: ``"in"`` (trained on), ``"out"`` (held out), ``"all"``, or ``"uda"``.
        uda_holdout_fraction: the run's ``--uda_holdout_fraction`` (test environments only).
        environments: which to load: ``None`` (all), ``"train"``, ``"test"``, or a list of
            indices / names (kept in that order).
        first: keep only the first ``first`` samples of each split (in DomainBed's order;
            only those are ever read); ``None``: all.
        batch_size: samples per batch (default :data:`DEFAULT_BATCH_SIZE` of the data set's
            kind); results of the analyses do not depend on it.
        num_workers: DataLoader worker processes (decoding images in parallel).
        device: where each batch goes.
        dtype: floating dtype of ``X`` (DomainBed's inputs are float32; a wider dtype holds
            the same values).

    Returns:
        :class:`DomainBedDomains`: ``{environment name: DomainLoader}`` with ``X``
        ``[B, *input_shape]`` and ``y`` int64 ``[B]``, plus ``test_envs``,
        ``train_envs``, ``num_classes`` and ``settings``.

    Raises:
        DomainBedDataError: (a ``ValueError``) unknown data set or environment, missing or
            malformed data folder, or an empty split; one line saying what to do.
    """
    info = dataset_info(dataset)
    _check_args(split, batch_size, first, dtype)
    seed, trial_seed = _seed(seed, "seed"), _seed(trial_seed, "trial_seed")
    tests = _indices(info, test_envs, "test_envs")
    wanted = _wanted(info, environments, tests)
    envs, num_classes = _environments(info, data_dir, wanted, seed)
    batch = batch_size or DEFAULT_BATCH_SIZE[info.kind]
    run = {"holdout_fraction": holdout_fraction, "uda_holdout_fraction": uda_holdout_fraction}
    run["trial_seed"] = trial_seed
    loaders = {}
    for env_i in wanted:
        env, name = envs[env_i], info.environments[env_i]
        index = _split_indices(info, env_i, len(env), split, test_env=env_i in tests, **run)
        loaders[name] = DomainLoader(
            env.subset(index[:first]), batch_size=batch, device=device, dtype=dtype,
            num_workers=num_workers,
        )  # fmt: skip
    settings = {
        "dataset": info.name, "split": split, "test_envs": sorted(tests), **run, "seed": seed,
        "environments": list(loaders), "first": first,
        "data_dir": None if data_dir is None else str(data_dir),
    }  # fmt: skip
    names = [info.environments[i] for i in sorted(tests)]
    return DomainBedDomains(
        loaders, info=info, split=split, test_envs=names, num_classes=num_classes,
        settings=settings,
    )  # fmt: skip


def _from_meta(meta: Mapping, key: str, default):
    """``meta[key]``, else DomainBed's ``meta["args"][key]``, else ``default``."""
    if meta.get(key) is not None:
        return meta[key]
    args = meta.get("args")
    if isinstance(args, Mapping) and args.get(key) is not None:
        return args[key]
    return default


def _metadata_data_dir(info: DatasetInfo, data_dir, recorded):
    """The folder to read: ``data_dir`` if given; else the run's own ``--data_dir``, for the
    MNIST data sets only when it holds MNIST here (otherwise the default cache)."""
    if data_dir is not None or recorded is None:
        return data_dir
    if info.kind != "mnist":
        return recorded
    folder = Path(recorded).expanduser()
    if (folder / CACHE_FILE).is_file() or (folder / "MNIST" / "raw").is_dir():
        return folder
    return None


def domainbed_domains_from_metadata(
    meta: Mapping,
    data_dir: str | os.PathLike | None = None,
    split: str = "in",
    batch_size: int | None = None,
    *,
    environments: Sequence[int | str] | str | None = None,
    first: int | None = None,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DomainBedDomains:
    """:func:`domainbed_domains` for the run a DomainBed checkpoint's metadata describes.

    Args:
        meta: the metadata of ``load_checkpoint`` on a DomainBed ``model.pkl``: keys
            ``"dataset"``, ``"test_envs"``, ``"holdout_fraction"``, ``"trial_seed"``,
            ``"seed"``, ``"data_dir"`` (and ``"hparams"``); a key it lacks is looked up in
            ``meta["args"]`` (DomainBed's ``vars(args)``), then DomainBed's default.
        data_dir: the data folder here; default: the run's ``--data_dir`` (for the MNIST data
            sets only when it holds MNIST on this machine, else our default MNIST cache).
        split, batch_size, environments, first, num_workers, device, dtype: as in
            :func:`domainbed_domains`.

    Raises:
        DomainBedDataError: no or an unknown data set, missing data (one line each).
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be the metadata dict of a DomainBed checkpoint, got {meta!r}")
    dataset = _from_meta(meta, "dataset", None)
    if dataset is None:
        raise DomainBedDataError(
            "the metadata names no DomainBed data set ('dataset'); is it a DomainBed checkpoint?"
        )
    info = dataset_info(dataset)
    return domainbed_domains(
        info.name,
        _metadata_data_dir(info, data_dir, _from_meta(meta, "data_dir", None)),
        test_envs=list(_from_meta(meta, "test_envs", [0])),
        holdout_fraction=_from_meta(meta, "holdout_fraction", 0.2),
        trial_seed=_from_meta(meta, "trial_seed", 0),
        seed=_from_meta(meta, "seed", 0),
        split=split,
        uda_holdout_fraction=_from_meta(meta, "uda_holdout_fraction", 0.0),
        environments=environments,
        first=first,
        batch_size=batch_size,
        num_workers=num_workers,
        device=device,
        dtype=dtype,
    )
