"""The settings of one DomainBed-protocol run (DomainBed's ``scripts/train.py`` arguments).

:class:`DomainBedConfig` holds DomainBed's arguments (``--dataset``, ``--algorithm``,
``--test_envs``, ``--hparams_seed``, ``--trial_seed``, ``--seed``, ``--steps``,
``--checkpoint_freq``, ``--holdout_fraction``, ``--hparams``, ``--data_dir``) and ours
(``subsample``, ``num_workers``, ``device``, what to save). :meth:`DomainBedConfig.args` is
the ``vars(args)`` DomainBed records in every line of ``results.jsonl`` and in ``model.pkl``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from landscape.data.domainbed.catalog import dataset_info
from landscape.training.minibatch.hparams import (
    DOMAINBED_NAMES,
    algorithm_key,
    checkpoint_freq,
    dataset_steps,
    hparams_for,
)

#: Settings that may change when a run is resumed (they change no number it writes).
RESUME_FREE = ("data_dir", "num_workers", "device", "save_domainbed_pkl", "step_checkpoints")


def _integer(value, what: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return value


@dataclass
class DomainBedConfig:
    """One DomainBed-protocol run.

    Attributes:
        dataset: DomainBed's data set (``"RotatedMNIST"``, ``"PACS"``, ...).
        algorithm: the algorithm, DomainBed's name (``"ERM"``, ``"IRM"``, ``"VREx"``,
            ``"Fishr"``; ours, ``"fishr"``, is accepted and stored as DomainBed's).
        test_envs: indices of the test environments (DomainBed's default ``[0]``).
        hparams_seed: 0: default hparams; else DomainBed's random draw.
        trial_seed: seeds the in / out splits and the random hparams.
        seed: seeds the MNIST shuffle, the initial weights and the minibatches.
        steps: updates (``None``: the data set's ``N_STEPS``, 5001).
        checkpoint_freq: updates between evaluations (``None``: the data set's).
        holdout_fraction: part of each environment held out (the *out* split).
        hparams: overrides of the hparams (DomainBed's ``--hparams`` JSON).
        data_dir: image data sets: DomainBed's data root; MNIST: the MNIST cache folder.
        subsample: keep the first ``n`` samples of each environment's in and out splits
            (in DomainBed's order; ``None``: all). Quick runs and tests.
        num_workers: DataLoader worker processes per domain (``None``: 0 for MNIST and
            Debug, up to 8 for image folders; the results do not depend on it).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        save_domainbed_pkl: also write DomainBed's ``model.pkl``.
        step_checkpoints: save the weights at every evaluation (``checkpoints/``).
    """

    dataset: str = "RotatedMNIST"
    algorithm: str = "ERM"
    test_envs: list[int] = field(default_factory=lambda: [0])
    hparams_seed: int = 0
    trial_seed: int = 0
    seed: int = 0
    steps: int | None = None
    checkpoint_freq: int | None = None
    holdout_fraction: float = 0.2
    hparams: dict[str, Any] = field(default_factory=dict)
    data_dir: str | None = None
    subsample: int | None = None
    num_workers: int | None = None
    device: str = "auto"
    save_domainbed_pkl: bool = False
    step_checkpoints: bool = True

    def __post_init__(self) -> None:
        self.dataset = dataset_info(self.dataset).name
        self.algorithm = DOMAINBED_NAMES[algorithm_key(self.algorithm)]
        if isinstance(self.hparams, str):
            self.hparams = _json_object(self.hparams)
        self.hparams = dict(self.hparams or {})
        if self.data_dir is not None:
            self.data_dir = str(self.data_dir)
        if self.steps is None:
            self.steps = dataset_steps(self.dataset)
        if self.checkpoint_freq is None:
            self.checkpoint_freq = checkpoint_freq(self.dataset)
        self.validate()

    def validate(self) -> None:
        """Check every setting (one-line ``ValueError`` naming the bad one)."""
        n = len(dataset_info(self.dataset).environments)
        envs = self.test_envs
        if not isinstance(envs, list | tuple) or not envs:
            raise ValueError(f"test_envs must be a non-empty list of indices, got {envs!r}")
        for env in envs:
            if isinstance(env, bool) or not isinstance(env, int) or not 0 <= env < n:
                raise ValueError(
                    f"test environment {env!r} is not an index of {self.dataset}'s "
                    f"{n} environments (0..{n - 1})"
                )
        self.test_envs = sorted(set(envs))
        if len(self.test_envs) == n:
            raise ValueError(f"every environment of {self.dataset} is a test one: none to train on")
        for what in ("hparams_seed", "trial_seed", "seed"):
            _integer(getattr(self, what), what, 0)
        if self.num_workers is not None:
            _integer(self.num_workers, "num_workers", 0)
        for what in ("steps", "checkpoint_freq"):
            _integer(getattr(self, what), what, 1)
        if self.subsample is not None:
            _integer(self.subsample, "subsample", 1)
        h = self.holdout_fraction
        if isinstance(h, bool) or not isinstance(h, int | float) or not 0 < h < 1:
            raise ValueError(f"holdout_fraction must be in (0, 1), got {h!r}")

    def resolved_hparams(self) -> dict[str, Any]:
        """The hparams the run trains with: DomainBed's defaults (``hparams_seed == 0``) or
        random draw, then :attr:`hparams` on top."""
        return hparams_for(
            self.algorithm, self.dataset, self.hparams_seed, self.trial_seed, self.hparams
        )

    def args(self, output_dir: str) -> dict[str, Any]:
        """DomainBed's ``vars(args)`` of this run (plus ``subsample``), as recorded."""
        return {
            "data_dir": self.data_dir,
            "dataset": self.dataset,
            "algorithm": self.algorithm,
            "task": "domain_generalization",
            "hparams": json.dumps(self.hparams, sort_keys=True) if self.hparams else None,
            "hparams_seed": self.hparams_seed,
            "trial_seed": self.trial_seed,
            "seed": self.seed,
            "steps": self.steps,
            "checkpoint_freq": self.checkpoint_freq,
            "test_envs": list(self.test_envs),
            "output_dir": str(output_dir),
            "holdout_fraction": self.holdout_fraction,
            "uda_holdout_fraction": 0.0,
            "skip_model_save": False,
            "save_model_every_checkpoint": False,
            "subsample": self.subsample,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DomainBedConfig:
        """A config from :meth:`to_dict`'s output (unknown keys: one-line error)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown DomainBed run setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))

    def differing_key(self, stored: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
        """The first setting (other than :data:`RESUME_FREE`) whose stored value differs:
        ``(key, stored, current)``, or ``None``."""
        mine = self.to_dict()
        for key, value in mine.items():
            if key in RESUME_FREE:
                continue
            old = stored.get(key)
            if old != value:
                return key, old, value
        return None


_HPARAMS_EXAMPLE = '{"lr": 1e-4}'


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--hparams must be a JSON object such as '{_HPARAMS_EXAMPLE}' ({err})"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"--hparams must be a JSON object such as '{_HPARAMS_EXAMPLE}', got {text!r}"
        )
    return value
