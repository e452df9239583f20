"""DomainBed's hyperparameters for ERM, IRM, V-REx and Fishr: defaults and random draws.

Facts from facebookresearch/DomainBed at commit b93c22a (``domainbed/hparams_registry.py``,
``domainbed/scripts/train.py``, ``domainbed/datasets.py``) and from the Fishr authors' copy
of DomainBed (alexrame/fishr, same files), rewritten here:

* every hparam ``name`` has a default and a sampler; a random value is drawn from its own
  stream ``np.random.RandomState(seed_hash(seed, name))``, so a value depends only on
  ``(seed, name)``, never on the other hparams or on the order they are defined in;
* ``train.py`` uses the defaults when ``hparams_seed == 0`` and otherwise
  ``random_hparams(algorithm, dataset, seed_hash(hparams_seed, trial_seed))``, then applies
  the ``--hparams`` JSON on top (:func:`hparams_for` does all three);
* "small images" are ``Debug28``, ``RotatedMNIST``, ``ColoredMNIST``: ``lr`` 1e-3 (random
  ``10**U(-4.5, -2.5)``), ``weight_decay`` 0 (always), ``batch_size`` 64 (random
  ``int(2**U(3, 9))``); the others: ``lr`` 5e-5 (``10**U(-5, -3.5)``), ``weight_decay`` 0
  (``10**U(-6, -2)``), ``batch_size`` 32 (``int(2**U(3, 5.5))``; DomainNet ``int(2**U(3, 5))``);
* ``IRM``: ``irm_lambda`` 1e2 (``10**U(-1, 5)``), ``irm_penalty_anneal_iters`` 500
  (``int(10**U(0, 4))``); ``VREx``: ``vrex_lambda`` 1e1 (``10**U(-1, 5)``),
  ``vrex_penalty_anneal_iters`` 500 (``int(10**U(0, 4))``); ``Fishr``: ``lambda`` 1000
  (``10**U(1, 4)``), ``penalty_anneal_iters`` 1500 (``int(U(0, 5000))``), ``ema`` 0.95
  (``U(0.90, 0.99)``) -- the same in both registries;
* every data set trains ``N_STEPS = 5001`` steps; ``CHECKPOINT_FREQ`` is 100, 300 for VLCS,
  PACS, OfficeHome and TerraIncognita, 1000 for DomainNet.

The two registries differ only in which network hparams exist (:data:`RELEASES`): DomainBed
at b93c22a adds ``resnet50_augmix`` (default ``True``: a timm ResNet-50), ``freeze_bn``
(``False``), ``dinov2``, ``vit``, ``vit_attn_tune``, ``lars``, ``linear_steps``,
``vit_dropout``; the Fishr copy (the paper's runs) has none of them, and its ResNet always
froze batch norms. Neither defines ``mlp_width`` / ``mlp_depth`` / ``mlp_dropout`` for these
algorithms (DomainBed has no 1-D data set for them): pass them in ``overrides`` for 1-D
inputs. Values are plain Python (``float``, ``int``, ``bool``), never numpy scalars.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from landscape.data.domainbed.catalog import dataset_info
from landscape.data.domainbed.split import seed_hash

#: Our algorithm keys, in the project's order.
ALGORITHMS: tuple[str, ...] = ("erm", "irm", "vrex", "fishr")

#: DomainBed's class name of each algorithm.
DOMAINBED_NAMES: dict[str, str] = {"erm": "ERM", "irm": "IRM", "vrex": "VREx", "fishr": "Fishr"}

#: The registries: ``"domainbed"`` (facebookresearch/DomainBed b93c22a) and ``"fishr"``
#: (alexrame/fishr's copy, the Fishr paper's DomainBed runs).
RELEASES: tuple[str, ...] = ("domainbed", "fishr")

#: DomainBed's data sets whose inputs are 28x28 (its ``SMALL_IMAGES``).
SMALL_IMAGES = ("Debug28", "RotatedMNIST", "ColoredMNIST")

#: DomainBed's ``N_STEPS`` (every data set keeps the default).
N_STEPS = 5001

#: DomainBed's ``CHECKPOINT_FREQ`` where a data set overrides the default 100.
CHECKPOINT_FREQ = {
    "VLCS": 300,
    "PACS": 300,
    "OfficeHome": 300,
    "TerraIncognita": 300,
    "DomainNet": 1000,
}

Sampler = Callable[[np.random.RandomState], Any]


def _uniform(low: float, high: float) -> Sampler:
    return lambda r: r.uniform(low, high)


def _log_uniform(low: float, high: float) -> Sampler:
    """``10 ** U(low, high)``."""
    return lambda r: 10 ** r.uniform(low, high)


def _int_log_uniform(low: float, high: float, base: float = 10) -> Sampler:
    """``int(base ** U(low, high))``."""
    return lambda r: int(base ** r.uniform(low, high))


def _constant(value) -> Sampler:
    return lambda r: value


def _choice(values: list) -> Sampler:
    return lambda r: r.choice(values)


def algorithm_key(name: str) -> str:
    """Our key of an algorithm given ours (``"vrex"``) or DomainBed's name (``"VREx"``).

    Raises:
        ValueError: an algorithm not in :data:`ALGORITHMS` (the message lists them).
    """
    if isinstance(name, str):
        if name in DOMAINBED_NAMES:
            return name
        for key, domainbed in DOMAINBED_NAMES.items():
            if name == domainbed:
                return key
    known = ", ".join(f"{k} ({DOMAINBED_NAMES[k]})" for k in ALGORITHMS)
    raise ValueError(f"unknown minibatch algorithm {name!r}; known: {known}")


def _network_entries(release: str) -> list[tuple[str, Any, Sampler]]:
    """The unconditional hparams, in the registry's order."""
    entries = [("data_augmentation", True, _constant(True)), ("resnet18", False, _constant(False))]
    if release == "domainbed":
        entries += [
            ("resnet50_augmix", True, _constant(True)),
            ("dinov2", False, _constant(False)),
            ("vit", False, _constant(False)),
            ("vit_attn_tune", False, _constant(False)),
            ("freeze_bn", False, _constant(False)),
            ("lars", False, _constant(False)),
            ("linear_steps", 500, _constant(500)),
        ]
    entries.append(("resnet_dropout", 0.0, _choice([0.0, 0.1, 0.5])))
    if release == "domainbed":
        entries.append(("vit_dropout", 0.0, _choice([0.0, 0.1, 0.5])))
    entries += [
        ("class_balanced", False, _constant(False)),
        ("nonlinear_classifier", False, lambda r: bool(r.choice([False, False]))),
    ]
    return entries


def _algorithm_entries(key: str) -> list[tuple[str, Any, Sampler]]:
    if key == "irm":
        return [
            ("irm_lambda", 1e2, _log_uniform(-1, 5)),
            ("irm_penalty_anneal_iters", 500, _int_log_uniform(0, 4)),
        ]
    if key == "vrex":
        return [
            ("vrex_lambda", 1e1, _log_uniform(-1, 5)),
            ("vrex_penalty_anneal_iters", 500, _int_log_uniform(0, 4)),
        ]
    if key == "fishr":
        return [
            ("lambda", 1000.0, _log_uniform(1.0, 4.0)),
            ("penalty_anneal_iters", 1500, lambda r: int(r.uniform(0.0, 5000.0))),
            ("ema", 0.95, _uniform(0.90, 0.99)),
        ]
    return []


def _dataset_entries(dataset: str) -> list[tuple[str, Any, Sampler]]:
    if dataset in SMALL_IMAGES:
        return [
            ("lr", 1e-3, _log_uniform(-4.5, -2.5)),
            ("weight_decay", 0.0, _constant(0.0)),
            ("batch_size", 64, _int_log_uniform(3, 9, base=2)),
        ]
    high = 5 if dataset == "DomainNet" else 5.5
    return [
        ("lr", 5e-5, _log_uniform(-5, -3.5)),
        ("weight_decay", 0.0, _log_uniform(-6, -2)),
        ("batch_size", 32, _int_log_uniform(3, high, base=2)),
    ]


def registry(algorithm: str, dataset: str, release: str = "domainbed") -> list[tuple]:
    """The registry's ``(name, default, sampler)`` entries, in its order.

    Raises:
        ValueError: unknown algorithm or release; ``DomainBedDataError`` (a ``ValueError``):
            unknown data set.
    """
    key = algorithm_key(algorithm)
    name = dataset_info(dataset).name
    if release not in RELEASES:
        raise ValueError(f"unknown hparams release {release!r}; choose from {', '.join(RELEASES)}")
    return _network_entries(release) + _algorithm_entries(key) + _dataset_entries(name)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar of the same value (``np.float64`` -> ``float``)."""
    return value.item() if isinstance(value, np.generic) else value


def default_hparams(algorithm: str, dataset: str, release: str = "domainbed") -> dict[str, Any]:
    """DomainBed's default hparams of ``algorithm`` on ``dataset`` (``hparams_seed == 0``).

    Example:
        >>> default_hparams("Fishr", "RotatedMNIST")["penalty_anneal_iters"]
        1500
    """
    return {name: default for name, default, _ in registry(algorithm, dataset, release)}


def random_hparams(
    algorithm: str, dataset: str, seed: int, release: str = "domainbed"
) -> dict[str, Any]:
    """DomainBed's ``random_hparams(algorithm, dataset, seed)``: each hparam ``name`` drawn
    by its sampler from ``np.random.RandomState(seed_hash(seed, name))``.

    ``train.py`` passes ``seed = seed_hash(hparams_seed, trial_seed)``; :func:`hparams_for`
    does that.
    """
    return {
        name: _plain(sampler(np.random.RandomState(seed_hash(seed, name))))
        for name, _, sampler in registry(algorithm, dataset, release)
    }


def hparams_for(
    algorithm: str,
    dataset: str,
    hparams_seed: int = 0,
    trial_seed: int = 0,
    overrides: Mapping[str, Any] | str | None = None,
    release: str = "domainbed",
) -> dict[str, Any]:
    """The hparams DomainBed's ``train.py`` runs with.

    Defaults when ``hparams_seed == 0``, else
    ``random_hparams(algorithm, dataset, seed_hash(hparams_seed, trial_seed))``; then
    ``overrides`` (a mapping, or the JSON text of ``--hparams``) replaces or adds entries.

    Raises:
        ValueError: unknown algorithm / data set / release, a negative seed, or overrides
            that are not a JSON object.
    """
    for what, value in (("hparams_seed", hparams_seed), ("trial_seed", trial_seed)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{what} must be an integer >= 0, got {value!r}")
    if hparams_seed == 0:
        hparams = default_hparams(algorithm, dataset, release)
    else:
        seed = seed_hash(int(hparams_seed), int(trial_seed))
        hparams = random_hparams(algorithm, dataset, seed, release)
    if isinstance(overrides, str):
        overrides = json.loads(overrides)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise ValueError(f"hparams overrides must be a JSON object, got {overrides!r}")
    hparams.update({str(k): _plain(v) for k, v in (overrides or {}).items()})
    return hparams


def dataset_steps(dataset: str) -> int:
    """DomainBed's ``N_STEPS`` of ``dataset`` (5001 for every data set)."""
    dataset_info(dataset)
    return N_STEPS


def checkpoint_freq(dataset: str) -> int:
    """DomainBed's ``CHECKPOINT_FREQ`` of ``dataset`` (steps between evaluations).

    Example:
        >>> checkpoint_freq("RotatedMNIST"), checkpoint_freq("PACS"), checkpoint_freq("DomainNet")
        (100, 300, 1000)
    """
    return CHECKPOINT_FREQ.get(dataset_info(dataset).name, 100)
